"""`NormalizedString`: a string being normalized, with every normalized char aligned to the original.

This mirrors the Rust `tokenizers::NormalizedString`, but counts characters instead of UTF-8 bytes
(the Rust library converts its byte offsets to char offsets at the very end; since every alignment
sits on char boundaries the two are equivalent). For each char of `normalized`, `alignments[i]` is
the `(start, end)` range of `original` it came from, so a token's offsets map back through any chain
of normalizations:

    >>> n = NormalizedString("Héllo")
    >>> n.nfd(); n.filter(lambda c: c != "\\u0301"); n.lowercase()
    >>> n.normalized, n.alignments
    ('hello', [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)])

Identity alignments are kept implicit (`_align is None`) until a transformation changes them:
most text never needs them materialized, and that keeps encoding fast.

The editing primitive is `transform_range(start, end, dest, initial_offset)`, with the library's
contract for `dest`, an iterable of `(char, change)`:
  - `change == 0`: the char replaces the next original char (and takes its alignment);
  - `change > 0`: the char is inserted (it takes the alignment of the char before it);
  - `change == -n`: the char replaces the next char and the `n` chars after it are removed.
Quirks of the library (e.g. an inserted char at position 0 aligned to `(0, 0)`) are kept on purpose:
the goal is offsets identical to `tokenizers`.
"""

from __future__ import annotations

import unicodedata
from typing import Callable, Iterable

import regex

# Rust's `char::is_whitespace` (the Unicode White_Space property); also what Oniguruma's `\s` and the
# `regex` package's `\s` match. Kept explicit because `str.isspace()` differs (it accepts \x1c-\x1f).
WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
WHITESPACE_SET = frozenset(WHITESPACE)
WHITESPACE_CLASS = "[" + regex.escape(WHITESPACE) + "]"

SPLIT_BEHAVIORS = ("removed", "isolated", "merged_with_previous", "merged_with_next", "contiguous")


# ---------------------------------------------------------------------------------------------------------
# Unicode data the library does not take from the current standard. These tables were derived by probing
# `tokenizers` over every code point (tests/runtime/tokenizer/test_normalizers.py re-derives them and fails
# if the installed library or Python's `unicodedata` disagree): they are facts about the library's Unicode
# versions, which differ from Python 3.11's `unicodedata` (Unicode 14.0).


def parse_ranges(spec: str) -> list[tuple[int, int]]:
    """`"41-5a,5f"` -> `[(0x41, 0x5a), (0x5f, 0x5f)]` (inclusive code point ranges, hex)."""
    out = []
    for part in spec.split(","):
        a, _, b = part.partition("-")
        out.append((int(a, 16), int(b or a, 16)))
    return out


def ranges_class(spec: str, negate: bool = False) -> str:
    """A `regex` character class for a range spec: `ranges_class("41-5a")` -> `"[A-Z]"` (escaped)."""
    esc = regex.escape
    body = "".join(esc(chr(a)) if a == b else esc(chr(a)) + "-" + esc(chr(b)) for a, b in parse_ranges(spec))
    return ("[^" if negate else "[") + body + "]"


def ranges_set(spec: str) -> frozenset[str]:
    return frozenset(chr(c) for a, b in parse_ranges(spec) for c in range(a, b + 1))


# Rust's `char::to_lowercase` (std, Unicode 16) where it differs from Python's `str.lower`: `start-end:+delta`.
_LOWER_DELTAS = "1c89:+1,a7cb:-a567,a7cc:+1,a7ce:+1,a7d2:+1,a7d4:+1,a7da:+1,a7dc:-a641,10d50-10d65:+20,16ea0-16eb8:+1b"
LOWER_EXCEPTIONS = {
    chr(c): chr(c + int(delta, 16))
    for span, delta in (item.split(":") for item in _LOWER_DELTAS.split(","))
    for a, b in parse_ranges(span)
    for c in range(a, b + 1)
}
# The `unicode-normalization-alignments` crate predates these: no canonical / compatibility decomposition,
# or combining class 0, as far as the library's NFD/NFC/NFKD/NFKC are concerned.
NFD_UNKNOWN = ranges_set("11938")
NFKD_UNKNOWN = ranges_set("32ff,a7f2-a7f4,ab69,10781-10785,10787-107b0,107b2-107ba,11938,1f16c,1fbf0-1fbf9")
CCC_UNKNOWN = ranges_set(
    "7fd,898-89f,8ca-8d3,9fe,c3c,d3b-d3c,eba,1715,1abf-1ace,1df6-1dfa,a82c,10d24-10d27,10eab-10eac,10f46-10f50,"
    "10f82-10f85,11070,1133b,1145e,11839-1183a,1193d-1193e,11943,119e0,11a34,11a47,11a99,11d42,11d44-11d45,11d97,"
    "16ff0-16ff1,1e130-1e136,1e2ae,1e2ec-1e2ef"
)


def lower_char(c: str) -> str:
    """Rust `char::to_lowercase` as a string: `lower_char("İ") == "i\u0307"`, `lower_char("Σ") == "σ"`."""
    return LOWER_EXCEPTIONS.get(c) or c.lower()


def is_whitespace(c: str) -> bool:
    """Rust `char::is_whitespace`: `is_whitespace("\\u3000") is True`, `is_whitespace("\\x1c") is False`."""
    return c in WHITESPACE_SET


class Invert:
    """Flip the match flags of a pattern (the library's `Invert`): split on what the pattern does *not* match."""

    __slots__ = ("pattern",)

    def __init__(self, pattern):
        self.pattern = pattern


def find_matches(pattern, text: str) -> list[tuple[int, int, bool]]:
    """Cover `text` with contiguous `(start, end, is_match)` pieces, like the library's `Pattern::find_matches`.

    `pattern` is a literal `str`, a compiled `regex` pattern, or `Invert(pattern)`.
    `find_matches("-", "a-b")` -> `[(0, 1, False), (1, 2, True), (2, 3, False)]`.
    """
    if isinstance(pattern, Invert):
        return [(s, e, not m) for s, e, m in find_matches(pattern.pattern, text)]
    if isinstance(pattern, str):
        if not pattern:
            # The library matches nothing with an empty literal.
            return [(0, len(text), False)]
        pattern = _literal_regex(pattern)
    if not text:
        return [(0, 0, False)]
    out = []
    prev = 0
    last_match_end = -1
    for m in pattern.finditer(text):
        start, end = m.span()
        # Oniguruma's iterator (as the Rust binding drives it) refuses an empty match right where the
        # previous match ended; Python's `finditer` allows it.
        if start == end and start == last_match_end:
            continue
        if prev != start:
            out.append((prev, start, False))
        out.append((start, end, True))
        prev = end
        last_match_end = end
    if prev != len(text):
        out.append((prev, len(text), False))
    return out


_LITERAL_CACHE: dict[str, regex.Pattern] = {}


def _literal_regex(s: str) -> regex.Pattern:
    pat = _LITERAL_CACHE.get(s)
    if pat is None:
        pat = _LITERAL_CACHE[s] = regex.compile(regex.escape(s))
    return pat


class NormalizedString:
    """The original string, its normalized version and their alignment (see the module docstring)."""

    __slots__ = ("original", "normalized", "_align", "original_shift")

    def __init__(self, original: str, normalized: str | None = None, alignments=None, original_shift: int = 0):
        self.original = original
        self.normalized = original if normalized is None else normalized
        # None means identity alignments: char i of normalized <-> (i, i + 1) of original (same length).
        self._align = alignments
        self.original_shift = original_shift

    # ----------------------------------------------------------------- accessors
    @property
    def alignments(self) -> list[tuple[int, int]]:
        if self._align is None:
            return [(i, i + 1) for i in range(len(self.normalized))]
        return self._align

    def _materialize(self) -> list[tuple[int, int]]:
        if self._align is None:
            self._align = [(i, i + 1) for i in range(len(self.normalized))]
        return self._align

    def __len__(self) -> int:
        return len(self.normalized)

    def __repr__(self) -> str:
        return f"NormalizedString(original={self.original!r}, normalized={self.normalized!r})"

    def is_empty(self) -> bool:
        return not self.normalized

    def offsets_original(self) -> tuple[int, int]:
        """Where this (possibly sliced) string sits in the whole original input."""
        return self.original_shift, self.original_shift + len(self.original)

    def convert_offsets(self, start: int, end: int) -> tuple[int, int] | None:
        """Map a normalized range to the original range it covers (library `convert_offsets(Range::Normalized)`).

        An empty range comes back unchanged (a library quirk); a range past the end gives None.
        """
        if start == end:
            return start, end
        if start > end:
            return None
        if self._align is None:
            if end > len(self.normalized):
                return None
            return start, end
        if end > len(self._align):
            return None
        return self._align[start][0], self._align[end - 1][1]

    def convert_original_offsets(self, start: int, end: int) -> tuple[int, int] | None:
        """Map an original range to the normalized range (library `convert_offsets(Range::Original)`)."""
        if start == end:
            return start, end
        if start > end:
            return None
        if not self.original and (start, end) == (0, 0):
            return 0, len(self.normalized)
        first = last = None
        for i, (a, b) in enumerate(self.alignments):
            if end < b:
                break
            if first is None and start <= a and a != b:
                first = i
            last = i + 1
        if first is not None and last is not None:
            return first, last
        if first is not None:
            return first, first
        if last is not None:
            return last, last
        return None

    # ----------------------------------------------------------------- slicing
    def slice(self, start: int, end: int) -> NormalizedString | None:
        """The piece of this string between normalized chars `start` and `end`, still aligned to the input."""
        n = len(self.normalized)
        if start < 0 or end > n or start > end:
            return None
        if self._align is None:
            # Identity alignments (though `normalized` may differ char for char, e.g. after lowercase).
            return NormalizedString(
                self.original[start:end], self.normalized[start:end], None, self.original_shift + start
            )
        o_range = self.convert_offsets(start, end)
        if o_range is None:
            return None
        o_start, o_end = o_range
        # The library fetches the original piece with a checked `get`, so a range past its end is "".
        original = self.original[o_start:o_end] if o_end <= len(self.original) else ""
        if o_start:
            align = [(a - o_start, b - o_start) for a, b in self._align[start:end]]
        else:
            align = self._align[start:end]
        return NormalizedString(original, self.normalized[start:end], align, self.original_shift + o_start)

    # ----------------------------------------------------------------- the editing primitive
    def transform_range(self, start: int, end: int, dest: Iterable[tuple[str, int]], initial_offset: int = 0) -> None:
        """Replace normalized chars `start:end` by `dest`, `(char, change)` items (see the module docstring).

        `initial_offset` chars at the start of the range are removed before the first item.
        """
        align = self._materialize()
        n_replaced = end - start
        pos = min(initial_offset, n_replaced)  # chars of the replaced range consumed so far
        idx = start + pos
        new_chars = []
        new_align = []
        for c, change in dest:
            if change > 0:
                a = align[idx - 1] if idx >= 1 else (0, 0)
            else:
                a = align[idx]
                if pos < n_replaced:
                    pos += 1
                    idx += 1
                if change < 0:
                    k = min(-change, n_replaced - pos)
                    pos += k
                    idx += k
            new_chars.append(c)
            new_align.append(a)
        s = self.normalized
        self.normalized = s[:start] + "".join(new_chars) + s[end:]
        align[start:end] = new_align

    def transform(self, dest: Iterable[tuple[str, int]], initial_offset: int = 0) -> None:
        self.transform_range(0, len(self.normalized), dest, initial_offset)

    # ----------------------------------------------------------------- char-wise operations
    def map(self, fn: Callable[[str], str]) -> None:
        """Replace every char by `fn(char)` (one char each): alignments do not move."""
        self.normalized = "".join(map(fn, self.normalized))

    def filter(self, keep: Callable[[str], bool]) -> None:
        """Drop the chars for which `keep` is False; the kept chars keep their alignments."""
        s = self.normalized
        flags = [keep(c) for c in s]
        if all(flags):
            return
        align = self._materialize()
        self.normalized = "".join(c for c, k in zip(s, flags) if k)
        self._align = [a for a, k in zip(align, flags) if k]

    def expand(self, fn: Callable[[str], str]) -> None:
        """Replace every char by the (non-empty) string `fn(char)`, all aligned like the source char.

        This is what the library's `(first, 0), (rest, +1)...` transformations amount to (lowercase,
        byte-level mapping, BertNormalizer's spaces around CJK ideographs).
        """
        s = self.normalized
        pieces = [fn(c) for c in s]
        out = "".join(pieces)
        if len(out) == len(s) and all(len(p) == 1 for p in pieces):
            self.normalized = out
            return
        align = self._materialize()
        new_align = []
        for a, p in zip(align, pieces):
            if len(p) == 1:
                new_align.append(a)
            else:
                new_align.extend([a] * len(p))
        self.normalized = out
        self._align = new_align

    def lowercase(self) -> None:
        # Per char, like Rust's context-free `char::to_lowercase` (no final-sigma rule).
        s = self.normalized
        if s.isascii():
            self.normalized = s.lower()
        else:
            self.expand(lower_char)

    def uppercase(self) -> None:
        s = self.normalized
        if s.isascii():
            self.normalized = s.upper()
        else:
            self.expand(str.upper)

    def prepend(self, s: str) -> None:
        """Insert `s` at the front; its chars are aligned to the first char (nothing happens when empty)."""
        if not self.normalized:
            return
        align = self._materialize()
        if not s:
            # Quirk kept from the library: its transformation re-inserts the first char, which then
            # gets the alignment of "nothing before it", (0, 0).
            align[0] = (0, 0)
            return
        self.normalized = s + self.normalized
        align[0:0] = [align[0]] * len(s)

    def append(self, s: str) -> None:
        """Append `s`; its chars are aligned to the last char ((0, 0) when the string is empty, as the library does)."""
        if not s:
            return
        align = self._materialize()
        last = align[-1] if align else (0, 0)
        self.normalized = self.normalized + s
        align.extend([last] * len(s))

    def clear(self) -> int:
        n = len(self.normalized)
        self.transform([], n)
        return n

    def lstrip(self) -> None:
        self._strip(True, False)

    def rstrip(self) -> None:
        self._strip(False, True)

    def strip(self) -> None:
        self._strip(True, True)

    def _strip(self, left: bool, right: bool) -> None:
        s = self.normalized
        n = len(s)
        lead = n - len(s.lstrip(WHITESPACE)) if left else 0
        trail = n - len(s.rstrip(WHITESPACE)) if right else 0
        if not lead and not trail:
            return
        if lead == n:
            # Everything is whitespace: the library's transformation removes every char.
            self.normalized = ""
            self._align = []
            return
        align = self.alignments
        self.normalized = s[lead : n - trail]
        self._align = align[lead : n - trail]

    # ----------------------------------------------------------------- unicode normal forms
    def nfd(self) -> None:
        self.unicode_normalize("NFD")

    def nfkd(self) -> None:
        self.unicode_normalize("NFKD")

    def nfc(self) -> None:
        self.unicode_normalize("NFC")

    def nfkc(self) -> None:
        self.unicode_normalize("NFKC")

    def unicode_normalize(self, form: str) -> None:
        """NFD / NFKD / NFC / NFKC with the library's alignments (see `_decompose` and `_recompose`)."""
        s = self.normalized
        # Already-normal text yields only `change == 0` items: alignments would not move.
        if s.isascii() or unicodedata.is_normalized(form, s):
            return
        compat = form in ("NFKD", "NFKC")
        items = _decompose(s, compat)
        if form in ("NFC", "NFKC"):
            items = _recompose(items)
        self.transform(items, 0)

    # ----------------------------------------------------------------- pattern based
    def replace(self, pattern, content: str) -> None:
        """Replace every match of `pattern` by `content` (library `NormalizedString::replace`).

        The inserted chars take the alignment of the last char of the match they replace (for an empty
        match, of the char before it). Built in one pass; the library's per-match edits give the same.
        """
        text = self.normalized
        n_content = len(content)
        if self._align is None and n_content == 1 and isinstance(pattern, str) and len(pattern) == 1:
            # One char for one char (Metaspace's " " -> "▁"): every alignment stays where it was.
            self.normalized = text.replace(pattern, content)
            return
        matches = [(s, e) for s, e, m in find_matches(pattern, text) if m]
        if not matches:
            return
        if self._align is None and n_content == 1 and all(e - s == 1 for s, e in matches):
            # One char for one char: every alignment stays where it was.
            out, prev = [], 0
            for s, e in matches:
                out.append(text[prev:s])
                out.append(content)
                prev = e
            out.append(text[prev:])
            self.normalized = "".join(out)
            return
        align = self.alignments
        chars: list[str] = []
        new_align: list[tuple[int, int]] = []
        prev = 0
        for s, e in matches:
            chars.append(text[prev:s])
            new_align.extend(align[prev:s])
            if n_content:
                if e > s:
                    a = align[e - 1]
                else:
                    a = new_align[-1] if new_align else (0, 0)
                chars.append(content)
                new_align.extend([a] * n_content)
            prev = e
        chars.append(text[prev:])
        new_align.extend(align[prev:])
        self.normalized = "".join(chars)
        self._align = new_align

    def split(self, pattern, behavior: str) -> list[NormalizedString]:
        """Split on `pattern`; `behavior` says what happens to the delimiters (library `SplitDelimiterBehavior`).

        For `"the-final--countdown"` split on `"-"`:
        removed `[the, final, countdown]`, isolated `[the, -, final, -, -, countdown]`,
        merged_with_previous `[the-, final-, -, countdown]`, merged_with_next `[the, -final, -, -countdown]`,
        contiguous `[the, -, final, --, countdown]`.
        """
        matches = find_matches(pattern, self.normalized)
        return [self.slice(s, e) for s, e in split_ranges(matches, behavior)]

    def split_ranges(self, pattern, behavior: str) -> list[tuple[int, int]]:
        return split_ranges(find_matches(pattern, self.normalized), behavior)

    def split_nonempty(self, pattern, behavior: str) -> list[NormalizedString]:
        """`split` without the empty pieces (which `PreTokenizedString.split` drops anyway), faster.

        The common cases -- a regex with the isolated or removed behavior, maybe inverted -- walk the
        matches once instead of building the full match list.
        """
        inverted = isinstance(pattern, Invert)
        rx = pattern.pattern if inverted else pattern
        if isinstance(rx, str) or behavior not in ("isolated", "removed"):
            return [p for p in self.split(pattern, behavior) if p.normalized]
        # "removed" drops what matches; inverted, the regex's matches are the kept pieces.
        keep_gaps = behavior == "isolated" or not inverted
        keep_matches = behavior == "isolated" or inverted
        text = self.normalized
        out = []
        prev = 0
        if self._align is None:
            # Identity alignments: a piece is the same slice of both strings (the hot path of encoding).
            original, shift = self.original, self.original_shift

            def sl(s, e, new=object.__new__, cls=NormalizedString):
                piece = new(cls)
                piece.original = original[s:e]
                piece.normalized = text[s:e]
                piece._align = None
                piece.original_shift = shift + s
                return piece
        else:
            sl = self.slice
        last_match_end = -1
        for m in rx.finditer(text):
            start, end = m.span()
            if start == end and start == last_match_end:
                continue  # refused by Oniguruma's iterator (see find_matches)
            if keep_gaps and prev < start:
                out.append(sl(prev, start))
            # An empty match still cuts the gap it sits in, but its own piece is empty.
            if keep_matches and start < end:
                out.append(sl(start, end))
            prev = last_match_end = end
        if keep_gaps and prev < len(text):
            out.append(sl(prev, len(text)))
        return out


def split_ranges(matches: list[tuple[int, int, bool]], behavior: str) -> list[tuple[int, int]]:
    """Turn `find_matches` output into the kept `(start, end)` pieces for a split behavior."""
    if behavior == "isolated":
        return [(s, e) for s, e, _ in matches]
    if behavior == "removed":
        return [(s, e) for s, e, m in matches if not m]
    out: list[list[int]] = []
    prev = False
    if behavior == "contiguous":
        for s, e, m in matches:
            if m == prev and out:
                out[-1][1] = e
            else:
                out.append([s, e])
            prev = m
    elif behavior == "merged_with_previous":
        for s, e, m in matches:
            if m and not prev and out:
                out[-1][1] = e
            else:
                out.append([s, e])
            prev = m
    elif behavior == "merged_with_next":
        for s, e, m in reversed(matches):
            if m and not prev and out:
                out[-1][0] = s
            else:
                out.append([s, e])
            prev = m
        out.reverse()
    else:
        raise ValueError(f"unknown split behavior {behavior!r}; expected one of {', '.join(SPLIT_BEHAVIORS)}")
    return [(s, e) for s, e in out]


# ===================================================================== unicode normalization with changes
# The library uses the `unicode-normalization-alignments` crate, which yields `(char, change)` pairs:
# a char's full decomposition gives `(first, 0), (rest, +1)...`; the pending non-starters are then
# stably sorted by combining class (carrying their change along); composing `k` with `ch` yields a char
# whose change is `change(k) + change(ch) - 1`. `transform` turns these into alignments.

_HANGUL_S, _HANGUL_L, _HANGUL_V, _HANGUL_T = 0xAC00, 0x1100, 0x1161, 0x11A7
_HANGUL_VCOUNT, _HANGUL_TCOUNT = 21, 28
_HANGUL_NCOUNT = _HANGUL_VCOUNT * _HANGUL_TCOUNT
_HANGUL_SCOUNT = 19 * _HANGUL_NCOUNT

_DECOMP_CACHE: dict[tuple[str, bool], str] = {}
_COMPOSE: dict[tuple[str, str], str] | None = None


def _combining(c: str) -> int:
    return 0 if c in CCC_UNKNOWN else unicodedata.combining(c)


def _full_decomposition(c: str, compat: bool) -> str:
    key = (c, compat)
    out = _DECOMP_CACHE.get(key)
    if out is not None:
        return out
    cp = ord(c)
    if _HANGUL_S <= cp < _HANGUL_S + _HANGUL_SCOUNT:
        si = cp - _HANGUL_S
        out = chr(_HANGUL_L + si // _HANGUL_NCOUNT) + chr(_HANGUL_V + (si % _HANGUL_NCOUNT) // _HANGUL_TCOUNT)
        if si % _HANGUL_TCOUNT:
            out += chr(_HANGUL_T + si % _HANGUL_TCOUNT)
    elif c in (NFKD_UNKNOWN if compat else NFD_UNKNOWN):
        out = c
    else:
        d = unicodedata.decomposition(c)
        if not d or (d.startswith("<") and not compat):
            out = c
        else:
            parts = d.split()
            if parts[0].startswith("<"):
                parts = parts[1:]
            out = "".join(_full_decomposition(chr(int(p, 16)), compat) for p in parts)
    _DECOMP_CACHE[key] = out
    return out


def _decompose(s: str, compat: bool) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    pending: list[tuple[int, str, int]] = []  # non-starters waiting for canonical ordering

    def flush():
        if pending:
            pending.sort(key=lambda t: t[0])  # stable: keeps text order inside a class
            out.extend((ch, chg) for _, ch, chg in pending)
            pending.clear()

    for c in s:
        for i, d in enumerate(_full_decomposition(c, compat)):
            ccc = _combining(d)
            change = 1 if i else 0
            if ccc == 0:
                flush()
                out.append((d, change))
            else:
                pending.append((ccc, d, change))
    flush()
    return out


def _compose_table() -> dict[tuple[str, str], str]:
    global _COMPOSE
    if _COMPOSE is None:
        table = {}
        for cp in range(0x2FA20):
            c = chr(cp)
            d = unicodedata.decomposition(c)
            if not d or d.startswith("<"):
                continue
            parts = d.split()
            if len(parts) != 2:
                continue
            # Primary composites only: composition exclusions and non-starter decompositions are not
            # recomposed, and those are exactly the chars that NFC maps away from themselves.
            if unicodedata.normalize("NFC", c) != c or c in NFD_UNKNOWN:
                continue
            table[(chr(int(parts[0], 16)), chr(int(parts[1], 16)))] = c
        _COMPOSE = table
    return _COMPOSE


def _compose(a: str, b: str) -> str | None:
    la, lb = ord(a), ord(b)
    if _HANGUL_L <= la < _HANGUL_L + 19 and _HANGUL_V <= lb < _HANGUL_V + _HANGUL_VCOUNT:
        return chr(_HANGUL_S + ((la - _HANGUL_L) * _HANGUL_VCOUNT + (lb - _HANGUL_V)) * _HANGUL_TCOUNT)
    if (
        _HANGUL_S <= la < _HANGUL_S + _HANGUL_SCOUNT
        and (la - _HANGUL_S) % _HANGUL_TCOUNT == 0
        and _HANGUL_T < lb < _HANGUL_T + _HANGUL_TCOUNT
    ):
        return chr(la + (lb - _HANGUL_T))
    return _compose_table().get((a, b))


def _recompose(items: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Canonical composition over `(char, change)` items, following the crate's state machine."""
    out: list[tuple[str, int]] = []
    buffer: list[tuple[str, int]] = []
    composee: tuple[str, int] | None = None
    last_ccc: int | None = None
    for ch, change in items:
        ch_class = _combining(ch)
        if composee is None:
            if ch_class != 0:
                out.append((ch, change))
                continue
            composee = (ch, change)
            continue
        k, k_change = composee
        if last_ccc is None:
            r = _compose(k, ch)
            if r is not None:
                composee = (r, k_change + change - 1)
                continue
            if ch_class == 0:
                out.append(composee)
                composee = (ch, change)
                continue
            buffer.append((ch, change))
            last_ccc = ch_class
        else:
            if last_ccc >= ch_class:
                # `ch` is blocked from the composee.
                if ch_class == 0:
                    out.append(composee)
                    out.extend(buffer)
                    buffer.clear()
                    composee = (ch, change)
                    last_ccc = None
                    continue
                buffer.append((ch, change))
                last_ccc = ch_class
                continue
            r = _compose(k, ch)
            if r is not None:
                composee = (r, k_change + change - 1)
                continue
            buffer.append((ch, change))
            last_ccc = ch_class
    if composee is not None:
        out.append(composee)
    out.extend(buffer)
    return out
