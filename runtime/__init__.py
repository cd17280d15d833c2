"""modelkiln.runtime: load an artifact and serve it with numpy + onnxruntime only.

    from modelkiln.runtime import pipeline
    pipe = pipeline("text-generation", model="artifacts/smollm2")

Never imports torch, transformers or tokenizers (tests/runtime/test_runtime_isolation.py and
tests/runtime/tokenizer/test_import_isolation.py prove it in subprocesses).
"""

from modelkiln.runtime.errors import ArtifactError, ModelkilnError
from modelkiln.runtime.pipelines import pipeline
from modelkiln.runtime.tokenizer import AutoTokenizer, Tokenizer

__all__ = ["ArtifactError", "AutoTokenizer", "ModelkilnError", "Tokenizer", "pipeline"]
