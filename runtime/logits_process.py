"""Logits processors with transformers 5.23's exact rules, in numpy.

Each processor is a small frozen dataclass called as `processor(input_ids, scores) -> scores`:
input_ids [batch, cur_len] int (the prompt, left padding included, plus the tokens generated so far),
scores [batch, vocab] float. The result is a new float32 array; the input is never modified.

    processors = build_logits_processors(config, prompt_length=input_ids.shape[1], attention_mask=mask)
    scores = apply_processors(processors, input_ids, logits)   # then sample or argmax

Arithmetic is float32 with float32 constants, as torch computes `float32_tensor * python_float`, so penalties and
temperature give bit-identical results. Softmax-based filters (top-p, min-p) can differ from torch only when a
token's probability lies within a float32 rounding error of the cut-off; torch's CPU sort is unstable for rows
longer than 16, so when exactly equal logits straddle the top-p cut-off we keep the higher-index ones (stable order),
where torch's choice among the equal tokens is arbitrary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from modelkiln.runtime.generation_config import GenerationConfig
from modelkiln.runtime.sampling import greedy

NEG_INF = float("-inf")


# -- helpers -----------------------------------------------------------------------------------------------------

def softmax(scores: np.ndarray) -> np.ndarray:
    """Row softmax in float32. [[0., 0., -inf]] -> [[0.5, 0.5, 0.]]"""
    scores = np.asarray(scores, dtype=np.float32)
    shifted = scores - scores.max(axis=-1, keepdims=True)  # [b, V]; max subtracted so exp cannot overflow
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def log_softmax(scores: np.ndarray) -> np.ndarray:
    """Row log-softmax in float32. [[0., 0.]] -> [[-0.6931472, -0.6931472]]"""
    scores = np.asarray(scores, dtype=np.float32)
    shifted = scores - scores.max(axis=-1, keepdims=True)  # [b, V]
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _f32(x: np.ndarray) -> np.ndarray:
    # Logits from an fp16 graph are processed in float32, as transformers upcasts `outputs.logits` first.
    return np.asarray(x, dtype=np.float32)


def _mask_eos_in_place(scores: np.ndarray, eos_token_ids: Sequence[int]) -> None:
    """-inf at the EOS ids of scores [b, V] that exist in this vocabulary (torch.isin semantics: others are
    ignored). Indexes the few ids directly: an isin over the whole vocabulary cost 0.1 ms a step."""
    ids = [i for i in eos_token_ids if 0 <= i < scores.shape[-1]]
    scores[..., ids] = np.float32(NEG_INF)


def _check_keep(min_tokens_to_keep: int):
    if isinstance(min_tokens_to_keep, bool) or not isinstance(min_tokens_to_keep, int) or min_tokens_to_keep < 1:
        raise ValueError(f"min_tokens_to_keep={min_tokens_to_keep!r} must be a positive integer")


# -- processors (the order build_logits_processors uses) --------------------------------------------------------

@dataclass(frozen=True)
class RepetitionPenalty:
    """Scale the score of every token already present: divide positive scores by `penalty`, multiply negative ones.
    `prompt_ignore_length` (one int, or one per row) skips leading positions — transformers passes each row's
    left-padding length, so pad tokens are not penalized.

    >>> RepetitionPenalty(2.0)(np.array([[1, 1]]), np.array([[3., 4., -2.]], np.float32))
    array([[ 3.,  2., -2.]], dtype=float32)
    """

    penalty: float
    prompt_ignore_length: int | tuple[int, ...] | None = None

    def __post_init__(self):
        if not isinstance(self.penalty, float) or not self.penalty > 0:
            raise ValueError(f"repetition penalty={self.penalty!r} must be a strictly positive float")
        if isinstance(self.prompt_ignore_length, int) and self.prompt_ignore_length < 0:
            raise ValueError(f"prompt_ignore_length={self.prompt_ignore_length} must be >= 0")

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        scores = _f32(scores)
        batch, vocab = scores.shape
        ids = np.asarray(input_ids)
        if isinstance(self.prompt_ignore_length, int):
            ids = ids[:, self.prompt_ignore_length:]  # [b, t - ignore]
        elif self.prompt_ignore_length is not None:
            ignore = np.asarray(self.prompt_ignore_length)
            if ignore.shape != (batch,):
                raise ValueError(f"prompt_ignore_length has {ignore.shape[0]} rows for a batch of {batch}")
            # ignored positions point at a spare column past the vocab, dropped below
            ids = np.where(np.arange(ids.shape[1])[None, :] < ignore[:, None], vocab, ids)  # [b, t]
        # ids past the head's vocab (an embedding larger than lm_head) cannot be generated: spare column too
        ids = np.minimum(ids, vocab)
        seen = np.zeros((batch, vocab + 1), dtype=bool)  # [b, V + 1]
        seen[np.arange(batch)[:, None], ids] = True
        penalty = np.float32(self.penalty)
        penalized = np.where(scores < 0, scores * penalty, scores / penalty)
        return np.where(seen[:, :vocab], penalized, scores)


@dataclass(frozen=True)
class NoRepeatNGram:
    """Ban every token that would complete an n-gram already present in the row (prompt included).

    >>> NoRepeatNGram(2)(np.array([[5, 6, 5]]), np.zeros((1, 8), np.float32))[0].tolist()  # "5 6" seen: 6 banned
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -inf, 0.0]
    """

    ngram_size: int

    def __post_init__(self):
        if isinstance(self.ngram_size, bool) or not isinstance(self.ngram_size, int) or self.ngram_size <= 0:
            raise ValueError(f"ngram_size={self.ngram_size!r} must be a strictly positive integer")

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        scores = _f32(scores)
        ids = np.asarray(input_ids)
        batch, cur_len = ids.shape
        n = self.ngram_size
        if cur_len < n:  # no complete n-gram yet
            return scores.copy()
        vocab = scores.shape[-1]
        # The next token completes an n-gram that starts with the last n-1 tokens; every earlier window whose first
        # n-1 tokens equal that suffix bans its own last token. (For n=1 the suffix is empty: every seen token.)
        prefix = ids[:, cur_len + 1 - n:]  # [b, n - 1]
        windows = np.lib.stride_tricks.sliding_window_view(ids, n, axis=1)  # [b, cur_len - n + 1, n]
        matches = (windows[..., :-1] == prefix[:, None, :]).all(axis=-1)  # [b, cur_len - n + 1]
        banned = np.zeros((batch, vocab + 1), dtype=bool)  # [b, V + 1]; the spare column absorbs non-matches
        banned[np.arange(batch)[:, None], np.where(matches, np.minimum(windows[..., -1], vocab), vocab)] = True
        return np.where(banned[:, :vocab], np.float32(NEG_INF), scores)


class _EosBan:
    """The min-length processors: EOS ids (`eos_token_ids`) get -inf while the rows hold fewer tokens than
    `ban_until` (each subclass's property)."""

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        return self.apply_in_place(input_ids, _f32(scores).copy())

    def apply_in_place(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """`scores` is float32 and the caller's to modify (what `apply_processors` uses: one copy per step)."""
        if np.shape(input_ids)[-1] < self.ban_until:
            _mask_eos_in_place(scores, self.eos_token_ids)
        return scores


@dataclass(frozen=True)
class MinLength(_EosBan):
    """EOS ids get -inf while the whole row (prompt included) is shorter than `min_length`.

    >>> MinLength(4, (2,))(np.zeros((1, 3), np.int64), np.zeros((1, 3), np.float32))
    array([[  0.,   0., -inf]], dtype=float32)
    """

    min_length: int
    eos_token_ids: tuple[int, ...]

    def __post_init__(self):
        if isinstance(self.min_length, bool) or not isinstance(self.min_length, int) or self.min_length < 0:
            raise ValueError(f"min_length={self.min_length!r} must be a non-negative integer")

    @property
    def ban_until(self) -> int:
        """The EOS ids are banned while the rows hold fewer tokens than this (see `ban_schedule`)."""
        return self.min_length


@dataclass(frozen=True)
class MinNewTokensLength(_EosBan):
    """EOS ids (one or several) get -inf until `min_new_tokens` tokens follow the prompt of `prompt_length_to_skip`.

    >>> MinNewTokensLength(3, 2, (1, 2))(np.zeros((1, 4), np.int64), np.zeros((1, 4), np.float32))
    array([[  0., -inf, -inf,   0.]], dtype=float32)
    """

    prompt_length_to_skip: int
    min_new_tokens: int
    eos_token_ids: tuple[int, ...]

    def __post_init__(self):
        for name in ("prompt_length_to_skip", "min_new_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r} must be a non-negative integer")

    @property
    def ban_until(self) -> int:
        """The EOS ids are banned while the rows hold fewer tokens than this (see `ban_schedule`)."""
        return self.prompt_length_to_skip + self.min_new_tokens


@dataclass(frozen=True)
class Temperature:
    """Divide the scores by `temperature` (< 1 sharpens, > 1 flattens).

    >>> Temperature(0.5)(None, np.array([[1., -2.]], np.float32))
    array([[ 2., -4.]], dtype=float32)
    """

    temperature: float

    def __post_init__(self):
        if not isinstance(self.temperature, float) or not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature!r} must be a strictly positive float; "
                             "for greedy decoding pass do_sample=False")

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        return _f32(scores) / np.float32(self.temperature)


@dataclass(frozen=True)
class TopK:
    """Keep the `max(top_k, min_tokens_to_keep)` highest scores (and every score tied with the last of them).

    >>> TopK(2)(None, np.array([[1., 3., 2., 3.]], np.float32))
    array([[-inf,   3., -inf,   3.]], dtype=float32)
    """

    top_k: int
    min_tokens_to_keep: int = 1
    filter_value: float = NEG_INF

    def __post_init__(self):
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k <= 0:
            raise ValueError(f"top_k={self.top_k!r} must be a strictly positive integer")

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        scores = _f32(scores)
        vocab = scores.shape[-1]
        k = min(max(self.top_k, self.min_tokens_to_keep), vocab)
        kth_largest = np.partition(scores, vocab - k, axis=-1)[:, vocab - k:vocab - k + 1]  # [b, 1]
        return np.where(scores < kth_largest, np.float32(self.filter_value), scores)


@dataclass(frozen=True)
class TopP:
    """Nucleus filter: drop the least likely tokens whose probabilities sum to at most 1 - top_p
    (always keeping `min_tokens_to_keep`).

    >>> TopP(0.5)(None, np.log(np.array([[0.1, 0.6, 0.3]], np.float32)))[0].tolist()
    [-inf, -0.5108255743980408, -inf]
    """

    top_p: float
    min_tokens_to_keep: int = 1
    filter_value: float = NEG_INF

    def __post_init__(self):
        if not 0.0 <= float(self.top_p) <= 1.0:
            raise ValueError(f"top_p={self.top_p!r} must be in [0, 1]")
        _check_keep(self.min_tokens_to_keep)

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        scores = _f32(scores)
        order = np.argsort(scores, axis=-1, kind="stable")  # [b, V] ascending, like transformers
        ascending = np.take_along_axis(scores, order, axis=-1)  # [b, V]
        # torch's CPU cumsum accumulates float32 in double and rounds each prefix: do the same
        cumulative = np.cumsum(softmax(ascending).astype(np.float64), axis=-1).astype(np.float32)  # [b, V]
        remove_sorted = cumulative <= np.float32(1 - float(self.top_p))
        remove_sorted[:, -self.min_tokens_to_keep:] = False
        remove = np.empty_like(remove_sorted)
        np.put_along_axis(remove, order, remove_sorted, axis=-1)  # back to vocabulary order
        return np.where(remove, np.float32(self.filter_value), scores)


@dataclass(frozen=True)
class MinP:
    """Drop tokens whose probability is below `min_p` × the top token's probability.

    >>> MinP(0.5)(None, np.log(np.array([[0.5, 0.2, 0.3]], np.float32)))[0].tolist()
    [-0.6931471824645996, -inf, -1.2039728164672852]
    """

    min_p: float
    min_tokens_to_keep: int = 1
    filter_value: float = NEG_INF

    def __post_init__(self):
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p={self.min_p!r} must be in [0, 1]")
        _check_keep(self.min_tokens_to_keep)

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        scores = _f32(scores)
        probs = softmax(scores)
        threshold = np.float32(self.min_p) * probs.max(axis=-1, keepdims=True)  # [b, 1]
        remove = probs < threshold
        k = min(self.min_tokens_to_keep, probs.shape[-1])
        if k > 1:  # (k == 1: the top token is never below min_p × itself)
            top = np.argsort(-probs, axis=-1, kind="stable")[:, :k]  # [b, k]
            np.put_along_axis(remove, top, False, axis=-1)
        return np.where(remove, np.float32(self.filter_value), scores)


LogitsProcessor = RepetitionPenalty | NoRepeatNGram | MinLength | MinNewTokensLength | Temperature | TopK | TopP | MinP


# -- building the list -------------------------------------------------------------------------------------------

def build_logits_processors(config: GenerationConfig, prompt_length: int,
                            attention_mask: np.ndarray | None = None) -> list:
    """The processors transformers' `_get_logits_processor` builds for `config`, in its order: repetition penalty,
    no-repeat-ngram, min length, min new tokens; then, only when sampling, temperature, top-k, top-p, min-p.

    `prompt_length` is the padded prompt width. `attention_mask` [rows, prompt_length] (rows as the processors will
    see them, e.g. expanded by num_beams) lets the repetition penalty skip each row's left padding.

    >>> [type(p).__name__ for p in build_logits_processors(GenerationConfig(do_sample=True, temperature=0.7), 5)]
    ['Temperature', 'TopK']
    """
    processors: list = []
    if config.repetition_penalty != 1.0:
        ignore = None
        if attention_mask is not None:
            # index of each row's first real token = its left-padding length (argmax picks the first 1)
            ignore = tuple(int(i) for i in (np.asarray(attention_mask) != 0).argmax(axis=1))
        processors.append(RepetitionPenalty(float(config.repetition_penalty), ignore))
    if config.no_repeat_ngram_size > 0:
        processors.append(NoRepeatNGram(config.no_repeat_ngram_size))
    eos = config.eos_ids
    if eos:
        # generate() turns min_new_tokens into min_length = prompt + min_new_tokens and adds both processors;
        # they mask the same logits, both are kept so the list mirrors transformers'.
        min_length = config.min_length_for(prompt_length)
        if min_length > 0:
            processors.append(MinLength(min_length, eos))
        if config.min_new_tokens:
            processors.append(MinNewTokensLength(prompt_length, config.min_new_tokens, eos))
    if config.do_sample:
        # Beam sampling keeps at least one non-EOS candidate per beam so a beam can continue: one more than the
        # number of EOS ids (2 when there is none).
        keep = (len(eos) + 1 if eos else 2) if config.num_beams > 1 else 1
        if config.temperature != 1.0:
            processors.append(Temperature(float(config.temperature)))
        if config.top_k:
            processors.append(TopK(config.top_k, min_tokens_to_keep=keep))
        if config.top_p < 1.0:
            processors.append(TopP(float(config.top_p), min_tokens_to_keep=keep))
        if config.min_p is not None:
            processors.append(MinP(float(config.min_p), min_tokens_to_keep=keep))
    return processors


def ban_schedule(processors: Sequence) -> tuple[tuple[int, frozenset[int]], ...] | None:
    """When every processor only sets ids to -inf until the rows reach a length (the min-length ones, `ban_until`):
    their (length, ids) pairs, for `greedy_unless_banned`; else None.

    >>> ban_schedule([MinLength(5, (2,)), MinNewTokensLength(3, 4, (2, 7))])
    ((5, frozenset({2})), (7, frozenset({2, 7})))
    """
    if not all(hasattr(p, "ban_until") for p in processors):
        return None
    return tuple((p.ban_until, frozenset(p.eos_token_ids)) for p in processors)


def greedy_unless_banned(schedule: tuple[tuple[int, frozenset[int]], ...], cur_len: int,
                         scores: np.ndarray) -> np.ndarray | None:
    """The argmax [b] of the raw scores when none of it is an id `schedule` bans at `cur_len` tokens: banning only
    lowers other scores, so such an argmax is still the first maximum after the processors, and
    `greedy(apply_processors(...))` is skipped (a copy of [b, V] and a pass over it per step, ~0.1 ms on caches the
    weights just flushed). None when a row's argmax is banned: the caller runs the processors.

    >>> greedy_unless_banned(((5, frozenset({2})),), 4, np.array([[0., 1., 2.]])) is None
    True
    >>> greedy_unless_banned(((5, frozenset({2})),), 5, np.array([[0., 1., 2.]])).tolist()
    [2]
    """
    tokens = greedy(scores)
    banned = [ids for until, ids in schedule if cur_len < until]
    if banned:
        chosen = tokens.tolist()
        if any(not ids.isdisjoint(chosen) for ids in banned):
            return None
    return tokens


def apply_processors(processors: Sequence, input_ids: np.ndarray, scores: np.ndarray,
                     rows: np.ndarray | None = None) -> np.ndarray:
    """Run `processors` in order; [b, t] ids, [b, V] scores -> [b, V] float32 (a new array).

    `rows` [b]: when the caller stopped running finished rows, the original row index of each row given, so
    per-row state built for the full batch (the repetition penalty's padding lengths) follows its rows.

    >>> penalty = build_logits_processors(GenerationConfig(repetition_penalty=2.0), 2, np.array([[0, 1], [1, 1]]))
    >>> apply_processors(penalty, np.array([[0, 1]]), np.ones((1, 3), np.float32), rows=np.array([1])).tolist()
    [[0.5, 0.5, 1.0]]
    """
    scores = _f32(scores).copy()  # ours from here: processors with `apply_in_place` modify it, the rest copy
    for processor in processors:
        if rows is not None and isinstance(processor, RepetitionPenalty) \
                and isinstance(processor.prompt_ignore_length, tuple):
            narrowed = tuple(processor.prompt_ignore_length[int(r)] for r in rows)
            processor = RepetitionPenalty(processor.penalty, narrowed)
        in_place = getattr(processor, "apply_in_place", None)
        scores = in_place(input_ids, scores) if in_place else processor(input_ids, scores)
    return scores
