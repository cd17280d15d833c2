"""Export wall time and peak RSS against model size, one fresh process per export.

    .venv/bin/python benchmarks/export_cost.py [--skip-large]

Models: a tiny random Llama (2 layers), the real SmolLM2-135M-Instruct (embedded GGUF, de-quantized to fp32),
and a ~0.5B random Llama (28 layers, hidden 1024, GQA 16/8, tied 49152-token embedding) saved as safetensors.
Prints a Markdown table (README "Performance"). For reference, optimum-onnx exports SmolLM2 in about 17 s on
these machines and writes a 652 MB graph (the tied embedding twice).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Peak RSS is the child's VmHWM: getrusage's ru_maxrss survives exec, so it would report the driver's peak
# (the driver holds the random checkpoints it just built).
CHILD = """
import json, sys, time
t0 = time.perf_counter()
from modelkiln.exporter import ExportOptions, export
out = export(sys.argv[1], sys.argv[2], ExportOptions(quiet=True))
wall = time.perf_counter() - t0
size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"wall_s": wall, "peak_rss_mb": hwm / 1024, "artifact_mb": size / 1e6}))
"""


def make_llama(folder: Path, **config) -> int:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig(**config))
    model.save_pretrained(folder)
    params = sum(p.numel() for p in model.parameters())
    del model  # free it before the export child runs
    return params


def run_export(source: str, output: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, source, str(output)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"export of {source} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-large", action="store_true", help="skip the ~0.5B model")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models = [("tiny llama (2 layers)", lambda: (str(tmp / "tiny"), make_llama(
            tmp / "tiny", vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)))]
        models.append(("SmolLM2-135M-Instruct (GGUF → fp32)", lambda: ("embedded:smollm2", 134_515_008)))
        if not args.skip_large:
            models.append(("random llama ~0.5B (28 layers)", lambda: (str(tmp / "large"), make_llama(
                tmp / "large", vocab_size=49152, hidden_size=1024, intermediate_size=4096, num_hidden_layers=28,
                num_attention_heads=16, num_key_value_heads=8, tie_word_embeddings=True))))
        for label, build in models:
            source, params = build()
            start = time.perf_counter()
            result = run_export(source, tmp / f"art-{len(rows)}")
            result["process_s"] = time.perf_counter() - start
            rows.append((label, params, result))
            print(f"{label}: {result}", file=sys.stderr, flush=True)
    print("| model | parameters | export wall (s) | peak RSS (MB) | artifact (MB) |")
    print("|---|---:|---:|---:|---:|")
    for label, params, r in rows:
        print(f"| {label} | {params / 1e6:.1f} M | {r['process_s']:.1f} | {r['peak_rss_mb']:.0f} | "
              f"{r['artifact_mb']:.1f} |")


if __name__ == "__main__":
    main()
