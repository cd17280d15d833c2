"""Run each case on eager PyTorch and on the artifact's graph (onnxruntime, CPU), then compare.

Run, compare and report are separate steps (Polygraphy's split): `run_case` produces a `CaseResult`
with `OutputComparison`s / `TokenComparison`s, `validate()` collects them into a `ParityReport`.
"""

from __future__ import annotations

import time
import traceback

import numpy as np

from modelkiln.runtime.generation import generate_greedy, position_ids_from_mask
from modelkiln.validate.accuracy import AccuracyCase, run_accuracy_case
from modelkiln.validate.cases import ForwardCase, GenerationCase, PromptCase
from modelkiln.validate.compare import compare_arrays, compare_tokens
from modelkiln.validate.report import CaseResult


class CaseContext:
    """What every case needs: both runtimes, the tokenizer, generation ids, tolerances, a seeded RNG."""

    def __init__(self, eager, compiled, tokenizer, generation: dict, tolerances, vocab_size: int, seed: int = 0):
        self.context_length = generation.get("context_length")
        self.eager = eager
        self.compiled = compiled
        self.tokenizer = tokenizer
        self.eos = list(generation.get("eos_token_id") or [])
        pad = generation.get("pad_token_id")
        self.pad = pad if pad is not None else (self.eos[0] if self.eos else 0)
        self.tolerance = tolerances  # callable: output name -> Tolerance
        self.vocab_size = vocab_size
        self.rng = np.random.default_rng(seed)

    def random_ids(self, batch: int, length: int) -> np.ndarray:
        return self.rng.integers(0, self.vocab_size, size=(batch, length), dtype=np.int64)


def left_pad_mask(batch: int, total: int, pad: tuple[int, ...]) -> np.ndarray:
    mask = np.ones((batch, total), dtype=np.int64)
    for row, n in enumerate(pad):
        mask[row, :n] = 0
    return mask


def compare_step(ctx: CaseContext, names: list[str], compiled_out, eager_out, mask: np.ndarray, seq: int):
    """Compare logits (at real query positions) and each present tensor (at real key positions)."""
    (c_logits, c_present), (e_logits, e_present) = compiled_out, eager_out
    results = [compare_arrays("logits", c_logits, e_logits, ctx.tolerance("logits"), mask=mask[:, -seq:])]
    kv_mask = mask[:, None, :, None].astype(bool)  # [b, 1, total, 1]
    for name, c, e in zip(names, c_present, e_present):
        results.append(compare_arrays(name, c, e, ctx.tolerance(name), mask=kv_mask))
    return results


def run_forward_case(ctx: CaseContext, case: ForwardCase):
    total = case.past + case.seq
    ids = ctx.random_ids(case.batch, total)
    mask = left_pad_mask(case.batch, total, case.pad)
    positions = position_ids_from_mask(mask)
    cache_eager = ctx.eager.empty_cache(case.batch)
    if case.past:  # the past comes from eager, and both sides get the same one
        _, cache_eager = ctx.eager.forward(ids[:, :case.past], mask[:, :case.past], positions[:, :case.past],
                                           cache_eager)
    args = (ids[:, case.past:], mask, positions[:, case.past:])
    compiled = ctx.compiled.forward(*args, [c.astype(ctx.compiled.kv.dtype) for c in cache_eager])
    eager = ctx.eager.forward(*args, cache_eager)
    names = ctx.compiled.output_names[1:]
    return compare_step(ctx, names, compiled, eager, mask, case.seq), [], []


def _encode_prompts(ctx: CaseContext, texts, chat: bool) -> tuple[np.ndarray, np.ndarray]:
    tok = ctx.tokenizer
    if chat:
        texts = [tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                         add_generation_prompt=True) for t in texts]
    encoded = [tok(t, add_special_tokens=not chat)["input_ids"] for t in texts]
    width = max(len(e) for e in encoded)
    ids = np.full((len(encoded), width), ctx.pad, dtype=np.int64)
    mask = np.zeros((len(encoded), width), dtype=np.int64)
    for row, e in enumerate(encoded):
        ids[row, width - len(e):] = e
        mask[row, width - len(e):] = 1
    return ids, mask


def run_prompt_case(ctx: CaseContext, case: PromptCase):
    ids, mask = _encode_prompts(ctx, case.texts, case.chat)
    positions = position_ids_from_mask(mask)
    batch = ids.shape[0]
    compiled = ctx.compiled.forward(ids, mask, positions, ctx.compiled.empty_cache(batch))
    eager = ctx.eager.forward(ids, mask, positions, ctx.eager.empty_cache(batch))
    return compare_step(ctx, ctx.compiled.output_names[1:], compiled, eager, mask, ids.shape[1]), [], []


def run_generation_case(ctx: CaseContext, case: GenerationCase):
    if ctx.tokenizer is not None and case.text:
        ids, mask = _encode_prompts(ctx, [case.text], case.chat)
    else:
        ids, mask = ctx.random_ids(1, 12), np.ones((1, 12), dtype=np.int64)
    expected = ctx.eager.generate_greedy(ids, mask, case.new_tokens, ctx.eos, ctx.pad)
    actual = generate_greedy(ctx.compiled, ids, mask, case.new_tokens, ctx.eos, min_new_tokens=case.new_tokens,
                             pad_token_id=ctx.pad)
    return [], [compare_tokens("greedy tokens", actual[0], expected[0])], []


_RUNNERS = {ForwardCase: run_forward_case, PromptCase: run_prompt_case, GenerationCase: run_generation_case,
            AccuracyCase: run_accuracy_case}
_KINDS = {PromptCase: "prompt", GenerationCase: "generation", AccuracyCase: "accuracy"}


def run_case(ctx: CaseContext, case, debug: bool = False) -> CaseResult:
    kind = case.kind if isinstance(case, ForwardCase) else _KINDS[type(case)]
    params = {k: v for k, v in case.__dict__.items()
              if k != "kind" and not (isinstance(v, str) and len(v) > 200)}  # not the held-out text
    start = time.perf_counter()
    try:
        outputs, tokens, metrics = _RUNNERS[type(case)](ctx, case)  # each runner: the three comparison lists
    except Exception as e:  # a crashing case is a reported failure, not an aborted validation
        if debug:
            traceback.print_exc()
        first = str(e).splitlines()[0] if str(e) else ""
        return CaseResult(case.name, kind, params, duration_s=time.perf_counter() - start,
                          error=f"{type(e).__name__}: {first}"[:500])
    return CaseResult(case.name, kind, params, outputs, tokens, duration_s=time.perf_counter() - start,
                      metrics=metrics)
