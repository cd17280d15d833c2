"""optimum-onnx's ORTModelForCausalLM (its own venv: optimum-onnx pins transformers<4.58).

MODEL_DIR is a transformers-4 checkpoint; the ONNX export is cached beside it in MODEL_DIR + "-optimum"."""

import os

import torch
from common import FirstTokenClock, args, now, report, timed_runs
from optimum.onnxruntime import ORTModelForCausalLM

model_dir, prompt_ids, new_tokens = args()
onnx_dir = model_dir.rstrip("/") + "-optimum"
if not os.path.isdir(onnx_dir):
    t = now()
    ORTModelForCausalLM.from_pretrained(model_dir, export=True).save_pretrained(onnx_dir)
    export_s = now() - t
else:
    export_s = None
start = now()
model = ORTModelForCausalLM.from_pretrained(onnx_dir)
load_s = now() - start
ids = {"input_ids": torch.tensor([prompt_ids]), "attention_mask": torch.ones((1, len(prompt_ids)), dtype=torch.long)}



def run_once():
    streamer = FirstTokenClock()
    t0 = now()
    out = model.generate(**ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                         streamer=streamer)
    return streamer.first - t0, now() - t0, out[0, len(prompt_ids):].tolist()


ttft, total, tokens = timed_runs(run_once)
size = sum(os.path.getsize(os.path.join(onnx_dir, f)) for f in os.listdir(onnx_dir))
report("optimum-onnx ORTModelForCausalLM", len(prompt_ids), new_tokens, load_s, ttft, total, tokens,
       export_s=export_s, artifact_mb=size / 1e6)
