"""Normalizers and `NormalizedString` against the `tokenizers` library: text *and* per-char alignments.

Alignments are read back from the library by splitting its normalized result into single chars
(`tokenizer_support.library_alignments`), so every offset quirk (inserted chars, Precompiled's grapheme rules,
BertNormalizer's CJK padding...) is compared exactly.
"""

from __future__ import annotations

import base64
import json

import pytest
import regex
from hypothesis import given, settings
from tokenizers import Regex
from tokenizers import Tokenizer as LibTokenizer

from tokenizer_support import TEXTS, library_alignments, tricky_text, unicode_text
from modelkiln.runtime.tokenizer import normalized as N
from modelkiln.runtime.tokenizer import normalizers as NZ
from modelkiln.runtime.tokenizer.normalized import NormalizedString, find_matches
from modelkiln.runtime.tokenizer.normalizers import build_normalizer

CONFIGS = {
    "bert": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True, "strip_accents": None,
             "lowercase": True},
    "bert_keep_case": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": True, "lowercase": False},
    "bert_plain": {"type": "BertNormalizer", "clean_text": False, "handle_chinese_chars": False,
                   "strip_accents": False, "lowercase": False},
    "nmt": {"type": "Nmt"},
    "nfc": {"type": "NFC"},
    "nfd": {"type": "NFD"},
    "nfkc": {"type": "NFKC"},
    "nfkd": {"type": "NFKD"},
    "lowercase": {"type": "Lowercase"},
    "strip": {"type": "Strip", "strip_left": True, "strip_right": True},
    "lstrip": {"type": "Strip", "strip_left": True, "strip_right": False},
    "strip_accents": {"type": "StripAccents"},
    "replace_string": {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
    "replace_regex": {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": "_"},
    "replace_delete": {"type": "Replace", "pattern": {"Regex": r"\p{P}+"}, "content": ""},
    "replace_word": {"type": "Replace", "pattern": {"Regex": r"\w+"}, "content": "W"},
    "prepend": {"type": "Prepend", "prepend": "\u2581"},
    "byte_level": {"type": "ByteLevel"},
    "sequence": {"type": "Sequence", "normalizers": [
        {"type": "NFD"}, {"type": "StripAccents"}, {"type": "Lowercase"}, {"type": "Strip", "strip_left": True,
                                                                             "strip_right": True}]},
    "spm_legacy": {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
}


def _library_normalizer(config: dict):
    tok = LibTokenizer.from_str(json.dumps({
        "version": "1.0", "normalizer": config,
        "model": {"type": "WordLevel", "vocab": {"a": 0}, "unk_token": "a"},
    }))
    return tok.normalizer


def _assert_same(config: dict, texts, lib=None, mine=None):
    lib = lib or _library_normalizer(config)
    mine = mine or build_normalizer(config)
    for text in texts:
        expected = library_alignments(lib.normalize, text)
        n = NormalizedString(text)
        mine.normalize(n)
        assert (n.normalized, n.alignments) == expected, (config, text)
        assert mine.normalize_str(text) == lib.normalize_str(text)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_normalizer_matches_library_on_corpus(name):
    _assert_same(CONFIGS[name], TEXTS.values())


@pytest.mark.parametrize("name", ["bert", "nfkc", "nfd", "sequence", "replace_regex", "byte_level", "lowercase"])
@settings(max_examples=40, deadline=None)
@given(text=unicode_text)
def test_normalizer_matches_library_on_random_unicode(name, text):
    _assert_same(CONFIGS[name], [text])


@pytest.fixture(scope="module")
def charsmaps(spm_dirs, tokenizer_cache) -> dict[str, str]:
    """The precompiled_charsmap of each trained SentencePiece model (base64, as tokenizer.json has it)."""
    from sentencepiece import sentencepiece_model_pb2

    out = {}
    for name in spm_dirs:
        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString((tokenizer_cache / f"{name}.model").read_bytes())
        out[name] = base64.b64encode(proto.normalizer_spec.precompiled_charsmap).decode()
    return out


def test_precompiled_matches_library(charsmaps):
    for charsmap in charsmaps.values():
        _assert_same({"type": "Precompiled", "precompiled_charsmap": charsmap}, TEXTS.values())


@settings(max_examples=60, deadline=None)
@given(text=tricky_text)
def test_precompiled_matches_library_on_tricky_text(charsmaps, text):
    config = {"type": "Precompiled", "precompiled_charsmap": charsmaps["spm_unigram_nmt_nfkc_bytefallback"]}
    _assert_same(config, [text])


def test_precompiled_replaces_a_whole_grapheme_with_its_first_prefix(charsmaps):
    # "Ⅻ" + U+0301 is one grapheme; the shortest key prefix ("Ⅻ") replaces all of it, accent included.
    n = NormalizedString("aⅫ\u0301b")
    build_normalizer({"type": "Precompiled", "precompiled_charsmap": charsmaps["spm_bpe_nfkc"]}).normalize(n)
    assert n.normalized == "aXIIb"
    assert n.alignments == [(0, 1), (1, 2), (2, 3), (2, 3), (3, 4)]


def test_precompiled_rejects_truncated_charsmap():
    data = base64.b64encode(b"\xff\x00\x00\x00abc").decode()
    with pytest.raises(ValueError, match="truncated"):
        build_normalizer({"type": "Precompiled", "precompiled_charsmap": data})


def test_missing_charsmap_is_the_identity():
    assert build_normalizer({"type": "Precompiled", "precompiled_charsmap": None}).normalize_str("ﬁ") == "ﬁ"


# ------------------------------------------------------------------------------------------ NormalizedString
LIB_OPS = {
    "nfd": lambda ns: ns.nfd(), "nfc": lambda ns: ns.nfc(), "nfkc": lambda ns: ns.nfkc(), "nfkd": lambda ns: ns.nfkd(),
    "lower": lambda ns: ns.lowercase(), "strip": lambda ns: ns.strip(), "rstrip": lambda ns: ns.rstrip(),
    "filter": lambda ns: ns.filter(lambda c: c not in "-\u0301 "),
    "map": lambda ns: ns.map(lambda c: "_" if c == "a" else c),
    "prepend": lambda ns: ns.prepend("\u2581x"), "append": lambda ns: ns.append("!?"),
    "replace": lambda ns: ns.replace("ab", "XYZ"), "replace_re": lambda ns: ns.replace(Regex(r"\s+"), "_"),
}
MY_OPS = {
    **{k: LIB_OPS[k] for k in ("nfd", "nfc", "nfkc", "nfkd", "strip", "rstrip", "filter", "map", "prepend", "append",
                                "replace")},
    "lower": lambda ns: ns.lowercase(),
    "replace_re": lambda ns: ns.replace(regex.compile(r"\s+"), "_"),
}


@pytest.mark.parametrize("ops", [
    ["nfd", "filter", "lower"], ["nfkc", "replace", "prepend"], ["strip", "append", "nfc"],
    ["replace_re", "nfkd", "rstrip"], ["map", "lower", "replace"], ["prepend", "nfd", "nfc"],
])
@settings(max_examples=30, deadline=None)
@given(text=tricky_text)
def test_normalized_string_chains_match_library(ops, text):
    # Appending to an emptied string panics inside the library; that is not a case to compare.
    if "append" in ops and not text.strip():
        return
    expected = library_alignments(lambda ns: [LIB_OPS[o](ns) for o in ops], text)
    n = NormalizedString(text)
    for o in ops:
        MY_OPS[o](n)
    assert (n.normalized, n.alignments) == expected


SPLIT_PATTERNS = {"dash": "-", "two_dashes": "--", "spaces": r"\s+", "empty_matches": r"x*"}


@pytest.mark.parametrize("behavior", N.SPLIT_BEHAVIORS)
@pytest.mark.parametrize("pattern", sorted(SPLIT_PATTERNS))
def test_split_behaviors_match_library(behavior, pattern):
    from tokenizers import PreTokenizedString

    source = SPLIT_PATTERNS[pattern]
    literal = pattern in ("dash", "two_dashes")
    lib_pattern, my_pattern = (source, source) if literal else (Regex(source), regex.compile(source))
    for text in ["the-final--countdown", "-a--b-", "", "---", "a  b\tc ", "xxaxx-b", "ﬁ-é--x"]:
        p = PreTokenizedString(text)
        p.normalize(lambda ns: ns.nfkc())
        p.split(lambda i, ns: ns.split(lib_pattern, behavior))
        expected = [(s, o) for s, o, _ in p.get_splits("original", "char")]
        n = NormalizedString(text)
        n.nfkc()
        pieces = [(x.normalized, x.offsets_original()) for x in n.split(my_pattern, behavior) if x.normalized]
        assert pieces == expected, (text, behavior)
        # The fast path the pre-tokenizers use gives the same non-empty pieces.
        fast = [(x.normalized, x.offsets_original()) for x in n.split_nonempty(my_pattern, behavior)]
        assert fast == expected


def test_split_invert_keeps_what_the_pattern_matches():
    n = NormalizedString("ab, cd!")
    words = [p.normalized for p in n.split(N.Invert(regex.compile(r"\w+")), "removed")]
    assert words == ["ab", "cd"]


def test_find_matches_refuses_empty_match_right_after_a_match():
    assert find_matches(regex.compile("x*"), "xxa") == [(0, 2, True), (2, 3, False), (3, 3, True)]


def test_slice_keeps_alignments_relative_to_the_input():
    n = NormalizedString("Ⅻ  ab")
    n.nfkc()
    piece = n.slice(1, 5)
    assert (piece.normalized, piece.original, piece.offsets_original()) == ("II  ", "Ⅻ  ", (0, 3))
    assert piece.convert_offsets(0, 2) == (0, 1)


def test_convert_original_offsets():
    n = NormalizedString("    __Hello__   ")
    n.filter(lambda c: not c.isspace())
    n.lowercase()
    assert n.convert_original_offsets(6, 11) == (2, 7)
    assert n.convert_original_offsets(3, 3) == (3, 3)
    assert n.convert_original_offsets(15, 16) == (9, 9)


def test_transform_range_contract():
    # "Hello friend": replace chars 3:10 by "_FR" removing 2 chars after R (the library's own example).
    n = NormalizedString("Hello friend")
    n.transform_range(3, 10, [("_", 0), ("F", 0), ("R", -2)], 2)
    assert n.normalized == "Hel_FRnd"
    assert n.alignments == [(0, 1), (1, 2), (2, 3), (5, 6), (6, 7), (7, 8), (10, 11), (11, 12)]


# ------------------------------------------------------------------------------------------ Unicode tables
def _probe_removed(normalizer, sep="\x01"):
    """Code points a library normalizer deletes (probed in bulk, one separator between each)."""
    cps = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000 and chr(c) != sep]
    removed = set()
    for i in range(0, len(cps), 20000):
        chunk = cps[i:i + 20000]
        parts = normalizer.normalize_str(sep + sep.join(map(chr, chunk)) + sep).split(sep)[1:-1]
        assert len(parts) == len(chunk)
        removed.update(c for c, p in zip(chunk, parts) if p == "")
    return removed


def test_unicode_tables_match_the_installed_library():
    """The tables in normalizers.py / normalized.py are the library's view of Unicode, measured on it."""
    import unicodedata

    from tokenizers import normalizers as L

    assert _probe_removed(L.StripAccents()) == {ord(c) for c in NZ.STRIP_ACCENTS_MARKS}
    bert = L.BertNormalizer(clean_text=True, handle_chinese_chars=False, strip_accents=False, lowercase=False)
    assert _probe_removed(bert, sep="a") == {c for a, b in N.parse_ranges(NZ._BERT_REMOVED) for c in range(a, b + 1)}
    # Bert's accent stripping (after NFD) uses a plain nonspacing-mark table.
    strip_only = L.BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=True, lowercase=False)
    nfd = L.NFD()
    removed = {c for c in _probe_removed(strip_only) if nfd.normalize_str(chr(c)) == chr(c)}
    assert removed == {ord(c) for c in NZ.BERT_MARKS if nfd.normalize_str(c) == c}
    # Lowercase, and the normalization forms (per code point, against our implementation).
    cps = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000 and c != ord("|")]
    lower = L.Lowercase().normalize_str("|" + "|".join(map(chr, cps)) + "|").split("|")[1:-1]
    assert [N.lower_char(chr(c)) for c in cps] == lower
    for form in ("NFD", "NFKD", "NFC", "NFKC"):
        lib = getattr(L, form)()
        assigned = [c for c in cps if unicodedata.category(chr(c)) != "Cn" and c != 1]
        got = lib.normalize_str("\x01" + "\x01".join(map(chr, assigned)) + "\x01").split("\x01")[1:-1]
        mine = build_normalizer({"type": form})
        assert [mine.normalize_str(chr(c)) for c in assigned] == got, form


# ------------------------------------------------------------------------------------------ errors
def test_unknown_type_names_the_type_and_its_place():
    with pytest.raises(ValueError, match=r"normalizer\.normalizers\[1\]: unknown normalizer type 'Fancy'"):
        build_normalizer({"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Fancy"}]})


def test_missing_field_is_named():
    with pytest.raises(ValueError, match="Prepend is missing the field 'prepend'"):
        build_normalizer({"type": "Prepend"})


def test_bad_regex_is_reported():
    with pytest.raises(ValueError, match="cannot compile regex"):
        build_normalizer({"type": "Replace", "pattern": {"Regex": "(unclosed"}, "content": ""})
