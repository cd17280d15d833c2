"""`modelkiln.runtime` serves an artifact with torch, transformers and tokenizers unavailable."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np

BLOCKER = textwrap.dedent("""
    import sys, importlib.abc
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"torch", "transformers", "tokenizers", "sentencepiece", "optimum", "onnx"}:
                raise ImportError(f"blocked heavy import: {name}")
    sys.meta_path.insert(0, Block())
""")


def test_runtime_generates_without_torch(tiny_artifact, tiny_checkpoint):
    import torch
    from transformers import AutoModelForCausalLM

    art = tiny_artifact("llama")
    ids = [[5, 6, 7, 8, 9], [0, 0, 10, 11, 12]]
    mask = [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]]
    script = BLOCKER + textwrap.dedent(f"""
        import json, numpy as np
        import modelkiln.runtime
        from modelkiln.runtime.decoder import DecoderLM
        from modelkiln.runtime.generation import generate_greedy
        lm = DecoderLM.load({str(art)!r})
        out = generate_greedy(lm, np.array({ids}), np.array({mask}), max_new_tokens=12, min_new_tokens=12,
                              eos_token_ids=[2], pad_token_id=0)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {{"torch", "transformers", "tokenizers"}})
        print(json.dumps({{"tokens": out.tolist(), "heavy": heavy}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []

    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint("llama")).eval()
    with torch.no_grad():
        expected = model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=12,
                                  min_new_tokens=12, do_sample=False, eos_token_id=2, pad_token_id=0)
    assert result["tokens"] == expected[:, 5:].tolist()
    assert np.array(result["tokens"]).shape == (2, 12)
