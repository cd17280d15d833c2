"""Models (BPE, WordPiece, Unigram, WordLevel) against the `tokenizers` library, token for token.

Each case builds the same tokenizer.json "model" in both implementations and compares ids, token
strings and character offsets: through `tokenizers.Tokenizer.encode` with no normalizer and no
pre-tokenizer (the whole text is one word) and, for real checkpoints, word by word on the library's
own pre-tokenization.
"""

from __future__ import annotations

import functools
import json

import _helpers_b as H
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from modelkiln.runtime.tokenizer.models import BPE, Token, Unigram, WordLevel, WordPiece, build_model

TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), max_codepoint=0x1FAFF), min_size=1, max_size=60
)
FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_same_as_library(model_cfg: dict | tuple, texts) -> None:
    """`model_cfg` is a tokenizer.json model, or an already built `(ours, library tokenizer)` pair."""
    mine, lib = model_cfg if isinstance(model_cfg, tuple) else (build_model(model_cfg), H.lib_tokenizer(model_cfg))
    for text in texts:
        if not text:
            assert mine.tokenize(text) == lib.model.tokenize(text) == [], text
            continue
        enc = lib.encode(text)
        expected = list(zip(enc.ids, enc.tokens, enc.offsets))
        got = [(t.id, t.value, t.offsets) for t in mine.tokenize(text)]
        assert got == expected, repr(text)


def _model(tok_json: str, **changes) -> dict:
    model = json.loads(tok_json)["model"]
    model.update(changes)
    return model


# --- trained with the `tokenizers` trainers -------------------------------------------------------

BPE_VARIANTS = {
    "plain": lambda: _model(H.trained_bpe()),
    "fuse_unk": lambda: _model(H.trained_bpe(fuse_unk=True)),
    "no_unk": lambda: _model(H.trained_bpe(), unk_token=None),
    "prefix_suffix": lambda: _model(H.trained_bpe(continuing_subword_prefix="##", end_of_word_suffix="</w>")),
    "ignore_merges": lambda: _model(H.trained_bpe(), ignore_merges=True),
    "byte_fallback": lambda: H.with_byte_tokens(_model(H.trained_bpe())),
    # Some bytes missing: the library then falls back to unk, and misplaces a pending unk after the bytes.
    "byte_fallback_partial": lambda: H.with_byte_tokens(_model(H.trained_bpe(fuse_unk=True)), range(0xC0)),
    "byte_level": lambda: _model(H.trained_byte_level_bpe()),
}


@pytest.mark.parametrize("variant", sorted(BPE_VARIANTS))
def test_bpe_matches_library(variant):
    assert_same_as_library(BPE_VARIANTS[variant](), H.SAMPLES)


def test_bpe_tuple_and_string_merges_are_the_same_model():
    model = _model(H.trained_bpe())
    as_pairs = dict(model, merges=[m.split(" ") if isinstance(m, str) else m for m in model["merges"]])
    as_strings = dict(model, merges=["#version: 0.2"] + [" ".join(m) for m in as_pairs["merges"]])
    a, b = build_model(as_pairs), build_model(as_strings)
    for text in H.CORPUS:
        assert a.tokenize(text) == b.tokenize(text)
    assert_same_as_library(as_strings, H.CORPUS[:3])


SEGMENTED_VARIANTS = {
    "plain": lambda: _model(H.trained_metaspace_bpe()),
    "no_unk": lambda: _model(H.trained_metaspace_bpe(), unk_token=None),
    "byte_fallback": lambda: H.with_byte_tokens(_model(H.trained_metaspace_bpe())),
    "byte_fallback_partial": lambda: H.with_byte_tokens(_model(H.trained_metaspace_bpe()), range(0xC0)),
    "byte_fallback_partial_no_unk": lambda: H.with_byte_tokens(
        _model(H.trained_metaspace_bpe(), unk_token=None), range(0x30, 0xC0)),
}


@pytest.mark.parametrize("variant", sorted(SEGMENTED_VARIANTS))
def test_bpe_long_words_cut_at_word_starts(variant):
    """Llama-style input: the whole text is one word; merged piece by piece between `▁`s."""
    model = SEGMENTED_VARIANTS[variant]()
    assert build_model(model)._segment_re is not None
    texts = ["\u2581" + t.replace(" ", "\u2581") for t in H.SAMPLES] + ["\u2581".join(H.CORPUS)]
    assert_same_as_library(model, texts)


def test_bpe_not_cut_when_a_merge_crosses_a_word_start():
    vocab = {"a": 0, "\u2581": 1, "b": 2, "\u2581b": 3, "a\u2581b": 4, "[UNK]": 5}
    model = {"type": "BPE", "vocab": vocab, "merges": ["\u2581 b", "a \u2581b"], "unk_token": "[UNK]"}
    assert build_model(model)._segment_re is None
    assert_same_as_library(model, ["a\u2581b" * 20, "\u2581b\u2581a\u2581b" * 9 + "c"])


@pytest.mark.parametrize("tok_json", ["wordpiece", "wordpiece_short"])
def test_wordpiece_matches_library(tok_json):
    model = _model(H.trained_wordpiece())
    if tok_json == "wordpiece_short":
        model["max_input_chars_per_word"] = 5
    assert_same_as_library(model, H.SAMPLES)
    # Word by word too, which is how a pre-tokenizer feeds it.
    words = [w for text in H.CORPUS for w in text.split()]
    assert_same_as_library(model, words)


def test_unigram_matches_library():
    model = _model(H.trained_unigram())
    assert_same_as_library(model, H.SAMPLES)
    assert_same_as_library(H.with_byte_tokens(model), H.SAMPLES)
    assert_same_as_library(H.with_byte_tokens(model, range(0xC0)), H.SAMPLES)


def test_wordlevel_matches_library():
    model = _model(H.trained_wordlevel())
    words = [w for text in H.CORPUS for w in text.split()] + ["unseen-word", "🤗"]
    assert_same_as_library(model, words + H.SAMPLES[:5])


# --- SentencePiece models, trained here and shipped in mistral-common ----------------------------


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
@pytest.mark.parametrize("byte_fallback", [False, True])
def test_sentencepiece_trained_models(model_type, byte_fallback):
    model = _model(H.trained_spm(model_type), byte_fallback=byte_fallback)
    texts = ["\u2581" + t.replace(" ", "\u2581") for t in H.SAMPLES]
    assert_same_as_library(model, texts)


@pytest.mark.parametrize("name", ["tokenizer.model.v1", "mistral_instruct_tokenizer_241114.model.v7"])
def test_mistral_sentencepiece_bpe(name):
    model = _model(H.mistral_json(name))
    assert model["type"] == "BPE" and model["byte_fallback"] is True
    texts = ["\u2581" + t.replace(" ", "\u2581") for t in H.SAMPLES]
    assert_same_as_library(model, texts)


@functools.cache
def _built(name: str) -> tuple:
    """Both implementations of a named model, built once for all hypothesis examples."""
    cfg = {
        "spm_unigram": lambda: _model(H.trained_spm("unigram"), byte_fallback=True),
        "bpe_partial": BPE_VARIANTS["byte_fallback_partial"],
        "mistral_v1": lambda: _model(H.mistral_json("tokenizer.model.v1")),
        "minilm": lambda: json.loads(H.minilm_json())["model"],
        "segmented": SEGMENTED_VARIANTS["byte_fallback_partial_no_unk"],
    }[name]()
    return build_model(cfg), H.lib_tokenizer(cfg)


@given(text=TEXT)
@FEW
def test_sentencepiece_unigram_on_random_text(text):
    assert_same_as_library(_built("spm_unigram"), [text.replace(" ", "\u2581")])


@given(text=TEXT)
@FEW
def test_byte_fallback_bpe_on_random_text(text):
    assert_same_as_library(_built("bpe_partial"), [text])
    assert_same_as_library(_built("mistral_v1"), [text.replace(" ", "\u2581")])


@given(text=TEXT)
@FEW
def test_segmented_bpe_on_random_text(text):
    assert_same_as_library(_built("segmented"), ["\u2581" + text.replace(" ", "\u2581") * 2])


@given(text=TEXT)
@FEW
def test_wordpiece_on_random_text(text):
    assert_same_as_library(_built("minilm"), text.split() or [text])


# --- real checkpoints, word by word on the library's pre-tokenization ------------------------------


@pytest.fixture(scope="module")
def smollm2(request, tmp_path_factory) -> str:
    return H.smollm2_for(request, tmp_path_factory)


def _words(lib_tok, texts):
    out = []
    for text in texts:
        normalized = lib_tok.normalizer.normalize_str(text) if lib_tok.normalizer else text
        out += [w for w, _ in lib_tok.pre_tokenizer.pre_tokenize_str(normalized)]
    return out


@functools.lru_cache(maxsize=4)
def _built_full(tok_json: str) -> tuple:
    return H.LibTokenizer.from_str(tok_json), build_model(json.loads(tok_json)["model"])


def assert_words_match(tok_json: str, texts) -> None:
    lib, mine = _built_full(tok_json)
    for word in _words(lib, texts):
        expected = H.lib_model_tokens(lib.model, word)
        assert [(t.id, t.value, t.offsets) for t in mine.tokenize(word)] == expected, repr(word)


def test_smollm2_byte_level_bpe(smollm2):
    model = json.loads(smollm2)["model"]
    assert model["type"] == "BPE" and len(model["vocab"]) == 49152
    assert_words_match(smollm2, H.SAMPLES)


@given(text=TEXT)
@FEW
def test_smollm2_on_random_text(smollm2, text):
    assert_words_match(smollm2, [text])


def test_minilm_wordpiece():
    assert json.loads(H.minilm_json())["model"]["type"] == "WordPiece"
    assert_words_match(H.minilm_json(), H.SAMPLES)


# --- unit behaviour and bad input ---------------------------------------------------------------


def test_vocab_lookups():
    m = build_model({"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]})
    assert (m.token_to_id("ab"), m.token_to_id("zz"), m.id_to_token(1), m.id_to_token(7)) == (2, None, "b", None)
    assert m.get_vocab() == {"a": 0, "b": 1, "ab": 2} and m.get_vocab_size() == 3
    u = build_model({"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0.0], ["x", -1.0]]})
    assert (u.token_to_id("x"), u.id_to_token(1), u.id_to_token(2), u.get_vocab_size()) == (1, "x", None, 2)
    assert isinstance(m, BPE) and isinstance(u, Unigram)
    assert isinstance(build_model({"type": "WordPiece", "vocab": {"[UNK]": 0}}), WordPiece)
    assert isinstance(build_model({"vocab": {"[UNK]": 0}, "unk_token": "[UNK]"}), WordLevel)  # no "type"


def test_unigram_unk_scoring_is_min_score_minus_ten():
    # "b" alone is unknown. With log-prob scores a piece always beats a + unk (min_score - 10) ...
    vocab = [["<unk>", 0.0], ["a", -1.0], ["ab", -11.0], ["c", -2.0]]
    cfg = {"type": "Unigram", "unk_id": 0, "vocab": vocab}
    assert build_model(cfg).tokenize("ab") == [Token(2, "ab", (0, 2))]
    assert_same_as_library(cfg, ["ab", "abab", "bcb", "xab", "bbb"])
    # ... but with positive scores the unk path (10 + 30) wins over "ab" (20); the unk token's value
    # is the unknown text itself, and adjacent unknowns are fused.
    vocab = [["<unk>", 50.0], ["a", 30.0], ["ab", 20.0], ["c", 25.0]]
    cfg = {"type": "Unigram", "unk_id": 0, "vocab": vocab}
    assert build_model(cfg).tokenize("abb") == [Token(1, "a", (0, 1)), Token(0, "bb", (1, 3))]
    assert_same_as_library(cfg, ["ab", "abab", "bcb", "xab", "bbb"])


def test_unigram_ties_keep_the_first_path_found():
    """Equal scores: a later start only wins with a strictly better score, as in the library."""
    vocab = [["<unk>", 0.0], ["a", -1.0], ["b", -1.0], ["ab", -2.0], ["abc", -3.0], ["c", -1.0], ["bc", -2.0]]
    cfg = {"type": "Unigram", "unk_id": 0, "vocab": vocab}
    assert [t.value for t in build_model(cfg).tokenize("bcab")] == ["bc", "ab"]
    assert_same_as_library(cfg, ["abc", "abcabc", "cab", "bcab", "cba", "ccbbaa"])


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"model.type 'Foo'"):
        build_model({"type": "Foo"})
    with pytest.raises(ValueError, match="dropout"):
        build_model({"type": "BPE", "vocab": {"a": 0}, "merges": [], "dropout": 0.1})
    with pytest.raises(ValueError, match="not in model.vocab"):
        build_model({"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]})
    with pytest.raises(ValueError, match="line 1"):
        build_model({"type": "BPE", "vocab": {"a": 0}, "merges": ["a b c"]})
    with pytest.raises(ValueError, match="Unk token `<unk>` not found"):
        build_model({"type": "BPE", "vocab": {"a": 0}, "merges": [], "unk_token": "<unk>"}).tokenize("b")
    with pytest.raises(ValueError, match="Missing \\[UNK\\]"):
        build_model({"type": "WordPiece", "vocab": {"a": 0}}).tokenize("b")
    with pytest.raises(ValueError, match="unk_id"):
        build_model({"type": "Unigram", "unk_id": None, "vocab": [["a", -1.0]]}).tokenize("ab")
    with pytest.raises(ValueError, match="unk_id 3"):
        build_model({"type": "Unigram", "unk_id": 3, "vocab": [["a", -1.0]]})


def test_dropout_applies_only_when_allowed():
    cfg = {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"], "dropout": 1.0}
    m = build_model(cfg, allow_dropout=True)
    assert [t.value for t in m.tokenize("abab")] == ["a", "b", "a", "b"]  # dropout 1.0: no merge ever
    assert [t.value for t in build_model(dict(cfg, dropout=0.0)).tokenize("abab")] == ["ab", "ab"]
