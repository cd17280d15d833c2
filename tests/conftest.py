"""Shared fixtures: tiny random checkpoints of each decoder family (with a trained byte-level BPE tokenizer
and a ChatML template), their exported artifacts, and the real embedded SmolLM2 export.

Everything is built locally: no hub downloads.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
CORPUS = [
    "The capital of France is Paris. Once upon a time, in a small village by the sea, there lived a fisherman.",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    return n if n < 2 else fibonacci(n - 1)",
    "What is the boiling point of water at sea level? Write a haiku about compilers.",
] * 20
VOCAB = 384
CONTEXT = 256


def _family_config(family: str, vocab: int):
    import transformers as tf

    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=CONTEXT,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if family == "llama":
        return tf.LlamaConfig(**common, tie_word_embeddings=True)
    if family == "mistral":  # a window smaller than the long decode case exercises the sliding mask
        return tf.MistralConfig(**common, sliding_window=16, head_dim=16)
    if family == "qwen2":
        return tf.Qwen2Config(**common, tie_word_embeddings=False)
    if family == "qwen3":
        return tf.Qwen3Config(**common, head_dim=16)
    if family == "phi3":
        return tf.Phi3Config(**{**common, "num_key_value_heads": 4})
    if family == "gpt2":
        return tf.GPT2Config(vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=CONTEXT,
                             bos_token_id=1, eos_token_id=2, pad_token_id=0)
    raise KeyError(family)


def train_tokenizer(folder: Path):
    """A byte-level BPE tokenizer with ChatML specials, saved as tokenizer.json + tokenizer_config.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<pad>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<pad>")
    fast.chat_template = CHATML
    fast.save_pretrained(folder)
    return fast


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """tiny_checkpoint("llama") -> Path of a saved random checkpoint with tokenizer (built once per session)."""
    cache: dict[str, Path] = {}

    def build(family: str) -> Path:
        if family not in cache:
            import torch
            from transformers import AutoModelForCausalLM

            folder = tmp_path_factory.mktemp(f"tiny-{family}")
            tok = train_tokenizer(folder)
            torch.manual_seed(0)
            config = _family_config(family, len(tok))
            AutoModelForCausalLM.from_config(config).save_pretrained(folder)
            cache[family] = folder
        return cache[family]

    return build


@pytest.fixture(scope="session")
def tiny_artifact(tiny_checkpoint, tmp_path_factory):
    """tiny_artifact("llama") -> Path of its exported artifact, validated at export (built once per session)."""
    cache: dict[str, Path] = {}

    def build(family: str) -> Path:
        if family not in cache:
            from modelkiln.exporter import ExportOptions, export

            out = tmp_path_factory.mktemp(f"art-{family}") / "artifact"
            export(str(tiny_checkpoint(family)), out, ExportOptions(quiet=True, validate=True))
            cache[family] = out
        return cache[family]

    return build


@pytest.fixture(scope="session")
def smollm2_artifact(tmp_path_factory) -> Path:
    """The real embedded SmolLM2-135M-Instruct, exported once (fp32) and validated at export."""
    from modelkiln.exporter import ExportOptions, export

    out = tmp_path_factory.mktemp("smollm2") / "artifact"
    export("embedded:smollm2", out, ExportOptions(quiet=True, validate=True))
    return out
