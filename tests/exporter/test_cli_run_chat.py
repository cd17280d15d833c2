"""`modelkiln run` and `modelkiln chat` stream what the pipeline answers."""

from __future__ import annotations

from click.testing import CliRunner

from modelkiln.exporter.cli import cli
from modelkiln.runtime import pipeline


def test_run_streams_the_pipeline_answer(tiny_artifact):
    art = tiny_artifact("llama")
    result = CliRunner().invoke(cli, ["run", str(art), "Hello there", "--greedy", "--max-new-tokens", "12"])
    assert result.exit_code == 0, result.output
    expected = pipeline("text-generation", model=art)([{"role": "user", "content": "Hello there"}],
                                                      max_new_tokens=12, do_sample=False)
    assert result.output == expected[0]["generated_text"][-1]["content"] + "\n"


def test_chat_keeps_history_and_resets(tiny_artifact):
    art = tiny_artifact("llama")
    pipe = pipeline("text-generation", model=art)
    first = pipe([{"role": "user", "content": "a"}], max_new_tokens=6, do_sample=False)[0]["generated_text"]
    second = pipe(first + [{"role": "user", "content": "b"}], max_new_tokens=6, do_sample=False)[0]["generated_text"]
    after_reset = pipe([{"role": "user", "content": "b"}], max_new_tokens=6, do_sample=False)[0]["generated_text"]
    result = CliRunner().invoke(cli, ["chat", str(art), "--greedy", "--max-new-tokens", "6"],
                                input="a\nb\n/reset\nb\n")
    assert result.exit_code == 0, result.output
    expected = (f"you> assistant> {first[-1]['content']}\n"
                f"you> assistant> {second[-1]['content']}\n"
                f"you> you> assistant> {after_reset[-1]['content']}\n"
                "you> \n")
    assert result.output == expected


def test_run_rejects_bad_options(tiny_artifact):
    result = CliRunner().invoke(cli, ["run", str(tiny_artifact("llama")), "x", "--max-new-tokens", "100000"])
    assert result.exit_code == 2 and "context" in result.stderr
