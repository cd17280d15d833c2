"""`modelkiln inspect` shows what a user needs to serve an artifact: task, I/O, KV layout or encoder facts, labels."""

from __future__ import annotations

from click.testing import CliRunner

from modelkiln.exporter.cli import cli


def test_inspect_decoder(tiny_artifact):
    result = CliRunner().invoke(cli, ["inspect", str(tiny_artifact("llama"))])
    assert result.exit_code == 0, result.output
    assert "task        text-generation (llama, fp32)" in result.output
    assert "kv cache    2 layers × 2 kv heads × 16 head dim" in result.output
    assert "parity      PASS" in result.output


def test_inspect_encoder_labels_and_pooling(encoder_artifact, minilm_artifact):
    result = CliRunner().invoke(cli, ["inspect", str(encoder_artifact("bert", "token-classification"))])
    assert result.exit_code == 0, result.output
    assert "encoder     inputs input_ids, attention_mask, token_type_ids" in result.output
    assert "labels      7: 0=O, 1=B-PER" in result.output
    result = CliRunner().invoke(cli, ["inspect", str(minilm_artifact())])
    assert result.exit_code == 0, result.output
    assert "pooling mean + normalize" in result.output
