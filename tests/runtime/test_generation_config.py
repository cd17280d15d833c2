"""GenerationConfig: defaults read from generation_config.json as transformers' generate() reads them, merging
call-time options, and every error (with transformers raising on the same value where it raises at all)."""

from __future__ import annotations

import dataclasses
import doctest
import json
import re

import pytest
import transformers
from modelkiln.runtime import generation_config as gcmod
from modelkiln.runtime.errors import ModelkilnError
from modelkiln.runtime.generation_config import GenerationConfig
from transformers.generation import logits_process as hf

# max_length: None here means transformers' default of 20 (new tokens); seed is not a transformers option
FIELDS = [f.name for f in dataclasses.fields(GenerationConfig) if f.name not in ("seed", "max_length")]

JSONS = [
    # what save_pretrained writes for a model without generation defaults (the tiny fixtures, SmolLM2)
    {"_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
     "transformers_version": "5.23.0", "use_cache": True},
    # Llama-3-Instruct style: several EOS ids, sampling on by default
    {"bos_token_id": 128000, "do_sample": True, "eos_token_id": [128001, 128008, 128009], "temperature": 0.6,
     "top_p": 0.9, "transformers_version": "4.45.0"},
    # Qwen2.5-Instruct style
    {"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": True, "eos_token_id": [151645, 151643],
     "repetition_penalty": 1.05, "temperature": 0.7, "top_p": 0.8, "top_k": 20},
    # explicit nulls take the defaults; neutral values of rules we do not implement are accepted
    {"top_k": None, "temperature": None, "num_beams": 4, "early_stopping": True, "length_penalty": 0.8,
     "no_repeat_ngram_size": 3, "typical_p": 1.0, "suppress_tokens": None, "min_new_tokens": 2, "min_p": 0.05},
]


def _effective_hf(data: dict) -> transformers.GenerationConfig:
    """The values generate() decodes with: the JSON, then transformers' global defaults for what it leaves unset."""
    config = transformers.GenerationConfig.from_dict(dict(data))
    config.update(**config._get_default_generation_params(), defaults_only=True)
    return config


@pytest.mark.parametrize("data", JSONS)
def test_from_dict_takes_the_defaults_transformers_takes(data):
    ours = GenerationConfig.from_dict(data)
    theirs = _effective_hf(data)
    for name in FIELDS:
        expected = getattr(theirs, name)
        if name == "eos_token_id" and expected is not None:
            expected = tuple(expected) if isinstance(expected, list) else (expected,)
        assert getattr(ours, name) == expected, name


def test_from_dict_reads_a_saved_generation_config(tmp_path):
    transformers.GenerationConfig(eos_token_id=[2, 7], pad_token_id=0, do_sample=True, top_k=20,
                                  max_length=64).save_pretrained(tmp_path)
    data = json.loads((tmp_path / "generation_config.json").read_text())
    config = GenerationConfig.from_dict(data)
    assert (config.eos_token_id, config.pad_token_id, config.top_k, config.max_length) == ((2, 7), 0, 20, 64)
    assert config.top_p == 1.0 and config.temperature == 1.0 and config.num_beams == 1 and config.do_sample


@pytest.mark.parametrize("key,value", [("typical_p", 0.9), ("suppress_tokens", [5]), ("forced_eos_token_id", 2),
                                       ("num_beam_groups", 2), ("renormalize_logits", True)])
def test_from_dict_refuses_rules_we_do_not_implement(key, value):
    with pytest.raises(ModelkilnError, match=re.escape(f"{key}={value!r}")):
        GenerationConfig.from_dict({"eos_token_id": 2, key: value})


def test_merged_returns_a_new_config_and_leaves_the_defaults_alone():
    base = GenerationConfig.from_dict(JSONS[1])
    merged = base.merged(max_new_tokens=64, top_p=0.5, eos_token_id=[3, 4], stop_strings="###", temperature=2)
    assert (merged.max_new_tokens, merged.top_p, merged.eos_token_id, merged.stop_strings) == (64, 0.5, (3, 4),
                                                                                                ("###",))
    assert merged.temperature == 2.0 and isinstance(merged.temperature, float)
    assert merged.do_sample and merged.bos_token_id == 128000  # untouched fields come from the JSON
    assert base.top_p == 0.9 and base.max_new_tokens is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.top_p = 0.1  # type: ignore[misc]
    assert GenerationConfig(eos_token_id=2) == GenerationConfig(eos_token_id=[2])


def test_merged_none_switches_a_rule_off_like_generate():
    config = GenerationConfig.from_dict(JSONS[2]).merged(top_k=None, repetition_penalty=None, min_p=None)
    assert (config.top_k, config.repetition_penalty, config.min_p) == (0, 1.0, None)
    from modelkiln.runtime.logits_process import build_logits_processors

    assert [type(p).__name__ for p in build_logits_processors(config, 4)] == ["Temperature", "TopP"]


def test_merged_unknown_option_names_it():
    with pytest.raises(ModelkilnError, match="unknown generation option 'max_tokens'"):
        GenerationConfig().merged(max_tokens=5)
    with pytest.raises(ValueError, match="'num_beam'"):  # ModelkilnError is a ValueError
        GenerationConfig().merged(num_beam=4)


# (our kwargs, transformers GenerationConfig kwargs or None, a processor constructor transformers runs at generate
#  time or None, the text our message must contain)
ERRORS = [
    ({"early_stopping": "sometimes"}, {"early_stopping": "sometimes"}, None, "early_stopping='sometimes'"),
    ({"max_new_tokens": 0}, {"max_new_tokens": 0}, None, "max_new_tokens=0"),
    ({"num_return_sequences": 2}, {"num_return_sequences": 2}, None, "num_return_sequences=2"),
    ({"num_beams": 2, "num_return_sequences": 3}, {"num_beams": 2, "num_return_sequences": 3}, None,
     "num_return_sequences=3 is larger than num_beams=2"),
    ({"do_sample": True, "temperature": 0.0}, None, lambda: hf.TemperatureLogitsWarper(0.0), "temperature=0.0"),
    ({"do_sample": True, "temperature": -0.5}, None, lambda: hf.TemperatureLogitsWarper(-0.5), "temperature=-0.5"),
    ({"do_sample": True, "top_p": -0.1}, None, lambda: hf.TopPLogitsWarper(-0.1), "top_p=-0.1"),
    ({"do_sample": True, "top_k": -3}, None, lambda: hf.TopKLogitsWarper(-3), "top_k=-3"),
    ({"do_sample": True, "min_p": 1.5}, None, lambda: hf.MinPLogitsWarper(1.5), "min_p=1.5"),
    ({"repetition_penalty": 0.0}, None, lambda: hf.RepetitionPenaltyLogitsProcessor(0.0), "repetition_penalty=0.0"),
    ({"repetition_penalty": -1.0}, None, lambda: hf.RepetitionPenaltyLogitsProcessor(-1.0),
     "repetition_penalty=-1.0"),
    # stricter than transformers (it ignores these or fails later with an unrelated error)
    ({"do_sample": True, "top_p": 1.5}, None, None, "top_p=1.5"),
    ({"num_beams": 0}, None, None, "num_beams=0"),
    ({"num_return_sequences": 0}, None, None, "num_return_sequences=0"),
    ({"min_new_tokens": -1}, None, None, "min_new_tokens=-1"),
    ({"no_repeat_ngram_size": -2}, None, None, "no_repeat_ngram_size=-2"),
    ({"max_length": 0}, None, None, "max_length=0"),
    ({"eos_token_id": [2, -1]}, None, None, "eos_token_id contains -1"),
    ({"pad_token_id": -1}, None, None, "pad_token_id=-1"),
    ({"seed": -3}, None, None, "seed=-3"),
    ({"stop_strings": ["ok", ""]}, None, None, "stop_strings contains ''"),
    ({"num_beams": 2.0}, None, None, "num_beams=2.0"),
    ({"do_sample": "yes"}, None, None, "do_sample='yes'"),
    ({"temperature": "hot"}, None, None, "temperature='hot'"),
]


@pytest.mark.parametrize("ours,theirs,their_processor,message", ERRORS, ids=[e[3] for e in ERRORS])
def test_validate_errors(ours, theirs, their_processor, message):
    config = GenerationConfig(**ours)
    with pytest.raises(ModelkilnError) as err:
        config.validate()
    assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ModelkilnError):  # merged() and from_dict() validate too
        GenerationConfig().merged(**ours)
    if theirs is not None:
        with pytest.raises(ValueError):
            transformers.GenerationConfig(**theirs)
    if their_processor is not None:
        with pytest.raises(ValueError):
            their_processor()


@pytest.mark.parametrize("kwargs", [
    {"do_sample": False, "temperature": 0.0, "top_p": 0.0, "top_k": 0},  # greedy with sampling options: only a warning
    {"do_sample": True, "num_beams": 4},  # beam sampling: transformers 5.23 runs it, it does not raise
    {"do_sample": True, "num_beams": 2, "num_return_sequences": 2},
    {"do_sample": True, "num_return_sequences": 3},
    {"do_sample": True, "top_p": 0.0},  # legal in transformers: keeps the single best token
    {"num_beams": 3, "num_return_sequences": 3, "early_stopping": "never", "length_penalty": -1.0},
])
def test_valid_combinations_stay_valid(kwargs):
    GenerationConfig(**kwargs).validate()
    transformers.GenerationConfig(**kwargs)  # no error there either


def test_lengths_follow_prepare_generated_length():
    assert GenerationConfig().max_new_tokens_for(10) == 20  # transformers' default max_length=20 means 20 new
    assert GenerationConfig().max_new_tokens_for(250, context_length=256) == 6  # capped by max_position_embeddings
    assert GenerationConfig(max_length=30).max_new_tokens_for(12) == 18  # an explicit max_length counts the prompt
    assert GenerationConfig(max_length=30, max_new_tokens=5).max_new_tokens_for(12) == 5  # max_new_tokens wins
    with pytest.raises(ModelkilnError, match="max_length=30"):
        GenerationConfig(max_length=30).max_new_tokens_for(30)
    with pytest.raises(ModelkilnError, match="context of 256"):
        GenerationConfig().max_new_tokens_for(256, context_length=256)
    assert GenerationConfig(min_new_tokens=4, min_length=100).min_length_for(10) == 14
    assert GenerationConfig(min_length=7).min_length_for(10) == 7
    assert GenerationConfig(eos_token_id=[5, 6]).effective_pad_token_id == 5
    assert GenerationConfig(eos_token_id=[5, 6], pad_token_id=0).effective_pad_token_id == 0
    assert GenerationConfig().effective_pad_token_id is None


def test_docstring_examples():
    assert doctest.testmod(gcmod, optionflags=doctest.ELLIPSIS).failed == 0
