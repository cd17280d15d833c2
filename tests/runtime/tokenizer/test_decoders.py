"""Decoders against `tokenizers.decoders.X(...).decode(tokens)`, on real token streams and random ones.

Invalid UTF-8 (byte-level or `<0xXX>` pieces) must give U+FFFD exactly where the library puts it,
never an exception.
"""

from __future__ import annotations

import itertools
import json

import _helpers_b as H
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from modelkiln.runtime.tokenizer.decoders import BYTES_CHAR, Strip, build_decoder, find_matches

CONFIGS = {
    "byte_level": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    "wordpiece": {"type": "WordPiece", "prefix": "##", "cleanup": True},
    "wordpiece_raw": {"type": "WordPiece", "prefix": "@@", "cleanup": False},
    "metaspace_always": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
    "metaspace_first": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False},
    "metaspace_never": {"type": "Metaspace", "replacement": "_", "prepend_scheme": "never", "split": True},
    "metaspace_legacy": {"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True},
    "bpe": {"type": "BPEDecoder", "suffix": "</w>"},
    "ctc": {"type": "CTC", "pad_token": "<pad>", "word_delimiter_token": "|", "cleanup": True},
    "ctc_raw": {"type": "CTC", "pad_token": "[PAD]", "word_delimiter_token": "_", "cleanup": False},
    "replace_string": {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
    "replace_regex": {"type": "Replace", "pattern": {"Regex": "a*|\\s+"}, "content": "<$0>"},
    "fuse": {"type": "Fuse"},
    "strip": {"type": "Strip", "content": " ", "start": 1, "stop": 0},
    "byte_fallback": {"type": "ByteFallback"},
    "sequence_llama": {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"},
        {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    "sequence_bytefallback_metaspace": {"type": "Sequence", "decoders": [
        {"type": "ByteFallback"}, {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always"}]},
}


def lib_decoder(cfg: dict):
    return H.lib_tokenizer({"type": "WordLevel", "vocab": {"a": 0}, "unk_token": "a"}, decoder=cfg).decoder


def assert_decodes_like_library(name: str, tokens: list[str]) -> None:
    cfg = CONFIGS[name]
    assert build_decoder(cfg).decode(tokens) == lib_decoder(cfg).decode(tokens), (name, tokens)


# Pieces that trigger every decoder's special cases.
PIECES = [
    "\u2581", "\u2581\u2581", "\u2581a", "a\u2581b", "##", "##ing", "@@x", "</w>", "wo</w>rd", "<pad>", "[PAD]", "|",
    "_", "Ġ", "Ġhi", "Ċ", "ðŁ", "¤Ĺ", "<0x41>", "<0xE5>", "<0x8F>", "<0xAB>", "<0xC3>", "<0xA9>", "<0xFF>",
    "<0x+A>", "<0xG1>", "<0x4>", "<0x041>", " ", "  ", " .", " ,", " n't", " 's", " do not", "a", "aa", "b", "é",
    "🤗", "\x00", "x\ty", "",
]
TOKENS = st.lists(st.sampled_from(PIECES) | st.text(max_size=4), max_size=12)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_decoder_matches_library_on_crafted_tokens(name):
    samples = [[], [""], PIECES, PIECES[::-1], ["<pad>", "<pad>", "h", "h", "<pad>", "i", "|", "|", "x"]]
    samples += [[p] for p in PIECES] + [[a, b] for a in PIECES[:12] for b in PIECES[:12]]
    for tokens in samples:
        if name == "strip" and any(t == "" or t == " " for t in tokens):
            continue  # panics in the library, checked below
        assert_decodes_like_library(name, tokens)


@pytest.mark.parametrize("name", sorted(set(CONFIGS) - {"strip"}))
@given(tokens=TOKENS)
@settings(max_examples=40, deadline=None)
def test_decoder_matches_library_on_random_tokens(name, tokens):
    assert_decodes_like_library(name, tokens)


@given(data=st.binary(max_size=40), cuts=st.lists(st.integers(0, 40), max_size=6))
@settings(max_examples=200, deadline=None)
def test_byte_level_invalid_utf8_is_replaced_like_the_library(data, cuts):
    text = "".join(BYTES_CHAR[b] for b in data)
    bounds = sorted({0, len(text), *[c for c in cuts if c <= len(text)]})
    tokens = [text[a:b] for a, b in itertools.pairwise(bounds)]
    assert_decodes_like_library("byte_level", tokens)


@given(data=st.binary(max_size=24), words=st.lists(st.sampled_from(["a", "\u2581b", "c\u2581"]), max_size=3))
@settings(max_examples=200, deadline=None)
def test_byte_fallback_runs_like_the_library(data, words):
    tokens = [f"<0x{b:02X}>" for b in data]
    for i, w in enumerate(words):
        tokens.insert((i * 7) % (len(tokens) + 1), w)
    assert_decodes_like_library("byte_fallback", tokens)
    assert_decodes_like_library("sequence_llama", tokens)


@given(tokens=st.lists(st.text(alphabet=" ab", max_size=4), max_size=5), start=st.integers(0, 3),
       stop=st.integers(0, 3))
@settings(max_examples=150, deadline=None)
def test_strip_matches_library_or_fails_where_it_panics(tokens, start, stop):
    lib = lib_decoder({"type": "Strip", "content": " ", "start": start, "stop": stop})
    try:
        expected = lib.decode(tokens)
    except BaseException as e:  # pyo3 PanicException: the library indexes out of bounds
        if type(e).__name__ != "PanicException":
            raise
        with pytest.raises(ValueError, match="Strip decoder"):
            Strip(" ", start, stop).decode(tokens)
        return
    assert Strip(" ", start, stop).decode(tokens) == expected


# --- real tokenizers: decode the library's own encodings ---------------------------------------------


@pytest.fixture(scope="module")
def smollm2(request, tmp_path_factory) -> str:
    return H.smollm2_for(request, tmp_path_factory)


def _roundtrip(tok_json: str) -> None:
    lib = H.LibTokenizer.from_str(tok_json)
    mine = build_decoder(json.loads(tok_json)["decoder"])
    for text in H.SAMPLES:
        tokens = lib.encode(text).tokens
        assert mine.decode(tokens) == lib.decoder.decode(tokens), text
        # and single tokens, where byte-level / byte-fallback pieces are incomplete characters
        for t in tokens[:40]:
            assert mine.decode([t]) == lib.decoder.decode([t]), t


def test_smollm2_byte_level_decoder(smollm2):
    _roundtrip(smollm2)


def test_minilm_wordpiece_decoder():
    _roundtrip(H.minilm_json())


@pytest.mark.parametrize("name", ["tokenizer.model.v1", "mistral_instruct_tokenizer_240323.model.v3"])
def test_mistral_sentencepiece_decoder(name):
    _roundtrip(H.mistral_json(name))


def test_trained_sentencepiece_unigram_decoder():
    _roundtrip(H.trained_spm("unigram"))


# --- details --------------------------------------------------------------------------------------


def test_find_matches_skips_empty_match_after_a_match_like_oniguruma():
    import regex

    assert find_matches(regex.compile("a*"), "baac") == [(0, 0), (1, 3), (4, 4)]
    assert build_decoder(CONFIGS["replace_regex"]).decode(["baac"]) == lib_decoder(CONFIGS["replace_regex"]).decode(["baac"])


def test_decode_chain_keeps_tokens_separate():
    assert build_decoder(CONFIGS["wordpiece"]).decode_chain(["un", "##aff", "!"]) == ["un", "aff", "!"]
    assert build_decoder(CONFIGS["byte_level"]).decode_chain(["Ġa", "b"]) == [" ab"]


def test_unknown_decoder_type_names_its_place():
    with pytest.raises(ValueError, match=r"decoder.decoders\[0\].type 'Nope'"):
        build_decoder({"type": "Sequence", "decoders": [{"type": "Nope"}]})
    with pytest.raises(ValueError, match="prepend_scheme"):
        build_decoder({"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "sometimes"})
