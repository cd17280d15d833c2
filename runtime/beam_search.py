"""Beam search with transformers 5.23's exact semantics (`GenerationMixin._beam_search`), vectorized in numpy,
over an abstract model step so any KV-cache layout can drive it.

    def step(ids, mask, first_call):          # ids [rows, s], mask [rows, past + s] -> last-position logits [rows, V]
        nonlocal cache
        positions = position_ids_from_mask(mask)[:, -ids.shape[1]:]
        logits, cache = lm.forward(ids, mask, positions, lm.empty_cache(len(ids)) if first_call else cache)
        return logits[:, -1]

    def reorder(beam_idx):                    # beam_idx [rows]: row i continues from row beam_idx[i]
        nonlocal cache
        cache = [c[beam_idx] for c in cache]

    out = beam_search(step, input_ids, attention_mask, config.merged(num_beams=4), reorder)
    out.sequences   # [batch * num_return_sequences, prompt + new], best first within each prompt
    out.scores      # [batch * num_return_sequences] float32: sum of log-probs / new_length ** length_penalty

Rules mirrored from transformers (they decide which sequences come back, so they are kept exactly):
- each step keeps the top `max(2, 1 + n_eos) * num_beams` continuations over all beams; those ending in EOS (or at
  max length) among the first `num_beams` of them are finished hypotheses, scored `logprob / new_len**length_penalty`,
  the others continue; only the first beam is live at the start (the others score -1e9).
- early_stopping=True stops a prompt once num_beams hypotheses finished; False stops once the best running beam,
  scored at the current length, cannot beat the worst finished one; "never" scores it at max length when
  length_penalty > 0 (the canonical, exhaustive rule).
- outputs are padded after EOS with `pad_token_id or eos_token_id[0]` (note `or`: a pad id of 0 falls through to
  EOS, as in transformers) and cut at the longest returned hypothesis.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from modelkiln.runtime.errors import ModelkilnError
from modelkiln.runtime.generation_config import GenerationConfig
from modelkiln.runtime.logits_process import apply_processors, build_logits_processors, log_softmax, softmax
from modelkiln.runtime.sampling import sample_without_replacement

# transformers' "minus infinity" for beams that must not be chosen: finite, so sums and sorts stay well defined
_MASKED = np.float32(-1.0e9)

StepFn = Callable[[np.ndarray, np.ndarray, bool], np.ndarray]
ReorderFn = Callable[[np.ndarray], None]


@dataclass(frozen=True)
class BeamOutput:
    sequences: np.ndarray  # [batch * num_return_sequences, prompt_len + n] int64, prompt included
    scores: np.ndarray  # [batch * num_return_sequences] float32, transformers' `sequences_scores`


def _topk(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values per row, largest first, like torch.topk (ties: lowest index first).
    [[1., 5., 3.]], k=2 -> [[1, 2]]"""
    n = values.shape[-1]
    if k < n:
        # partition first: beam rows are num_beams * vocab wide, a full sort per step would dominate
        candidates = np.sort(np.argpartition(-values, k - 1, axis=-1)[:, :k], axis=-1)  # [b, k] ascending ids
    else:
        candidates = np.broadcast_to(np.arange(n), values.shape)  # [b, n]
    order = np.argsort(-np.take_along_axis(values, candidates, axis=-1), axis=-1, kind="stable")  # [b, k]
    return np.take_along_axis(candidates, order, axis=-1)


def _gather_beams(array: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """array [b, beams, ...] gathered along axis 1 by indices [b, k] -> [b, k, ...]."""
    expanded = indices.reshape(indices.shape + (1,) * (array.ndim - 2))  # [b, k, 1, ...]
    return np.take_along_axis(array, expanded, axis=1)


def beam_search(step: StepFn, input_ids: np.ndarray, attention_mask: np.ndarray, config: GenerationConfig,
                reorder_cache: ReorderFn, *, rng: np.random.Generator | None = None,
                context_length: int | None = None,
                stop: Callable[[np.ndarray], np.ndarray] | None = None) -> BeamOutput:
    """Beam search (or beam sampling when `config.do_sample`) over `step`.

    input_ids, attention_mask [b, t]: the left-padded prompts. `step(ids, mask, first_call)` returns last-position
    logits [b * num_beams, V]; on the first call ids is the prompt expanded to [b * num_beams, t] (each prompt
    repeated num_beams times, consecutively), afterwards the one new token per row [b * num_beams, 1], with mask
    [b * num_beams, t + steps]. `reorder_cache(beam_idx)` is called before each later step: row i of the cache must
    become row beam_idx[i]. `rng` draws for beam sampling (default: seeded from config.seed). `context_length` caps
    the default length like max_position_embeddings. `stop(sequences [rows, cur_len]) -> bool [rows]` adds a
    stopping criterion (e.g. stop strings), checked on every candidate as transformers checks its criteria.

    A model whose next-token probabilities are always [.1, .6, .3], one new token:

    >>> logits = np.log(np.array([[.1, .6, .3]] * 2, np.float32))  # [b * num_beams, V]
    >>> out = beam_search(lambda ids, mask, first_call: logits, np.array([[5, 6]]), np.ones((1, 2), np.int64),
    ...                   GenerationConfig(num_beams=2, max_new_tokens=1), reorder_cache=lambda beam_idx: None)
    >>> out.sequences.tolist(), [round(float(s), 4) for s in out.scores]
    ([[5, 6, 1]], [-0.5108])
    """
    config.validate()
    num_beams = config.num_beams
    num_return = config.num_return_sequences
    if num_return > num_beams:
        raise ModelkilnError(f"num_return_sequences={num_return} is larger than num_beams={num_beams}; "
                             "raise num_beams or lower num_return_sequences")
    batch, prompt_len = input_ids.shape
    max_length = prompt_len + config.max_new_tokens_for(prompt_len, context_length)
    eos = np.asarray(config.eos_ids, dtype=np.int64)
    pad = config.effective_pad_token_id
    # transformers writes `pad_token_id or eos_token_id[0] if eos_token_id is not None else -1`: a pad id of 0 is
    # falsy, so it pads with the first EOS id; with no EOS at all it pads with -1.
    fill = (pad or int(eos[0])) if eos.size else -1
    length_penalty = config.length_penalty
    early_stopping = config.early_stopping
    if rng is None and config.do_sample:
        rng = np.random.default_rng(config.seed)

    # Keep (1 + n_eos) * num_beams candidates, so num_beams remain to continue even if the best all pick an EOS id.
    beams_to_keep = max(2, 1 + eos.size) * num_beams
    top_num_beam_mask = np.arange(beams_to_keep) < num_beams  # [K]: only these may become finished hypotheses

    flat_ids = np.repeat(input_ids, num_beams, axis=0)  # [b * nb, t]
    mask = np.repeat(attention_mask, num_beams, axis=0)  # [b * nb, t]
    processors = build_logits_processors(config, prompt_len, attention_mask=mask)

    running_sequences = np.full((batch, num_beams, max_length), fill, dtype=np.int64)  # [b, nb, L]
    running_sequences[:, :, :prompt_len] = flat_ids.reshape(batch, num_beams, prompt_len)  # [b, nb, t]
    sequences = running_sequences.copy()  # finished hypotheses, best first
    running_beam_scores = np.zeros((batch, num_beams), dtype=np.float32)
    running_beam_scores[:, 1:] = _MASKED  # identical beams at the start: only the first one may expand
    beam_scores = np.full((batch, num_beams), _MASKED, dtype=np.float32)
    is_sent_finished = np.zeros((batch, num_beams), dtype=bool)
    improvable = np.ones((batch, 1), dtype=bool)  # the early-stop heuristic is not yet satisfied
    running_beam_indices = np.full((batch, num_beams, max_length - prompt_len), -1, dtype=np.int32)  # [b, nb, n]
    beam_indices = running_beam_indices.copy()
    batch_offset = (np.arange(batch) * num_beams)[:, None]  # [b, 1]

    cur_len = prompt_len
    logits = step(flat_ids, mask, True)
    while True:
        # b. log-probs of every continuation, processed, plus each beam's running score
        flat_running = running_sequences[:, :, :cur_len].reshape(batch * num_beams, cur_len)  # [b * nb, cur]
        log_probs = apply_processors(processors, flat_running, log_softmax(logits))  # [b * nb, V]
        vocab = log_probs.shape[-1]
        accumulated = log_probs.reshape(batch, num_beams, vocab) + running_beam_scores[:, :, None]  # [b, nb, V]
        accumulated = accumulated.reshape(batch, num_beams * vocab)  # [b, nb * V]

        # c. top-K continuations over all beams of a prompt
        if config.do_sample:
            topk_indices = sample_without_replacement(softmax(accumulated), beams_to_keep, rng)  # [b, K]
        else:
            topk_indices = _topk(accumulated, beams_to_keep)  # [b, K]
        topk_log_probs = np.take_along_axis(accumulated, topk_indices, axis=-1)  # [b, K]
        source_beam = topk_indices // vocab  # [b, K]
        topk_sequences = _gather_beams(running_sequences, source_beam)  # [b, K, L]
        topk_sequences[:, :, cur_len] = topk_indices % vocab
        topk_beam_indices = _gather_beams(running_beam_indices, source_beam)  # [b, K, n]
        topk_beam_indices[:, :, cur_len - prompt_len] = source_beam + batch_offset

        # d. which candidates hit a stopping criterion (max length, an EOS id, the caller's `stop`)
        hits = np.isin(topk_sequences[:, :, cur_len], eos) | (cur_len + 1 >= max_length)  # [b, K]
        if stop is not None:
            candidates = topk_sequences[:, :, :cur_len + 1].reshape(batch * beams_to_keep, cur_len + 1)  # [b*K, c+1]
            hits |= np.asarray(stop(candidates), dtype=bool).reshape(batch, beams_to_keep)  # [b, K]

        # e. the best num_beams unfinished candidates run on
        topk_running_log_probs = topk_log_probs + hits.astype(np.float32) * _MASKED  # [b, K]
        keep = _topk(topk_running_log_probs, num_beams)  # [b, nb]
        running_sequences = _gather_beams(topk_sequences, keep)  # [b, nb, L]
        running_beam_scores = np.take_along_axis(topk_running_log_probs, keep, axis=-1)  # [b, nb]
        running_beam_indices = _gather_beams(topk_beam_indices, keep)  # [b, nb, n]

        # f. finished candidates among the first num_beams join the hypotheses if they beat the worst one
        just_finished = hits & top_num_beam_mask[None, :]  # [b, K]
        candidate_scores = topk_log_probs / np.float32((cur_len + 1 - prompt_len) ** length_penalty)  # [b, K]
        full = is_sent_finished.all(axis=-1, keepdims=True) & (early_stopping is True)  # [b, 1]
        candidate_scores = candidate_scores + full.astype(np.float32) * _MASKED
        candidate_scores = candidate_scores + (~improvable).astype(np.float32) * _MASKED
        candidate_scores = candidate_scores + (~just_finished).astype(np.float32) * _MASKED
        merged_scores = np.concatenate([beam_scores, candidate_scores], axis=1)  # [b, nb + K]
        best = _topk(merged_scores, num_beams)  # [b, nb]
        sequences = _gather_beams(np.concatenate([sequences, topk_sequences], axis=1), best)  # [b, nb, L]
        beam_scores = np.take_along_axis(merged_scores, best, axis=-1)  # [b, nb]
        beam_indices = _gather_beams(np.concatenate([beam_indices, topk_beam_indices], axis=1), best)  # [b, nb, n]
        is_sent_finished = np.take_along_axis(np.concatenate([is_sent_finished, just_finished], axis=1), best, axis=1)

        # g. stop? (transformers' _check_early_stop_heuristic and _beam_search_has_unfinished_sequences)
        step_beam_idx = running_beam_indices[:, :, cur_len - prompt_len].reshape(batch * num_beams)  # [b * nb]
        cur_len += 1
        if early_stopping == "never" and length_penalty > 0.0:
            best_length = max_length - prompt_len  # a longer hypothesis can only score higher: assume the longest
        else:
            best_length = cur_len - prompt_len
        best_running = running_beam_scores[:, :1] / np.float32(best_length ** length_penalty)  # [b, 1]
        worst_finished = np.where(is_sent_finished, beam_scores.min(axis=1, keepdims=True), _MASKED)  # [b, nb]
        improvable = improvable & (best_running > worst_finished).any(axis=-1, keepdims=True)  # [b, 1]
        all_full = bool(is_sent_finished.all()) and early_stopping is True
        if not improvable.any() or all_full or hits.all():
            break

        reorder_cache(step_beam_idx)
        mask = np.concatenate([mask, np.ones((batch * num_beams, 1), dtype=mask.dtype)], axis=1)  # [b*nb, cur]
        logits = step(running_sequences[:, :, cur_len - 1].reshape(batch * num_beams, 1), mask, False)

    # 5. the best num_return_sequences hypotheses per prompt, cut at the longest one returned
    sequences = sequences[:, :num_return].reshape(batch * num_return, max_length)  # [b * nr, L]
    scores = beam_scores[:, :num_return].reshape(batch * num_return)  # [b * nr]
    beam_indices = beam_indices[:, :num_return].reshape(batch * num_return, -1)  # [b * nr, n]
    generated = int((beam_indices != -1).sum(axis=1).max())
    return BeamOutput(sequences=sequences[:, :prompt_len + generated], scores=scores)
