"""Eager transformers generate() (the main venv)."""

import torch
from common import args, now, report, timed_runs
from transformers import AutoModelForCausalLM, TextStreamer

model_dir, prompt_ids, new_tokens = args()
start = now()
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
load_s = now() - start
ids = {"input_ids": torch.tensor([prompt_ids]), "attention_mask": torch.ones((1, len(prompt_ids)), dtype=torch.long)}


class FirstToken(TextStreamer):
    """Records when the first new token arrives (put() is called with the prompt first, then each token)."""

    def __init__(self):
        self.calls, self.first = 0, None

    def put(self, value):
        self.calls += 1
        if self.calls == 2:
            self.first = now()

    def end(self):
        pass


def run_once():
    streamer = FirstToken()
    t0 = now()
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             streamer=streamer)
    return streamer.first - t0, now() - t0, out[0, ids["input_ids"].shape[1]:].tolist()


ttft, total, tokens = timed_runs(run_once)
report("eager transformers", ids["input_ids"].shape[1], new_tokens, load_s, ttft, total, tokens)
