"""Accuracy checks for quantized and fp16-converted decoder artifacts, where elementwise tolerances say little.

`AccuracyCase` runs eager fp32 over a held-out text in one forward pass (teacher forcing) and the artifact over the
same tokens: a prefill of all but the last `decode_steps` tokens, then one decode step per remaining token, so
both of the graph's paths are measured. Two figures are checked (the thresholds are the issue's defaults):

- top-1 agreement: the fraction of positions where both predict the same next token, ≥ 0.90;
- perplexity ratio: exp(mean next-token NLL) of the artifact over eager's, within 5% (≤ 1.05 and ≥ 1/1.05).

fp16-converted artifacts (graphs/float16.py) are held to stricter bounds: top-1 ≥ 0.98, perplexity within 1%.
Each report line states its bound: `top-1 agreement with eager fp32 | 0.9956 >= 0.98 (688 positions)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelkiln.runtime.generation import position_ids_from_mask
from modelkiln.validate.compare import MetricComparison
from modelkiln.validate.heldout_text import HELDOUT_TEXT

MIN_TOP1 = 0.90
MAX_PERPLEXITY_RATIO = 1.05
# Graphs converted to fp16 (graphs/float16.py) only round, so the bounds are stricter. Measured on
# SmolLM2-135M-Instruct (688 positions, CPU): top-1 0.994 unfused / 0.996 fused, perplexity ratio 1.000.
# (bf16 graphs cannot run on onnxruntime's CPU provider; validate refuses them.)
FP16_MIN_TOP1 = 0.98
FP16_MAX_PERPLEXITY_RATIO = 1.01


@dataclass(frozen=True)
class AccuracyCase:
    """Teacher-forced accuracy over a held-out text (at most `max_tokens`, capped by the context)."""

    text: str = HELDOUT_TEXT
    max_tokens: int = 1024
    decode_steps: int = 32
    min_top1: float = MIN_TOP1
    max_perplexity_ratio: float = MAX_PERPLEXITY_RATIO

    @property
    def name(self) -> str:
        return f"accuracy[teacher-forced,held-out text,{self.decode_steps} decode steps]"


def fp16_accuracy_case() -> AccuracyCase:
    """The accuracy case for an artifact converted to fp16: the stricter bounds."""
    return AccuracyCase(min_top1=FP16_MIN_TOP1, max_perplexity_ratio=FP16_MAX_PERPLEXITY_RATIO)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def perplexity(logits: np.ndarray, targets: np.ndarray) -> float:
    """exp(mean NLL) of `targets` [n] under `logits` [n, V]."""
    logp = _log_softmax(logits)
    return float(np.exp(-logp[np.arange(len(targets)), targets].mean()))


def compiled_logits(lm, ids: np.ndarray, decode_steps: int) -> np.ndarray:
    """[n, V] logits for ids [n]: one prefill, then `decode_steps` single-token steps on the numpy cache."""
    n = len(ids)
    split = max(1, n - decode_steps)
    mask = np.ones((1, split), np.int64)
    logits, cache = lm.forward(ids[None, :split], mask, position_ids_from_mask(mask), lm.empty_cache(1))
    rows = [logits[0]]
    for t in range(split, n):
        mask = np.ones((1, t + 1), np.int64)
        step, cache = lm.forward(ids[None, t:t + 1], mask, np.array([[t]], np.int64), cache)
        rows.append(step[0])
    return np.concatenate(rows, axis=0)


def run_accuracy_case(ctx, case: AccuracyCase):
    """`ctx` is validate.runner.CaseContext. Returns (outputs, tokens, metrics) like every case runner: only
    metric comparisons here."""
    if ctx.tokenizer is None:
        raise ValueError("the accuracy check needs the checkpoint's tokenizer")
    ids = np.array(ctx.tokenizer(case.text, add_special_tokens=False)["input_ids"], np.int64)
    limit = min(case.max_tokens, (ctx.context_length or case.max_tokens))
    ids = ids[:limit]
    mask = np.ones((1, len(ids)), np.int64)
    eager, _ = ctx.eager.forward(ids[None], mask, position_ids_from_mask(mask), ctx.eager.empty_cache(1))
    ours = compiled_logits(ctx.compiled, ids, min(case.decode_steps, len(ids) - 1))
    eager, ours, targets = eager[0, :-1], ours[:-1], ids[1:]
    agreement = float((eager.argmax(-1) == ours.argmax(-1)).mean())
    ppl_eager, ppl_ours = perplexity(eager, targets), perplexity(ours, targets)
    ratio = ppl_ours / ppl_eager
    positions = f"{len(targets)} positions"
    return [], [], [
        MetricComparison("top-1 agreement with eager fp32", agreement, ">=", case.min_top1, positions),
        MetricComparison("perplexity ratio (artifact / eager)", ratio, "<=", case.max_perplexity_ratio,
                         f"{ppl_ours:.3f} vs {ppl_eager:.3f}"),
        MetricComparison("perplexity ratio (eager / artifact)", 1 / ratio, "<=", case.max_perplexity_ratio,
                         "an artifact far better than eager is as suspicious as a worse one"),
    ]
