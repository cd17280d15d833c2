"""The KV-cache generation loop over a decoder graph, as small pure functions (gpt-fast style).

    tokens = generate(lm, input_ids, attention_mask, GenerationConfig(max_new_tokens=32, eos_token_id=[2]))
    # [rows, n] new tokens; rows = batch * num_return_sequences; finished rows padded like transformers

Rules follow transformers' `generate` so outputs match token for token: position ids are
`cumsum(attention_mask) - 1` (0 on left padding); logits processors run in transformers' order
(`logits_process.build_logits_processors`); a finished row emits `pad_token_id` (else the first EOS id) until every
row is done. Unlike transformers, a finished row stops costing work: it is dropped from the batch the graph sees
(one cache gather when rows finish, none otherwise). The cache stays in onnxruntime OrtValues between steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from modelkiln.runtime.beam_search import beam_search
from modelkiln.runtime.decoder import DecoderLM, KVBuffers
from modelkiln.runtime.errors import ModelkilnError
from modelkiln.runtime.generation_config import GenerationConfig
from modelkiln.runtime.logits_process import (
    apply_processors,
    ban_schedule,
    build_logits_processors,
    greedy_unless_banned,
    softmax,
)
from modelkiln.runtime.sampling import greedy, sample

# on_token(rows, tokens): called after each step with the original row indices still running and their new tokens
TokenCallback = Callable[[np.ndarray, np.ndarray], None]
# stop(rows, new_tokens [len(rows), n]) -> bool [len(rows)]: extra stopping rule (stop strings), after each step
StopRule = Callable[[np.ndarray, np.ndarray], np.ndarray]


def position_ids_from_mask(attention_mask: np.ndarray) -> np.ndarray:
    """[[0, 1, 1, 1]] -> [[0, 0, 1, 2]]: positions count real tokens only, so left padding does not shift them."""
    positions = np.cumsum(attention_mask, axis=-1) - 1  # [b, t]
    return np.where(attention_mask == 0, 0, positions)


def prefill(lm: DecoderLM, input_ids: np.ndarray, attention_mask: np.ndarray, capacity: int | None = None):
    """Run the prompt with an empty cache; return last-position logits [b, V] and the cache (OrtValues). With
    `capacity` (prompt + new tokens) a graph that supports it gets a preallocated in-place cache."""
    cache = lm.new_cache(input_ids.shape[0], capacity) if capacity else None
    logits, cache = lm.step(input_ids, attention_mask, position_ids_from_mask(attention_mask), cache)
    return logits[:, -1, :], cache  # [b, V]


def decode_one_token(lm: DecoderLM, tokens: np.ndarray, attention_mask: np.ndarray, cache,
                     positions: np.ndarray | None = None):
    """tokens [b] at the position after `cache`; attention_mask [b, past + 1] → logits [b, V], grown cache.
    `positions` [b, 1]: the tokens' positions when the caller tracks them (else counted from the mask)."""
    if positions is None:
        positions = attention_mask.sum(axis=-1, keepdims=True) - 1  # [b, 1]
    logits, cache = lm.step(tokens[:, None], attention_mask, positions, cache)
    return logits[:, -1, :], cache


def check_lengths(prompt_length: int, new_tokens: int, context_length: int | None) -> None:
    if context_length and prompt_length + new_tokens > context_length:
        raise ModelkilnError(
            f"the prompt has {prompt_length} tokens and max_new_tokens={new_tokens}: {prompt_length + new_tokens} "
            f"exceeds the model's context of {context_length}; shorten the prompt (truncation=True) or lower "
            "max_new_tokens")


def generate(lm: DecoderLM, input_ids: np.ndarray, attention_mask: np.ndarray, config: GenerationConfig, *,
             context_length: int | None = None, rng: np.random.Generator | None = None,
             on_token: TokenCallback | None = None, stop: StopRule | None = None) -> np.ndarray:
    """Greedy, sampling or beam search per `config`; returns new tokens [batch * num_return_sequences, n]."""
    config.validate()
    prompt_length = input_ids.shape[1]
    max_new = config.max_new_tokens_for(prompt_length, context_length)
    check_lengths(prompt_length, max_new, context_length)
    config = config.merged(max_new_tokens=max_new, max_length=None)
    if rng is None:
        rng = np.random.default_rng(config.seed)
    if config.num_beams > 1:
        return _beam_generate(lm, input_ids, attention_mask, config, rng, context_length, stop)
    if config.num_return_sequences > 1:  # transformers repeats each prompt, consecutively
        input_ids = np.repeat(input_ids, config.num_return_sequences, axis=0)  # [b * n, t]
        attention_mask = np.repeat(attention_mask, config.num_return_sequences, axis=0)
    return _sample_loop(lm, input_ids, attention_mask, config, rng, on_token, stop)


def _sample_loop(lm, input_ids, attention_mask, config: GenerationConfig, rng, on_token, stop) -> np.ndarray:
    """Greedy or sampling. Per step, Python does only O(rows) work besides the processors: the ids, the mask and
    the positions live in buffers sized prompt + max_new_tokens, filled in place (no per-step concatenation).

    subtle: every numpy call here costs ~5-15 µs, not the ~1 µs it costs in a microbenchmark, because each step
    streams the weights through the caches and evicts numpy's and the interpreter's own code and data; so the
    step does as few calls as it can (greedy skips the processors' copy of the scores, EOS is checked on a Python
    list, all-rows-active steps use plain slices, a fused graph's step copies only the ids and the mask)."""
    rows, prompt = input_ids.shape
    eos = set(config.eos_ids)
    pad = config.effective_pad_token_id
    processors = build_logits_processors(config, prompt, attention_mask)
    bans = ban_schedule(processors) if processors and not config.do_sample else None  # greedy's no-copy path
    width = prompt + config.max_new_tokens
    # prompt + generated so far (processors see sequences[:, :t]); a finished row's tail gets the padding
    sequences = np.zeros((rows, width), np.int64)
    sequences[:, :prompt] = input_ids
    masks = np.ones((rows, width), np.int64)  # the active rows' masks: masks[:, :t]
    masks[:, :prompt] = attention_mask
    positions = attention_mask.sum(axis=-1, keepdims=True).astype(np.int64)  # [a, 1] the next token's position
    active = np.arange(rows)  # original row index of each row the graph still runs
    logits, cache = prefill(lm, input_ids, attention_mask, capacity=width)
    in_place = isinstance(cache, KVBuffers)  # a fused graph's cache: it tracks the rows' lengths itself
    produced = 0
    for step in range(config.max_new_tokens):
        length = prompt + step
        full = len(active) == rows
        tokens = None  # [a]; None: the processors run first
        if not processors and not config.do_sample:
            tokens = greedy(logits)
        elif bans:
            tokens = greedy_unless_banned(bans, length, logits)
        if tokens is None:
            seen = sequences[:, :length] if full else sequences[active, :length]
            scores = apply_processors(processors, seen, logits, rows=active) if processors else logits  # [a, V]
            tokens = sample(softmax(scores), rng) if config.do_sample else greedy(scores)
        if full:
            sequences[:, length] = tokens
        else:
            sequences[active, length] = tokens
        produced = step + 1
        if on_token is not None:
            on_token(active, tokens)
        finished = [i for i, token in enumerate(tokens.tolist()) if token in eos] if eos else []
        if stop is not None:
            finished = sorted(set(finished).union(np.flatnonzero(stop(active, sequences[active, prompt:length + 1]))
                                                  .tolist()))
        if step == config.max_new_tokens - 1 or len(finished) == len(active):
            break
        if finished:  # drop finished rows: they stop costing work; their tails get the padding now
            sequences[active[finished], length + 1:] = pad if pad is not None else 0
            keep = np.setdiff1d(np.arange(len(active)), finished)
            active, tokens, masks, positions = active[keep], tokens[keep], masks[keep], positions[keep]
            cache = lm.select_rows(cache, keep)
        if in_place:
            logits = cache.decode(lm.session, tokens)
        else:
            logits, cache = decode_one_token(lm, tokens, masks[:, :length + 1], cache, positions)
            positions += 1
    return sequences[:, prompt:prompt + produced]


def _beam_generate(lm, input_ids, attention_mask, config, rng, context_length, stop) -> np.ndarray:
    cache = None
    capacity = input_ids.shape[1] + config.max_new_tokens

    def step(ids: np.ndarray, mask: np.ndarray, first_call: bool) -> np.ndarray:
        nonlocal cache
        positions = position_ids_from_mask(mask)[:, -ids.shape[1]:]  # [rows, s]
        if first_call:
            cache = lm.new_cache(ids.shape[0], capacity)
        logits, cache = lm.step(ids, mask, positions, cache)
        return logits[:, -1, :]

    def reorder(beam_idx: np.ndarray) -> None:
        nonlocal cache
        cache = lm.select_rows(cache, beam_idx)

    beam_stop = None
    if stop is not None:
        def beam_stop(sequences: np.ndarray) -> np.ndarray:
            return stop(np.arange(len(sequences)), sequences[:, input_ids.shape[1]:])  # rows of the beam batch
    out = beam_search(step, input_ids, attention_mask, config, reorder, rng=rng, context_length=context_length,
                      stop=beam_stop)
    return out.sequences[:, input_ids.shape[1]:]


def generate_greedy(lm: DecoderLM, input_ids: np.ndarray, attention_mask: np.ndarray, max_new_tokens: int,
                    eos_token_ids: Sequence[int] = (), min_new_tokens: int = 0,
                    pad_token_id: int | None = None) -> np.ndarray:
    """Greedy decoding with an explicit length; returns new tokens [b, n] (what `validate` compares)."""
    config = GenerationConfig(max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens or None,
                              eos_token_id=tuple(eos_token_ids) or None, pad_token_id=pad_token_id)
    return generate(lm, input_ids, attention_mask, config)
