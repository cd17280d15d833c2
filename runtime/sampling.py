"""Token selection: greedy argmax and seeded multinomial sampling, in numpy.

    rng = np.random.default_rng(seed)
    probs = softmax(apply_processors(processors, input_ids, logits))   # [b, V]
    tokens = sample(probs, rng)                                        # [b]

Sampling is inverse-CDF on a float64 cumulative sum: one uniform draw per row picks the first token whose
cumulative probability exceeds it. The same seed and the same probabilities give the same tokens on every run and
machine, but not the tokens torch picks for `torch.manual_seed(seed)`: torch.multinomial consumes its own RNG
stream differently, so seeded runs are reproducible within modelkiln, not token-identical to transformers.
"""

from __future__ import annotations

import numpy as np


def greedy(scores: np.ndarray) -> np.ndarray:
    """[b, V] -> [b] int64 argmax; ties pick the lowest id, like torch.argmax. [[1., 3., 3.]] -> [1]"""
    return np.argmax(scores, axis=-1)  # intp: int64 on every 64-bit platform numpy 2 supports


def _pick(cdf: np.ndarray, probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """First index whose cdf exceeds u × total, per row; never a zero-probability token."""
    total = cdf[:, -1:]  # [b, 1]; torch.multinomial does not need normalized weights either
    if not np.all(total > 0) or not np.all(np.isfinite(total)):
        raise ValueError("cannot sample: a row of probabilities is all zero, negative or not finite")
    ids = (cdf <= u[:, None] * total).sum(axis=-1)  # [b]; cdf is non-decreasing, so this counts the entries before
    # subtle: u × total can round up to total itself; fall back to the last token that has probability
    last_positive = probs.shape[-1] - 1 - np.argmax(probs[:, ::-1] > 0, axis=-1)  # [b]
    return np.minimum(ids, last_positive).astype(np.int64)


def sample(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one token per row of `probs` [b, V] (non-negative, need not sum to 1) -> [b] int64.

    >>> sample(np.array([[0.0, 1.0, 0.0], [0.5, 0.0, 0.5]]), np.random.default_rng(0)).tolist()
    [1, 0]
    """
    probs = np.asarray(probs, dtype=np.float64)
    if np.any(probs < 0):
        raise ValueError("cannot sample: negative probability")
    cdf = np.cumsum(probs, axis=-1)  # [b, V]
    return _pick(cdf, probs, rng.random(probs.shape[0]))


def sample_without_replacement(probs: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Draw `k` distinct tokens per row, in draw order, each with probability proportional to what is left
    (torch.multinomial(probs, k, replacement=False) semantics; beam sampling uses it). [b, V] -> [b, k] int64.

    >>> sample_without_replacement(np.array([[0.2, 0.0, 0.8]]), 2, np.random.default_rng(0)).tolist()
    [[2, 0]]
    """
    probs = np.array(probs, dtype=np.float64)  # a copy: drawn tokens are zeroed below
    if (probs > 0).sum(axis=-1).min() < k:
        raise ValueError(f"cannot draw {k} distinct tokens: a row has fewer tokens with non-zero probability")
    rows = np.arange(probs.shape[0])
    out = np.empty((probs.shape[0], k), dtype=np.int64)
    for j in range(k):
        out[:, j] = _pick(np.cumsum(probs, axis=-1), probs, rng.random(probs.shape[0]))
        probs[rows, out[:, j]] = 0.0
    return out
