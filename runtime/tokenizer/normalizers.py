"""Normalizers of tokenizer.json, each built by `build_normalizer(config)` from its `"type"`.

A normalizer edits a `NormalizedString` in place (keeping the alignments that map every normalized char
back to the input), exactly as the Rust library does:

    >>> n = build_normalizer({"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "StripAccents"},
    ...                                                            {"type": "Lowercase"}]})
    >>> n.normalize_str("Héllo Wörld")
    'hello world'
"""

from __future__ import annotations

import base64
import struct

import regex

from modelkiln.runtime.tokenizer.normalized import (
    WHITESPACE,
    NormalizedString,
    parse_ranges,
    ranges_class,
    ranges_set,
)

# The marks the library's StripAccents removes (its table is older than Python's `unicodedata` and also
# holds spacing marks such as U+0903), the nonspacing marks BertNormalizer removes (a different, Mn-only
# table), and what BertNormalizer's cleanup drops (Cc/Cf/Co of its Unicode version, NUL, U+FFFD).
# Kept verbatim, as measured on the library; see normalized.py.
STRIP_ACCENTS_MARKS = ranges_set(
    "300-36f,483-489,591-5bd,5bf,5c1-5c2,5c4-5c5,5c7,610-61a,64b-65f,670,6d6-6dc,6df-6e4,6e7-6e8,6ea-6ed,"
    "711,730-74a,7a6-7b0,7eb-7f3,816-819,81b-823,825-827,829-82d,859-85b,8d4-8e1,8e3-903,93a-93c,93e-94f,"
    "951-957,962-963,981-983,9bc,9be-9c4,9c7-9c8,9cb-9cd,9d7,9e2-9e3,a01-a03,a3c,a3e-a42,a47-a48,a4b-a4d,"
    "a51,a70-a71,a75,a81-a83,abc,abe-ac5,ac7-ac9,acb-acd,ae2-ae3,b01-b03,b3c,b3e-b44,b47-b48,b4b-b4d,"
    "b56-b57,b62-b63,b82,bbe-bc2,bc6-bc8,bca-bcd,bd7,c00-c03,c3e-c44,c46-c48,c4a-c4d,c55-c56,c62-c63,"
    "c81-c83,cbc,cbe-cc4,cc6-cc8,cca-ccd,cd5-cd6,ce2-ce3,d01-d03,d3e-d44,d46-d48,d4a-d4d,d57,d62-d63,"
    "d82-d83,dca,dcf-dd4,dd6,dd8-ddf,df2-df3,e31,e34-e3a,e47-e4e,eb1,eb4-eb9,ebb-ebc,ec8-ecd,f18-f19,f35,"
    "f37,f39,f3e-f3f,f71-f84,f86-f87,f8d-f97,f99-fbc,fc6,102b-103e,1056-1059,105e-1060,1062-1064,"
    "1067-106d,1071-1074,1082-108d,108f,109a-109d,135d-135f,1712-1714,1732-1734,1752-1753,1772-1773,"
    "17b4-17d3,17dd,180b-180d,1885-1886,18a9,1920-192b,1930-193b,1a17-1a1b,1a55-1a5e,1a60-1a7c,1a7f,"
    "1ab0-1abe,1b00-1b04,1b34-1b44,1b6b-1b73,1b80-1b82,1ba1-1bad,1be6-1bf3,1c24-1c37,1cd0-1cd2,1cd4-1ce8,"
    "1ced,1cf2-1cf4,1cf8-1cf9,1dc0-1df5,1dfb-1dff,20d0-20f0,2cef-2cf1,2d7f,2de0-2dff,302a-302f,3099-309a,"
    "a66f-a672,a674-a67d,a69e-a69f,a6f0-a6f1,a802,a806,a80b,a823-a827,a880-a881,a8b4-a8c5,a8e0-a8f1,"
    "a926-a92d,a947-a953,a980-a983,a9b3-a9c0,a9e5,aa29-aa36,aa43,aa4c-aa4d,aa7b-aa7d,aab0,aab2-aab4,"
    "aab7-aab8,aabe-aabf,aac1,aaeb-aaef,aaf5-aaf6,abe3-abea,abec-abed,fb1e,fe00-fe0f,fe20-fe2f,101fd,"
    "102e0,10376-1037a,10a01-10a03,10a05-10a06,10a0c-10a0f,10a38-10a3a,10a3f,10ae5-10ae6,11000-11002,"
    "11038-11046,1107f-11082,110b0-110ba,11100-11102,11127-11134,11173,11180-11182,111b3-111c0,"
    "111ca-111cc,1122c-11237,1123e,112df-112ea,11300-11303,1133c,1133e-11344,11347-11348,1134b-1134d,"
    "11357,11362-11363,11366-1136c,11370-11374,11435-11446,114b0-114c3,115af-115b5,115b8-115c0,"
    "115dc-115dd,11630-11640,116ab-116b7,1171d-1172b,11c2f-11c36,11c38-11c3f,11c92-11ca7,11ca9-11cb6,"
    "16af0-16af4,16b30-16b36,16f51-16f7e,16f8f-16f92,1bc9d-1bc9e,1d165-1d169,1d16d-1d172,1d17b-1d182,"
    "1d185-1d18b,1d1aa-1d1ad,1d242-1d244,1da00-1da36,1da3b-1da6c,1da75,1da84,1da9b-1da9f,1daa1-1daaf,"
    "1e000-1e006,1e008-1e018,1e01b-1e021,1e023-1e024,1e026-1e02a,1e8d0-1e8d6,1e944-1e94a,e0100-e01ef"
)
BERT_MARKS = ranges_set(
    "300-33f,342,345-36f,483-487,591-5bd,5bf,5c1-5c2,5c4-5c5,5c7,610-61a,64b-65f,670,6d6-6dc,6df-6e4,"
    "6e7-6e8,6ea-6ed,711,730-74a,7a6-7b0,7eb-7f3,816-819,81b-823,825-827,829-82d,859-85b,8e3-902,93a,93c,"
    "941-948,94d,951-957,962-963,981,9bc,9c1-9c4,9cd,9e2-9e3,a01-a02,a3c,a41-a42,a47-a48,a4b-a4d,a51,"
    "a70-a71,a75,a81-a82,abc,ac1-ac5,ac7-ac8,acd,ae2-ae3,b01,b3c,b3f,b41-b44,b4d,b56,b62-b63,b82,bc0,bcd,"
    "c00,c3e-c40,c46-c47,c4a-c4d,c55-c56,c62-c63,c81,cbc,cbf,cc6,ccc-ccd,ce2-ce3,d01,d41-d44,d4d,d62-d63,"
    "dca,dd2-dd4,dd6,e31,e34-e3a,e47-e4e,eb1,eb4-eb9,ebb-ebc,ec8-ecd,f18-f19,f35,f37,f39,f71-f72,f74,f77,"
    "f79-f7e,f80,f82-f84,f86-f87,f8d-f92,f94-f97,f99-f9c,f9e-fa1,fa3-fa6,fa8-fab,fad-fb8,fba-fbc,fc6,"
    "102d-1030,1032-1037,1039-103a,103d-103e,1058-1059,105e-1060,1071-1074,1082,1085-1086,108d,109d,"
    "135d-135f,1712-1714,1732-1734,1752-1753,1772-1773,17b4-17b5,17b7-17bd,17c6,17c9-17d3,17dd,180b-180d,"
    "18a9,1920-1922,1927-1928,1932,1939-193b,1a17-1a18,1a1b,1a56,1a58-1a5e,1a60,1a62,1a65-1a6c,1a73-1a7c,"
    "1a7f,1ab0-1abd,1b00-1b03,1b34,1b36-1b3a,1b3c,1b42,1b6b-1b73,1b80-1b81,1ba2-1ba5,1ba8-1ba9,1bab-1bad,"
    "1be6,1be8-1be9,1bed,1bef-1bf1,1c2c-1c33,1c36-1c37,1cd0-1cd2,1cd4-1ce0,1ce2-1ce8,1ced,1cf4,1cf8-1cf9,"
    "1dc0-1df5,1dfc-1dff,20d0-20dc,20e1,20e5-20f0,2cef-2cf1,2d7f,2de0-2dff,302a-302d,3099-309a,a66f,"
    "a674-a67d,a69e-a69f,a6f0-a6f1,a802,a806,a80b,a825-a826,a8c4,a8e0-a8f1,a926-a92d,a947-a951,a980-a982,"
    "a9b3,a9b6-a9b9,a9bc,a9e5,aa29-aa2e,aa31-aa32,aa35-aa36,aa43,aa4c,aa7c,aab0,aab2-aab4,aab7-aab8,"
    "aabe-aabf,aac1,aaec-aaed,aaf6,abe5,abe8,abed,fb1e,fe00-fe0f,fe20-fe2f,101fd,102e0,10376-1037a,"
    "10a01-10a03,10a05-10a06,10a0c-10a0f,10a38-10a3a,10a3f,10ae5-10ae6,11001,11038-11046,1107f-11081,"
    "110b3-110b6,110b9-110ba,11100-11102,11127-1112b,1112d,11130-11134,11173,11180-11181,111b6-111be,"
    "111ca-111cc,1122f-11231,11234,11236-11237,112df,112e3-112ea,11300-11301,1133c,11340,11366-1136c,"
    "11370-11374,114b3-114b8,114ba,114bf-114c0,114c2-114c3,115b2-115b5,115bc-115bd,115bf-115c0,"
    "115dc-115dd,11633-1163a,1163d,1163f-11640,116ab,116ad,116b0-116b5,116b7,1171d-1171f,11722-11725,"
    "11727-1172b,16af0-16af4,16b30-16b36,16f8f-16f92,1bc9d-1bc9e,1d167-1d169,1d17b-1d182,1d185-1d18b,"
    "1d1aa-1d1ad,1d242-1d244,1da00-1da36,1da3b-1da6c,1da75,1da84,1da9b-1da9f,1daa1-1daaf,1e8d0-1e8d6,"
    "e0100-e01ef"
)
_BERT_REMOVED = (
    "0-8,b-c,e-1f,7f-9f,ad,600-605,61c,6dd,70f,180e,200b-200f,202a-202e,2060-2064,2066-206f,e000-f8ff,"
    "feff,fff9-fffb,fffd,110bd,1bca0-1bca3,1d173-1d17a,e0001,e0020-e007f,f0000-ffffd,100000-10fffd"
)
_BERT_REMOVED_RE = regex.compile(ranges_class(_BERT_REMOVED))
_ASCII_CONTROL_RE = regex.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ASCII_SPACE_RE = regex.compile("[\t\n\x0b\x0c\r]")
_STRIP_ACCENTS_RE = regex.compile("[" + "".join(regex.escape(c) for c in sorted(STRIP_ACCENTS_MARKS)) + "]")
_BERT_MARKS_RE = regex.compile("[" + "".join(regex.escape(c) for c in sorted(BERT_MARKS)) + "]")
# BertNormalizer maps Rust `is_whitespace` chars (plus \t \n \r, already in it) to a plain space.
_WHITESPACE_NOT_SPACE_RE = regex.compile("[" + regex.escape(WHITESPACE.replace(" ", "")) + "]")
_CJK_RANGES = [
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
]
_CJK_RE = regex.compile("[" + "".join(f"{chr(a)}-{chr(b)}" for a, b in _CJK_RANGES) + "]")


# Extended grapheme clusters as UAX #29 defined them up to Unicode 15.0, which is what the library's
# `unicode-segmentation` does; the `regex` package's `\X` also applies the 15.1 Indic conjunct rule (GB9c)
# and would glue e.g. "क्ष" into one cluster.
def _gcb(value: str) -> str:
    return r"\p{Grapheme_Cluster_Break=" + value + "}"


_HANGUL_SYLLABLE = (
    f"(?:{_gcb('L')}*(?:{_gcb('V')}+|{_gcb('LV')}{_gcb('V')}*|{_gcb('LVT')}){_gcb('T')}*|{_gcb('L')}+|{_gcb('T')}+)"
)
_PICTO = rf"\p{{Extended_Pictographic}}(?:{_gcb('Extend')}*{_gcb('ZWJ')}\p{{Extended_Pictographic}})*"
_CONTROLS = _gcb("Control") + _gcb("CR") + _gcb("LF")
GRAPHEME = regex.compile(
    rf"\r\n|[{_CONTROLS}]|{_gcb('Prepend')}*"
    rf"(?:{_HANGUL_SYLLABLE}|{_gcb('Regional_Indicator')}{{2}}|{_PICTO}|[^{_CONTROLS}])"
    rf"[{_gcb('Extend')}{_gcb('ZWJ')}{_gcb('SpacingMark')}]*"
)


class Normalizer:
    """Base class: subclasses implement `normalize(NormalizedString)` in place."""

    def normalize(self, n: NormalizedString) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def normalize_str(self, s: str) -> str:
        """Normalize a plain string (the library's `normalize_str`)."""
        n = NormalizedString(s)
        self.normalize(n)
        return n.normalized


class BertNormalizer(Normalizer):
    """BERT's cleanup: drop control chars, map whitespace to " ", pad CJK ideographs, strip accents, lowercase.

    `strip_accents=None` follows `lowercase` (as BERT's uncased checkpoints expect).
    `"Héllo\\t世界"` -> `"hello  世  界 "`.
    """

    def __init__(self, clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True):
        self.clean_text = clean_text
        self.handle_chinese_chars = handle_chinese_chars
        self.strip_accents = lowercase if strip_accents is None else strip_accents
        self.lowercase = lowercase

    @classmethod
    def from_config(cls, c: dict) -> BertNormalizer:
        return cls(c.get("clean_text", True), c.get("handle_chinese_chars", True), c.get("strip_accents"),
                   c.get("lowercase", True))

    def normalize_in_place(self, text: str) -> str | None:
        """`text` normalized, where every char stays where it was (ASCII without control chars to remove: the
        alignments stay the identity), else None. The tokenizer's plain path (`Tokenizer._encode_plain`)."""
        if not text.isascii() or (self.clean_text and _ASCII_CONTROL_RE.search(text)):
            return None
        return self._ascii_chars(text)

    def _ascii_chars(self, text: str) -> str:
        """ASCII `text` without control chars: whitespace to " " (clean_text) and lowercase, char for char."""
        if self.clean_text and _ASCII_SPACE_RE.search(text):
            text = _ASCII_SPACE_RE.sub(" ", text)
        return text.lower() if self.lowercase else text

    def normalize(self, n: NormalizedString) -> None:
        if n.normalized.isascii():
            # ASCII needs no chinese-char, accent or Unicode work: a much shorter path.
            if self.clean_text and _ASCII_CONTROL_RE.search(n.normalized):
                n.filter(lambda c: not _ASCII_CONTROL_RE.match(c))
            n.normalized = self._ascii_chars(n.normalized)
            return
        if self.clean_text:
            if _BERT_REMOVED_RE.search(n.normalized):
                n.filter(lambda c: not _BERT_REMOVED_RE.match(c))
            if _WHITESPACE_NOT_SPACE_RE.search(n.normalized):
                # A 1:1 map: alignments do not move.
                n.normalized = _WHITESPACE_NOT_SPACE_RE.sub(" ", n.normalized)
        if self.handle_chinese_chars and _CJK_RE.search(n.normalized):
            # Both padding spaces are aligned with the ideograph.
            n.expand(lambda c: f" {c} " if _CJK_RE.match(c) else c)
        if self.strip_accents:
            n.nfd()
            if _BERT_MARKS_RE.search(n.normalized):
                n.filter(lambda c: c not in BERT_MARKS)
        if self.lowercase:
            n.lowercase()


class StripAccents(Normalizer):
    """Remove nonspacing marks (meant after NFD): `"e\\u0301"` -> `"e"`."""

    @classmethod
    def from_config(cls, c: dict) -> StripAccents:
        return cls()

    def normalize(self, n: NormalizedString) -> None:
        if _STRIP_ACCENTS_RE.search(n.normalized):
            n.filter(lambda c: c not in STRIP_ACCENTS_MARKS)


class Lowercase(Normalizer):
    """Per-char Unicode lowercase: `"ΣΑΣ"` -> `"σασ"` (no final-sigma rule, like Rust's `char::to_lowercase`)."""

    @classmethod
    def from_config(cls, c: dict) -> Lowercase:
        return cls()

    def normalize(self, n: NormalizedString) -> None:
        n.lowercase()


class UnicodeNormalizer(Normalizer):
    """NFC / NFD / NFKC / NFKD: `NFKC` maps `"ﬁ"` -> `"fi"`."""

    def __init__(self, form: str):
        self.form = form

    def normalize(self, n: NormalizedString) -> None:
        n.unicode_normalize(self.form)


class Strip(Normalizer):
    """Strip whitespace on the left and/or right: `"  hi  "` -> `"hi  "` with `strip_right=False`."""

    def __init__(self, strip_left=True, strip_right=True):
        self.strip_left = strip_left
        self.strip_right = strip_right

    @classmethod
    def from_config(cls, c: dict) -> Strip:
        return cls(c.get("strip_left", True), c.get("strip_right", True))

    def normalize(self, n: NormalizedString) -> None:
        if self.strip_left and self.strip_right:
            n.strip()
        elif self.strip_left:
            n.lstrip()
        elif self.strip_right:
            n.rstrip()


class Replace(Normalizer):
    """Replace a literal or an (Oniguruma) regex: `{"pattern": {"String": " "}, "content": "▁"}` -> `"a▁b"`."""

    def __init__(self, pattern, content: str):
        self.pattern = pattern
        self.content = content

    @classmethod
    def from_config(cls, c: dict) -> Replace:
        return cls(compile_pattern(c["pattern"], "Replace"), c.get("content", ""))

    def normalize(self, n: NormalizedString) -> None:
        n.replace(self.pattern, self.content)


class Prepend(Normalizer):
    """Prepend a string to non-empty input: `"▁"` turns `"hi"` into `"▁hi"`."""

    def __init__(self, prepend: str):
        self.prepend = prepend

    @classmethod
    def from_config(cls, c: dict) -> Prepend:
        return cls(c["prepend"])

    def normalize(self, n: NormalizedString) -> None:
        if n.normalized:
            n.prepend(self.prepend)


class Nmt(Normalizer):
    """SentencePiece's NMT cleanup: drop ASCII controls, map odd spaces (U+200B, U+FEFF, ...) to " "."""

    _REMOVE = regex.compile("[\x01-\x08\x0b\x0e-\x1f\x7f\x8f\x9f]")
    _SPACE = regex.compile("[\t\n\x0c\r\u1680\u200b-\u200f\u2028\u2029\u2581\ufeff\ufffd]")

    @classmethod
    def from_config(cls, c: dict) -> Nmt:
        return cls()

    def normalize(self, n: NormalizedString) -> None:
        if self._REMOVE.search(n.normalized):
            n.filter(lambda c: not self._REMOVE.match(c))
        n.normalized = self._SPACE.sub(" ", n.normalized)


class ByteLevel(Normalizer):
    """Map every UTF-8 byte to its GPT-2 printable char: `"é"` -> `"Ã©"`."""

    @classmethod
    def from_config(cls, c: dict) -> ByteLevel:
        return cls()

    def normalize(self, n: NormalizedString) -> None:
        if n.normalized:
            n.expand(byte_level_chars)


class Sequence(Normalizer):
    def __init__(self, normalizers: list[Normalizer]):
        self.normalizers = normalizers

    def normalize(self, n: NormalizedString) -> None:
        for normalizer in self.normalizers:
            normalizer.normalize(n)


class Precompiled(Normalizer):
    """SentencePiece's compiled normalization rules (`precompiled_charsmap`).

    The charsmap is `[u32 trie size][double-array trie (u32 units)][NUL-separated replacement strings]`;
    the trie maps UTF-8 byte strings to offsets into the replacements. As the library does, each
    extended grapheme cluster shorter than 6 bytes is looked up whole, otherwise char by char, and the
    *first* (shortest) prefix found in the trie gives the replacement for the whole chunk (so a grapheme
    such as "Ⅻ" + U+0301 becomes "XII": the accent goes with it, as in the library).
    E.g. with the `nmt_nfkc` rules, `"ｶﾞ"` -> `"ガ"` and `"①"` -> `"1"`.
    """

    _GRAPHEME = GRAPHEME

    def __init__(self, charsmap: bytes):
        if len(charsmap) < 4:
            raise ValueError("Precompiled normalizer: precompiled_charsmap is too short to hold a trie size")
        (trie_size,) = struct.unpack_from("<I", charsmap, 0)
        n_units = trie_size // 4
        if 4 + 4 * n_units > len(charsmap):
            raise ValueError("Precompiled normalizer: precompiled_charsmap is truncated (trie larger than the data)")
        self._units = struct.unpack_from(f"<{n_units}I", charsmap, 4)
        self._normalized = charsmap[4 + 4 * n_units :]
        self._cache: dict[str, str | None] = {}
        # Bytes that begin some key: a chunk whose first byte is not among them cannot match.
        root = self._units[0] if self._units else 0
        base = self._offset(root)
        self._first_bytes = frozenset(
            b for b in range(1, 256) if base ^ b < len(self._units) and self._label(self._units[base ^ b]) == b
        )

    @classmethod
    def from_config(cls, c: dict) -> Precompiled | None:
        data = c.get("precompiled_charsmap")
        if not data:
            return None
        return cls(base64.b64decode(data))

    # Darts-clone double-array unit layout.
    @staticmethod
    def _offset(unit: int) -> int:
        return (unit >> 10) << ((unit & (1 << 9)) >> 6)

    @staticmethod
    def _label(unit: int) -> int:
        return unit & ((1 << 31) | 0xFF)

    def _first_match(self, key: bytes) -> int | None:
        """Value of the shortest key that is a prefix of `key` (the library's `common_prefix_search(..)[0]`)."""
        units = self._units
        node = self._offset(units[0])
        for c in key:
            if c == 0:
                break
            node ^= c
            if node >= len(units):
                return None
            unit = units[node]
            if self._label(unit) != c:
                return None
            node ^= self._offset(unit)
            if (unit >> 8) & 1:
                return units[node] & ((1 << 31) - 1)
        return None

    def transform(self, chunk: str) -> str | None:
        """The replacement for `chunk`, or None when the rules leave it alone."""
        cached = self._cache.get(chunk, 0)
        if cached != 0:
            return cached
        key = chunk.encode("utf-8")
        result = None
        if key and key[0] in self._first_bytes:
            value = self._first_match(key)
            if value is not None:
                end = self._normalized.find(b"\0", value)
                result = self._normalized[value : end if end >= 0 else len(self._normalized)].decode("utf-8")
        self._cache[chunk] = result
        return result

    def normalize(self, n: NormalizedString) -> None:
        s = n.normalized
        if s.isascii() and not any(ord(c) in self._first_bytes for c in set(s)):
            return
        items: list[tuple[str, int]] = []
        modified = False
        for grapheme in self._GRAPHEME.findall(s):
            if len(grapheme.encode("utf-8")) < 6:
                norm = self.transform(grapheme)
                if norm is not None:
                    modified = True
                    _push_replacement(items, norm, len(grapheme))
                    continue
            for c in grapheme:
                norm = self.transform(c)
                if norm is not None:
                    modified = True
                    _push_replacement(items, norm, 1)
                else:
                    items.append((c, 0))
        if modified:
            n.transform(items, 0)


def _push_replacement(items: list[tuple[str, int]], norm: str, old_count: int) -> None:
    """Append the `(char, change)` items replacing `old_count` chars by `norm` (the library's bookkeeping).

    The first `old_count` new chars replace old ones, extra chars are insertions, and a shorter result
    removes the surplus after its first char. An empty result removes the chars by extending the previous
    item's removal -- at the very start there is none, and the library then leaves the alignments shifted.
    """
    new_count = len(norm)
    if not new_count:
        if items:
            c, change = items[-1]
            items[-1] = (c, change - old_count)
        return
    for i, c in enumerate(norm):
        if i == 0:
            items.append((c, new_count - old_count if new_count < old_count else 0))
        else:
            items.append((c, 0 if i < old_count else 1))


# --------------------------------------------------------------------------------------- byte-level alphabet
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable char table: printable Latin-1 bytes map to themselves."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTES_TO_CHAR = _bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTES_TO_CHAR.items()}
_ASCII_BYTE_LEVEL = "".join(BYTES_TO_CHAR[b] for b in range(128))
_BYTE_LEVEL_CACHE: dict[str, str] = {}


def byte_level_chars(c: str) -> str:
    """The byte-level chars of one char: `byte_level_chars(" ") == "Ġ"`, `byte_level_chars("é") == "Ã©"`."""
    out = _BYTE_LEVEL_CACHE.get(c)
    if out is None:
        out = _BYTE_LEVEL_CACHE[c] = "".join(BYTES_TO_CHAR[b] for b in c.encode("utf-8"))
    return out


ASCII_BYTE_LEVEL_TABLE = str.maketrans({chr(i): _ASCII_BYTE_LEVEL[i] for i in range(128)})


# --------------------------------------------------------------------------------------- patterns
# Oniguruma's `\w`: Alphabetic | Mark | Nd | Pc -- plus, outside a bracket class only, the Latin-1
# digits and fractions `²³¹¼½¾` (its single-byte ctype table answers there).
_ONIG_CLASS_WORD = r"\p{Alphabetic}\p{M}\p{Nd}\p{Pc}"
_ONIG_WORD = _ONIG_CLASS_WORD + r"\xb2\xb3\xb9\xbc\xbd\xbe"
_ONIG_CLASS_ESCAPES = {"w": _ONIG_CLASS_WORD, "h": "0-9a-fA-F"}
_ONIG_ESCAPES = {
    "w": "[" + _ONIG_WORD + "]",
    "W": "[^" + _ONIG_WORD + "]",
    "h": "[0-9a-fA-F]",
    "H": "[^0-9a-fA-F]",
    "z": r"\Z",  # Ruby's \z is the very end, which is `regex`'s \Z...
    "Z": r"(?=\n?\Z)",  # ...and Ruby's \Z also allows one final newline.
}
_INLINE_FLAGS = regex.compile(r"\(\?([imx]*)(?:-([imx]*))?([:)])")


def translate_onig(pattern: str) -> str:
    """Rewrite an Oniguruma (Ruby syntax) pattern for the `regex` package.

    The engines agree on `\\s`, `\\d`, `\\p{L}`, `\\p{N}`, lookarounds...; they differ on:
    `\\w` (see `_ONIG_WORD`; `regex`'s also holds Join_Control), `\\h` (a hex
    digit), `^`/`$` (always line anchors in Ruby), the `m` flag (Ruby's dot-all) and `\\z`/`\\Z`.
    `translate_onig(r"(?m:.)")` -> `r"(?s:.)"`; `translate_onig(r"^\\w")` -> `r"(?m:^)[\\p{Alphabetic}...]"`.
    """
    out = []
    i = 0
    in_class = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            e = pattern[i + 1]
            if in_class and e in _ONIG_CLASS_ESCAPES:
                out.append(_ONIG_CLASS_ESCAPES[e])
            elif not in_class and e in _ONIG_ESCAPES:
                out.append(_ONIG_ESCAPES[e])
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if c == "[":
                in_class += 1
            elif c == "]":
                in_class -= 1
            out.append(c)
        elif c == "[":
            in_class = 1
            out.append(c)
            # A `]` right after `[` or `[^` is a literal.
            if i + 1 < n and pattern[i + 1] == "^":
                out.append("^")
                i += 1
            if i + 1 < n and pattern[i + 1] == "]":
                out.append("\\]")
                i += 1
        elif c == "^" or c == "$":
            out.append("(?m:" + c + ")")
        elif c == "(" and pattern.startswith("(?", i):
            m = _INLINE_FLAGS.match(pattern, i)
            if m:
                on, off, tail = m.group(1), m.group(2), m.group(3)
                on, off = on.replace("m", "s"), (off or "").replace("m", "s")
                out.append("(?" + on + ("-" + off if off else "") + tail)
                i = m.end()
                continue
            out.append(c)
        else:
            out.append(c)
        i += 1
    return "".join(out)


def compile_pattern(config, where: str):
    """`{"String": "x"}` -> the literal (matched as is); `{"Regex": "..."}` -> a compiled Oniguruma-style regex."""
    if isinstance(config, str):
        return config
    if not isinstance(config, dict) or len(config) != 1:
        raise ValueError(f"{where}: pattern must be {{'String': ...}} or {{'Regex': ...}}, got {config!r}")
    ((kind, value),) = config.items()
    if kind == "String":
        return value
    if kind == "Regex":
        try:
            return regex.compile(translate_onig(value))
        except regex.error as e:
            raise ValueError(f"{where}: cannot compile regex {value!r}: {e}") from None
    raise ValueError(f"{where}: unknown pattern kind {kind!r}; expected 'String' or 'Regex'")


# --------------------------------------------------------------------------------------- the factory
def _unicode(form):
    return lambda c: UnicodeNormalizer(form)


_BUILDERS = {
    "BertNormalizer": BertNormalizer.from_config,
    "StripAccents": StripAccents.from_config,
    "Lowercase": Lowercase.from_config,
    "NFC": _unicode("NFC"),
    "NFD": _unicode("NFD"),
    "NFKC": _unicode("NFKC"),
    "NFKD": _unicode("NFKD"),
    "Strip": Strip.from_config,
    "Replace": Replace.from_config,
    "Prepend": Prepend.from_config,
    "Nmt": Nmt.from_config,
    "ByteLevel": ByteLevel.from_config,
    "Precompiled": Precompiled.from_config,
}


class _Identity(Normalizer):
    def normalize(self, n: NormalizedString) -> None:
        pass


def build_normalizer(config: dict | None, where: str = "normalizer") -> Normalizer | None:
    """Build the normalizer described by a tokenizer.json `"normalizer"` entry (None stays None).

    An unknown `"type"` raises `ValueError` naming it and where it sits, e.g. `normalizer.normalizers[2]`.
    """
    if config is None:
        return None
    if not isinstance(config, dict):
        raise ValueError(f"{where}: expected an object with a 'type', got {config!r}")
    kind = config.get("type")
    if kind == "Sequence":
        items = config.get("normalizers")
        if not isinstance(items, list):
            raise ValueError(f"{where}: Sequence needs a 'normalizers' list")
        built = [build_normalizer(c, f"{where}.normalizers[{i}]") for i, c in enumerate(items)]
        return Sequence([b if b is not None else _Identity() for b in built])
    builder = _BUILDERS.get(kind)
    if builder is None:
        known = ", ".join(sorted([*_BUILDERS, "Sequence"]))
        raise ValueError(f"{where}: unknown normalizer type {kind!r} (known: {known})")
    try:
        built = builder(config)
    except KeyError as e:
        raise ValueError(f"{where}: {kind} is missing the field {e.args[0]!r}") from None
    return built if built is not None else _Identity()


__all__ = [
    "BertNormalizer",
    "ByteLevel",
    "Lowercase",
    "Nmt",
    "Normalizer",
    "Precompiled",
    "Prepend",
    "Replace",
    "Sequence",
    "Strip",
    "StripAccents",
    "UnicodeNormalizer",
    "build_normalizer",
    "compile_pattern",
    "translate_onig",
    "parse_ranges",
]
