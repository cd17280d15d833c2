"""The KV-cache generation loop over a decoder graph, as small pure functions (gpt-fast style).

    tokens = generate_greedy(lm, input_ids, attention_mask, max_new_tokens=32, eos_token_ids=[2])

Rules follow transformers' `generate` so outputs match token for token: position ids are
`cumsum(attention_mask) - 1` (0 on left padding), a finished row keeps emitting `pad_token_id`,
`min_new_tokens` masks EOS logits to -inf until that many tokens exist.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from modelkiln.runtime.decoder import DecoderLM


def position_ids_from_mask(attention_mask: np.ndarray) -> np.ndarray:
    """[[0, 1, 1, 1]] -> [[0, 0, 1, 2]]: positions count real tokens only, so left padding does not shift them."""
    positions = np.cumsum(attention_mask, axis=-1) - 1  # [b, t]
    return np.where(attention_mask == 0, 0, positions)


def prefill(lm: DecoderLM, input_ids: np.ndarray, attention_mask: np.ndarray):
    """Run the prompt through the graph with an empty cache; return last-position logits [b, V] and the cache."""
    positions = position_ids_from_mask(attention_mask)  # [b, s]
    logits, cache = lm.forward(input_ids, attention_mask, positions, lm.empty_cache(input_ids.shape[0]))
    return logits[:, -1, :], cache  # [b, V]


def decode_one_token(lm: DecoderLM, tokens: np.ndarray, attention_mask: np.ndarray, cache: list[np.ndarray]):
    """tokens [b] at the position after `cache`; attention_mask [b, past + 1] → logits [b, V], grown cache."""
    positions = (np.cumsum(attention_mask, axis=-1)[:, -1:] - 1)  # [b, 1]
    logits, cache = lm.forward(tokens[:, None], attention_mask, positions, cache)
    return logits[:, -1, :], cache


def suppress_eos(logits: np.ndarray, eos_token_ids: Sequence[int]) -> np.ndarray:
    """min_new_tokens: EOS cannot be chosen yet (transformers' MinNewTokensLengthLogitsProcessor)."""
    logits = logits.copy()
    logits[:, list(eos_token_ids)] = -np.inf
    return logits


def greedy(logits: np.ndarray) -> np.ndarray:
    return np.argmax(logits, axis=-1)  # [b]; ties pick the lowest id, like torch.argmax


def generate_greedy(lm: DecoderLM, input_ids: np.ndarray, attention_mask: np.ndarray, max_new_tokens: int,
                    eos_token_ids: Sequence[int] = (), min_new_tokens: int = 0,
                    pad_token_id: int | None = None) -> np.ndarray:
    """Greedy decoding; returns the new tokens [b, n] (n <= max_new_tokens; stops when every row finished)."""
    eos = list(eos_token_ids)
    pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)
    batch = input_ids.shape[0]
    finished = np.zeros(batch, dtype=bool)
    out = []
    logits, cache = prefill(lm, input_ids, attention_mask)
    mask = attention_mask
    for step in range(max_new_tokens):
        if step < min_new_tokens and eos:
            logits = suppress_eos(logits, eos)
        tokens = np.where(finished, pad, greedy(logits))  # [b]
        out.append(tokens)
        if eos:
            finished |= np.isin(tokens, eos)
        if finished.all() or step == max_new_tokens - 1:
            break
        mask = np.concatenate([mask, np.ones((batch, 1), dtype=mask.dtype)], axis=1)  # [b, t + 1]
        logits, cache = decode_one_token(lm, tokens, mask, cache)
    return np.stack(out, axis=1) if out else np.zeros((batch, 0), dtype=np.int64)
