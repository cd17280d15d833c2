"""The runtime tokenizer works where torch, transformers, tokenizers and sentencepiece cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tokenizers import Tokenizer as LibTokenizer

from tokenizer_support import TEXTS

BLOCKER = textwrap.dedent("""
    import sys, importlib.abc
    BLOCKED = {"torch", "transformers", "tokenizers", "sentencepiece"}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked import: {name}")
    sys.meta_path.insert(0, Block())
""")


def test_tokenize_without_heavy_imports(smollm2_dir, minilm_dir, spm_dirs):
    texts = [TEXTS["prose"], TEXTS["emoji"], TEXTS["compat"]]
    files = {
        "smollm2": str(smollm2_dir / "tokenizer.json"),
        "minilm": str(minilm_dir / "tokenizer.json"),
        "spm": str(spm_dirs["spm_unigram_nmt_nfkc_cf"] / "tokenizer.json"),
    }
    script = BLOCKER + textwrap.dedent(f"""
        import json
        import modelkiln.runtime
        from modelkiln.runtime.tokenizer import Tokenizer
        from modelkiln.runtime.tokenizer.hf import AutoTokenizer
        try:
            import tokenizers
        except ImportError:
            pass
        else:
            raise SystemExit("the blocker does not work")
        out = {{}}
        for name, path in {files!r}.items():
            tok = Tokenizer.from_file(path)
            encs = tok.encode_batch({texts!r})
            out[name] = [[e.ids, e.offsets] for e in encs] + [tok.decode(encs[1].ids)]
        hf = AutoTokenizer.from_pretrained({str(minilm_dir)!r})
        out["hf"] = hf({texts!r}, padding=True, return_tensors="np")["input_ids"].tolist()
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        print(json.dumps({{"out": out, "heavy": heavy}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    for name, path in files.items():
        lib = LibTokenizer.from_file(path)
        encs = lib.encode_batch(texts)
        expected = [[e.ids, [list(o) for o in e.offsets]] for e in encs] + [lib.decode(encs[1].ids)]
        assert result["out"][name] == expected, name
    lib = LibTokenizer.from_file(files["minilm"])
    lib.no_truncation()
    lib.enable_padding(pad_id=0, pad_token="[PAD]")
    assert result["out"]["hf"] == [e.ids for e in lib.encode_batch(texts)]
