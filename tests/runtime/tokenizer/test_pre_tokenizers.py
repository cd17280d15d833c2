"""Pre-tokenizers against the library's `pre_tokenize_str` (splits and their char offsets), exactly."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as LibTokenizer

from tokenizer_support import TEXTS, tricky_text, unicode_text
from modelkiln.runtime.tokenizer.normalizers import translate_onig
from modelkiln.runtime.tokenizer.pre_tokenizers import PreTokenizedString, build_pre_tokenizer, fixed_script

LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
          r"|\s+(?!\S)|\s+")
CONFIGS = {
    "byte_level": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    "byte_level_prefix": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    "byte_level_no_regex": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": False},
    "metaspace_always": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
    "metaspace_first": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False},
    "metaspace_never": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "never", "split": True},
    "metaspace_legacy": {"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True},
    "whitespace": {"type": "Whitespace"},
    "whitespace_split": {"type": "WhitespaceSplit"},
    "bert": {"type": "BertPreTokenizer"},
    "punctuation": {"type": "Punctuation", "behavior": "Isolated"},
    "punctuation_prev": {"type": "Punctuation", "behavior": "MergedWithPrevious"},
    "digits": {"type": "Digits", "individual_digits": False},
    "digits_individual": {"type": "Digits", "individual_digits": True},
    "char_delimiter": {"type": "CharDelimiterSplit", "delimiter": "-"},
    "unicode_scripts": {"type": "UnicodeScripts"},
    "fixed_length": {"type": "FixedLength", "length": 3},
    "split_llama3": {"type": "Split", "pattern": {"Regex": LLAMA3}, "behavior": "Isolated", "invert": False},
    "split_words_inverted": {"type": "Split", "pattern": {"Regex": r"\w+"}, "behavior": "Removed", "invert": True},
    "split_class_word": {"type": "Split", "pattern": {"Regex": r"[^\w\s]+"}, "behavior": "Isolated", "invert": False},
    "split_lines": {"type": "Split", "pattern": {"Regex": r"^\s*|(?m:.)$"}, "behavior": "Isolated", "invert": False},
    "split_next": {"type": "Split", "pattern": {"String": "-"}, "behavior": "MergedWithNext", "invert": False},
    "split_contiguous": {"type": "Split", "pattern": {"String": "-"}, "behavior": "Contiguous", "invert": False},
    "split_prev_inverted": {"type": "Split", "pattern": {"String": "ab"}, "behavior": "MergedWithPrevious",
                            "invert": True},
    "split_empty_matches": {"type": "Split", "pattern": {"Regex": "x*"}, "behavior": "Isolated", "invert": False},
    "sequence": {"type": "Sequence", "pretokenizers": [
        {"type": "WhitespaceSplit"}, {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": True}]},
}


def _library_pre_tokenizer(config: dict):
    tok = LibTokenizer.from_str(json.dumps({
        "version": "1.0", "pre_tokenizer": config,
        "model": {"type": "WordLevel", "vocab": {"a": 0}, "unk_token": "a"},
    }))
    return tok.pre_tokenizer


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_pre_tokenizer_matches_library_on_corpus(name):
    lib, mine = _library_pre_tokenizer(CONFIGS[name]), build_pre_tokenizer(CONFIGS[name])
    for text in TEXTS.values():
        assert mine.pre_tokenize_str(text) == lib.pre_tokenize_str(text), text


@pytest.mark.parametrize("name", ["byte_level_prefix", "metaspace_first", "whitespace", "bert", "split_llama3",
                                  "unicode_scripts", "sequence", "digits"])
@settings(max_examples=40, deadline=None)
@given(text=unicode_text)
def test_pre_tokenizer_matches_library_on_random_unicode(name, text):
    lib, mine = _library_pre_tokenizer(CONFIGS[name]), build_pre_tokenizer(CONFIGS[name])
    assert mine.pre_tokenize_str(text) == lib.pre_tokenize_str(text)


@pytest.mark.parametrize("name", ["split_next", "split_contiguous", "split_prev_inverted", "punctuation_prev",
                                  "whitespace_split", "byte_level"])
@settings(max_examples=30, deadline=None)
@given(text=tricky_text)
def test_pre_tokenizer_matches_library_on_tricky_text(name, text):
    lib, mine = _library_pre_tokenizer(CONFIGS[name]), build_pre_tokenizer(CONFIGS[name])
    assert mine.pre_tokenize_str(text + "-ab--") == lib.pre_tokenize_str(text + "-ab--")


def test_pre_tokenizers_keep_offsets_through_a_normalizer():
    """Splits of an already-normalized string map back to the input (NFKC then ByteLevel)."""
    from tokenizers import PreTokenizedString as LibPTS

    from modelkiln.runtime.tokenizer.normalized import NormalizedString

    text = "ﬁne ｶﾞ ① x\u0301y"
    config = CONFIGS["byte_level_prefix"]
    lib = LibPTS(text)
    lib.normalize(lambda ns: ns.nfkc())
    _library_pre_tokenizer(config).pre_tokenize(lib)
    n = NormalizedString(text)
    n.nfkc()
    mine = PreTokenizedString(n)
    build_pre_tokenizer(config).pre_tokenize(mine)
    assert mine.get_splits("original") == [(s, o) for s, o, _ in lib.get_splits("original", "char")]


@pytest.mark.parametrize("pattern", [r"\w+", r"\W+", r"[\w]+", r"[^\w\s]+", r"^a", r"a$", r"(?m:.)+", r"(?i-m:a.)",
                                     r"[]a]+", r"\w+\h", r"a\z", r"a\Z", r"\Aa"])
def test_oniguruma_patterns_translate(pattern):
    config = {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}
    lib, mine = _library_pre_tokenizer(config), build_pre_tokenizer(config)
    for text in ["a\na\nxa\n", "ab]c ²x\u200d 1f a\n½\u0903", "a"]:
        assert mine.pre_tokenize_str(text) == lib.pre_tokenize_str(text), (pattern, translate_onig(pattern))


def test_unicode_scripts_agree_with_library_across_the_code_space():
    """A char's script shows in where UnicodeScripts cuts it from its neighbours: Latin/Han on either side,
    and a char of the script we think it has (every 13th code point, to stay fast)."""
    lib = _library_pre_tokenizer({"type": "UnicodeScripts"})
    mine = build_pre_tokenizer({"type": "UnicodeScripts"})
    chars = [chr(c) for c in range(0x21, 0x110000, 13) if not 0xD800 <= c < 0xE000]
    first_of = {}
    for c in chars:
        first_of.setdefault(fixed_script(c), c)
    for i in range(0, len(chars), 4000):
        chunk = chars[i:i + 4000]
        for text in ("".join("a" + c + "中" for c in chunk), "".join("中" + c + "a" for c in chunk),
                     "".join(first_of[fixed_script(c)] + c + "\u0905" for c in chunk)):
            assert mine.pre_tokenize_str(text) == lib.pre_tokenize_str(text)


def test_fixed_script_examples():
    assert [fixed_script(c) for c in "京いグーaA0 "] == ["Han"] * 4 + ["Latin"] * 2 + ["Common", "Any"]


def test_unknown_type_names_the_type_and_its_place():
    with pytest.raises(ValueError, match=r"pre_tokenizer\.pretokenizers\[1\]: unknown pre-tokenizer type 'Nope'"):
        build_pre_tokenizer({"type": "Sequence", "pretokenizers": [{"type": "Whitespace"}, {"type": "Nope"}]})


def test_bad_behavior_is_reported():
    with pytest.raises(ValueError, match="unknown split behavior 'Sideways'"):
        build_pre_tokenizer({"type": "Split", "pattern": {"String": "-"}, "behavior": "Sideways", "invert": False})


ascii_text = st.text(alphabet=st.characters(max_codepoint=127), max_size=60)


@settings(max_examples=200, deadline=None)
@given(text=ascii_text)
def test_bert_ascii_fast_path_matches_library(text):
    """BertPreTokenizer splits ASCII-only text with a regex of ASCII classes (5-9x faster than the full Unicode
    one): same splits as the library, and as the full regex, on any ASCII string (controls included)."""
    from modelkiln.runtime.tokenizer.pre_tokenizers import BERT_PIECES_ASCII_RE, BERT_PIECES_RE

    lib, mine = _library_pre_tokenizer(CONFIGS["bert"]), build_pre_tokenizer(CONFIGS["bert"])
    assert mine.pre_tokenize_str(text) == lib.pre_tokenize_str(text)
    fast, full = BERT_PIECES_ASCII_RE.pattern, BERT_PIECES_RE.pattern
    assert [m.span() for m in fast.finditer(text)] == [m.span() for m in full.finditer(text)]


def test_bert_ascii_classes_agree_with_the_full_regex_on_every_char():
    from modelkiln.runtime.tokenizer.pre_tokenizers import BERT_PIECES_ASCII_RE, BERT_PIECES_RE

    fast, full = BERT_PIECES_ASCII_RE.pattern, BERT_PIECES_RE.pattern
    for code in range(128):
        for text in (chr(code), f"a{chr(code)}b", f"{chr(code)}{chr(code)}x"):
            assert [m.span() for m in fast.finditer(text)] == [m.span() for m in full.finditer(text)], repr(text)
