"""Tokenizer fixtures live in tokenizer_support.py (a uniquely named module, so test files can import its corpora
without depending on which `conftest` module pytest imported first)."""

from tokenizer_support import tokenizer_cache, smollm2_dir, minilm_dir, mistral_dirs, spm_dirs, trained_pipelines, tokenizer_dirs  # noqa: F401
