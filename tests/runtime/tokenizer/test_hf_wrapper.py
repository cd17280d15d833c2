"""The HF-style wrapper against `transformers.AutoTokenizer` loading the same directory."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tokenizer_support import TEXTS
from modelkiln.runtime.tokenizer.hf import AutoTokenizer, BatchEncoding, clean_up_tokenization

DIRS = ["minilm", "smollm2", "mistral:tokenizer.model.v1", "mistral_with_pad", "spm_bpe_nfkc",
        "spm_unigram_nmt_nfkc_cf"]
BATCH = [TEXTS["prose"], TEXTS["code"][:40], TEXTS["japanese"], "don't , stop !", TEXTS["empty"]]
CALLS = [
    dict(),
    dict(padding=True),
    dict(padding="max_length", max_length=48),
    dict(truncation=True, max_length=12),
    dict(padding=True, truncation=True, max_length=16, return_offsets_mapping=True),
    dict(padding=True, return_tensors="np"),
    dict(return_special_tokens_mask=True, return_length=True),
    dict(add_special_tokens=False),
    dict(truncation=True, max_length=24, stride=2, return_overflowing_tokens=True, padding=True),
    dict(truncation="only_second", max_length=24),
    dict(padding=True, pad_to_multiple_of=8, padding_side="left"),
    dict(max_length=10),
]


@pytest.fixture(scope="module")
def pair_of(tokenizer_dirs, tmp_path_factory):
    import transformers

    transformers.logging.set_verbosity_error()
    dirs = dict(tokenizer_dirs)
    # A Llama-class directory with a pad token, so padding and the left padding side get exercised.
    padded = tmp_path_factory.mktemp("mistral_pad")
    shutil.copytree(dirs["mistral:tokenizer.model.v1"], padded, dirs_exist_ok=True)
    config = json.loads((padded / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["pad_token"] = "</s>"
    (padded / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    dirs["mistral_with_pad"] = padded
    cache = {}

    def get(name):
        if name not in cache:
            ref = transformers.AutoTokenizer.from_pretrained(dirs[name])
            cache[name] = (ref, AutoTokenizer.from_pretrained(dirs[name]))
        return cache[name]

    return get


def _same(expected, got, what):
    assert sorted(expected.keys()) == sorted(got.keys()), what
    for key in expected:
        a, b = expected[key], got[key]
        if isinstance(a, np.ndarray):
            assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, (what, key)
            assert (a == b).all(), (what, key)
        else:
            assert b == a, (what, key)


def _call_both(ref, mine, args, kwargs, what):
    try:
        expected = ref(*args, **kwargs)
    except Exception as e:  # e.g. only_second without a pair, padding without a pad token
        with pytest.raises(type(e) if isinstance(e, ValueError) else ValueError):
            mine(*args, **kwargs)
        return
    got = mine(*args, **kwargs)
    assert isinstance(got, BatchEncoding)
    _same(expected, got, what)


@pytest.mark.parametrize("name", DIRS)
def test_call_matches_transformers(pair_of, name):
    ref, mine = pair_of(name)
    for kwargs in CALLS:
        _call_both(ref, mine, (BATCH[0],), kwargs, f"{name} single {kwargs}")
        _call_both(ref, mine, (BATCH,), kwargs, f"{name} batch {kwargs}")
        _call_both(ref, mine, (BATCH[:3], BATCH[1:4]), kwargs, f"{name} pairs {kwargs}")
    words = [["Hello", "wörld"], ["日本", "語", "!"]]
    _call_both(ref, mine, (words,), dict(is_split_into_words=True, padding=True), f"{name} split into words")


@pytest.mark.parametrize("name", DIRS)
def test_encode_decode_and_vocabulary_match_transformers(pair_of, name):
    ref, mine = pair_of(name)
    for kwargs in (dict(), dict(truncation=True, max_length=7), dict(add_special_tokens=False)):
        assert mine.encode(BATCH[0], **kwargs) == ref.encode(BATCH[0], **kwargs)
    ids = ref(BATCH)["input_ids"]
    for skip in (False, True):
        for cleanup in (None, True, False):
            assert mine.batch_decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=cleanup) == \
                ref.batch_decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=cleanup)
    assert mine.decode(np.array(ids[0])) == ref.decode(ids[0])
    assert mine.decode(ids[0][0]) == ref.decode(ids[0][0])
    for attr in ("pad_token_id", "eos_token_id", "bos_token_id", "unk_token_id", "sep_token_id", "cls_token_id",
                 "mask_token_id", "pad_token", "eos_token", "bos_token", "model_max_length", "padding_side",
                 "truncation_side", "all_special_tokens", "all_special_ids", "vocab_size", "model_input_names",
                 "clean_up_tokenization_spaces", "chat_template"):
        assert getattr(mine, attr) == getattr(ref, attr), attr
    assert len(mine) == len(ref)
    assert mine.get_vocab() == ref.get_vocab()
    assert mine.convert_ids_to_tokens(ids[1]) == ref.convert_ids_to_tokens(ids[1])
    assert mine.convert_ids_to_tokens(ids[1], skip_special_tokens=True) == \
        ref.convert_ids_to_tokens(ids[1], skip_special_tokens=True)
    assert mine.convert_ids_to_tokens(ids[1][1]) == ref.convert_ids_to_tokens(ids[1][1])
    probe = ["hello", "Hello", "zzzzqq", ref.all_special_tokens[0]]
    assert mine.convert_tokens_to_ids(probe) == ref.convert_tokens_to_ids(probe)
    assert mine.convert_tokens_to_ids("zzzzqq") == ref.convert_tokens_to_ids("zzzzqq")
    assert mine.tokenize(BATCH[1]) == ref.tokenize(BATCH[1])
    for pair in (False, True):
        assert mine.num_special_tokens_to_add(pair) == ref.num_special_tokens_to_add(pair)


def test_smollm2_keeps_its_chat_template(pair_of):
    ref, mine = pair_of("smollm2")
    assert mine.chat_template == ref.chat_template
    assert "<|im_start|>" in mine.chat_template


def test_numpy_output_needs_rectangular_batches(pair_of):
    _, mine = pair_of("minilm")
    with pytest.raises(ValueError, match="different lengths"):
        mine(BATCH, return_tensors="np")
    with pytest.raises(ValueError, match="return_tensors='pt'"):
        mine(BATCH, return_tensors="pt")


def test_padding_without_pad_token_is_refused(pair_of):
    _, mine = pair_of("mistral:tokenizer.model.v1")
    with pytest.raises(ValueError, match="no pad_token"):
        mine(BATCH, padding=True)


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        AutoTokenizer.from_pretrained(tmp_path / "nowhere")


def test_clean_up_tokenization_example():
    assert clean_up_tokenization("hello , world ! it ' s do n't") == "hello, world! it's don't"
