"""Each numpy logits processor against its transformers 5.23 counterpart, on the same random arrays.

Arrays cover several batch sizes, vocab sizes and seeds, with tied scores, -inf entries, repeated tokens and token
ids past the head's vocabulary. Outputs must be equal element for element (float32 arithmetic with float32
constants gives the same bits as torch). Ties at the top-p cut-off are only tested on rows of <= 16 tokens: above
that torch's CPU sort is unstable and its choice among equal logits is arbitrary (see logits_process' docstring).
"""

from __future__ import annotations

import doctest
import itertools

import numpy as np
import pytest
import torch
import transformers
from modelkiln.runtime import logits_process as lp
from modelkiln.runtime.generation_config import GenerationConfig
from transformers.generation import logits_process as hf

SHAPES = [(1, 7), (3, 16), (8, 384), (2, 5000)]
CASES = [(seed, batch, vocab) for seed in (0, 1, 2) for batch, vocab in SHAPES]


def _scores(rng: np.random.Generator, batch: int, vocab: int, *, ties: bool = False, neg_inf: bool = True):
    scores = (rng.standard_normal((batch, vocab)) * 3).astype(np.float32)
    if ties:  # few distinct values: many exactly equal scores
        scores = np.round(scores / 2).astype(np.float32) * 2
    if neg_inf:  # a few -inf entries (masked earlier), never a whole row
        mask = rng.random((batch, vocab)) < 0.1
        mask[:, 0] = False
        scores[mask] = -np.inf
    return scores


def _ids(rng: np.random.Generator, batch: int, length: int, vocab: int) -> np.ndarray:
    # drawn from a small pool so tokens and n-grams repeat; one id past the head's vocab (a larger embedding)
    pool = np.concatenate([rng.choice(vocab, size=min(vocab, 5), replace=False), [vocab + 2]])
    return rng.choice(pool, size=(batch, length)).astype(np.int64)


def _hf(processor, ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    return processor(torch.from_numpy(ids.copy()), torch.from_numpy(scores.copy())).numpy()


def _ours(processor, ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Call ours and check it returns float32 and leaves its inputs untouched."""
    ids_before, scores_before = ids.copy(), scores.copy()
    out = processor(ids, scores)
    assert out.dtype == np.float32 and out.shape == scores.shape
    np.testing.assert_array_equal(ids, ids_before)
    np.testing.assert_array_equal(scores, scores_before)
    return out


@pytest.mark.parametrize("seed,batch,vocab", CASES)
def test_repetition_penalty(seed, batch, vocab):
    rng = np.random.default_rng(seed)
    scores, ids = _scores(rng, batch, vocab), _ids(rng, batch, 12, vocab)
    per_row = tuple(int(x) for x in rng.integers(0, 12, batch))
    for penalty, ignore in itertools.product((0.5, 1.3, 2.0), (None, 3, per_row)):
        theirs = hf.RepetitionPenaltyLogitsProcessor(
            penalty, prompt_ignore_length=torch.tensor(ignore) if isinstance(ignore, tuple) else ignore)
        expected = _hf(theirs, ids, scores)
        got = _ours(lp.RepetitionPenalty(penalty, ignore), ids, scores)
        np.testing.assert_array_equal(got, expected, err_msg=f"penalty={penalty} ignore={ignore}")
    assert not np.array_equal(got, scores)  # the case penalized something


@pytest.mark.parametrize("seed,batch,vocab", CASES)
def test_no_repeat_ngram(seed, batch, vocab):
    rng = np.random.default_rng(seed)
    scores = _scores(rng, batch, vocab)
    banned_somewhere = False
    for n in (1, 2, 3, 4):
        for length in (n - 1, n, 2 * n + 3, 20):
            ids = _ids(rng, batch, length, vocab)
            expected = _hf(hf.NoRepeatNGramLogitsProcessor(n), ids, scores)
            got = _ours(lp.NoRepeatNGram(n), ids, scores)
            np.testing.assert_array_equal(got, expected, err_msg=f"n={n} length={length}")
            banned_somewhere |= bool(np.isneginf(got).sum() > np.isneginf(scores).sum())
    assert banned_somewhere


@pytest.mark.parametrize("seed,batch,vocab", CASES)
def test_min_length_and_min_new_tokens(seed, batch, vocab):
    rng = np.random.default_rng(seed)
    scores = _scores(rng, batch, vocab, neg_inf=False)
    eos_sets = [(vocab - 1,), (0, vocab // 2, vocab - 1), (1, vocab + 3)]  # several ids; one past the vocab
    for eos, cur_len in itertools.product(eos_sets, (4, 5, 6, 9)):
        ids = _ids(rng, batch, cur_len, vocab)
        expected = _hf(hf.MinNewTokensLengthLogitsProcessor(4, 2, list(eos)), ids, scores)
        got = _ours(lp.MinNewTokensLength(4, 2, eos), ids, scores)
        np.testing.assert_array_equal(got, expected, err_msg=f"eos={eos} cur_len={cur_len}")
        assert np.isneginf(got[:, eos[0]]).all() == (cur_len - 4 < 2)
        expected = _hf(hf.MinLengthLogitsProcessor(6, list(eos)), ids, scores)
        np.testing.assert_array_equal(_ours(lp.MinLength(6, eos), ids, scores), expected)


@pytest.mark.parametrize("seed,batch,vocab", CASES)
def test_temperature(seed, batch, vocab):
    rng = np.random.default_rng(seed)
    scores = _scores(rng, batch, vocab)
    for t in (0.3, 0.7, 1.0, 1.5, 2.0):
        ids = _ids(rng, batch, 3, vocab)
        expected = _hf(hf.TemperatureLogitsWarper(t), ids, scores)
        np.testing.assert_array_equal(_ours(lp.Temperature(t), ids, scores), expected, err_msg=f"t={t}")


@pytest.mark.parametrize("seed,batch,vocab", CASES)
def test_top_k(seed, batch, vocab):
    rng = np.random.default_rng(seed)
    ids = _ids(rng, batch, 3, vocab)
    for ties, k, keep in itertools.product((False, True), (1, 2, 5, 50, vocab, vocab + 10), (1, 3)):
        scores = _scores(rng, batch, vocab, ties=ties)
        expected = _hf(hf.TopKLogitsWarper(k, min_tokens_to_keep=keep), ids, scores)
        got = _ours(lp.TopK(k, min_tokens_to_keep=keep), ids, scores)
        np.testing.assert_array_equal(got, expected, err_msg=f"k={k} keep={keep} ties={ties}")


@pytest.mark.parametrize("seed,batch,vocab", CASES)
def test_top_p(seed, batch, vocab):
    rng = np.random.default_rng(seed)
    ids = _ids(rng, batch, 3, vocab)
    # torch's CPU sort is stable up to 16 elements: exact ties are comparable there
    tie_options = (False, True) if vocab <= 16 else (False,)
    for ties, p, keep in itertools.product(tie_options, (0.0, 0.1, 0.5, 0.9, 0.95, 1.0), (1, 3)):
        scores = _scores(rng, batch, vocab, ties=ties)
        expected = _hf(hf.TopPLogitsWarper(p, min_tokens_to_keep=keep), ids, scores)
        got = _ours(lp.TopP(p, min_tokens_to_keep=keep), ids, scores)
        np.testing.assert_array_equal(got, expected, err_msg=f"p={p} keep={keep} ties={ties}")


@pytest.mark.parametrize("seed,batch,vocab", CASES)
def test_min_p(seed, batch, vocab):
    rng = np.random.default_rng(seed)
    ids = _ids(rng, batch, 3, vocab)
    # with min_tokens_to_keep > 1, which of several equal tokens torch.topk keeps is arbitrary: no ties there
    for (ties, keep), p in itertools.product(((False, 1), (True, 1), (False, 3)), (0.0, 0.05, 0.1, 0.5, 1.0)):
        scores = _scores(rng, batch, vocab, ties=ties)
        expected = _hf(hf.MinPLogitsWarper(p, min_tokens_to_keep=keep), ids, scores)
        got = _ours(lp.MinP(p, min_tokens_to_keep=keep), ids, scores)
        np.testing.assert_array_equal(got, expected, err_msg=f"p={p} keep={keep} ties={ties}")


@pytest.mark.parametrize("seed,batch,vocab", CASES)
def test_softmax_helpers(seed, batch, vocab):
    scores = _scores(np.random.default_rng(seed), batch, vocab)
    expected = torch.softmax(torch.from_numpy(scores), -1).numpy()
    np.testing.assert_allclose(lp.softmax(scores), expected, rtol=1e-6, atol=1e-9)
    expected = torch.log_softmax(torch.from_numpy(scores), -1).numpy()
    finite = np.isfinite(expected)
    np.testing.assert_allclose(lp.log_softmax(scores)[finite], expected[finite], rtol=1e-6, atol=1e-6)
    assert np.isneginf(lp.log_softmax(scores)[~finite]).all()


@pytest.mark.parametrize("make_hf,make_ours", [
    (lambda: hf.TopKLogitsWarper(0), lambda: lp.TopK(0)),
    (lambda: hf.TopKLogitsWarper(-1), lambda: lp.TopK(-1)),
    (lambda: hf.TopPLogitsWarper(-0.1), lambda: lp.TopP(-0.1)),
    (lambda: hf.TopPLogitsWarper(1.1), lambda: lp.TopP(1.1)),
    (lambda: hf.TopPLogitsWarper(0.5, min_tokens_to_keep=0), lambda: lp.TopP(0.5, min_tokens_to_keep=0)),
    (lambda: hf.MinPLogitsWarper(1.5), lambda: lp.MinP(1.5)),
    (lambda: hf.MinPLogitsWarper(-0.1), lambda: lp.MinP(-0.1)),
    (lambda: hf.TemperatureLogitsWarper(0.0), lambda: lp.Temperature(0.0)),
    (lambda: hf.TemperatureLogitsWarper(-1.0), lambda: lp.Temperature(-1.0)),
    (lambda: hf.RepetitionPenaltyLogitsProcessor(0.0), lambda: lp.RepetitionPenalty(0.0)),
    (lambda: hf.NoRepeatNGramLogitsProcessor(0), lambda: lp.NoRepeatNGram(0)),
    (lambda: hf.MinNewTokensLengthLogitsProcessor(3, -1, 2), lambda: lp.MinNewTokensLength(3, -1, (2,))),
    (lambda: hf.MinLengthLogitsProcessor(-1, 2), lambda: lp.MinLength(-1, (2,))),
])
def test_constructors_refuse_what_transformers_refuses(make_hf, make_ours):
    with pytest.raises(ValueError):
        make_hf()
    with pytest.raises(ValueError):
        make_ours()


# -- the whole list, as transformers' generate() builds it -------------------------------------------------------

_HF_TO_OURS = {
    "RepetitionPenaltyLogitsProcessor": "RepetitionPenalty", "NoRepeatNGramLogitsProcessor": "NoRepeatNGram",
    "MinLengthLogitsProcessor": "MinLength", "MinNewTokensLengthLogitsProcessor": "MinNewTokensLength",
    "TemperatureLogitsWarper": "Temperature", "TopKLogitsWarper": "TopK", "TopPLogitsWarper": "TopP",
    "MinPLogitsWarper": "MinP",
}

BUILD_CONFIGS = [
    {},
    {"do_sample": True},
    {"do_sample": False, "temperature": 0.0, "top_p": 0.1},  # greedy ignores the sampling options
    {"do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.8, "repetition_penalty": 1.05},
    {"do_sample": True, "top_k": 0, "min_p": 0.1, "temperature": 1.5},
    {"repetition_penalty": 1.3, "no_repeat_ngram_size": 3, "min_new_tokens": 4, "eos_token_id": [2, 5]},
    {"min_length": 9, "eos_token_id": 3},
    {"min_new_tokens": 2},  # no EOS: nothing to mask
    {"do_sample": True, "num_beams": 4, "eos_token_id": [2, 5], "top_k": 10, "top_p": 0.9, "min_p": 0.05},
    {"do_sample": True, "num_beams": 2, "top_p": 0.5, "top_k": 1},
    {"num_beams": 4, "repetition_penalty": 0.8, "no_repeat_ngram_size": 1, "eos_token_id": 2, "min_new_tokens": 1},
]


class _DecoderOnly(transformers.GenerationMixin):
    """Just enough of a decoder-only model for GenerationMixin's preparation helpers (no weights to build)."""

    config = transformers.PretrainedConfig()


@pytest.fixture(scope="module")
def hf_model():
    return _DecoderOnly()


def _hf_processor_list(model, kwargs: dict, ids: np.ndarray, mask: np.ndarray):
    """What `generate` builds: defaults filled, special tokens and lengths prepared, then _get_logits_processor."""
    gc = transformers.GenerationConfig(**kwargs)
    gc.update(**gc._get_default_generation_params(), defaults_only=True)
    model._prepare_special_tokens(gc, True, device="cpu")
    tensor = torch.from_numpy(ids)
    gc = model._prepare_generated_length(gc, has_default_max_length=True,
                                         has_default_min_length="min_length" not in kwargs,
                                         model_input_name="input_ids", input_ids_length=ids.shape[1],
                                         inputs_tensor=tensor)
    return model._get_logits_processor(gc, input_ids_seq_length=ids.shape[1], encoder_input_ids=tensor,
                                       device="cpu", model_kwargs={"attention_mask": torch.from_numpy(mask)})


@pytest.mark.parametrize("kwargs", BUILD_CONFIGS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "defaults")
def test_built_list_matches_transformers(hf_model, kwargs):
    rng = np.random.default_rng(7)
    vocab, prompt_len, rows = 64, 6, 4
    prompt = rng.integers(3, 10, (rows, prompt_len))  # repeats, so penalties and n-grams bite
    mask = np.ones((rows, prompt_len), dtype=np.int64)
    mask[1, :2] = 0  # left padding: the repetition penalty skips these positions
    mask[3, :1] = 0
    prompt[mask == 0] = 0

    theirs = _hf_processor_list(hf_model, kwargs, prompt, mask)
    ours = lp.build_logits_processors(GenerationConfig(**kwargs), prompt_len, attention_mask=mask)
    assert [type(p).__name__ for p in ours] == [_HF_TO_OURS[type(p).__name__] for p in theirs]
    for mine, their in zip(ours, theirs):
        if hasattr(their, "min_tokens_to_keep"):  # beam sampling keeps n_eos + 1 candidates
            assert mine.min_tokens_to_keep == their.min_tokens_to_keep, type(mine).__name__

    ids = prompt
    for _ in range(4):  # several steps: min-new-tokens switches off, n-grams and repeats accumulate
        scores = _scores(rng, rows, vocab)
        expected = theirs(torch.from_numpy(ids), torch.from_numpy(scores.copy())).numpy()
        np.testing.assert_array_equal(lp.apply_processors(ours, ids, scores), expected)
        ids = np.concatenate([ids, rng.integers(3, 10, (rows, 1))], axis=1)  # [rows, cur_len + 1]


@pytest.mark.parametrize("kwargs", BUILD_CONFIGS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "defaults")
def test_dropping_finished_rows_keeps_per_row_state(kwargs):
    """A loop that stops running finished rows passes `rows`: the result equals the full batch's rows."""
    rng = np.random.default_rng(3)
    ids = rng.integers(3, 10, (5, 9))
    mask = np.ones_like(ids)
    mask[1, :3] = mask[4, :2] = 0
    ids[mask == 0] = 0
    processors = lp.build_logits_processors(GenerationConfig(**kwargs), 6, attention_mask=mask)
    scores = _scores(rng, 5, 64)
    full = lp.apply_processors(processors, ids, scores)
    for rows in (np.array([1, 4]), np.array([0, 2, 3]), np.array([4])):
        got = lp.apply_processors(processors, ids[rows], scores[rows], rows=rows)
        np.testing.assert_array_equal(got, full[rows])


@pytest.mark.parametrize("seed,batch,vocab", CASES)
def test_greedy_unless_banned_equals_argmax_of_the_processed_scores(seed, batch, vocab):
    """The no-copy greedy path (argmax of the raw scores unless it lands on a banned id) picks exactly what
    greedy(apply_processors(...)) picks, also when EOS is the raw argmax, on ties and on NaN scores; it declines
    (None) only when a banned id wins, and a processor that is not a pure ban (repetition penalty) has no schedule."""
    from modelkiln.runtime.sampling import greedy

    rng = np.random.default_rng(seed)
    declined = 0
    for trial, cur_len in itertools.product(range(6), (3, 5, 8)):
        scores = _scores(rng, batch, vocab, ties=trial % 2 == 1)
        winners = np.argmax(scores, axis=-1)
        eos = (int(winners[0]), vocab + 3) if trial < 3 else (int(rng.integers(vocab)),)  # EOS the raw argmax
        if trial == 5:
            scores[0, winners[0]] = np.nan
        ids = _ids(rng, batch, cur_len, vocab)
        for config in (GenerationConfig(min_new_tokens=4, eos_token_id=list(eos)),
                       GenerationConfig(min_length=6, min_new_tokens=2, eos_token_id=list(eos))):
            processors = lp.build_logits_processors(config, 2)
            before = scores.copy()
            got = lp.greedy_unless_banned(lp.ban_schedule(processors), cur_len, scores)
            np.testing.assert_array_equal(scores, before)  # the caller's scores stay untouched
            expected = greedy(lp.apply_processors(processors, ids, scores))
            if got is None:
                declined += 1
                assert not np.array_equal(greedy(scores), expected) or np.isnan(scores).any()
            else:
                np.testing.assert_array_equal(got, expected)
    assert declined > 0  # the EOS-wins trials took the slow path
    penalty = lp.build_logits_processors(GenerationConfig(min_new_tokens=4, repetition_penalty=1.3, eos_token_id=[1]), 2)
    assert lp.ban_schedule(penalty) is None


def test_docstring_examples():
    assert doctest.testmod(lp, optionflags=doctest.NORMALIZE_WHITESPACE).failed == 0
