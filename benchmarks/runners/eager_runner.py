"""Eager transformers generate() (the main venv)."""

import torch
from common import FirstTokenClock, args, now, report, timed_runs
from transformers import AutoModelForCausalLM

model_dir, prompt_ids, new_tokens = args()
start = now()
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
load_s = now() - start
ids = {"input_ids": torch.tensor([prompt_ids]), "attention_mask": torch.ones((1, len(prompt_ids)), dtype=torch.long)}


def run_once():
    streamer = FirstTokenClock()
    t0 = now()
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             streamer=streamer)
    return streamer.first - t0, now() - t0, out[0, ids["input_ids"].shape[1]:].tolist()


ttft, total, tokens = timed_runs(run_once)
report("eager transformers", ids["input_ids"].shape[1], new_tokens, load_s, ttft, total, tokens)
