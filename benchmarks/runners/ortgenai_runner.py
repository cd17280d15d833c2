"""ONNX Runtime GenAI (its own venv). MODEL_DIR is a transformers checkpoint; the model builder's CPU build at
$BENCH_PRECISION (fp32, or int4: block size 32, accuracy level 4 — its recommended CPU recipe) is cached in
MODEL_DIR + "-ortgenai-<precision>"."""

import os
import subprocess
import sys

import onnxruntime_genai as og
from common import args, now, report, timed_runs

model_dir, prompt_ids, new_tokens = args()
precision = os.environ.get("BENCH_PRECISION", "fp32")
out_dir = model_dir.rstrip("/") + f"-ortgenai-{precision}"
if not os.path.isdir(out_dir):
    extra = ["--extra_options", "int4_block_size=32", "int4_accuracy_level=4"] if precision == "int4" else []
    subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", model_dir, "-o", out_dir,
                    "-p", precision, "-e", "cpu", "-c", out_dir + "-cache", *extra], check=True,
                   stdout=subprocess.DEVNULL)
start = now()
model = og.Model(out_dir)
load_s = now() - start


def run_once():
    params = og.GeneratorParams(model)
    total_len = len(prompt_ids) + new_tokens
    params.set_search_options(do_sample=False, max_length=total_len, min_length=total_len)
    generator = og.Generator(model, params)
    t0 = now()
    generator.append_tokens([prompt_ids])
    tokens, first = [], None
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
        if first is None:
            first = now()
    return first - t0, now() - t0, tokens


ttft, total, tokens = timed_runs(run_once)
report(f"ONNX Runtime GenAI {precision}", len(prompt_ids), new_tokens, load_s, ttft, total, tokens)
