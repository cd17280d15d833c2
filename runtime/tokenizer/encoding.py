"""`Encoding` (the output of `Tokenizer.encode`) plus truncation and padding, as the Rust library does them.

Mirrors `tokenizers/src/tokenizer/encoding.rs`, `utils/truncation.rs` and `utils/padding.rs`,
including the quirks that show up in outputs: overflowing windows with a stride, overflowing
encodings combined pairwise when two encodings are merged, `sequence_ranges` dropped by truncation.

    >>> e = Encoding.from_tokens([(1, "a", (0, 1)), (2, "b", (2, 3)), (3, "c", (4, 5))], type_id=0)
    >>> e.truncate(2, stride=1)
    >>> e.ids, [o.ids for o in e.overflowing]
    ([1, 2], [[2, 3]])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


def _direction(value: str, where: str) -> str:
    """`"left"`/`"right"` from the Python API or `"Left"`/`"Right"` from tokenizer.json → lower case."""
    v = str(value).lower()
    if v not in ("left", "right"):
        raise ValueError(f"{where} must be 'left' or 'right', got {value!r}")
    return v


class Encoding:
    """Token ids and their alignments for one (possibly pair-merged) input.

    Fields match `tokenizers.Encoding`; `sequence_ranges` maps a sequence index (0 = first, 1 = pair)
    to the `(start, end)` token range it covers, empty meaning one sequence covering everything.
    """

    __slots__ = (
        "attention_mask",
        "ids",
        "offsets",
        "overflowing",
        "sequence_ranges",
        "special_tokens_mask",
        "tokens",
        "type_ids",
        "word_ids",
    )

    def __init__(
        self,
        ids: list[int] | None = None,
        type_ids: list[int] | None = None,
        tokens: list[str] | None = None,
        word_ids: list[int | None] | None = None,
        offsets: list[tuple[int, int]] | None = None,
        special_tokens_mask: list[int] | None = None,
        attention_mask: list[int] | None = None,
        overflowing: list[Encoding] | None = None,
        sequence_ranges: dict[int, tuple[int, int]] | None = None,
    ):
        self.ids = ids if ids is not None else []
        self.type_ids = type_ids if type_ids is not None else []
        self.tokens = tokens if tokens is not None else []
        self.word_ids = word_ids if word_ids is not None else []
        self.offsets = offsets if offsets is not None else []
        self.special_tokens_mask = special_tokens_mask if special_tokens_mask is not None else []
        self.attention_mask = attention_mask if attention_mask is not None else []
        self.overflowing = overflowing if overflowing is not None else []
        self.sequence_ranges = sequence_ranges if sequence_ranges is not None else {}

    @classmethod
    def from_tokens(cls, tokens: Iterable[Sequence[Any]], type_id: int = 0) -> Encoding:
        """An encoding of model `Token`s (`(id, value, offsets)`), no words, nothing special.

        >>> Encoding.from_tokens([(7, "hi", (0, 2))], type_id=1).type_ids
        [1]
        """
        tokens = list(tokens)
        n = len(tokens)
        return cls(
            ids=[t[0] for t in tokens],
            type_ids=[type_id] * n,
            tokens=[t[1] for t in tokens],
            word_ids=[None] * n,
            offsets=[tuple(t[2]) for t in tokens],
            special_tokens_mask=[0] * n,
            attention_mask=[1] * n,
        )

    # --- the Python `tokenizers.Encoding` surface -------------------------------------------------

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return (
            f"Encoding(num_tokens={len(self.ids)}, attributes=[ids, type_ids, tokens, offsets, "
            f"attention_mask, special_tokens_mask, overflowing])"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Encoding):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self.__slots__)

    @property
    def words(self) -> list[int | None]:
        """Deprecated alias of `word_ids`, kept because the library still has it."""
        return self.word_ids

    @property
    def n_sequences(self) -> int:
        return len(self.sequence_ranges) or 1

    def _sequence_range(self, sequence_id: int) -> tuple[int, int]:
        return self.sequence_ranges.get(sequence_id, (0, len(self.ids)))

    @property
    def sequence_ids(self) -> list[int | None]:
        """Which input sequence each token comes from (`None` for added special tokens).

        >>> e = Encoding(ids=[0, 1, 2], sequence_ranges={0: (1, 2)})
        >>> e.sequence_ids
        [None, 0, None]
        """
        out: list[int | None] = [None] * len(self.ids)
        for seq_id in range(self.n_sequences):
            start, end = self._sequence_range(seq_id)
            out[start:end] = [seq_id] * (end - start)
        return out

    def set_sequence_id(self, sequence_id: int) -> None:
        """Mark every token as belonging to `sequence_id`."""
        self.sequence_ranges[sequence_id] = (0, len(self.ids))

    def set_type_ids(self, type_ids: list[int]) -> None:
        self.type_ids = type_ids

    def token_to_sequence(self, token_index: int) -> int | None:
        if token_index > len(self.ids):  # subtle: `==` falls through, as in the library
            return None
        if not self.sequence_ranges:
            return 0
        for seq_id, (start, end) in self.sequence_ranges.items():
            if start <= token_index < end:
                return seq_id
        return None

    def token_to_chars(self, token_index: int) -> tuple[int, int] | None:
        if self.token_to_sequence(token_index) is None or not 0 <= token_index < len(self.offsets):
            return None
        return self.offsets[token_index]

    def token_to_word(self, token_index: int) -> int | None:
        if self.token_to_sequence(token_index) is None or not 0 <= token_index < len(self.word_ids):
            return None
        return self.word_ids[token_index]

    def word_to_tokens(self, word_index: int, sequence_index: int = 0) -> tuple[int, int] | None:
        """`(first token, last token + 1)` of a word in the given sequence."""
        seq_start, seq_end = self._sequence_range(sequence_index)
        if seq_start > seq_end or seq_end > len(self.word_ids):
            return None
        start = end = None
        for i, w in enumerate(self.word_ids[seq_start:seq_end]):
            if w is not None and w > word_index:  # `None` sorts before any word, as Rust's Option
                break
            if w == word_index:
                if start is None or i < start:
                    start = i
                if end is None or i >= end:
                    end = i + 1
        if start is None or end is None:
            return None
        return seq_start + start, seq_start + end

    def word_to_chars(self, word_index: int, sequence_index: int = 0) -> tuple[int, int] | None:
        span = self.word_to_tokens(word_index, sequence_index)
        if span is None or span[1] == 0:
            return None
        return self.offsets[span[0]][0], self.offsets[span[1] - 1][1]

    def char_to_token(self, char_pos: int, sequence_index: int = 0) -> int | None:
        seq_start, seq_end = self._sequence_range(sequence_index)
        if seq_start > seq_end or seq_end > len(self.offsets):
            return None
        for i, (start, end) in enumerate(self.offsets[seq_start:seq_end]):
            if start <= char_pos < end:
                return seq_start + i
        return None

    def char_to_word(self, char_pos: int, sequence_index: int = 0) -> int | None:
        token = self.char_to_token(char_pos, sequence_index)
        return None if token is None else self.token_to_word(token)

    # --- the Rust `Encoding` operations ------------------------------------------------------------

    def copy(self) -> Encoding:
        """A deep copy, overflowing encodings included (Rust `clone`)."""
        return Encoding(
            list(self.ids), list(self.type_ids), list(self.tokens), list(self.word_ids), list(self.offsets),
            list(self.special_tokens_mask), list(self.attention_mask), [o.copy() for o in self.overflowing],
            dict(self.sequence_ranges),
        )

    def _slice(self, start: int, stop: int) -> Encoding:
        return Encoding(
            self.ids[start:stop], self.type_ids[start:stop], self.tokens[start:stop], self.word_ids[start:stop],
            self.offsets[start:stop], self.special_tokens_mask[start:stop], self.attention_mask[start:stop],
        )

    def truncate(self, max_length: int, stride: int = 0, direction: str = "right") -> None:
        """Keep `max_length` tokens; the rest become `overflowing` windows overlapping by `stride`.

        >>> e = Encoding.from_tokens([(i, str(i), (i, i + 1)) for i in range(5)])
        >>> e.truncate(2, stride=1, direction="left")
        >>> e.ids, [o.ids for o in e.overflowing]
        ([3, 4], [[2, 3], [1, 2], [0, 1]])
        """
        direction = _direction(direction, "truncation direction")
        n = len(self.ids)
        if max_length >= n:
            return
        if max_length == 0:
            old = Encoding(
                self.ids, self.type_ids, self.tokens, self.word_ids, self.offsets, self.special_tokens_mask,
                self.attention_mask, self.overflowing, self.sequence_ranges,
            )
            self.__init__(overflowing=[old])
            return
        if stride >= max_length:
            raise ValueError(f"truncation stride ({stride}) must be smaller than max_length ({max_length})")
        step = max_length - stride
        parts: list[tuple[int, int]] = []
        if direction == "right":
            for start in range(0, n, step):
                stop = min(start + max_length, n)
                parts.append((start, stop))
                if stop == n:
                    break
        else:
            for last in range(n - 1, -1, -step):
                stop = last + 1
                start = max(0, stop - max_length)
                parts.append((start, stop))
                if start == 0:
                    break
        first = self._slice(*parts[0])
        # subtle: the original overflowing and sequence ranges are dropped, as the library does.
        first.overflowing = [self._slice(*p) for p in parts[1:]]
        for f in self.__slots__:
            setattr(self, f, getattr(first, f))

    @staticmethod
    def merge(encodings: Iterable[Encoding], growing_offsets: bool = True) -> Encoding:
        """Concatenate encodings (their overflowing ones are combined pairwise, see `merge_with`)."""
        out = Encoding()
        for e in encodings:
            out.merge_with(e, growing_offsets)
        return out

    def merge_with(self, pair: Encoding, growing_offsets: bool = True) -> None:
        """Append `pair` to this encoding, in place.

        Overflowing encodings become every combination the library builds: each of ours with
        `pair` and with each of `pair`'s, then ours as a whole with each of `pair`'s.
        """
        overflowings: list[Encoding] = []
        for self_o in self.overflowing:  # (usually none: only truncation with overflow makes them)
            n_enc = self_o.copy()
            n_enc.merge_with(pair.copy(), growing_offsets)
            overflowings.append(n_enc)
            for other_o in pair.overflowing:
                n_enc = self_o.copy()
                n_enc.merge_with(other_o.copy(), growing_offsets)
                overflowings.append(n_enc)
        for other_o in pair.overflowing:
            n_enc = self.copy()
            n_enc.merge_with(other_o.copy(), growing_offsets)
            overflowings.append(n_enc)

        n = len(self.ids)
        for seq_id, (start, end) in pair.sequence_ranges.items():
            self.sequence_ranges[seq_id] = (n + start, n + end)
        self.ids.extend(pair.ids)
        self.type_ids.extend(pair.type_ids)
        self.tokens.extend(pair.tokens)
        self.word_ids.extend(pair.word_ids)
        shift = self.offsets[-1][1] if growing_offsets and self.offsets else 0
        if shift:
            self.offsets.extend([(s + shift, e + shift) for s, e in pair.offsets])
        else:
            self.offsets.extend(pair.offsets)
        self.special_tokens_mask.extend(pair.special_tokens_mask)
        self.attention_mask.extend(pair.attention_mask)
        self.overflowing = overflowings

    def pad(
        self, target_length: int, pad_id: int = 0, pad_type_id: int = 0, pad_token: str = "[PAD]",
        direction: str = "right",
    ) -> None:
        """Pad this encoding and its overflowing ones to `target_length` (never truncates).

        >>> e = Encoding.from_tokens([(5, "x", (0, 1))])
        >>> e.pad(3, pad_id=0, direction="left")
        >>> e.ids, e.attention_mask, e.special_tokens_mask
        ([0, 0, 5], [0, 0, 1], [1, 1, 0])
        """
        direction = _direction(direction, "padding direction")
        for o in self.overflowing:
            o.pad(target_length, pad_id, pad_type_id, pad_token, direction)
        k = target_length - len(self.ids)
        if k <= 0:
            return
        fields = (
            ("ids", pad_id), ("type_ids", pad_type_id), ("tokens", pad_token), ("word_ids", None),
            ("attention_mask", 0), ("special_tokens_mask", 1), ("offsets", (0, 0)),
        )
        for name, value in fields:
            if direction == "left":
                setattr(self, name, [value] * k + getattr(self, name))
            else:
                getattr(self, name).extend([value] * k)
        if direction == "left":  # the sequences moved right by the padding
            self.sequence_ranges = {s: (a + k, b + k) for s, (a, b) in self.sequence_ranges.items()}


# --- truncation (`utils/truncation.rs`) ----------------------------------------------------------

_STRATEGIES = {
    "longest_first": "longest_first", "longestfirst": "longest_first",
    "only_first": "only_first", "onlyfirst": "only_first",
    "only_second": "only_second", "onlysecond": "only_second",
}


@dataclass(frozen=True)
class TruncationParams:
    """`enable_truncation` settings; `from_config` reads tokenizer.json's `"truncation"` object.

    >>> TruncationParams.from_config({"direction": "Right", "max_length": 8, "strategy": "OnlyFirst", "stride": 0})
    TruncationParams(max_length=8, stride=0, strategy='only_first', direction='right')
    """

    max_length: int = 512
    stride: int = 0
    strategy: str = "longest_first"
    direction: str = "right"

    def __post_init__(self) -> None:
        strategy = _STRATEGIES.get(str(self.strategy).lower())
        if strategy is None:
            raise ValueError(
                f"truncation strategy {self.strategy!r} is not one of longest_first, only_first, only_second"
            )
        object.__setattr__(self, "strategy", strategy)
        object.__setattr__(self, "direction", _direction(self.direction, "truncation direction"))
        if int(self.max_length) < 0 or int(self.stride) < 0:
            raise ValueError(f"truncation max_length and stride must be >= 0, got {self.max_length}, {self.stride}")

    @classmethod
    def from_config(cls, config: dict) -> TruncationParams:
        return cls(
            max_length=int(config.get("max_length", 512)),
            stride=int(config.get("stride", 0)),
            strategy=config.get("strategy", "longest_first"),
            direction=config.get("direction", "right"),
        )

    def as_dict(self) -> dict[str, Any]:
        """The form `tokenizers.Tokenizer.truncation` returns."""
        return {"max_length": self.max_length, "stride": self.stride, "strategy": self.strategy, "direction": self.direction}


def _truncation_params(params: TruncationParams | dict) -> TruncationParams:
    return params if isinstance(params, TruncationParams) else TruncationParams.from_config(params)


def truncate_encodings(
    encoding: Encoding, pair_encoding: Encoding | None, params: TruncationParams | dict
) -> tuple[Encoding, Encoding | None]:
    """Truncate a single or pair input to `params.max_length` tokens in total (in place; returned too).

    `longest_first` shortens the longer sequence first (then both, split evenly); `only_first` /
    `only_second` must be able to absorb the whole excess, else the library's error is raised.

    >>> a = Encoding.from_tokens([(i, "a", (i, i + 1)) for i in range(4)])
    >>> b = Encoding.from_tokens([(i, "b", (i, i + 1)) for i in range(8)])
    >>> a, b = truncate_encodings(a, b, TruncationParams(max_length=7))
    >>> len(a), len(b)
    (3, 4)
    """
    p = _truncation_params(params)
    if p.max_length == 0:
        encoding.truncate(0, p.stride, p.direction)
        if pair_encoding is not None:
            pair_encoding.truncate(0, p.stride, p.direction)
        return encoding, pair_encoding
    total = len(encoding) + (len(pair_encoding) if pair_encoding is not None else 0)
    if total <= p.max_length:
        return encoding, pair_encoding
    to_remove = total - p.max_length
    if p.strategy == "longest_first":
        if pair_encoding is None:
            encoding.truncate(total - to_remove, p.stride, p.direction)
            return encoding, pair_encoding
        n1, n2 = len(encoding), len(pair_encoding)
        swap = n1 > n2
        if swap:
            n1, n2 = n2, n1
        n2 = n1 if n1 > p.max_length else max(n1, p.max_length - n1)
        if n1 + n2 > p.max_length:
            n1 = p.max_length // 2
            n2 = n1 + p.max_length % 2
        if swap:
            n1, n2 = n2, n1
        encoding.truncate(n1, p.stride, p.direction)
        pair_encoding.truncate(n2, p.stride, p.direction)
        return encoding, pair_encoding
    if p.strategy == "only_first":
        target = encoding
    elif pair_encoding is not None:
        target = pair_encoding
    else:
        raise ValueError("Truncation error: Second sequence not provided")
    if len(target) <= to_remove:
        raise ValueError("Truncation error: Sequence to truncate too short to respect the provided max_length")
    target.truncate(len(target) - to_remove, p.stride, p.direction)
    return encoding, pair_encoding


# --- padding (`utils/padding.rs`) ----------------------------------------------------------------


@dataclass(frozen=True)
class PaddingParams:
    """`enable_padding` settings: `length=None` pads to the longest of the batch.

    >>> PaddingParams.from_config({"strategy": {"Fixed": 16}, "direction": "Left", "pad_to_multiple_of": None,
    ...                            "pad_id": 1, "pad_type_id": 0, "pad_token": "<pad>"}).length
    16
    """

    length: int | None = None
    pad_to_multiple_of: int | None = None
    pad_id: int = 0
    pad_type_id: int = 0
    pad_token: str = "[PAD]"
    direction: str = "right"

    def __post_init__(self) -> None:
        object.__setattr__(self, "direction", _direction(self.direction, "padding direction"))

    @classmethod
    def from_config(cls, config: dict) -> PaddingParams:
        strategy = config.get("strategy", "BatchLongest")
        if isinstance(strategy, dict) and "Fixed" in strategy:
            length = int(strategy["Fixed"])
        elif strategy in ("BatchLongest", "batch_longest", None):
            length = config.get("length")
        else:
            raise ValueError(f"padding strategy {strategy!r} is neither \"BatchLongest\" nor {{\"Fixed\": N}}")
        return cls(
            length=length,
            pad_to_multiple_of=config.get("pad_to_multiple_of"),
            pad_id=int(config.get("pad_id", 0)),
            pad_type_id=int(config.get("pad_type_id", 0)),
            pad_token=config.get("pad_token", "[PAD]"),
            direction=config.get("direction", "right"),
        )

    def as_dict(self) -> dict[str, Any]:
        """The form `tokenizers.Tokenizer.padding` returns."""
        return {
            "length": self.length, "pad_to_multiple_of": self.pad_to_multiple_of, "pad_id": self.pad_id,
            "pad_token": self.pad_token, "pad_type_id": self.pad_type_id, "direction": self.direction,
        }


def pad_encodings(encodings: list[Encoding], params: PaddingParams | dict) -> list[Encoding]:
    """Pad every encoding (in place; the list is returned too) to a fixed or batch-longest length.

    >>> es = [Encoding.from_tokens([(1, "a", (0, 1))] * n) for n in (1, 3)]
    >>> [len(e) for e in pad_encodings(es, PaddingParams(pad_to_multiple_of=4))]
    [4, 4]
    """
    p = params if isinstance(params, PaddingParams) else PaddingParams.from_config(params)
    if not encodings:
        return encodings
    length = p.length if p.length is not None else max(len(e) for e in encodings)
    multiple = p.pad_to_multiple_of
    if multiple and length % multiple:
        length += multiple - length % multiple
    for e in encodings:
        e.pad(length, p.pad_id, p.pad_type_id, p.pad_token, p.direction)
    return encodings
