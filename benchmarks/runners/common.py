"""Shared by the generation runners (each runs in its own venv and prints one JSON line).

Protocol: `python RUNNER.py MODEL_DIR PROMPT_IDS_JSON NEW_TOKENS` → {"name", "prompt_tokens", "new_tokens",
"load_s", "ttft_s", "decode_tok_s", "total_tok_s", "tokens": [...], "peak_rss_mb", ...}.
Every runner starts from the same prompt ids (the chat template applied once, by the driver), decodes greedily exactly NEW_TOKENS tokens (EOS suppressed) after a warm-up run, and reports the
median of REPEATS timed runs.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

REPEATS = 3


def args():
    model_dir, prompt_ids, new_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
    return model_dir, json.loads(prompt_ids), new_tokens


def timed_runs(run_once):
    """run_once() -> (ttft_s, total_s, tokens). Warm-up once, then the median of REPEATS runs."""
    run_once()
    results = [run_once() for _ in range(REPEATS)]
    ttft = statistics.median(r[0] for r in results)
    total = statistics.median(r[1] for r in results)
    return ttft, total, results[-1][2]


def report(name, prompt_tokens, new_tokens, load_s, ttft, total, tokens, **extra):
    print(json.dumps({
        "name": name, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "load_s": load_s,
        "ttft_s": ttft, "decode_tok_s": (new_tokens - 1) / (total - ttft), "total_tok_s": new_tokens / total,
        "tokens": [int(t) for t in tokens], "peak_rss_mb": peak_rss_mb(),
        **extra}))


def peak_rss_mb() -> float:
    """This process's peak resident memory. Not getrusage's ru_maxrss: that survives exec, so a runner started
    by a driver holding a 2 GB model would report the driver's peak. VmHWM belongs to the new address space."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


class FirstTokenClock:
    """A transformers streamer (generate() only calls put/end) that records when the first new token arrives:
    put() gets the prompt first, then each token."""

    def __init__(self):
        self.calls, self.first = 0, None

    def put(self, value):
        self.calls += 1
        if self.calls == 2:
            self.first = now()

    def end(self):
        pass


def now():
    return time.perf_counter()
