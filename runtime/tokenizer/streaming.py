"""Streaming detokenization for generation: feed ids one at a time, get text once it is complete.

The same algorithm as `tokenizers.decoders.DecodeStream` (`step_decode_stream` in the library):
re-decode a short window of recent ids, and emit only the part after the previously emitted
prefix, and only when the text does not end in U+FFFD (a character still cut in the middle by
byte-level or `<0xXX>` pieces). Re-decoding a window, rather than single tokens, keeps
context-dependent decoders right (Metaspace's leading space, WordPiece's `##` glue). The
concatenation of all chunks equals `tokenizer.decode(all_ids)`.

    >>> class Letters:  # any object with the Tokenizer's `decode(ids, skip_special_tokens)`
    ...     def decode(self, ids, skip_special_tokens=False):
    ...         return bytes(ids).decode("utf-8", "replace")
    >>> stream = DecodeStream()
    >>> [stream.step(Letters(), i) for i in b"h\\xc3\\xa9"]
    ['h', None, 'é']
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol


class _Decodes(Protocol):
    def decode(self, ids: list[int], skip_special_tokens: bool = ...) -> str: ...


class DecodeStream:
    """Incremental decoder state: `ids` still needed for context, and the text already emitted from them.

    `DecodeStream(skip_special_tokens=False, ids=None)`; `ids` pre-fills the context (e.g. the
    prompt) without emitting it. The library's positional order `DecodeStream(ids, skip)` also works.
    """

    def __init__(self, skip_special_tokens: bool | Iterable[int] | None = False, ids: Iterable[int] | None = None):
        if skip_special_tokens is not None and not isinstance(skip_special_tokens, bool):
            # `tokenizers.decoders.DecodeStream(ids, skip_special_tokens)` takes the ids first.
            skip_special_tokens, ids = (bool(ids) if isinstance(ids, bool) else False), skip_special_tokens
        self.skip_special_tokens = bool(skip_special_tokens)
        self.ids: list[int] = list(ids) if ids is not None else []
        # `prefix` is the decode of the context ids that was already emitted; the next chunk is what a
        # new decode adds after it. `prefix_index` is where the ids to keep for the next window start.
        self.prefix = ""
        self.prefix_index = 0

    def step(self, tokenizer: _Decodes, id: int | Iterable[int]) -> str | None:
        """Add one id (or a list of ids); return the newly completed text, or None if there is none yet."""
        new_ids = [id] if isinstance(id, int) else list(id)
        skip = self.skip_special_tokens
        if not self.prefix and self.ids:
            # Pre-filled (or nothing emitted yet): the decoded context is the prefix, unless incomplete.
            prefix = tokenizer.decode(self.ids, skip)
            if not prefix.endswith("\ufffd"):
                self.prefix = prefix
                self.prefix_index = len(self.ids)
        self.ids.extend(new_ids)
        text = tokenizer.decode(self.ids, skip)
        # subtle: the library compares UTF-8 byte lengths, not character counts.
        if len(text.encode("utf-8", "surrogatepass")) > len(self.prefix.encode("utf-8", "surrogatepass")) and not text.endswith("\ufffd"):
            if not text.startswith(self.prefix):
                raise ValueError(
                    f"Invalid prefix encountered while decoding stream. Token ID: {self.ids[-1]}, "
                    f"Expected prefix: '{self.prefix}', Actual string: '{text}'"
                )
            new_text = text[len(self.prefix):]
            new_prefix_index = len(self.ids) - self.prefix_index
            self.ids = self.ids[self.prefix_index:]
            self.prefix = tokenizer.decode(self.ids, skip)
            self.prefix_index = new_prefix_index
            return new_text
        return None

    def __copy__(self) -> DecodeStream:
        other = DecodeStream(self.skip_special_tokens, self.ids)
        other.prefix, other.prefix_index = self.prefix, self.prefix_index
        return other

    def __deepcopy__(self, memo: Any) -> DecodeStream:
        return self.__copy__()
