"""DecodeStream against `tokenizers.decoders.DecodeStream`, step by step.

Our stream runs on `MiniTokenizer` (our model + our decoder, decoding like the library's
`Tokenizer.decode`), the library's on the library tokenizer built from the same tokenizer.json.
Every step's output must be identical (None included), and for the ids of a real encoding the
chunks must concatenate to `decode(all ids)`.
"""

from __future__ import annotations

import functools
import json

import _helpers_b as H
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from modelkiln.runtime.tokenizer.streaming import DecodeStream
from tokenizers.decoders import DecodeStream as LibDecodeStream


@pytest.fixture(scope="module")
def smollm2(request, tmp_path_factory) -> str:
    return H.smollm2_for(request, tmp_path_factory)


@functools.lru_cache(maxsize=8)
def _pair(tok_json: str):
    return H.LibTokenizer.from_str(tok_json), H.MiniTokenizer(tok_json)


def stream_both(lib, mine, ids, skip: bool, prefill=None, chunk: int = 1):
    """Step outputs of both streams; an exception ends a stream as ("error", its message)."""
    outs = []
    for impl, tok, cls in (("lib", lib, LibDecodeStream), ("mine", mine, DecodeStream)):
        stream = cls(ids=prefill, skip_special_tokens=skip)
        steps = []
        for i in range(0, len(ids), chunk):
            step_ids = ids[i] if chunk == 1 else ids[i : i + chunk]
            try:
                steps.append(stream.step(tok, step_ids))
            except Exception as e:  # noqa: BLE001 - InvalidPrefix, compared with the other stream
                steps.append(("error", str(e).split(".")[0]))
                break
        outs.append(steps)
    return outs


def assert_streams_match(tok_json: str, id_lists, skips=(False, True)) -> None:
    lib, mine = _pair(tok_json)
    for ids in id_lists:
        for skip in skips:
            expected, got = stream_both(lib, mine, ids, skip)
            assert got == expected, (ids, skip)


def assert_complete_text_streams(tok_json: str, texts) -> None:
    lib, mine = _pair(tok_json)
    for text in texts:
        ids = lib.encode(text).ids
        for skip in (False, True):
            expected, got = stream_both(lib, mine, ids, skip)
            assert got == expected, (text, skip)
            assert "".join(c for c in got if c is not None) == lib.decode(ids, skip_special_tokens=skip), text


def test_smollm2_byte_level_stream(smollm2):
    assert_complete_text_streams(smollm2, H.SAMPLES)
    lib = H.LibTokenizer.from_str(smollm2)
    im_start, im_end = lib.token_to_id("<|im_start|>"), lib.token_to_id("<|im_end|>")
    ids = [im_start] + lib.encode("user\nHi 👋🏽, ça va? 中文").ids + [im_end]
    assert_streams_match(smollm2, [ids, ids[1:4] + [im_end] + ids[4:]])


@pytest.mark.parametrize("name", ["tokenizer.model.v1", "mistral_instruct_tokenizer_241114.model.v7"])
def test_mistral_byte_fallback_stream(name):
    tok_json = H.mistral_json(name)
    assert_complete_text_streams(tok_json, H.SAMPLES)


def test_minilm_wordpiece_stream():
    assert_complete_text_streams(H.minilm_json(), H.SAMPLES)


def test_trained_sentencepiece_unigram_stream():
    assert_complete_text_streams(H.trained_spm("unigram"), H.SAMPLES)


def test_prefill_and_list_steps(smollm2):
    lib, mine = _pair(H.mistral_json("tokenizer.model.v1"))
    ids = lib.encode("Prefix text, then 🤗 and 中文 follow.").ids
    for cut in range(0, len(ids), 3):
        for chunk in (1, 2, 3):
            expected, got = stream_both(lib, mine, ids[cut:], False, prefill=ids[:cut], chunk=chunk)
            assert got == expected, (cut, chunk)


def test_library_positional_order_is_accepted():
    lib, mine = _pair(H.mistral_json("tokenizer.model.v1"))
    ids = lib.encode("Hello there, general Kenobi").ids
    positional = DecodeStream(ids[:2], True)  # tokenizers' order: ids first
    assert positional.skip_special_tokens is True and positional.ids == ids[:2]
    assert positional.step(mine, ids[2]) == LibDecodeStream(ids[:2], True).step(lib, ids[2])


@pytest.fixture(scope="module")
def mistral_ids():
    lib = H.LibTokenizer.from_str(H.mistral_json("tokenizer.model.v1"))
    byte_ids = [lib.token_to_id(f"<0x{b:02X}>") for b in (0x20, 0x41, 0xC3, 0xA9, 0xE4, 0xB8, 0xAD, 0xF0, 0x9F, 0xA4, 0x97)]
    common = lib.encode("the quick brown fox, ça va? 中文").ids
    return [0, 1, 2, 31999, 32000, 40000] + byte_ids + common


@given(data=st.data())
@settings(max_examples=150, deadline=None)
def test_random_id_streams(mistral_ids, data):
    """Random ids (specials, lone UTF-8 bytes, unknown ids) over a byte-fallback tokenizer."""
    ids = data.draw(st.lists(st.sampled_from(mistral_ids), max_size=14))
    assert_streams_match(H.mistral_json("tokenizer.model.v1"), [ids])


@given(data=st.data())
@settings(max_examples=80, deadline=None)
def test_random_byte_level_streams(smollm2, data):
    ids = data.draw(st.lists(st.integers(0, 49151), max_size=10))
    assert_streams_match(smollm2, [ids])


def test_docstring_example_without_a_tokenizer():
    class Latin1:
        def decode(self, ids, skip_special_tokens=False):
            return bytes(ids).decode("utf-8", "replace")

    s = DecodeStream()
    assert [s.step(Latin1(), i) for i in "héllo".encode()] == ["h", None, "é", "l", "l", "o"]


def test_lengths_are_compared_in_utf8_bytes():
    """"éé" then "abc": more characters but fewer bytes, so the library waits (None) instead of failing."""
    tok_json = json.dumps({
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
        "pre_tokenizer": None, "post_processor": None,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Fuse"}, {"type": "Replace", "pattern": {"Regex": "ééz"}, "content": "ab"}]},
        "model": {"type": "WordLevel", "vocab": {"éé": 0, "zc": 1, "[UNK]": 2}, "unk_token": "[UNK]"},
    })
    lib, mine = _pair(tok_json)
    expected, got = stream_both(lib, mine, [0, 1, 0], False)
    assert expected[:2] == ["éé", None] and got == expected
