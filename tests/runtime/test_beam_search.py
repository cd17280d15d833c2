"""Beam search and sampling, token for token against transformers' generate().

Two kinds of model:
- a Markov "model" (logits = a random table row for the last token + a random row for its position, so that
  reordering a sequence changes its score and there are no exact ties) run by transformers' own generate and by
  our beam_search from the same float32 tables: bit-identical logits, so sequences, scores and the number of
  steps must agree exactly over a grid of early_stopping x length_penalty x num_return_sequences x min_new_tokens x
  EOS sets. Its table gives EOS real probability, so every stopping rule fires (asserted).
- the tiny llama and qwen2 artifacts through `DecoderLM.forward` (positions from `position_ids_from_mask`, the
  cache reordered with `[c[beam_idx] for c in cache]`) against their source checkpoints' `generate(num_beams=4)`,
  batch 1 and 2 with left padding. EOS ids are the two tokens the beams emit most when nothing stops them.
"""

from __future__ import annotations

import doctest
import itertools

import numpy as np
import pytest
import torch
from modelkiln.runtime import beam_search as beam_module
from modelkiln.runtime import sampling as sampling_module
from modelkiln.runtime.beam_search import beam_search
from modelkiln.runtime.decoder import DecoderLM
from modelkiln.runtime.generation import decode_one_token, generate_greedy, position_ids_from_mask, prefill
from modelkiln.runtime.generation_config import GenerationConfig
from modelkiln.runtime.logits_process import apply_processors, build_logits_processors, softmax
from modelkiln.runtime.sampling import sample, sample_without_replacement

MAX_NEW = 10
PAD = 0
PROMPTS = np.array([[5, 6, 7, 8, 9, 10], [PAD, PAD, 11, 12, 13, 14]], dtype=np.int64)
MASKS = np.array([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]], dtype=np.int64)

# (batch, options): every case stops on the model's two chosen EOS ids, unless it asks for "EOS1" (the first one)
CASES = [
    (1, {}),
    (1, {"num_return_sequences": 2, "early_stopping": True}),
    (2, {"early_stopping": True, "num_return_sequences": 2}),
    (2, {"early_stopping": False, "num_return_sequences": 2}),
    (2, {"early_stopping": "never"}),
    (2, {"length_penalty": 0.5, "num_return_sequences": 2}),
    (2, {"length_penalty": 2.0, "num_return_sequences": 2}),
    (2, {"min_new_tokens": 3, "length_penalty": 0.5, "num_return_sequences": 2}),
    (2, {"eos_token_id": "EOS1", "repetition_penalty": 1.2, "no_repeat_ngram_size": 2}),
]


class Pair:
    """One family: the artifact as DecoderLM, its source checkpoint in transformers, and the chosen EOS ids."""

    def __init__(self, family: str, artifact, checkpoint):
        from transformers import AutoModelForCausalLM

        self.family = family
        self.lm = DecoderLM.load(artifact)
        self.model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
        sequences, _, _ = self.reference(2, eos_token_id=None, num_return_sequences=4)
        values, counts = np.unique(sequences[:, PROMPTS.shape[1]:], return_counts=True)
        self.eos = [int(v) for v in values[np.argsort(-counts, kind="stable")[:2]]]

    def options(self, case: dict) -> dict:
        options = {"eos_token_id": self.eos, **case}
        if options["eos_token_id"] == "EOS1":
            options["eos_token_id"] = self.eos[:1]
        return options

    def reference(self, batch: int, **options):
        """transformers' sequences, sequences_scores and number of forward calls (= beam-search iterations)."""
        calls = []
        hook = self.model.register_forward_hook(lambda *args: calls.append(1))
        try:
            with torch.no_grad():
                out = self.model.generate(torch.from_numpy(PROMPTS[:batch]),
                                          attention_mask=torch.from_numpy(MASKS[:batch]), max_new_tokens=MAX_NEW,
                                          num_beams=4, do_sample=False, pad_token_id=PAD,
                                          return_dict_in_generate=True, output_scores=True, **options)
        finally:
            hook.remove()
        return out.sequences.numpy(), out.sequences_scores.numpy(), len(calls)

    def ours(self, batch: int, **options):
        """Our BeamOutput and number of step calls."""
        config = GenerationConfig(max_new_tokens=MAX_NEW, num_beams=4, pad_token_id=PAD, **options)
        return run_beam_search(self.lm, PROMPTS[:batch], MASKS[:batch], config)


def run_beam_search(lm: DecoderLM, input_ids: np.ndarray, attention_mask: np.ndarray, config: GenerationConfig,
                    rng: np.random.Generator | None = None):
    state: dict = {"calls": 0}

    def step(ids: np.ndarray, mask: np.ndarray, first_call: bool) -> np.ndarray:
        assert first_call == (state["calls"] == 0)
        state["calls"] += 1
        cache = lm.empty_cache(ids.shape[0]) if first_call else state["cache"]
        positions = position_ids_from_mask(mask)[:, -ids.shape[1]:]  # [rows, s]: the new tokens' positions
        logits, state["cache"] = lm.forward(ids, mask, positions, cache)
        return logits[:, -1]  # [rows, V]

    def reorder(beam_idx: np.ndarray) -> None:
        state["cache"] = [c[beam_idx] for c in state["cache"]]

    return beam_search(step, input_ids, attention_mask, config, reorder, rng=rng), state["calls"]


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def pair(request, tiny_artifact, tiny_checkpoint) -> Pair:
    return Pair(request.param, tiny_artifact(request.param), tiny_checkpoint(request.param))


@pytest.mark.parametrize("batch,case", CASES, ids=[f"b{b}-" + ",".join(f"{k}={v}" for k, v in c.items()) for b, c in CASES])
def test_beam_search_matches_transformers(pair, batch, case):
    options = pair.options(case)
    expected_sequences, expected_scores, expected_steps = pair.reference(batch, **options)
    out, steps = pair.ours(batch, **options)
    assert out.sequences.shape == expected_sequences.shape, (out.sequences, expected_sequences)
    np.testing.assert_array_equal(out.sequences, expected_sequences)
    np.testing.assert_allclose(out.scores, expected_scores, rtol=1e-6)
    assert steps == expected_steps  # the search stopped at the same step (early stopping, heuristic, max length)


def test_cases_exercise_the_rules(pair):
    """The compared options change the result on these models, so the parity test above has teeth."""
    def run(**case):
        return pair.ours(2, **pair.options(case))[0].sequences.tolist()

    assert run(early_stopping=True, num_return_sequences=2) != run(early_stopping=False, num_return_sequences=2)
    short = run(length_penalty=0.5, num_return_sequences=2)
    assert short != run(length_penalty=2.0, num_return_sequences=2)
    assert run(min_new_tokens=3, length_penalty=0.5, num_return_sequences=2) != short
    # some hypothesis ends on an EOS id before the last column (then is padded), so finishing is exercised
    assert np.isin(np.array(short)[:, PROMPTS.shape[1]:-1], pair.eos).any()


def test_pad_fill_follows_transformers_or_rule(pair):
    """`pad_token_id or eos_token_id[0]`: with pad 0 the tail is the first EOS id, with pad 7 it is 7."""
    for pad in (0, 7):
        options = {"eos_token_id": pair.eos, "length_penalty": 0.5, "num_return_sequences": 2}
        with torch.no_grad():
            expected = pair.model.generate(torch.from_numpy(PROMPTS), attention_mask=torch.from_numpy(MASKS),
                                           max_new_tokens=MAX_NEW, num_beams=4, pad_token_id=pad, **options)
        config = GenerationConfig(max_new_tokens=MAX_NEW, num_beams=4, pad_token_id=pad, **options)
        np.testing.assert_array_equal(run_beam_search(pair.lm, PROMPTS, MASKS, config)[0].sequences, expected.numpy())


def test_beam_sampling_is_seeded(pair):
    """do_sample with num_beams > 1 is transformers' beam sampling (it does not raise); ours is reproducible."""
    config = GenerationConfig(max_new_tokens=6, num_beams=3, do_sample=True, top_k=20, num_return_sequences=2,
                              eos_token_id=pair.eos, pad_token_id=PAD, seed=11)
    first, _ = run_beam_search(pair.lm, PROMPTS, MASKS, config)
    again, _ = run_beam_search(pair.lm, PROMPTS, MASKS, config)
    other = [run_beam_search(pair.lm, PROMPTS, MASKS, config.merged(seed=s))[0].sequences for s in (12, 13, 14)]
    np.testing.assert_array_equal(first.sequences, again.sequences)
    assert first.sequences.shape[0] == 4 and np.isfinite(first.scores).all()
    assert any(o.shape != first.sequences.shape or (o != first.sequences).any() for o in other)


# -- the rules, on a Markov model ----------------------------------------------------------------------------

MARKOV_VOCAB = 24
MARKOV_PROMPTS = np.array([[5, 6, 7, 8], [PAD, PAD, 9, 10]], dtype=np.int64)
MARKOV_MASKS = np.array([[1, 1, 1, 1], [0, 0, 1, 1]], dtype=np.int64)


def _markov_tables(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    table = (rng.standard_normal((MARKOV_VOCAB, MARKOV_VOCAB)) * 1.5).astype(np.float32)  # [last token, V]
    table[:, 1:4] += np.float32([0.8, 0.5, 0.5])  # EOS candidates likely: hypotheses finish at many steps
    by_position = (rng.standard_normal((32, MARKOV_VOCAB)) * 0.5).astype(np.float32)  # [position, V]
    return table, by_position


@pytest.fixture(scope="module")
def markov_models():
    import transformers
    from transformers.modeling_outputs import CausalLMOutputWithPast

    class MarkovLM(transformers.PreTrainedModel, transformers.GenerationMixin):
        """Next-token logits depend on the last token only; enough of a model for generate()."""

        config_class = transformers.LlamaConfig

        def __init__(self, config, tables: tuple[np.ndarray, np.ndarray]):
            super().__init__(config)
            self.table = torch.nn.Parameter(torch.from_numpy(tables[0]), requires_grad=False)
            self.by_position = torch.nn.Parameter(torch.from_numpy(tables[1]), requires_grad=False)

        def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=None,
                    logits_to_keep=0, **kwargs):
            logits = self.table[input_ids] + self.by_position[position_ids]  # [b, s, V]
            return CausalLMOutputWithPast(logits=logits, past_key_values=past_key_values)

    config = transformers.LlamaConfig(vocab_size=MARKOV_VOCAB, hidden_size=8, intermediate_size=8,
                                      num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1)
    return {seed: (MarkovLM(config, _markov_tables(seed)).eval(), _markov_tables(seed)) for seed in (0, 1)}


MARKOV_GRID = [{"early_stopping": e, "length_penalty": lp, "eos_token_id": eos}
               for e in (True, False, "never") for lp in (0.5, 1.0, 2.0) for eos in ([1], [1, 2, 3])]
MARKOV_VARIANTS = [{"num_return_sequences": 1}, {"num_return_sequences": 2},
                   {"num_return_sequences": 2, "min_new_tokens": 3}, {"num_return_sequences": 4, "min_new_tokens": 1}]


def _markov_beam_search(tables: tuple[np.ndarray, np.ndarray], case: dict):
    """Our beam search over the Markov tables -> (BeamOutput, the input shape of every step call)."""
    table, by_position = tables
    steps = []

    def step(ids, mask, first_call):
        steps.append(ids.shape)
        position = position_ids_from_mask(mask)[:, -1]  # [rows]
        return table[ids[:, -1]] + by_position[position]  # [rows, V]

    config = GenerationConfig(max_new_tokens=12, num_beams=4, pad_token_id=PAD, **case)
    return beam_search(step, MARKOV_PROMPTS, MARKOV_MASKS, config, reorder_cache=lambda beam_idx: None), steps


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("options", MARKOV_GRID, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_beam_search_rules_match_transformers_on_a_markov_model(markov_models, seed, options):
    model, tables = markov_models[seed]
    for variant in MARKOV_VARIANTS:
        case = {**options, **variant}
        calls = []
        hook = model.register_forward_hook(lambda *args, calls=calls: calls.append(1))
        try:
            with torch.no_grad():
                expected = model.generate(torch.from_numpy(MARKOV_PROMPTS), attention_mask=torch.from_numpy(MARKOV_MASKS),
                                          max_new_tokens=12, num_beams=4, do_sample=False, pad_token_id=PAD,
                                          return_dict_in_generate=True, output_scores=True, **case)
        finally:
            hook.remove()
        out, steps = _markov_beam_search(tables, case)
        np.testing.assert_array_equal(out.sequences, expected.sequences.numpy(), err_msg=str(case))
        np.testing.assert_allclose(out.scores, expected.sequences_scores.numpy(), rtol=1e-6, err_msg=str(case))
        assert len(steps) == len(calls), case  # stopped at the same step
        assert steps[0] == (8, 4) and all(shape == (8, 1) for shape in steps[1:])  # prompt expanded, then 1 token


def test_markov_grid_fires_every_stopping_rule():
    """The grid above (matched step for step with transformers) is only meaningful if early stopping, the
    early-stop heuristic and max length each end some of its searches, with hypotheses of many lengths."""
    steps: dict = {True: set(), False: set(), "never": set()}
    lengths = set()
    for seed, options, variant in itertools.product((0, 1), MARKOV_GRID, MARKOV_VARIANTS):
        out, calls = _markov_beam_search(_markov_tables(seed), {**options, **variant})
        steps[options["early_stopping"]].add(len(calls))
        lengths.add(out.sequences.shape[1])
    assert min(steps[True]) < min(steps[False]) < 12  # early_stopping=True stops first; the heuristic stops early
    assert 12 in steps["never"] and 12 in steps[False]  # and some searches run to max_new_tokens
    assert len(lengths) > 3


# -- sampling ------------------------------------------------------------------------------------------------------

def sample_loop(lm: DecoderLM, input_ids: np.ndarray, attention_mask: np.ndarray, config: GenerationConfig,
                rng: np.random.Generator) -> np.ndarray:
    """transformers' _sample over the artifact: processors, softmax, draw; finished rows emit the pad id."""
    processors = build_logits_processors(config, input_ids.shape[1], attention_mask=attention_mask)
    eos, pad = np.asarray(config.eos_ids), config.effective_pad_token_id
    logits, cache = prefill(lm, input_ids, attention_mask)
    sequences, mask = input_ids, attention_mask
    finished = np.zeros(input_ids.shape[0], dtype=bool)
    for _ in range(config.max_new_tokens):
        tokens = sample(softmax(apply_processors(processors, sequences, logits)), rng)
        tokens = np.where(finished, pad, tokens)
        sequences = np.concatenate([sequences, tokens[:, None]], axis=1)  # [b, t + 1]
        finished |= np.isin(tokens, eos)
        if finished.all():
            break
        mask = np.concatenate([mask, np.ones_like(mask[:, :1])], axis=1)  # [b, t + 1]
        logits, cache = decode_one_token(lm, tokens, mask, cache)
    return sequences


def test_sampling_with_top_k_1_is_greedy(pair):
    config = GenerationConfig(do_sample=True, top_k=1, temperature=0.7, top_p=0.9, max_new_tokens=12,
                              eos_token_id=pair.eos, pad_token_id=PAD)
    got = sample_loop(pair.lm, PROMPTS, MASKS, config, np.random.default_rng(0))
    greedy = generate_greedy(pair.lm, PROMPTS, MASKS, max_new_tokens=12, eos_token_ids=pair.eos, pad_token_id=PAD)
    np.testing.assert_array_equal(got[:, PROMPTS.shape[1]:], greedy)


def test_sampling_loop_matches_transformers_when_deterministic(pair):
    """top_k=1 leaves one token, so torch's RNG does not matter: the processors decide every token."""
    options = {"do_sample": True, "top_k": 1, "temperature": 0.7, "repetition_penalty": 1.3, "no_repeat_ngram_size": 2,
                   "min_new_tokens": 3, "eos_token_id": pair.eos, "pad_token_id": PAD, "max_new_tokens": 12}
    with torch.no_grad():
        expected = pair.model.generate(torch.from_numpy(PROMPTS), attention_mask=torch.from_numpy(MASKS), **options)
    got = sample_loop(pair.lm, PROMPTS, MASKS, GenerationConfig(**options), np.random.default_rng(0))
    np.testing.assert_array_equal(got, expected.numpy())
    greedy = generate_greedy(pair.lm, PROMPTS, MASKS, max_new_tokens=12, eos_token_ids=pair.eos, pad_token_id=PAD)
    assert not np.array_equal(got[:, PROMPTS.shape[1]:], greedy)  # the penalties changed something


def test_sample_is_seeded_and_reproducible():
    probs = softmax(np.random.default_rng(0).standard_normal((64, 384)).astype(np.float32))
    first = sample(probs, np.random.default_rng(5))
    np.testing.assert_array_equal(first, sample(probs, np.random.default_rng(5)))
    assert (first != sample(probs, np.random.default_rng(6))).any()
    assert first.dtype == np.int64 and first.shape == (64,)


def test_sample_follows_the_distribution():
    probs = np.array([0.1, 0.0, 0.25, 0.0, 0.6, 0.05, 0.0, 0.0], dtype=np.float32)
    draws = sample(np.tile(probs * 3, (40000, 1)), np.random.default_rng(1))  # weights need not sum to 1
    frequencies = np.bincount(draws, minlength=8) / draws.size
    assert (frequencies[probs == 0] == 0).all()
    np.testing.assert_allclose(frequencies, probs, atol=0.01)
    with pytest.raises(ValueError, match="all zero"):
        sample(np.zeros((1, 4)), np.random.default_rng(0))


def test_sample_without_replacement():
    probs = np.array([0.5, 0.0, 0.3, 0.2], dtype=np.float32)
    draws = sample_without_replacement(np.tile(probs, (20000, 1)), 3, np.random.default_rng(2))
    assert draws.shape == (20000, 3)
    assert (np.sort(draws, axis=1) == [0, 2, 3]).all()  # distinct, never the zero-probability token
    np.testing.assert_allclose(np.bincount(draws[:, 0], minlength=4) / 20000, probs, atol=0.015)  # draw order
    with pytest.raises(ValueError, match="cannot draw 4"):
        sample_without_replacement(probs[None], 4, np.random.default_rng(0))


def test_docstring_examples():
    for module in (beam_module, sampling_module):
        assert doctest.testmod(module).failed == 0, module.__name__
