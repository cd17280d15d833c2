"""Encoder speed, end to end (tokenize -> forward -> pool / classify): eager transformers vs optimum-onnx vs ours.

    .venv/bin/python benchmarks/encoder_speed.py [--repeats 30] [--skip-peers]

Workloads on the real all-MiniLM-L6-v2 (fp32, CPU), each timed as the median of `--repeats` calls, taken
in 5 rounds interleaved between the runtimes after a warm-up round:
  embed   texts -> sentence embeddings (mean pooling + L2 normalization, as sentence-transformers does), at batch 1
          and 32, short (~20 tokens) and long (128 tokens) inputs. eager: transformers' tokenizer + BertModel under
          torch.no_grad + numpy pooling; optimum: transformers 4.57's tokenizer + ORTModelForFeatureExtraction (its
          own export) + the same pooling; ours: `pipeline("sentence-similarity").encode`.
  classify  texts -> labels with a 2-label head on MiniLM (seeded random head): eager tokenizer + model + softmax
          vs optimum's ORTModelForSequenceClassification in transformers 4.57's pipeline vs ours
          (`pipeline("text-classification")`), at batch 1 and 32 short inputs.
The optimum peer runs in its own venv (optimum-onnx pins transformers<4.58), built under benchmarks/.venvs/optimum
on first use (torch==2.13.0 first, so pip takes the CPU wheel); when it cannot be built its column is skipped with
the reason printed. Prints a Markdown table with speed-ups over eager (README "Encoder tasks").
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
from optimum.onnxruntime import ORTModelForFeatureExtraction, ORTModelForSequenceClassification
from transformers import AutoTokenizer, pipeline
minilm, clf, cache, workloads = sys.argv[1], sys.argv[2], Path(sys.argv[3]), json.loads(sys.argv[4])

def load(cls, source, folder):
    if (folder / "model.onnx").exists():
        return cls.from_pretrained(folder)
    model = cls.from_pretrained(source, export=True)
    model.save_pretrained(folder)
    return model

tok = AutoTokenizer.from_pretrained(minilm)
emb = load(ORTModelForFeatureExtraction, minilm, cache / "optimum-minilm")
def embed(texts):
    enc = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="np")
    hidden = emb(**enc).last_hidden_state
    mask = enc["attention_mask"][..., None].astype(np.float32)
    pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
clf_model = load(ORTModelForSequenceClassification, clf, cache / "optimum-minilm-clf")
classifier = pipeline("text-classification", model=clf_model, tokenizer=AutoTokenizer.from_pretrained(clf))
print("ready", flush=True)
for line in sys.stdin:
    key, calls = line.rsplit(" ", 1)
    kind, texts, batch = workloads[key]
    fn = (lambda: embed(texts)) if kind == "embed" else (lambda: classifier(texts, batch_size=batch))
    times = []
    for _ in range(int(calls)):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    print(json.dumps(times), flush=True)
"""


def timed_calls(fn, calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


class OptimumPeer:
    """The persistent optimum worker (OPTIMUM_WORKER): `peer(key, calls)` -> per-call seconds."""

    def __init__(self, python: Path, minilm: Path, clf_ckpt: Path, workloads: dict):
        self.proc = subprocess.Popen(
            [str(python), "-c", OPTIMUM_WORKER, str(minilm), str(clf_ckpt), str(CACHE), json.dumps(workloads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        while line and line.strip() != "ready":  # optimum's export chatter before the worker is ready
            line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the optimum worker exited with code {self.proc.wait()}")

    def __call__(self, key: str, calls: int) -> list[float]:
        self.proc.stdin.write(f"{key} {calls}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--skip-peers", action="store_true", help="eager and ours only")
    args = parser.parse_args()
    CACHE.mkdir(exist_ok=True)

    import torch
    import transformers
    from modelkiln.runtime.pipelines import pipeline

    minilm, clf_ckpt, emb_art, clf_art = ensure_inputs()
    tok = transformers.AutoTokenizer.from_pretrained(minilm)
    short, long = make_texts(tok, 32, 20), make_texts(tok, 32, 128)
    workloads = {
        "embed b=1 short": ("embed", short[:1], 1), "embed b=32 short": ("embed", short, 32),
        "embed b=1 long": ("embed", long[:1], 1), "embed b=32 long": ("embed", long, 32),
        "classify b=1 short": ("classify", short[:1], 1), "classify b=32 short": ("classify", short, 32),
    }

    # ---- eager transformers (torch's default threads, as a user gets them)
    model = transformers.AutoModel.from_pretrained(minilm).eval()

    def eager_embed(texts):
        enc = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state.numpy()
        mask = enc["attention_mask"].numpy()[..., None].astype(np.float32)
        pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

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

    ours_emb = pipeline("sentence-similarity", model=emb_art)
    ours_clf = pipeline("text-classification", model=clf_art)
    # same answers, or the timings compare different work
    np.testing.assert_allclose(ours_emb.encode(short), eager_embed(short), atol=1e-4)
    assert [r["label"] for r in ours_clf(short)] == [r["label"] for r in eager_clf(short)]
    runners = {
        "eager": {key: (lambda t=t: eager_embed(t)) if kind == "embed" else (lambda t=t, b=b: eager_clf(t, b))
                  for key, (kind, t, b) in workloads.items()},
        "ours": {key: (lambda t=t, b=b: ours_emb.encode(t, batch_size=b)) if kind == "embed"
                 else (lambda t=t, b=b: ours_clf(t, batch_size=b)) for key, (kind, t, b) in workloads.items()},
    }
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

    # Rounds interleave the runtimes per workload, so each sees the same load on this shared machine.
    rounds, calls = 5, max(1, args.repeats // 5)
    names = ["eager", "ours"] + (["optimum"] if peer is not None else [])
    times: dict[str, dict[str, list[float]]] = {name: {key: [] for key in workloads} for name in names}
    for key in workloads:
        log(f"timing {key}…")
        for round_ in range(rounds + 1):  # round 0 is the warm-up
            for name in names:
                measured = peer(key, calls) if name == "optimum" else timed_calls(runners[name][key], calls)
                if round_:
                    times[name][key] += measured
    if peer is not None:
        peer.close()
    results = {name: {key: statistics.median(v) * 1e3 for key, v in per.items()} for name, per in times.items()}

    has_optimum = "optimum" in results
    head = "| workload | eager ms | " + ("optimum-onnx ms | " if has_optimum else "") + "modelkiln ms | modelkiln vs eager |"
    head += " modelkiln vs optimum |" if has_optimum else ""
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for key in workloads:
        eager, ours = results["eager"][key], results["ours"][key]
        row = f"| {key} | {eager:.1f} | "
        if has_optimum:
            row += f"{results['optimum'][key]:.1f} | "
        row += f"{ours:.1f} | {eager / ours:.2f}× |"
        if has_optimum:
            row += f" {results['optimum'][key] / ours:.2f}× |"
        print(row)
    if skipped:
        print(f"\n{skipped}")
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    print(f"\n(median of {rounds * calls} calls in {rounds} interleaved rounds; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; onnxruntime default threads; load average {' '.join(load)})")


if __name__ == "__main__":
    main()
