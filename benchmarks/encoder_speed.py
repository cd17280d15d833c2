"""Encoder speed, end to end (tokenize -> forward -> pool / classify): eager transformers vs optimum-onnx vs ours,
fp32 and int8, with each runtime's accuracy against eager.

    .venv/bin/python benchmarks/encoder_speed.py [--repeats 30] [--warmup 0.3] [--skip-peers] [--only ours,...]

Workloads on the real all-MiniLM-L6-v2 (fp32, CPU), each timed as the median of `--repeats` calls, taken
in 5 rounds interleaved between the runtimes after a warm-up round; in each round every runtime gets a 0.2 s
pause (so the previous runtime's spinning threads are gone), then untimed calls for `--warmup` seconds (so its
own are awake and the idle vCPUs have ramped up: measured on the int8 pipeline, 31.6 ms median over 6 calls
after 2 warm-up calls, 25.9 ms after 0.25 s of them, 25.9 ms back to back; a fixed count of warm-up calls would
give a 79 ms runtime three times the warm-up time of a 26 ms one): steady-state speed, what a service under load
sees.
  embed   texts -> sentence embeddings (mean pooling + L2 normalization, as sentence-transformers does), at batch 1
          and 32, short (~20 tokens) and long (128 tokens) inputs. eager: transformers' tokenizer + BertModel under
          torch.no_grad + numpy pooling; optimum: transformers 4.57's tokenizer + ORTModelForFeatureExtraction (its
          own export) + the same pooling; ours: `pipeline("sentence-similarity").encode`.
  classify  texts -> labels with a 2-label head on MiniLM (seeded random head): eager tokenizer + model + softmax
          vs optimum's ORTModelForSequenceClassification in transformers 4.57's pipeline vs ours
          (`pipeline("text-classification")`), at batch 1 and 32 short inputs.
Runtimes: `eager`; `optimum` (fp32) and `optimum-int8` (its ORTQuantizer with
`AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)`, dynamic int8 as its docs show it); `ours`
(the exported fp32 artifact), `ours-fused` (`modelkiln optimize`: fuse_encoder) and `ours-int8` (`modelkiln quantize
--weights int8`: fuse_encoder + quantize_dynamic_int8 with its accuracy guard at min_cosine 0.99).
Accuracy (before the timings): each runtime's sentence embeddings of the 26 held-out texts of validate
(ACCURACY_TEXTS, none in the int8 guard's corpus) at batch 32 and at batch 1, cosine against eager, worst text; and
the classifier's labels on them against eager.
The optimum peer runs in its own venv (optimum-onnx pins transformers<4.58), built under benchmarks/.venvs/optimum
on first use (torch==2.13.0 first, so pip takes the CPU wheel); when it cannot be built its columns are skipped with
the reason printed. Prints Markdown tables with speed-ups over eager (README "Encoder tasks").
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
VENVS = HERE / ".venvs"
# Same venv (name and pins) as generate_speed.py, so the two benchmarks build it once between them.
OPTIMUM = ["optimum-onnx==0.1.0", "transformers<4.58", "onnxruntime==1.31.1"]
WORDS = ("the quick brown fox jumps over a lazy dog near river bank while children play football in green park "
         "under bright summer sky and old men read newspapers on wooden benches").split()


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_texts(tokenizer, n: int, tokens: int) -> list[str]:
    """n different texts of exactly `tokens` tokens (specials included) for this WordPiece tokenizer."""
    rng = np.random.default_rng(0)
    texts = []
    for _ in range(n):
        words = list(rng.choice(WORDS, size=tokens * 2))
        while len(tokenizer(" ".join(words))["input_ids"]) > tokens:
            words.pop()
        texts.append(" ".join(words))
    return texts


def ensure_inputs() -> tuple[Path, Path, Path, Path]:
    """(MiniLM dir, classifier checkpoint dir, embedding artifact, classifier artifact), cached in benchmarks/.cache."""
    from modelkiln.exporter import ExportOptions, export
    from modelkiln.exporter.embedded import resolve_embedded

    minilm = resolve_embedded("all-minilm-l6-v2")
    clf_ckpt, emb_art, clf_art = CACHE / "minilm-clf", CACHE / "minilm-embed-artifact", CACHE / "minilm-clf-artifact"
    if not (clf_ckpt / "config.json").exists():
        import torch
        from transformers import AutoTokenizer, BertForSequenceClassification

        torch.manual_seed(0)
        model = BertForSequenceClassification.from_pretrained(
            minilm, num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1})
        model.save_pretrained(clf_ckpt)
        AutoTokenizer.from_pretrained(minilm).save_pretrained(clf_ckpt)
        # transformers 4.57 (the optimum venv) does not know v5's "TokenizersBackend" class name
        config = json.loads((clf_ckpt / "tokenizer_config.json").read_text())
        config["tokenizer_class"] = "BertTokenizerFast"
        (clf_ckpt / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    if not (emb_art / "modelkiln.json").exists():
        log("exporting MiniLM (sentence-similarity)…")
        export("embedded:all-minilm-l6-v2", emb_art, ExportOptions(task="sentence-similarity", quiet=True, force=True))
    if not (clf_art / "modelkiln.json").exists():
        log("exporting the MiniLM classifier…")
        export(str(clf_ckpt), clf_art, ExportOptions(task="text-classification", quiet=True, force=True))
    return minilm, clf_ckpt, emb_art, clf_art


def ensure_variants(emb_art: Path, clf_art: Path) -> dict[str, tuple[Path, Path]]:
    """{"ours": (embed, classifier), "ours-fused": ..., "ours-int8": ...}: what `modelkiln optimize` and
    `modelkiln quantize --weights int8` write, cached beside the fp32 artifacts."""
    from modelkiln.exporter.transform import plan_optimize, plan_quantize, transform
    from modelkiln.graphs import encoder_fusions, encoder_quantization  # noqa: F401  (register the passes)
    from modelkiln.runtime.artifact import Artifact

    variants = {"ours": (emb_art, clf_art)}
    for name in ("ours-fused", "ours-int8"):
        pair = []
        for art in (emb_art, clf_art):
            out = art.with_name(f"{art.name}-{name.removeprefix('ours-')}")
            if not (out / "modelkiln.json").exists():
                log(f"building {out.name}…")
                manifest = Artifact.load(art).manifest
                passes = plan_optimize(manifest) if name == "ours-fused" else plan_quantize(manifest, "int8")
                transform(art, out, passes, force=True, quiet=True)
            pair.append(out)
        variants[name] = tuple(pair)
    return variants


def ensure_optimum_venv() -> tuple[Path | None, str]:
    venv = VENVS / "optimum"
    python = venv / "bin" / "python"
    if (venv / ".installed").exists():
        return python, ""
    log("building the optimum venv (first run only)…")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run(pip + ["torch==2.13.0"], check=True, timeout=1200)  # first: the CPU wheel, not CUDA
        subprocess.run(pip + OPTIMUM, check=True, timeout=1200)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        return None, f"could not build the optimum-onnx venv offline ({e})"
    (venv / ".installed").touch()
    return python, ""


# The optimum worker runs inside the optimum venv (transformers 4.57) and stays up: it answers one line per request
# on stdin ("KEY CALLS" -> a JSON list of per-call seconds), so its rounds interleave with eager's and ours. On a
# shared machine the load changes minute to minute; timing the peers minutes apart would compare the load.
OPTIMUM_WORKER = r"""
import json, sys, time
from pathlib import Path
import numpy as np
from optimum.onnxruntime import ORTModelForFeatureExtraction, ORTModelForSequenceClassification, ORTQuantizer
from optimum.onnxruntime.configuration import AutoQuantizationConfig
from transformers import AutoTokenizer, pipeline
minilm, clf, cache, workloads = sys.argv[1], sys.argv[2], Path(sys.argv[3]), json.loads(sys.argv[4])

def load(cls, source, folder, int8=False):
    if not (folder / "model.onnx").exists():
        cls.from_pretrained(source, export=True).save_pretrained(folder)
    if not int8:
        return cls.from_pretrained(folder)
    quantized = folder.with_name(folder.name + "-int8")
    if not (quantized / "model_quantized.onnx").exists():
        config = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)
        ORTQuantizer.from_pretrained(folder).quantize(save_dir=quantized, quantization_config=config)
    return cls.from_pretrained(quantized, file_name="model_quantized.onnx")

tok = AutoTokenizer.from_pretrained(minilm)
clf_tok = AutoTokenizer.from_pretrained(clf)
runtimes = {}
for name, int8 in (("optimum", False), ("optimum-int8", True)):
    emb = load(ORTModelForFeatureExtraction, minilm, cache / "optimum-minilm", int8)
    def embed(texts, batch=32, emb=emb):
        out = []
        for i in range(0, len(texts), batch):
            enc = tok(texts[i:i + batch], padding=True, truncation=True, max_length=256, return_tensors="np")
            hidden = emb(**enc).last_hidden_state
            mask = enc["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
            out.append(pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12))
        return np.concatenate(out)
    clf_model = load(ORTModelForSequenceClassification, clf, cache / "optimum-minilm-clf", int8)
    runtimes[name] = (embed, pipeline("text-classification", model=clf_model, tokenizer=clf_tok))
print("ready", flush=True)
for line in sys.stdin:
    if line.startswith("accuracy "):  # accuracy NAME TEXTS_JSON -> embeddings at batch 32 and 1, and labels
        _, name, texts = line.split(" ", 2)
        texts = json.loads(texts)
        embed, classifier = runtimes[name]
        print(json.dumps({"b32": embed(texts).tolist(), "b1": embed(texts, 1).tolist(),
                          "labels": [r["label"] for r in classifier(texts, batch_size=32)]}), flush=True)
        continue
    name, key, calls, warm = line.split(" ")
    kind, texts, batch = workloads[key]
    embed, classifier = runtimes[name]
    fn = (lambda: embed(texts)) if kind == "embed" else (lambda: classifier(texts, batch_size=batch))
    start = time.perf_counter()
    fn()
    while time.perf_counter() - start < float(warm):
        fn()
    times = []
    for _ in range(int(calls)):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    print(json.dumps(times), flush=True)
"""


def timed_calls(fn, calls: int, warm_seconds: float) -> list[float]:
    """Per-call seconds of `calls` calls, after untimed calls for `warm_seconds` (at least one)."""
    start = time.perf_counter()
    fn()
    while time.perf_counter() - start < warm_seconds:
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


class OptimumPeer:
    """The persistent optimum worker (OPTIMUM_WORKER): `peer(name, key, calls)` -> per-call seconds, for name
    "optimum" (fp32) or "optimum-int8"; `peer.accuracy(name, texts)` -> embeddings and labels."""

    def __init__(self, python: Path, minilm: Path, clf_ckpt: Path, workloads: dict):
        keyed = {key.replace(" ", "_"): value for key, value in workloads.items()}
        self.proc = subprocess.Popen(
            [str(python), "-c", OPTIMUM_WORKER, str(minilm), str(clf_ckpt), str(CACHE), json.dumps(keyed)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        while line and line.strip() != "ready":  # optimum's export chatter before the worker is ready
            line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the optimum worker exited with code {self.proc.wait()}")

    def _ask(self, line: str):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def __call__(self, name: str, key: str, calls: int, warm_seconds: float) -> list[float]:
        return self._ask(f"{name} {key.replace(' ', '_')} {calls} {warm_seconds}")

    def accuracy(self, name: str, texts: list[str]) -> dict:
        return self._ask(f"accuracy {name} {json.dumps(texts)}")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def cosines(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return (actual * expected).sum(1) / np.linalg.norm(actual, axis=1) / np.linalg.norm(expected, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=float, default=0.3,
                        help="seconds of untimed calls per round after the pause (at least one call), every "
                             "runtime alike (0: time the calls right after the pause, threads still waking up)")
    parser.add_argument("--skip-peers", action="store_true", help="eager and ours only")
    parser.add_argument("--only", default="", help="comma-separated runtimes to time besides eager "
                        "(ours, ours-fused, ours-int8, optimum, optimum-int8); default all")
    args = parser.parse_args()
    CACHE.mkdir(exist_ok=True)
    load_at_start = _load_average()

    import torch
    import transformers

    from modelkiln.runtime.pipelines import pipeline
    from modelkiln.validate.encoder_cases import ACCURACY_TEXTS

    minilm, clf_ckpt, emb_art, clf_art = ensure_inputs()
    variants = ensure_variants(emb_art, clf_art)
    tok = transformers.AutoTokenizer.from_pretrained(minilm)
    short, long = make_texts(tok, 32, 20), make_texts(tok, 32, 128)
    workloads = {
        "embed b=1 short": ("embed", short[:1], 1), "embed b=32 short": ("embed", short, 32),
        "embed b=1 long": ("embed", long[:1], 1), "embed b=32 long": ("embed", long, 32),
        "classify b=1 short": ("classify", short[:1], 1), "classify b=32 short": ("classify", short, 32),
    }

    # ---- eager transformers (torch's default threads, as a user gets them)
    model = transformers.AutoModel.from_pretrained(minilm).eval()

    def eager_embed(texts, batch_size=32):
        out = []
        for i in range(0, len(texts), batch_size):
            enc = tok(texts[i:i + batch_size], padding=True, truncation=True, max_length=256, return_tensors="pt")
            with torch.no_grad():
                hidden = model(**enc).last_hidden_state.numpy()
            mask = enc["attention_mask"].numpy()[..., None].astype(np.float32)
            pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
            out.append(pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12))
        return np.concatenate(out)

    # eager classification written out (tokenize, forward, softmax, label): transformers 5's pipeline adds a fixed
    # ~0.5 s per list call on these machines (its DataLoader), which would flatter the ratio
    clf_model = transformers.AutoModelForSequenceClassification.from_pretrained(clf_ckpt).eval()

    def eager_clf(texts, batch_size=32):
        labels = []
        for i in range(0, len(texts), batch_size):
            enc = tok(texts[i:i + batch_size], padding=True, truncation=True, return_tensors="pt")
            with torch.no_grad():
                probs = clf_model(**enc).logits.softmax(-1)
            labels += [{"label": clf_model.config.id2label[int(j)], "score": float(p[j])}
                       for p, j in zip(probs, probs.argmax(-1))]
        return labels

    ours = {name: (pipeline("sentence-similarity", model=emb), pipeline("text-classification", model=clf))
            for name, (emb, clf) in variants.items()}
    # fp32: same answers, or the timings compare different work
    for name in ("ours", "ours-fused"):
        np.testing.assert_allclose(ours[name][0].encode(short), eager_embed(short), atol=1e-4)
        assert [r["label"] for r in ours[name][1](short)] == [r["label"] for r in eager_clf(short)]
    runners = {"eager": {key: (lambda t=t: eager_embed(t)) if kind == "embed" else (lambda t=t, b=b: eager_clf(t, b))
                         for key, (kind, t, b) in workloads.items()}}
    for name, (emb, clf) in ours.items():
        runners[name] = {key: (lambda t=t, b=b, e=emb: e.encode(t, batch_size=b)) if kind == "embed"
                         else (lambda t=t, b=b, c=clf: c(t, batch_size=b)) for key, (kind, t, b) in workloads.items()}
    peer, skipped = None, ""
    if args.skip_peers:
        skipped = "optimum-onnx skipped (--skip-peers)"
    else:
        python, skipped = ensure_optimum_venv()
        if python is not None:
            log("starting optimum-onnx in its own venv…")
            try:
                peer = OptimumPeer(python, minilm, clf_ckpt, workloads)
            except (RuntimeError, OSError, ValueError) as e:
                skipped = f"optimum-onnx skipped: {e}"
    names = ["eager", *ours] + (["optimum", "optimum-int8"] if peer is not None else [])
    if args.only:
        names = ["eager"] + [n for n in names if n in args.only.split(",")]

    # ---- accuracy against eager, on held-out texts
    texts = list(ACCURACY_TEXTS)
    expected = {"b32": eager_embed(texts, 32), "b1": eager_embed(texts, 1),
                "labels": [r["label"] for r in eager_clf(texts)]}
    accuracy = {}
    for name in names[1:]:
        if name.startswith("optimum"):
            got = peer.accuracy(name, texts)
        else:
            emb, clf = ours[name]
            got = {"b32": emb.encode(texts, batch_size=32), "b1": emb.encode(texts, batch_size=1),
                   "labels": [r["label"] for r in clf(texts, batch_size=32)]}
        row = {}
        for batch in ("b32", "b1"):
            c = cosines(got[batch], expected[batch])
            row[batch] = (float(c.min()), texts[int(c.argmin())], float(c.mean()))
        row["labels"] = sum(a == e for a, e in zip(got["labels"], expected["labels"]))
        accuracy[name] = row

    # Rounds interleave the runtimes per workload, so each sees the same load on this shared machine.
    rounds, calls = 5, max(1, args.repeats // 5)
    times: dict[str, dict[str, list[float]]] = {name: {key: [] for key in workloads} for name in names}
    for key in workloads:
        log(f"timing {key}…")
        for round_ in range(rounds + 1):  # round 0 is the warm-up
            for name in names:
                # subtle: onnxruntime's and torch's pool threads spin for a while after a call; on 2 cores the next
                # runtime would pay for the previous one's spinning (measured: the fused graph, timed right after
                # the unfused one, came out slower at batch 1 although it is faster alone)
                time.sleep(0.2)
                # the calls in the first fraction of a second after the pause are slower (threads and vCPUs
                # waking up): `--warmup` seconds of calls per round are run and not counted
                measured = (peer(name, key, calls, args.warmup) if name.startswith("optimum")
                            else timed_calls(runners[name][key], calls, args.warmup))
                if round_:
                    times[name][key] += measured
    if peer is not None:
        peer.close()
    results = {name: {key: statistics.median(v) * 1e3 for key, v in per.items()} for name, per in times.items()}

    head = "| workload | " + " | ".join(f"{n} ms" for n in names) + " | " + " | ".join(
        f"{n} vs eager" for n in names[1:]) + " |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for key in workloads:
        eager = results["eager"][key]
        print(f"| {key} | " + " | ".join(f"{results[n][key]:.1f}" for n in names) + " | " + " | ".join(
            f"{eager / results[n][key]:.2f}×" for n in names[1:]) + " |")
    print("\n| runtime | worst cosine vs eager, b=32 (text) | worst, b=1 | mean, b=32 | classifier labels = eager |")
    print("|---|---|---|---|---|")
    for name, row in accuracy.items():
        (w32, t32, m32), (w1, _, _) = row["b32"], row["b1"]
        print(f"| {name} | {w32:.4f} ({t32[:24]!r}) | {w1:.4f} | {m32:.4f} | {row['labels']}/{len(texts)} |")
    if skipped:
        print(f"\n{skipped}")
    print(f"\n(median of {rounds * calls} calls in {rounds} interleaved rounds, each after a 0.2 s pause and "
          f"{args.warmup} s of untimed calls; accuracy on the {len(texts)} held-out "
          f"texts of validate; torch {torch.__version__}, {torch.get_num_threads()} threads; onnxruntime default "
          f"threads; load average {load_at_start} at the start, {_load_average()} at the end)")


def _load_average() -> str:
    """1, 5 and 15 minute load averages: the machine is shared, so each run says what else was running."""
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "?"


if __name__ == "__main__":
    main()
