"""The serving loop (OrtValue cache, finished rows dropped) equals transformers' generate token for token."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modelkiln.runtime.decoder import DecoderLM
from modelkiln.runtime.generation import generate
from modelkiln.runtime.generation_config import GenerationConfig

IDS = np.array([[5, 6, 7, 8, 9, 10], [0, 0, 0, 11, 12, 13], [0, 20, 21, 22, 23, 24]])
MASK = (np.arange(6)[None, :] >= np.array([[0], [3], [1]])).astype(np.int64)


@pytest.fixture(scope="module")
def models(tiny_artifact, tiny_checkpoint):
    from transformers import AutoModelForCausalLM

    return (DecoderLM.load(tiny_artifact("qwen2")),
            AutoModelForCausalLM.from_pretrained(tiny_checkpoint("qwen2")).eval())


def _hf(model, **kwargs):
    with torch.no_grad():
        out = model.generate(torch.tensor(IDS), attention_mask=torch.tensor(MASK), **kwargs)
    return out[:, IDS.shape[1]:].numpy()


@pytest.mark.parametrize("extra", [{}, {"repetition_penalty": 1.3}, {"no_repeat_ngram_size": 2},
                                   {"repetition_penalty": 1.01, "min_new_tokens": 3}])
def test_rows_finishing_at_different_steps(models, extra):
    lm, hf = models
    free = _hf(hf, max_new_tokens=12, do_sample=False, pad_token_id=0, **extra)
    eos = int(free[0, 1])  # row 0 emits it at step 1: that row finishes first, the others go on
    expected = _hf(hf, max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=eos, **extra)
    got = generate(lm, IDS, MASK, GenerationConfig(max_new_tokens=12, eos_token_id=eos, pad_token_id=0, **extra))
    np.testing.assert_array_equal(got, expected)


def test_context_overflow_is_a_clear_error(models):
    from modelkiln.runtime.errors import ModelkilnError

    lm, _ = models
    with pytest.raises(ModelkilnError, match="exceeds the model's context of 256"):
        generate(lm, IDS, MASK, GenerationConfig(max_new_tokens=300), context_length=256)
