"""ONNX Runtime GenAI (its own venv). MODEL_DIR is a transformers-4 checkpoint; the model builder's fp32 CPU
build is cached in MODEL_DIR + "-ortgenai-fp32"."""

import os
import subprocess
import sys

import onnxruntime_genai as og
from common import args, now, report, timed_runs

model_dir, prompt_ids, new_tokens = args()
out_dir = model_dir.rstrip("/") + "-ortgenai-fp32"
if not os.path.isdir(out_dir):
    subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", model_dir, "-o", out_dir,
                    "-p", "fp32", "-e", "cpu", "-c", out_dir + "-cache"], check=True, stdout=subprocess.DEVNULL)
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
report("ONNX Runtime GenAI", len(prompt_ids), new_tokens, load_s, ttft, total, tokens)
