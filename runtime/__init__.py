"""modelkiln.runtime: load an artifact and serve it with numpy + onnxruntime only.

Never imports torch, transformers or tokenizers (tests/runtime/test_import_isolation.py proves it).
"""

from modelkiln.runtime.errors import ArtifactError, ModelkilnError
from modelkiln.runtime.tokenizer import Tokenizer

__all__ = ["ArtifactError", "ModelkilnError", "Tokenizer"]
