"""Bad input to pipeline("text-generation"): one clear ModelkilnError each, and the pipeline keeps working."""

from __future__ import annotations

import pytest

from modelkiln.runtime import ModelkilnError, pipeline


@pytest.fixture(scope="module")
def pipe(tiny_artifact):
    return pipeline("text-generation", model=tiny_artifact("llama"))


@pytest.mark.parametrize("inputs, kwargs, fragment", [
    ("word " * 400, {"max_new_tokens": 4}, "exceeds the model's context of 256"),
    ("hello", {"max_new_tokens": 300}, "exceeds the model's context"),
    ("", {"max_new_tokens": 4}, "tokenized to nothing"),
    ([], {}, "no inputs"),
    ([{"role": "user"}], {}, "no 'content'"),
    ([{"content": "hi"}], {}, "no 'role'"),
    (42, {}, "must be a string or a chat"),
    ("hello", {"max_tokens": 5}, "unknown text-generation option 'max_tokens'"),
    ("hello", {"num_beams": 2, "num_return_sequences": 3}, "num_return_sequences=3 is larger than num_beams=2"),
    ("hello", {"do_sample": True, "temperature": 0.0}, "temperature=0.0 must be > 0"),
    ("hello", {"max_new_tokens": 0}, "max_new_tokens=0 must be greater than 0"),
])
def test_bad_input_then_still_usable(pipe, inputs, kwargs, fragment):
    with pytest.raises(ModelkilnError, match=fragment):
        pipe(inputs, **kwargs)
    assert pipe("hello", max_new_tokens=3, do_sample=False)[0]["generated_text"].startswith("hello")


def test_truncation_when_asked(pipe):
    out = pipe("word " * 400, max_new_tokens=4, do_sample=False, truncation=True)
    assert out[0]["generated_text"].startswith("word ")


def test_wrong_task_and_missing_model(tiny_artifact):
    with pytest.raises(ModelkilnError, match="unsupported task 'summarization'"):
        pipeline("summarization", model=tiny_artifact("llama"))
    with pytest.raises(ModelkilnError, match="needs model="):
        pipeline("text-generation")
