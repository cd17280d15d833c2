"""End to end: `modelkiln.runtime.Tokenizer` against `tokenizers.Tokenizer` on the same tokenizer.json.

Real tokenizers (SmolLM2, all-MiniLM-L6-v2, the mistral-common SentencePiece models), SentencePiece models
trained and converted here, and pipelines trained with the `tokenizers` trainers (together: every model,
normalizer, pre-tokenizer, post-processor and decoder type). Every field is compared exactly: ids, tokens,
char offsets, type ids, attention and special-token masks, word and sequence ids, overflowing encodings,
and decoded text with and without special tokens.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from tokenizers import Tokenizer as LibTokenizer
from tokenizers.decoders import DecodeStream as LibDecodeStream

from tokenizer_support import (
    PAIRS,
    PIPELINES,
    PRETOKENIZED,
    REAL,
    TEXTS,
    encoding_fields,
    tokenizer_json,
    tricky_text,
    unicode_text,
)
import modelkiln.runtime
from modelkiln.runtime.tokenizer import DecodeStream, Tokenizer

ALL = REAL + PIPELINES
_LOADED: dict[str, tuple[LibTokenizer, Tokenizer]] = {}


@pytest.fixture(scope="module")
def load(tokenizer_dirs, trained_pipelines):
    """name -> (library tokenizer, ours), both fresh from the same tokenizer.json, loaded once per module."""

    def get(name: str):
        if name not in _LOADED:
            path = tokenizer_json(name, tokenizer_dirs, trained_pipelines)
            _LOADED[name] = (LibTokenizer.from_file(str(path)), Tokenizer.from_file(path))
        return _LOADED[name]

    yield get
    _LOADED.clear()


def assert_same(lib_enc, my_enc, what=""):
    expected, got = encoding_fields(lib_enc), encoding_fields(my_enc)
    if expected != got:
        diff = {k: (expected[k], got[k]) for k in expected if expected[k] != got[k]}
        pytest.fail(f"{what}: {json.dumps(diff, ensure_ascii=False)[:2000]}")


def assert_same_decode(lib, mine, ids, what=""):
    for skip in (True, False):
        assert mine.decode(ids, skip_special_tokens=skip) == lib.decode(ids, skip_special_tokens=skip), (what, skip)


@pytest.mark.parametrize("name", ALL)
def test_encode_and_decode_the_corpus(load, name):
    lib, mine = load(name)
    for key, text in TEXTS.items():
        for special in (True, False):
            a = lib.encode(text, add_special_tokens=special)
            assert_same(a, mine.encode(text, add_special_tokens=special), f"{name}/{key}/special={special}")
            assert_same_decode(lib, mine, a.ids, f"{name}/{key}")


@pytest.mark.parametrize("name", ALL)
def test_pairs_batches_and_pretokenized_input(load, name):
    lib, mine = load(name)
    for x, y in PAIRS:
        assert_same(lib.encode(TEXTS[x], TEXTS[y]), mine.encode(TEXTS[x], TEXTS[y]), f"{name}/pair {x},{y}")
    batch = [TEXTS["prose"], (TEXTS["code"], TEXTS["chinese"]), TEXTS["empty"], TEXTS["emoji"]]
    for a, b in zip(lib.encode_batch(batch), mine.encode_batch(batch)):
        assert_same(a, b, f"{name}/batch")
    for words in PRETOKENIZED:
        assert_same(lib.encode(words, is_pretokenized=True), mine.encode(words, is_pretokenized=True),
                    f"{name}/pretokenized {words}")
    pretok_batch = [PRETOKENIZED[0], (PRETOKENIZED[1], PRETOKENIZED[2])]
    for a, b in zip(lib.encode_batch(pretok_batch, is_pretokenized=True),
                    mine.encode_batch(pretok_batch, is_pretokenized=True)):
        assert_same(a, b, f"{name}/pretokenized batch")
    lib_ids = [e.ids for e in lib.encode_batch([TEXTS["prose"], TEXTS["arabic"]])]
    assert mine.decode_batch(lib_ids) == lib.decode_batch(lib_ids)
    assert mine.decode_batch(lib_ids, skip_special_tokens=False) == lib.decode_batch(lib_ids, skip_special_tokens=False)


def same_or_same_error(call, lib, mine, what):
    """Same encodings, or -- where the library refuses (only_first / only_second) -- the same error."""
    try:
        expected = call(lib)
    except Exception as e:
        with pytest.raises(ValueError) as err:
            call(mine)
        assert str(err.value) == str(e)
        return
    for a, b in zip(expected, call(mine), strict=True):
        assert_same(a, b, what)


# (truncation, padding) settings; pairs with a stride multiply overflowing encodings, so inputs stay short.
SETTINGS = [
    (dict(max_length=8), dict()),
    (dict(max_length=12, stride=3, direction="left"), dict(direction="left", pad_id=7, pad_type_id=1, pad_token="<P>")),
    (dict(max_length=10, strategy="only_first"), dict(length=40)),
    (dict(max_length=16, strategy="only_second"), dict(pad_to_multiple_of=8, direction="left")),
    (dict(max_length=9, stride=1), dict(pad_to_multiple_of=4)),
    (None, dict(length=30, direction="left")),
]


@pytest.mark.parametrize("name", ["smollm2", "minilm", "mistral:tokenizer.model.v1", "spm_unigram_nmt_nfkc_cf",
                                  "roberta_bpe", "wordpiece_template", "unigram_metaspace"])
def test_truncation_and_padding(load, name):
    lib, mine = load(name)
    inputs = [(TEXTS["prose"][:48], TEXTS["chinese"][:12]), (TEXTS["numbers"][:30], TEXTS["emoji"][:24]), TEXTS["code"]]
    try:
        for trunc, pad in SETTINGS:
            for t in (lib, mine):
                t.enable_truncation(**trunc) if trunc else t.no_truncation()
                t.enable_padding(**pad)
            assert mine.truncation == lib.truncation and mine.padding == lib.padding
            same_or_same_error(lambda t: t.encode_batch(inputs), lib, mine, f"{name} {trunc} {pad}")
            for special in (True, False):
                same_or_same_error(lambda t: [t.encode(TEXTS["prose"], add_special_tokens=special)], lib, mine,
                                   f"{name} {trunc} {pad} {special}")
    finally:
        for t in (lib, mine):
            t.no_truncation()
            t.no_padding()


def test_stride_too_large_for_the_special_tokens_is_refused(load):
    lib, mine = load("minilm")
    with pytest.raises(Exception) as lib_error:
        lib.enable_truncation(5, stride=4)
    with pytest.raises(ValueError) as my_error:
        mine.enable_truncation(5, stride=4)
    assert str(my_error.value) == str(lib_error.value)
    for max_length, stride in [(5, 3), (1, 1), (2, 0)]:
        lib.enable_truncation(max_length, stride=stride)
        mine.enable_truncation(max_length, stride=stride)
        assert mine.truncation == lib.truncation
    lib.no_truncation()
    mine.no_truncation()


@pytest.mark.parametrize("name", ["smollm2", "minilm", "mistral:mistral_instruct_tokenizer_240323.model.v3",
                                  "spm_unigram_nmt_nfkc_bytefallback", "spm_bpe_nfkc", "bert_wordpiece",
                                  "unigram_scripts", "bpe_suffix_fixed"])
@settings(max_examples=25, deadline=None)
@given(text=unicode_text, pair=tricky_text)
def test_random_unicode(load, name, text, pair):
    lib, mine = load(name)
    a = lib.encode(text)
    assert_same(a, mine.encode(text), name)
    assert_same(lib.encode(text, pair), mine.encode(text, pair), name)
    assert_same_decode(lib, mine, a.ids, name)


@pytest.mark.parametrize("name", ALL)
def test_vocabulary_api(load, name):
    lib, mine = load(name)
    assert mine.get_vocab() == lib.get_vocab()
    assert mine.get_vocab(with_added_tokens=False) == lib.get_vocab(with_added_tokens=False)
    assert mine.get_vocab_size() == lib.get_vocab_size()
    assert mine.get_vocab_size(with_added_tokens=False) == lib.get_vocab_size(with_added_tokens=False)
    n = lib.get_vocab_size()
    ids = list(range(0, n, max(1, n // 500))) + [n - 1]
    assert [mine.id_to_token(i) for i in ids] == [lib.id_to_token(i) for i in ids]
    tokens = [t for t in (lib.id_to_token(i) for i in ids) if t is not None] + ["definitely-not-a-token"]
    assert [mine.token_to_id(t) for t in tokens] == [lib.token_to_id(t) for t in tokens]
    for pair in (False, True):
        assert mine.num_special_tokens_to_add(pair) == lib.num_special_tokens_to_add(pair)
    assert mine.truncation == lib.truncation and mine.padding == lib.padding


@pytest.mark.parametrize("name", ["smollm2", "mistral:tokenizer.model.v1", "spm_unigram_nmt_nfkc_bytefallback",
                                  "minilm"])
def test_decode_stream(load, name):
    """Streaming detokenization over our Tokenizer gives the library's chunks, which add up to `decode`."""
    lib, mine = load(name)
    ids = lib.encode(TEXTS["emoji"] + TEXTS["japanese"] + TEXTS["devanagari"]).ids
    lib_stream, my_stream = LibDecodeStream(skip_special_tokens=False), DecodeStream(skip_special_tokens=False)
    chunks = [my_stream.step(mine, i) for i in ids]
    assert chunks == [lib_stream.step(lib, i) for i in ids]
    assert "".join(c for c in chunks if c) == mine.decode(ids, skip_special_tokens=False)


def test_invalid_utf8_decodes_to_replacement_chars(load):
    lib, mine = load("smollm2")
    ids = lib.encode("é😀").ids
    # Cut characters in the middle of their byte-level tokens: the library puts U+FFFD there, so do we.
    for cut in ([ids[0]], ids[1:], ids[::-1]):
        assert mine.decode(cut) == lib.decode(cut)
    lib, mine = load("mistral:tokenizer.model.v1")
    ids = lib.encode("日本").ids
    byte_ids = [mine.token_to_id(f"<0x{b:02X}>") for b in "😀".encode()]
    assert mine.decode(byte_ids[:2] + ids) == lib.decode(byte_ids[:2] + ids)


def test_decode_refuses_unknown_ids(load):
    _, mine = load("minilm")
    with pytest.raises(ValueError, match="cannot decode id 999999"):
        mine.decode([101, 999999])
    with pytest.raises(ValueError, match="cannot decode id -1"):
        mine.decode([-1])


def test_input_types_are_checked(load):
    _, mine = load("minilm")
    with pytest.raises(TypeError, match="TextInputSequence must be str"):
        mine.encode(["not", "pretokenized"])
    with pytest.raises(TypeError, match="PreTokenizedInputSequence"):
        mine.encode("text", is_pretokenized=True)


def test_missing_file_and_bad_json_name_the_file(tmp_path):
    missing = tmp_path / "nope" / "tokenizer.json"
    with pytest.raises(FileNotFoundError, match="nope/tokenizer.json"):
        Tokenizer.from_file(missing)
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"model": {', encoding="utf-8")
    with pytest.raises(ValueError, match=r"tokenizer\.json is not valid JSON"):
        Tokenizer.from_file(bad)
    bad.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match="expected a JSON object"):
        Tokenizer.from_file(bad)


def test_unknown_component_types_say_where(trained_pipelines):
    config = json.loads(trained_pipelines["wordpiece_template"].read_text(encoding="utf-8"))
    config["pre_tokenizer"]["pretokenizers"][1] = {"type": "Sparkles"}
    with pytest.raises(ValueError, match=r"pre_tokenizer\.pretokenizers\[1\]: unknown pre-tokenizer type 'Sparkles'"):
        Tokenizer.from_str(json.dumps(config))
    config = json.loads(trained_pipelines["wordpiece_template"].read_text(encoding="utf-8"))
    config["normalizer"]["normalizers"][2] = {"type": "Shouting"}
    with pytest.raises(ValueError, match=r"normalizer\.normalizers\[2\]: unknown normalizer type 'Shouting'"):
        Tokenizer.from_str(json.dumps(config))
    config["normalizer"] = None
    config["decoder"] = {"type": "Mumble"}
    with pytest.raises(ValueError, match="unknown decoder.type 'Mumble'"):
        Tokenizer.from_str(json.dumps(config))


def test_runtime_reexports_the_tokenizer():
    assert modelkiln.runtime.Tokenizer is Tokenizer
