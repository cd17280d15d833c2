"""Greedy decode speed of SmolLM2-135M-Instruct (batch 1): eager transformers vs modelkiln vs optimum-onnx vs
ONNX Runtime GenAI, fp32 and int4, in one run, from the same ~45-token chat prompt, exactly 128 new tokens each.

    .venv/bin/python benchmarks/generate_speed.py [--new-tokens 128] [--skip-peers] [--precision fp32|int4|all]
                                                  [--rebuild]

Rows: eager fp32; modelkiln fp32 (the exported graph), fp32 fused (`modelkiln optimize`: GroupQueryAttention with
the in-place cache, RMSNorm fusions), int4 (`modelkiln quantize`, the default minmax scheme) and int4 symmetric
(onnxruntime's round-to-nearest, the recipe ORT GenAI uses); optimum-onnx fp32; ORT GenAI fp32 and int4 (model
builder, block 32, accuracy level 4). The last columns compare each engine's speed with the memory-bandwidth
limit: weight bytes read per token (its weights file) ÷ measured copy bandwidth.

The peers run in their own venvs, built here under benchmarks/.venvs/ on first use (optimum-onnx pins
transformers<4.58, ORT GenAI's model builder needs transformers 5; both get torch==2.13.0, the local CPU wheel).
Their checkpoint is SmolLM2 de-quantized from the embedded GGUF, saved with save_pretrained, and for optimum-onnx
converted to transformers-4 format (the rope config it cannot read). Each engine runs in a
fresh process; figures are the median of 3 timed runs after a warm-up. Prints a Markdown table with ratios, plus
a table of modelkiln's cold starts (`runners/cold_start_runner.py`: import + pipeline + first token in a fresh
process, median of 3, of an artifact verified before, as for a service restart — the very first load also hashes
every file, +0.5-0.8 s for 540 MB — once with its files in the OS page cache and once evicted from it, read from
disk) and per-step Python overhead outside onnxruntime (wall and CPU time).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
VENVS = HERE / ".venvs"
RUNNERS = HERE / "runners"
CHAT = [{"role": "user", "content": "Explain in a few sentences why the sky is blue during the day and why "
                                    "sunsets look red and orange."}]
PEERS = {
    "optimum": ["optimum-onnx==0.1.0", "transformers<4.58", "onnxruntime==1.31.1"],
    # ORT GenAI's model builder imports transformers 5 classes (Qwen3.5); it reads the v5 checkpoint
    "ortgenai": ["onnxruntime-genai==0.18.0", "transformers==5.23.0", "onnx", "onnx-ir", "onnxruntime==1.31.1"],
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ensure_checkpoints() -> tuple[Path, Path, Path]:
    """(transformers-5 checkpoint, transformers-4 copy, modelkiln artifact), built once into benchmarks/.cache."""
    hf5, hf4, artifact = CACHE / "smollm2-hf", CACHE / "smollm2-hf-v4", CACHE / "smollm2-artifact"
    if not (hf5 / "config.json").exists():
        log("saving SmolLM2 (GGUF, de-quantized) as a transformers checkpoint…")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from modelkiln.exporter.embedded import resolve_embedded

        gguf = resolve_embedded("smollm2")
        gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # a GGUF-loaded model refuses save_pretrained: copy its weights into a plain one
        model = AutoModelForCausalLM.from_config(gguf_model.config, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict())
        del model.config.quantization_config
        model.generation_config = gguf_model.generation_config
        model.save_pretrained(hf5)
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(hf5)
    if not (hf4 / "config.json").exists():
        import shutil

        shutil.copytree(hf5, hf4, dirs_exist_ok=True)
        config = json.loads((hf4 / "config.json").read_text())
        rope = config.pop("rope_parameters", {}) or {}
        config["rope_theta"] = rope.get("rope_theta", 10000.0)
        if rope.get("rope_type", "default") != "default":
            config["rope_scaling"] = rope
        config["torch_dtype"] = config.pop("dtype", "float32")
        (hf4 / "config.json").write_text(json.dumps(config, indent=2))
        tok_config = json.loads((hf4 / "tokenizer_config.json").read_text())
        tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"  # v5's TokenizersBackend is unknown to v4
        template = hf4 / "chat_template.jinja"
        if template.exists():
            tok_config["chat_template"] = template.read_text()
        (hf4 / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))
    if not (artifact / "modelkiln.json").exists():
        log("exporting the modelkiln artifact…")
        from modelkiln.exporter import ExportOptions, export

        export("embedded:smollm2", artifact, ExportOptions(quiet=True, force=True))
    return hf5, hf4, artifact


def ensure_variants(artifact: Path) -> dict[str, Path]:
    """The fused and quantized artifacts, made from the exported one with the CLI's own planning functions."""
    from modelkiln.exporter.transform import plan_optimize, plan_quantize, transform
    from modelkiln.runtime.artifact import Artifact

    manifest = Artifact.load(artifact, verify="size").manifest
    plans = {"fp32-fused": plan_optimize(manifest, "all"),
             "int4": plan_quantize(manifest, "int4"),
             "int4-symmetric": plan_quantize(manifest, "int4", scheme="symmetric")}
    variants = {}
    for name, passes in plans.items():
        out = CACHE / f"smollm2-artifact-{name}"
        if not (out / "modelkiln.json").exists():
            log(f"building the {name} artifact…")
            transform(artifact, out, passes, force=True, quiet=True)
        variants[name] = out
    return variants


def copy_bandwidth_gbs() -> float:
    """Memory bandwidth in GB/s from a 512 MB numpy copy (best of 5), counting bytes read plus bytes written (a
    copy moves each byte twice). Decoding at batch 1 streams every weight once per token, so bandwidth / weight
    bytes bounds tokens per second."""
    import time

    import numpy as np

    src = np.ones(1 << 27, np.float32)  # 512 MB
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return 2 * src.nbytes / best / 1e9


def weight_bytes(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in model_dir.glob("*.data")) or sum(
        p.stat().st_size for p in model_dir.glob("*.safetensors"))


def ensure_venv(name: str, packages: list[str]) -> Path | None:
    venv = VENVS / name
    python = venv / "bin" / "python"
    stamp = venv / ".installed"  # holds the package list it was built with: a changed list reinstalls
    if stamp.exists() and stamp.read_text() == json.dumps(packages):
        return python
    log(f"building the {name} venv (first run only)…")
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run(pip + ["torch==2.13.0"], check=True)  # first, so nothing pulls a CUDA torch
        subprocess.run(pip + packages, check=True)
    except subprocess.CalledProcessError as e:
        log(f"could not build the {name} venv ({e}); its column is skipped")
        return None
    stamp.write_text(json.dumps(packages))
    return python


def run(python: Path, runner: str, model: Path, prompt_ids: list[int], new_tokens: int,
        env: dict[str, str] | None = None) -> dict | None:
    import os

    proc = subprocess.run([str(python), str(RUNNERS / runner), str(model), json.dumps(prompt_ids), str(new_tokens)],
                          capture_output=True, text=True, cwd=RUNNERS, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        log(f"{runner} failed:\n{proc.stderr[-3000:]}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--skip-peers", action="store_true", help="only eager and modelkiln")
    parser.add_argument("--precision", choices=["fp32", "int4", "all"], default="all")
    parser.add_argument("--rebuild", action="store_true",
                        help="re-export our artifact and rebuild its fused/int4 variants (after exporter or graphs/ "
                             "changes: the cache under benchmarks/.cache is keyed by name only)")
    opts = parser.parse_args()
    if opts.rebuild:
        for old in CACHE.glob("smollm2-artifact*"):
            shutil.rmtree(old)
    hf5, hf4, artifact = ensure_checkpoints()
    variants = ensure_variants(artifact)
    from modelkiln.runtime.artifact import Artifact

    for path in (artifact, *variants.values()):  # sha256 once (remembered), so cold starts measure a restart
        Artifact.load(path, verify="full")
    from transformers import AutoTokenizer

    prompt_ids = AutoTokenizer.from_pretrained(hf5).apply_chat_template(CHAT, add_generation_prompt=True,
                                                                        return_dict=True)["input_ids"]
    prompt_ids = list(prompt_ids)
    results, weights = {}, {}
    main_python = Path(sys.executable)
    fp32, int4 = opts.precision in ("fp32", "all"), opts.precision in ("int4", "all")
    results["eager"] = run(main_python, "eager_runner.py", hf5, prompt_ids, opts.new_tokens)
    weights["eager"] = weight_bytes(hf5)
    ours = ([("modelkiln", artifact), ("modelkiln fp32 fused", variants["fp32-fused"])] if fp32 else []) + (
        [("modelkiln int4", variants["int4"]), ("modelkiln int4 symmetric", variants["int4-symmetric"])]
        if int4 else [])
    for key, path in ours:
        results[key] = run(main_python, "modelkiln_runner.py", path, prompt_ids, opts.new_tokens)
        weights[key] = weight_bytes(path)
    if not opts.skip_peers:
        peers = ([("optimum", "optimum", "optimum_runner.py", hf4, "fp32"),
                  ("ortgenai", "ortgenai", "ortgenai_runner.py", hf5, "fp32")] if fp32 else []) + (
            [("ortgenai int4", "ortgenai", "ortgenai_runner.py", hf5, "int4")] if int4 else [])
        for key, venv, runner, model, precision in peers:
            python = ensure_venv(venv, PEERS[venv])
            results[key] = run(python, runner, model, prompt_ids, opts.new_tokens,
                               env={"BENCH_PRECISION": precision}) if python else None
            suffix = "" if key == "optimum" else f"-ortgenai-{precision}"
            weights[key] = weight_bytes(Path(str(model) + suffix)) if key != "optimum" else weight_bytes(model)
    cold = {key: cold_starts(main_python, path, prompt_ids) for key, path in ours}
    print_table(results, weights, copy_bandwidth_gbs(), len(prompt_ids), opts.new_tokens)
    print_cold_starts(results, cold)


def evict_from_page_cache(directory: Path) -> None:
    """Drop the artifact's files from the OS page cache (posix_fadvise DONTNEED, no root needed), so the next load
    reads them from disk like the first start after a reboot."""
    import os

    for path in directory.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def read_into_page_cache(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                while f.read(1 << 24):
                    pass


def cold_starts(python: Path, artifact: Path, prompt_ids: list[int], repeats: int = 3) -> dict[str, dict] | None:
    """Median cold start (fresh process: import + pipeline + first token) of a restart, the artifact's files in the
    page cache, and of a start that reads them from disk."""
    import statistics

    medians = {}
    for case, prepare in (("cached", read_into_page_cache), ("from disk", evict_from_page_cache)):
        runs = []
        for _ in range(repeats):
            prepare(artifact)
            runs.append(run(python, "cold_start_runner.py", artifact, prompt_ids, 1))
        if None in runs:
            return None
        medians[case] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return medians


def print_cold_starts(results: dict, cold: dict) -> None:
    print("\nCold start (fresh process: import + pipeline(...) + first token; median of 3; the artifact verified "
          "before, as for a service restart):\n")
    print("| engine | files in page cache | import / load / first token | files read from disk | "
          "per-step Python overhead (wall / CPU) |")
    print("|---|---:|---|---:|---:|")
    for key, c in cold.items():
        r = results.get(key)
        if not c or not r:
            print(f"| {key} | (not run) | | | |")
            continue
        a, d = c["cached"], c["from disk"]
        print(f"| {r['name']} | {a['cold_start_s']:.2f} s | {a['import_s']:.2f} / {a['load_s']:.2f} / "
              f"{a['first_token_s']:.2f} s | {d['cold_start_s']:.2f} s | {r['step_overhead_ms']:.3f} / "
              f"{r['step_overhead_cpu_ms']:.3f} ms |")


def print_table(results: dict, weights: dict, bandwidth: float, prompt_tokens: int, new_tokens: int) -> None:
    eager_tokens = (results.get("eager") or {}).get("tokens")
    print(f"SmolLM2-135M-Instruct, batch 1, {prompt_tokens}-token chat prompt, {new_tokens} greedy tokens; "
          f"copy bandwidth {bandwidth:.1f} GB/s\n")
    print("| engine | decode tok/s | TTFT (ms) | load (s) | peak RSS (MB) | vs modelkiln fp32 | "
          "vs modelkiln int4 | same tokens as eager | weights MB | bandwidth-limit tok/s | % of limit |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    references = [results.get("modelkiln fp32 fused") or results.get("modelkiln"), results.get("modelkiln int4")]
    for key, r in results.items():
        if r is None:
            print(f"| {key} | (not run) | | | | | | | | | |")
            continue
        ratios = [f"{ref['decode_tok_s'] / r['decode_tok_s']:.2f}" if ref else "" for ref in references]
        same = "yes" if eager_tokens and r["tokens"] == eager_tokens else "no"
        mb = weights.get(key, 0) / 1e6
        limit = bandwidth * 1e9 / weights[key] if weights.get(key) else float("nan")
        print(f"| {r['name']} | {r['decode_tok_s']:.1f} | {1000 * r['ttft_s']:.0f} | {r['load_s']:.2f} | "
              f"{r['peak_rss_mb']:.0f} | {ratios[0]} | {ratios[1]} | {same} | {mb:.0f} | {limit:.0f} | "
              f"{100 * r['decode_tok_s'] / limit:.0f}% |")


if __name__ == "__main__":
    main()
