"""Encoding, truncation and padding against the `tokenizers` library.

The library side is a full `tokenizers.Tokenizer` (WordLevel model, WhitespaceSplit, no post-processor
or a template) with `truncation` / `padding` set; our side is our model + `truncate_encodings` +
`default_process`/post-processor + `pad_encodings`, glued as `TokenizerImpl::post_process` does.
Every observable field is compared, overflowing encodings recursively, errors included.
"""

from __future__ import annotations

import itertools

import _helpers_b as H
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from modelkiln.runtime.tokenizer.encoding import (
    Encoding,
    PaddingParams,
    TruncationParams,
    pad_encodings,
    truncate_encodings,
)
from modelkiln.runtime.tokenizer.models import build_model
from modelkiln.runtime.tokenizer.post_processors import build_post_processor

MODEL = build_model(H.WORDLEVEL)


@pytest.mark.parametrize("pp_name", ["none", "template"])
def test_truncation_and_padding_match_library(pp_name):
    pp = H.POST_PROCESSORS[pp_name]
    n_errors = 0
    for (a, b), trunc, pad, add in itertools.product(H.PAIRS, H.TRUNCATIONS, H.PADDINGS, (True, False)):
        expected, got = H.run_both(MODEL, pp, a, b, add, trunc, pad)
        assert got == expected, (a, b, trunc, pad, add)
        n_errors += isinstance(expected, str)
    assert n_errors > 0  # the "sequence too short" / "second sequence not provided" cases were exercised


WORD = st.sampled_from(["a", "b", "c", "d", "e", "f", "g", "h", "zz"])


@given(
    a=st.lists(WORD, max_size=12), b=st.none() | st.lists(WORD, max_size=12),
    max_length=st.integers(0, 14), stride=st.integers(0, 4),
    strategy=st.sampled_from(["LongestFirst", "OnlyFirst", "OnlySecond"]), direction=st.sampled_from(["Left", "Right"]),
    pad=st.sampled_from(H.PADDINGS), multiple=st.sampled_from([None, 0, 3, 8]),
    pp=st.sampled_from([None, H.BERT, H.TEMPLATE_ODD]), add=st.booleans(),
)
@settings(max_examples=150, deadline=None)
def test_random_truncation_and_padding(a, b, max_length, stride, strategy, direction, pad, multiple, pp, add):
    trunc = {"direction": direction, "max_length": max_length, "strategy": strategy, "stride": stride}
    if pad is not None:
        pad = dict(pad, pad_to_multiple_of=multiple)
    expected, got = H.run_both(MODEL, pp, " ".join(a), None if b is None else " ".join(b), add, trunc, pad)
    assert got == expected


def _pair(text_a: str, text_b: str):
    """The same pair encoding (BERT template) from the library and from us, for method comparisons."""
    lib = H.lib_tokenizer(H.WORDLEVEL, pre_tokenizer=H.WHITESPACE_SPLIT, post_processor=H.BERT)
    mine = H.glue_post_process(build_post_processor(H.BERT), H.glue_encode(MODEL, text_a, 0),
                               H.glue_encode(MODEL, text_b, 1))
    return lib.encode(text_a, text_b), mine


def test_alignment_methods_match_library():
    lib, mine = _pair("a  bb c dd e", "f g  hh")
    assert H.encoding_fields(mine) == H.encoding_fields(lib)
    n = len(lib.ids)
    for i in range(n + 2):
        assert mine.token_to_sequence(i) == lib.token_to_sequence(i), i
        assert mine.token_to_chars(i) == lib.token_to_chars(i), i
        assert mine.token_to_word(i) == lib.token_to_word(i), i
        for seq in (0, 1):
            assert mine.char_to_token(i, seq) == lib.char_to_token(i, seq), (i, seq)
            assert mine.char_to_word(i, seq) == lib.char_to_word(i, seq), (i, seq)
            assert mine.word_to_tokens(i, seq) == lib.word_to_tokens(i, seq), (i, seq)
            assert mine.word_to_chars(i, seq) == lib.word_to_chars(i, seq), (i, seq)
    assert mine.words == lib.words and len(mine) == len(lib)


@pytest.mark.parametrize("growing", [True, False])
def test_encoding_methods_match_library(growing):
    lib_a, mine_a = _pair("a b c d", "e f")
    lib_b, mine_b = _pair("g h", "a b c")
    merged_lib = type(lib_a).merge([lib_a, lib_b], growing_offsets=growing)
    merged = Encoding.merge([mine_a, mine_b], growing_offsets=growing)
    assert H.encoding_fields(merged) == H.encoding_fields(merged_lib)
    for max_length, stride, direction in [(7, 2, "right"), (5, 0, "left"), (3, 1, "left"), (0, 0, "right")]:
        lib_e, mine_e = _pair("a b c d e f", "g h a")
        lib_e.truncate(max_length, stride=stride, direction=direction)
        mine_e.truncate(max_length, stride=stride, direction=direction)
        assert H.encoding_fields(mine_e) == H.encoding_fields(lib_e), (max_length, stride, direction)
        lib_e.pad(14, direction="left", pad_id=9, pad_type_id=3, pad_token="<p>")
        mine_e.pad(14, direction="left", pad_id=9, pad_type_id=3, pad_token="<p>")
        assert H.encoding_fields(mine_e) == H.encoding_fields(lib_e), (max_length, stride, direction)


def test_truncation_errors():
    def enc(n):
        return Encoding.from_tokens([(1, "a", (i, i + 1)) for i in range(n)])

    with pytest.raises(ValueError, match="Second sequence not provided"):
        truncate_encodings(enc(5), None, TruncationParams(max_length=3, strategy="only_second"))
    with pytest.raises(ValueError, match="too short"):
        truncate_encodings(enc(2), enc(5), {"max_length": 4, "strategy": "OnlyFirst", "stride": 0})
    with pytest.raises(ValueError, match="stride"):
        enc(5).truncate(2, stride=2)
    with pytest.raises(ValueError, match="strategy"):
        TruncationParams(strategy="shortest_first")
    with pytest.raises(ValueError, match="direction"):
        PaddingParams(direction="up")


def test_params_read_tokenizer_json_and_python_forms():
    assert TruncationParams.from_config({"max_length": 128, "strategy": "LongestFirst", "stride": 0}) == TruncationParams(128)
    assert TruncationParams(10, 2, "only_second", "left").as_dict() == {
        "max_length": 10, "stride": 2, "strategy": "only_second", "direction": "left"}
    p = PaddingParams.from_config({"strategy": "BatchLongest", "direction": "Right", "pad_to_multiple_of": 8,
                                   "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"})
    assert p == PaddingParams(pad_to_multiple_of=8)
    assert p.as_dict()["length"] is None
    encs = [Encoding.from_tokens([(1, "a", (0, 1))] * n) for n in (1, 9)]
    assert [len(e) for e in pad_encodings(encs, p)] == [16, 16]
    assert pad_encodings([], p) == []


@pytest.mark.parametrize("module", ["models", "encoding", "post_processors", "decoders", "streaming"])
def test_docstring_examples_run(module):
    """The input → output examples in the docstrings of part B's modules are true."""
    import doctest
    import importlib

    mod = importlib.import_module(f"modelkiln.runtime.tokenizer.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
