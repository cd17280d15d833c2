"""modelkiln.runtime over an artifact (the main venv). Also measures the per-step Python overhead outside
onnxruntime's run (the cold start has its own runner: cold_start_runner.py)."""

import time

from common import args, now, report, timed_runs

model_dir, prompt_ids, new_tokens = args()
t_import = now()
import numpy as np  # noqa: E402

from modelkiln.runtime import pipeline  # noqa: E402
from modelkiln.runtime.generation import generate  # noqa: E402

pipe = pipeline("text-generation", model=model_dir)
load_s = now() - t_import
lm = pipe.model
ids = np.array([prompt_ids])
mask = np.ones_like(ids)
config = pipe.generation_config(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)

# Per-step overhead = decode wall time - time inside onnxruntime's run, per step. DecoderLM.step calls one of
# these once per step (run_with_iobinding for a fused graph's in-place cache). Measured twice: in wall time, and
# in this thread's CPU time (time.thread_time), which a shared machine does not inflate by descheduling us.
session_runs: list[float] = []
session_cpu: list[float] = []


def timed(method):
    def run(*a, **k):
        t, c = time.perf_counter(), time.thread_time()
        outputs = method(*a, **k)
        session_runs.append(time.perf_counter() - t)
        session_cpu.append(time.thread_time() - c)
        return outputs
    return run


lm.session.run_with_ort_values = timed(lm.session.run_with_ort_values)
lm.session.run_with_iobinding = timed(lm.session.run_with_iobinding)
overheads, cpu_overheads = [], []


def run_once():
    stamps, cpu_stamps = [], []
    session_runs.clear()
    session_cpu.clear()

    def on_token(rows, toks):
        stamps.append(now())
        cpu_stamps.append(time.thread_time())

    t0 = now()
    out = generate(lm, ids, mask, config, on_token=on_token)
    total = now() - t0
    steps = len(stamps) - 1  # decode steps between the first and the last token
    assert len(session_runs) == steps + 1, "the timing hook missed session runs"  # prefill + one per decode step
    overheads.append((stamps[-1] - stamps[0] - sum(session_runs[1:])) / steps)  # session_runs[0] is the prefill
    cpu_overheads.append((cpu_stamps[-1] - cpu_stamps[0] - sum(session_cpu[1:])) / steps)
    return stamps[0] - t0, total, out[0].tolist()


ttft, total, tokens = timed_runs(run_once)
import json as _json  # noqa: E402
import pathlib  # noqa: E402

quant = _json.loads((pathlib.Path(model_dir) / "modelkiln.json").read_text()).get("quantization")
name = "modelkiln " + (f"{quant['weights']} {quant['scheme']}" if quant else
                       "fp32" + (" fused" if lm.in_place else ""))
report(name, ids.shape[1], new_tokens, load_s, ttft, total, tokens,
       step_overhead_ms=1000 * sorted(overheads)[len(overheads) // 2],
       step_overhead_cpu_ms=1000 * sorted(cpu_overheads)[len(cpu_overheads) // 2])
