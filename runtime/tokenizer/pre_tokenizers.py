"""Pre-tokenizers of tokenizer.json and `PreTokenizedString`, the list of splits they work on.

A pre-tokenizer cuts the (normalized) input into splits -- roughly words -- that the model tokenizes
independently; every split stays aligned to the original string, which is where token offsets and
`word_ids` come from:

    >>> build_pre_tokenizer({"type": "Whitespace"}).pre_tokenize_str("Hey friend!  ")
    [('Hey', (0, 3)), ('friend', (4, 10)), ('!', (10, 11))]

Each type is built by `build_pre_tokenizer(config)` from its `"type"`; regexes written for Oniguruma
(the library's engine for `Split`) are translated for the `regex` package by `normalizers.translate_onig`.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable

import regex

from modelkiln.runtime.tokenizer.normalized import (
    WHITESPACE_CLASS,
    Invert,
    NormalizedString,
    ranges_class,
    ranges_set,
)
from modelkiln.runtime.tokenizer.normalizers import (
    ASCII_BYTE_LEVEL_TABLE,
    byte_level_chars,
    compile_pattern,
)

# Rust `char::is_ascii_punctuation || unicode_categories::is_punctuation` and `char::is_numeric`, as the
# library's (older or newer than Python's) Unicode tables have them; see normalized.py.
_PUNCT = (
    "21-2f,3a-40,5b-60,7b-7e,a1,a7,ab,b6-b7,bb,bf,37e,387,55a-55f,589-58a,5be,5c0,5c3,5c6,5f3-5f4,609-60a,"
    "60c-60d,61b,61e-61f,66a-66d,6d4,700-70d,7f7-7f9,830-83e,85e,964-965,970,af0,df4,e4f,e5a-e5b,f04-f12,"
    "f14,f3a-f3d,f85,fd0-fd4,fd9-fda,104a-104f,10fb,1360-1368,1400,166d-166e,169b-169c,16eb-16ed,"
    "1735-1736,17d4-17d6,17d8-17da,1800-180a,1944-1945,1a1e-1a1f,1aa0-1aa6,1aa8-1aad,1b5a-1b60,1bfc-1bff,"
    "1c3b-1c3f,1c7e-1c7f,1cc0-1cc7,1cd3,2010-2027,2030-2043,2045-2051,2053-205e,207d-207e,208d-208e,"
    "2308-230b,2329-232a,2768-2775,27c5-27c6,27e6-27ef,2983-2998,29d8-29db,29fc-29fd,2cf9-2cfc,2cfe-2cff,"
    "2d70,2e00-2e2e,2e30-2e42,3001-3003,3008-3011,3014-301f,3030,303d,30a0,30fb,a4fe-a4ff,a60d-a60f,a673,"
    "a67e,a6f2-a6f7,a874-a877,a8ce-a8cf,a8f8-a8fa,a8fc,a92e-a92f,a95f,a9c1-a9cd,a9de-a9df,aa5c-aa5f,"
    "aade-aadf,aaf0-aaf1,abeb,fd3e-fd3f,fe10-fe19,fe30-fe52,fe54-fe61,fe63,fe68,fe6a-fe6b,ff01-ff03,"
    "ff05-ff0a,ff0c-ff0f,ff1a-ff1b,ff1f-ff20,ff3b-ff3d,ff3f,ff5b,ff5d,ff5f-ff65,10100-10102,1039f,103d0,"
    "1056f,10857,1091f,1093f,10a50-10a58,10a7f,10af0-10af6,10b39-10b3f,10b99-10b9c,11047-1104d,"
    "110bb-110bc,110be-110c1,11140-11143,11174-11175,111c5-111c9,111cd,111db,111dd-111df,11238-1123d,"
    "112a9,114c6,115c1-115d7,11641-11643,1173c-1173e,12470-12474,16a6e-16a6f,16af5,16b37-16b3b,16b44,"
    "1bc9f,1da87-1da8b"
)
_NUMERIC = (
    "30-39,b2-b3,b9,bc-be,660-669,6f0-6f9,7c0-7c9,966-96f,9e6-9ef,9f4-9f9,a66-a6f,ae6-aef,b66-b6f,b72-b77,"
    "be6-bf2,c66-c6f,c78-c7e,ce6-cef,d58-d5e,d66-d78,de6-def,e50-e59,ed0-ed9,f20-f33,1040-1049,1090-1099,"
    "1369-137c,16ee-16f0,17e0-17e9,17f0-17f9,1810-1819,1946-194f,19d0-19da,1a80-1a89,1a90-1a99,1b50-1b59,"
    "1bb0-1bb9,1c40-1c49,1c50-1c59,2070,2074-2079,2080-2089,2150-2182,2185-2189,2460-249b,24ea-24ff,"
    "2776-2793,2cfd,3007,3021-3029,3038-303a,3192-3195,3220-3229,3248-324f,3251-325f,3280-3289,32b1-32bf,"
    "a620-a629,a6e6-a6ef,a830-a835,a8d0-a8d9,a900-a909,a9d0-a9d9,a9f0-a9f9,aa50-aa59,abf0-abf9,ff10-ff19,"
    "10107-10133,10140-10178,1018a-1018b,102e1-102fb,10320-10323,10341,1034a,103d1-103d5,104a0-104a9,"
    "10858-1085f,10879-1087f,108a7-108af,108fb-108ff,10916-1091b,109bc-109bd,109c0-109cf,109d2-109ff,"
    "10a40-10a48,10a7d-10a7e,10a9d-10a9f,10aeb-10aef,10b58-10b5f,10b78-10b7f,10ba9-10baf,10cfa-10cff,"
    "10d30-10d39,10d40-10d49,10e60-10e7e,10f1d-10f26,10f51-10f54,10fc5-10fcb,11052-1106f,110f0-110f9,"
    "11136-1113f,111d0-111d9,111e1-111f4,112f0-112f9,11450-11459,114d0-114d9,11650-11659,116c0-116c9,"
    "116d0-116e3,11730-1173b,118e0-118f2,11950-11959,11bf0-11bf9,11c50-11c6c,11d50-11d59,11da0-11da9,"
    "11de0-11de9,11f50-11f59,11fc0-11fd4,12400-1246e,16130-16139,16a60-16a69,16ac0-16ac9,16b50-16b59,"
    "16b5b-16b61,16d70-16d79,16e80-16e96,16ff4-16ff6,1ccf0-1ccf9,1d2c0-1d2d3,1d2e0-1d2f3,1d360-1d378,"
    "1d7ce-1d7ff,1e140-1e149,1e2f0-1e2f9,1e4f0-1e4f9,1e5f1-1e5fa,1e8c7-1e8cf,1e950-1e959,1ec71-1ecab,"
    "1ecad-1ecaf,1ecb1-1ecb4,1ed01-1ed2d,1ed2f-1ed3d,1f100-1f10c,1fbf0-1fbf9"
)
PUNCT_RE = regex.compile(ranges_class(_PUNCT))
# BertPreTokenizer in one regex: runs of chars that are neither whitespace nor punctuation, or one
# punctuation char; used inverted (keep the matches, drop the rest).
BERT_PIECES_RE = Invert(
    regex.compile("[^" + ranges_class(_PUNCT)[1:-1] + WHITESPACE_CLASS[1:-1] + "]+|" + ranges_class(_PUNCT))
)


def _ascii_pieces_re(full: regex.Pattern) -> re.Pattern:
    """The same split as `full` for ASCII-only text, with classes of the 128 ASCII chars only.

    Why: `full`'s classes list hundreds of Unicode ranges, and the `regex` package walks them for every char
    (63 us vs 7 us with the standard `re` for a 100-char line). Each char's class is read off `full` itself, so
    the two agree on every ASCII string by construction (tests/runtime/tokenizer/test_pre_tokenizers.py checks it).
    """
    punct = "".join(c for c in map(chr, range(128)) if (m := full.match("a" + c)) is not None and m.end() == 1
                    and full.fullmatch(c) is not None)
    space = "".join(c for c in map(chr, range(128)) if full.search(c) is None)
    return re.compile(f"[^{re.escape(punct + space)}]+|[{re.escape(punct)}]")


BERT_PIECES_ASCII_RE = Invert(_ascii_pieces_re(BERT_PIECES_RE.pattern))
NUMERIC_RE = regex.compile(ranges_class(_NUMERIC))
WHITESPACE_RE = regex.compile(WHITESPACE_CLASS)

# GPT-2's split, as the library compiles it (Oniguruma; `\s`, `\p{L}`, `\p{N}` mean the same in `regex`).
GPT2_RE = regex.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")
# Whitespace uses the Rust `regex` crate, whose `\w` is the `regex` package's (Unicode TR18 word chars).
WORDS_RE = regex.compile(r"\w+|[^\w\s]+")

_BEHAVIORS = {
    "Removed": "removed",
    "Isolated": "isolated",
    "MergedWithPrevious": "merged_with_previous",
    "MergedWithNext": "merged_with_next",
    "Contiguous": "contiguous",
}


class StringSplit:
    """One piece of the input: a `NormalizedString` and, once tokenized, its tokens."""

    __slots__ = ("normalized", "tokens")

    def __init__(self, normalized: NormalizedString, tokens=None):
        self.normalized = normalized
        self.tokens = tokens


class PreTokenizedString:
    """The input as a list of `Split`s that pre-tokenizers refine (the library's `PreTokenizedString`).

    `split(fn)` replaces every split that has no tokens yet by `fn(index, normalized)` (an iterable of
    `NormalizedString`s, or of `(NormalizedString, tokens)` pairs), dropping empty ones -- so splits that
    already hold tokens (added tokens) are never cut again.
    """

    __slots__ = ("original", "splits")

    def __init__(self, sequence: str | NormalizedString):
        if isinstance(sequence, str):
            sequence = NormalizedString(sequence)
        self.original = sequence.original
        self.splits: list[StringSplit] = [StringSplit(sequence)]

    def split(self, fn: Callable[[int, NormalizedString], Iterable]) -> None:
        new: list[StringSplit] = []
        append = new.append
        for i, sp in enumerate(self.splits):
            if sp.tokens is not None:
                append(sp)
                continue
            for piece in fn(i, sp.normalized):
                if type(piece) is tuple:
                    ns, tokens = piece
                    if ns.normalized:
                        append(StringSplit(ns, tokens))
                elif piece.normalized:
                    append(StringSplit(piece))
        self.splits = new

    def normalize(self, fn: Callable[[NormalizedString], None]) -> None:
        for sp in self.splits:
            if sp.tokens is None:
                fn(sp.normalized)

    def tokenize(self, fn: Callable[[str], list]) -> None:
        for sp in self.splits:
            if sp.tokens is None:
                sp.tokens = fn(sp.normalized.normalized)

    def get_splits(self, offset_referential: str = "original") -> list[tuple[str, tuple[int, int]]]:
        """`(normalized text, offsets)` per split, offsets in chars of the original or the normalized string."""
        out = []
        pos = 0
        for sp in self.splits:
            ns = sp.normalized
            if offset_referential == "original":
                offsets = ns.offsets_original()
            else:
                offsets = (pos, pos + len(ns.normalized))
                pos += len(ns.normalized)
            out.append((ns.normalized, offsets))
        return out


class PreTokenizer:
    """Base class: subclasses implement `pre_tokenize(PreTokenizedString)` in place."""

    def pre_tokenize(self, pts: PreTokenizedString) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def pre_tokenize_str(self, s: str) -> list[tuple[str, tuple[int, int]]]:
        """Splits of a plain string with their char offsets (the library's `pre_tokenize_str`)."""
        pts = PreTokenizedString(s)
        self.pre_tokenize(pts)
        return pts.get_splits("original")


def byte_level_normalize(ns: NormalizedString) -> None:
    """Map a split to GPT-2's byte-level alphabet (ASCII maps 1:1, so alignments only move for non-ASCII)."""
    s = ns.normalized
    if s.isascii():
        ns.normalized = s.translate(ASCII_BYTE_LEVEL_TABLE)
    else:
        ns.expand(byte_level_chars)


class ByteLevel(PreTokenizer):
    """GPT-2: optional leading space, the GPT-2 regex split, then every byte mapped to a printable char.

    `"Hello world"` -> `[("Hello", (0, 5)), ("Ġworld", (5, 11))]`.
    """

    def __init__(self, add_prefix_space=True, trim_offsets=True, use_regex=True):
        self.add_prefix_space = add_prefix_space
        self.trim_offsets = trim_offsets
        self.use_regex = use_regex

    @classmethod
    def from_config(cls, c: dict) -> ByteLevel:
        return cls(c.get("add_prefix_space", True), c.get("trim_offsets", True), c.get("use_regex", True))

    def _split(self, i: int, ns: NormalizedString):
        if self.add_prefix_space and not ns.normalized.startswith(" "):
            ns.prepend(" ")
        if self.use_regex:
            return ns.split_nonempty(GPT2_RE, "isolated")
        return [ns]

    def pre_tokenize(self, pts: PreTokenizedString) -> None:
        pts.split(self._split)
        pts.normalize(byte_level_normalize)


class Metaspace(PreTokenizer):
    """SentencePiece-style: spaces become `replacement` ("▁"), optionally prepended, then split before each.

    `prepend_scheme` is "always", "never" or "first" (only the split that starts the input).
    `"Hey friend"` -> `[("▁Hey", (0, 3)), ("▁friend", (3, 10))]`.
    """

    def __init__(self, replacement="\u2581", prepend_scheme="always", split=True):
        if len(replacement) != 1:
            raise ValueError(f"Metaspace: replacement must be one char, got {replacement!r}")
        if prepend_scheme not in ("always", "never", "first"):
            raise ValueError(f"Metaspace: prepend_scheme must be 'always', 'never' or 'first', got {prepend_scheme!r}")
        self.replacement = replacement
        self.prepend_scheme = prepend_scheme
        self.split = split

    @classmethod
    def from_config(cls, c: dict) -> Metaspace:
        scheme = c.get("prepend_scheme")
        if scheme is None:
            # Files written before prepend_scheme existed carry add_prefix_space instead.
            scheme = "always" if c.get("add_prefix_space", True) else "never"
        return cls(c.get("replacement", "\u2581"), scheme, c.get("split", True))

    def _split(self, i: int, ns: NormalizedString):
        rep = self.replacement
        if " " in ns.normalized:
            ns.replace(" ", rep)
        if self.prepend_scheme == "always" or (self.prepend_scheme == "first" and ns.original_shift == 0):
            if not ns.normalized.startswith(rep):
                ns.prepend(rep)
        if self.split:
            return ns.split(rep, "merged_with_next")
        return [ns]

    def pre_tokenize(self, pts: PreTokenizedString) -> None:
        pts.split(self._split)


class Split(PreTokenizer):
    """Split on a literal or an Oniguruma regex, with one of the five delimiter behaviors, maybe inverted.

    `{"pattern": {"Regex": "\\\\d+"}, "behavior": "Isolated"}` turns `"ab12c"` into `ab`, `12`, `c`.
    """

    def __init__(self, pattern, behavior: str, invert: bool = False):
        self.pattern = Invert(pattern) if invert else pattern
        self.behavior = behavior

    @classmethod
    def from_config(cls, c: dict) -> Split:
        pattern = compile_pattern(c["pattern"], "Split")
        return cls(pattern, _behavior(c.get("behavior", "Isolated")), c.get("invert", False))

    def pre_tokenize(self, pts: PreTokenizedString) -> None:
        pts.split(lambda i, ns: ns.split_nonempty(self.pattern, self.behavior))


class Whitespace(PreTokenizer):
    """Words and runs of punctuation (`\\w+|[^\\w\\s]+`): `"it's"` -> `it`, `'`, `s`."""

    _PATTERN = Invert(WORDS_RE)

    @classmethod
    def from_config(cls, c: dict) -> Whitespace:
        return cls()

    def pre_tokenize(self, pts: PreTokenizedString) -> None:
        pts.split(lambda i, ns: ns.split_nonempty(self._PATTERN, "removed"))


class WhitespaceSplit(PreTokenizer):
    """Split on whitespace only: `"a\\u3000b c"` -> `a`, `b`, `c`."""

    @classmethod
    def from_config(cls, c: dict) -> WhitespaceSplit:
        return cls()

    def pre_tokenize(self, pts: PreTokenizedString) -> None:
        pts.split(lambda i, ns: ns.split_nonempty(WHITESPACE_RE, "removed"))


class BertPreTokenizer(PreTokenizer):
    """BERT: split on whitespace, then isolate every punctuation char: `"a,b c"` -> `a`, `,`, `b`, `c`."""

    @classmethod
    def from_config(cls, c: dict) -> BertPreTokenizer:
        return cls()

    def pre_tokenize(self, pts: PreTokenizedString) -> None:
        # One pass: split on whitespace (removed), then isolate each punctuation char, is the same as
        # keeping the runs of other chars and the single punctuation chars.
        pts.split(lambda i, ns: ns.split_nonempty(
            BERT_PIECES_ASCII_RE if ns.normalized.isascii() else BERT_PIECES_RE, "removed"))

    def word_spans(self, text: str) -> list[tuple[int, int]] | None:
        """The `(start, end)` of each split `pre_tokenize` makes of an ASCII `text` (else None), without
        building them: the tokenizer's plain path (`Tokenizer._encode_plain`)."""
        if not text.isascii():
            return None
        return [m.span() for m in BERT_PIECES_ASCII_RE.pattern.finditer(text)]  # inverted: the matches are kept


class Punctuation(PreTokenizer):
    """Split on each punctuation char with a delimiter behavior (default isolated)."""

    def __init__(self, behavior: str = "isolated"):
        self.behavior = behavior

    @classmethod
    def from_config(cls, c: dict) -> Punctuation:
        return cls(_behavior(c.get("behavior", "Isolated")))

    def pre_tokenize(self, pts: PreTokenizedString) -> None:
        pts.split(lambda i, ns: ns.split_nonempty(PUNCT_RE, self.behavior))


class Digits(PreTokenizer):
    """Isolate numbers: runs of digits, or each digit with `individual_digits`: `"ab123"` -> `ab`, `123`."""

    def __init__(self, individual_digits: bool = False):
        self.individual_digits = individual_digits

    @classmethod
    def from_config(cls, c: dict) -> Digits:
        return cls(c.get("individual_digits", False))

    def pre_tokenize(self, pts: PreTokenizedString) -> None:
        behavior = "isolated" if self.individual_digits else "contiguous"
        pts.split(lambda i, ns: ns.split_nonempty(NUMERIC_RE, behavior))


class CharDelimiterSplit(PreTokenizer):
    """Split on one char, dropping it: `delimiter="|"` turns `"a|b"` into `a`, `b`."""

    def __init__(self, delimiter: str):
        if len(delimiter) != 1:
            raise ValueError(f"CharDelimiterSplit: delimiter must be one char, got {delimiter!r}")
        self.delimiter = delimiter

    @classmethod
    def from_config(cls, c: dict) -> CharDelimiterSplit:
        return cls(c["delimiter"])

    def pre_tokenize(self, pts: PreTokenizedString) -> None:
        pts.split(lambda i, ns: ns.split(self.delimiter, "removed"))


class FixedLength(PreTokenizer):
    """Chunks of `length` chars: `length=2` turns `"abcde"` into `ab`, `cd`, `e`."""

    def __init__(self, length: int = 5):
        if length < 1:
            raise ValueError(f"FixedLength: length must be at least 1, got {length}")
        self.length = length

    @classmethod
    def from_config(cls, c: dict) -> FixedLength:
        return cls(c.get("length", 5))

    def _split(self, i: int, ns: NormalizedString):
        n = len(ns.normalized)
        return [ns.slice(s, min(s + self.length, n)) for s in range(0, n, self.length)]

    def pre_tokenize(self, pts: PreTokenizedString) -> None:
        pts.split(self._split)


class UnicodeScripts(PreTokenizer):
    """Split where the Unicode script changes (Hiragana/Katakana count as Han, a space joins anything).

    `"どこで生れ。Yes"` -> `どこで生れ`, `。`, `Yes`. Quirk kept from the library: a space *before* the first
    scripted char is dropped, since no split starts before it.
    """

    @classmethod
    def from_config(cls, c: dict) -> UnicodeScripts:
        return cls()

    def _split(self, i: int, ns: NormalizedString):
        starts = []
        last = None
        for pos, c in enumerate(ns.normalized):
            script = fixed_script(c)
            if script != "Any" and last != "Any" and last != script:
                starts.append(pos)
            if script != "Any":
                last = script
        starts.append(len(ns.normalized))
        return [ns.slice(a, b) for a, b in zip(starts, starts[1:])]

    def pre_tokenize(self, pts: PreTokenizedString) -> None:
        pts.split(self._split)


# The scripts the library's (SentencePiece-derived, Unicode 9 era) table knows; a char of any other script
# gets "Any". Membership comes from the `regex` package's Script property.
_SCRIPTS = (
    "Adlam Ahom Anatolian_Hieroglyphs Arabic Armenian Avestan Balinese Bamum Bassa_Vah Batak Bengali Bhaiksuki "
    "Bopomofo Brahmi Braille Buginese Buhid Canadian_Aboriginal Carian Caucasian_Albanian Chakma Cham Cherokee "
    "Common Coptic Cuneiform Cypriot Cyrillic Deseret Devanagari Duployan Egyptian_Hieroglyphs Elbasan Ethiopic "
    "Georgian Glagolitic Gothic Grantha Greek Gujarati Gurmukhi Han Hangul Hanunoo Hatran Hebrew Hiragana "
    "Imperial_Aramaic Inherited Inscriptional_Pahlavi Inscriptional_Parthian Javanese Kaithi Kannada Katakana "
    "Kayah_Li Kharoshthi Khmer Khojki Khudawadi Lao Latin Lepcha Limbu Linear_A Linear_B Lisu Lycian Lydian "
    "Mahajani Malayalam Mandaic Manichaean Marchen Meetei_Mayek Mende_Kikakui Meroitic_Cursive "
    "Meroitic_Hieroglyphs Miao Modi Mongolian Mro Multani Myanmar Nabataean New_Tai_Lue Newa Nko Ogham Ol_Chiki "
    "Old_Hungarian Old_Italic Old_North_Arabian Old_Permic Old_Persian Old_South_Arabian Old_Turkic Oriya Osage "
    "Osmanya Pahawh_Hmong Palmyrene Pau_Cin_Hau Phags_Pa Phoenician Psalter_Pahlavi Rejang Runic Samaritan "
    "Saurashtra Sharada Shavian Siddham SignWriting Sinhala Sora_Sompeng Sundanese Syloti_Nagri Syriac Tagalog "
    "Tagbanwa Tai_Le Tai_Tham Tai_Viet Takri Tamil Tangut Telugu Thaana Thai Tibetan Tifinagh Tirhuta Ugaritic "
    "Vai Warang_Citi Yi"
).split()
# Chars whose script the `regex` package knows but the library's table does not (newer than it): "Any".
_SCRIPT_ANY = ranges_set(
    "558,560,588,58b-58c,5c8-5c9,5ef,61d,7fd-7ff,860-86a,870-891,897-89f,8b5,8be-8d3,9fc-9fe,a76,afa-aff,"
    "b53-b55,c04,c3c,c5c-c5d,c77,c84,cdc-cdd,cf3,d00,d04,d3b-d3c,d81,e86,e89,e8c,e8e-e93,e98,ea0,ea8-ea9,"
    "eac,eba,ece,170d,1715,171f,180f,1878,1abf-1af0,1b4c,1b4e-1b4f,1b7d-1b7f,1c89-1c8a,1c90-1cba,"
    "1cbd-1cbf,1cf7,1cfa,1df6-1dfa,208f,209d-209f,20bf-20c4,23ff,2427-2429,2b96-2b97,2bba-2bbc,2bc9,"
    "2bd2-2beb,2bf0-2bff,2c2f,2c5f,2e45-2e5d,2e60-2e63,2ffc-2fff,312e-312f,31bb-31bf,31e4-31e5,31ef,32ff,"
    "4db6-4dbf,9fd6-9fff,a7af,a7b8-a7dd,a7e2,a7f1-a7f6,a82c,a8fe-a8ff,ab66-ab6d,fbc2-fbd2,fd40-fd4f,"
    "fd90-fd91,fdc8-fdcf,fdfe-fdff,1019c,1032d-1032f,10780-10785,10787-107b0,107b2-107bf,10a34-10a35,"
    "10a48,10ec2-10ec7,10ec9-10eee,10ef0-10eff,11070-11075,110c2,110cd,11144-11147,111ce-111cf,"
    "1123f-11241,1133b,1145a,1145e-11461,116b8-116b9,116d0-116e3,1171a,11740-11746,11ab0-11abf,"
    "11b00-11b0a,11b60-11b67,11df0-11df1,11fb0,11fc0-11ff1,11fff,1246f,12475-1247f,12550-125a7,"
    "1264c-12686,1342f-13455,13460-143fa,16f45-16f4a,16f4f,16f7f-16f87,16fe2-16fe3,16ff0-16ff6,"
    "187ed-187ff,18af3-18aff,18d00-18d20,18d80-18df2,1aff0-1aff3,1aff5-1affb,1affd-1affe,1b002-1b128,"
    "1b132,1b150-1b152,1b155,1b164-1b168,1cc00-1ccfc,1cd00-1ceb3,1ceba-1ced0,1ced2-1ced4,1cedd-1cefd,"
    "1cf00-1cf2d,1cf30-1cf46,1cf50-1cfc3,1d127-1d128,1d1e9-1d1ff,1d250-1d281,1d2c0-1d2d3,1d2e0-1d2f3,"
    "1d372-1d378,1d6a6,1db00-1db1c,1df00-1df81,1df90-1df96,1dfcd-1dfff,1e030-1e06d,1e08f,1e7e0-1e7e6,"
    "1e7e8-1e7eb,1e7ed-1e7ee,1e7f0-1e7fe,1e94b,1ec71-1ecb4,1ed01-1ed3d,1f10d-1f10f,1f12f,1f16c-1f16f,"
    "1f1ad-1f1ae,1f260-1f265,1f6d3-1f6d9,1f6dc-1f6df,1f6f7-1f6fc,1f774-1f77f,1f7d5-1f7db,1f7e0-1f7eb,"
    "1f7f0-1f7ff,1f8b0-1f8bb,1f8c0-1f8c1,1f8d0-1f8d8,1f900-1f90f,1f91f,1f928-1f92f,1f931-1f932,1f93f,"
    "1f94c-1f94f,1f95f-1f97f,1f992-1f9bf,1f9c1-1fa57,1fa60-1fa6d,1fa70-1fa7c,1fa80-1fac6,1fac8,"
    "1facc-1fadd,1fadf-1faeb,1faef-1fafa,1fb00-1fb92,1fb94-1fbfa,2a6d7-2a6df,2b735-2b73f,2b81e,"
    "2cea2-2cead,2ceb0-2ebe0,2ebf0-2ee5d,30000-3134a,31350-33479"
)
# ...and the few chars whose script Unicode has changed since that table was made.
_SCRIPT_OVERRIDES = {"\u0589": "Common", "\u061c": "Common", "\u0953": "Devanagari", "\u0954": "Devanagari"}
_SCRIPT_RE = regex.compile("|".join(f"(?P<{name}>\\p{{Script={name}}})" for name in _SCRIPTS))
_SCRIPT_CACHE: dict[str, str] = {}


def fixed_script(c: str) -> str:
    """The script UnicodeScripts compares: `fixed_script("ア") == "Han"`, `fixed_script(" ") == "Any"`."""
    s = _SCRIPT_CACHE.get(c)
    if s is None:
        if c == " ":
            s = "Any"
        elif c == "\u30fc":
            s = "Han"
        elif c in _SCRIPT_ANY:
            s = "Any"
        elif c in _SCRIPT_OVERRIDES:
            s = _SCRIPT_OVERRIDES[c]
        else:
            m = _SCRIPT_RE.match(c)
            s = m.lastgroup if m else "Any"
            if s in ("Hiragana", "Katakana"):
                s = "Han"
        _SCRIPT_CACHE[c] = s
    return s


class Sequence(PreTokenizer):
    def __init__(self, pre_tokenizers: list[PreTokenizer]):
        self.pre_tokenizers = pre_tokenizers

    def pre_tokenize(self, pts: PreTokenizedString) -> None:
        for p in self.pre_tokenizers:
            p.pre_tokenize(pts)


def _behavior(name: str) -> str:
    if name in _BEHAVIORS:
        return _BEHAVIORS[name]
    if name in _BEHAVIORS.values():
        return name
    raise ValueError(f"unknown split behavior {name!r}; expected one of {', '.join(_BEHAVIORS)}")


_BUILDERS = {
    "ByteLevel": ByteLevel.from_config,
    "Metaspace": Metaspace.from_config,
    "Split": Split.from_config,
    "Whitespace": Whitespace.from_config,
    "WhitespaceSplit": WhitespaceSplit.from_config,
    "BertPreTokenizer": BertPreTokenizer.from_config,
    "Punctuation": Punctuation.from_config,
    "Digits": Digits.from_config,
    "CharDelimiterSplit": CharDelimiterSplit.from_config,
    "UnicodeScripts": UnicodeScripts.from_config,
    "FixedLength": FixedLength.from_config,
}


def build_pre_tokenizer(config: dict | None, where: str = "pre_tokenizer") -> PreTokenizer | None:
    """Build the pre-tokenizer of a tokenizer.json `"pre_tokenizer"` entry (None stays None).

    An unknown `"type"` raises `ValueError` naming it and where it sits, e.g. `pre_tokenizer.pretokenizers[1]`.
    """
    if config is None:
        return None
    if not isinstance(config, dict):
        raise ValueError(f"{where}: expected an object with a 'type', got {config!r}")
    kind = config.get("type")
    if kind == "Sequence":
        items = config.get("pretokenizers")
        if not isinstance(items, list):
            raise ValueError(f"{where}: Sequence needs a 'pretokenizers' list")
        return Sequence([build_pre_tokenizer(c, f"{where}.pretokenizers[{i}]") for i, c in enumerate(items)])
    builder = _BUILDERS.get(kind)
    if builder is None:
        known = ", ".join(sorted([*_BUILDERS, "Sequence"]))
        raise ValueError(f"{where}: unknown pre-tokenizer type {kind!r} (known: {known})")
    try:
        return builder(config)
    except KeyError as e:
        raise ValueError(f"{where}: {kind} is missing the field {e.args[0]!r}") from None
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


__all__ = [
    "BertPreTokenizer",
    "ByteLevel",
    "CharDelimiterSplit",
    "Digits",
    "FixedLength",
    "Metaspace",
    "PreTokenizedString",
    "PreTokenizer",
    "Punctuation",
    "Sequence",
    "Split",
    "StringSplit",
    "UnicodeScripts",
    "Whitespace",
    "WhitespaceSplit",
    "build_pre_tokenizer",
    "fixed_script",
]
