"""The real embedded checkpoint: SmolLM2-135M-Instruct (GGUF Q4_1, de-quantized to fp32) end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from modelkiln.exporter.cli import cli
from modelkiln.validate.report import ParityReport

pytestmark = pytest.mark.slow


def test_export_validates(smollm2_artifact):
    report = ParityReport.from_json((smollm2_artifact / "parity.json").read_text())
    assert report.passed, "\n".join(report.lines())
    assert {c.kind for c in report.cases} == {"prefill", "decode", "prompt", "generation"}
    assert any(c.name == "prompts[chat,b=2,left-pad]" for c in report.cases)  # the ChatML template was used
    assert sum(t.expected_length for c in report.cases for t in c.tokens) >= 64
    assert "✅" in (smollm2_artifact / "parity.md").read_text()


def test_manifest_and_size(smollm2_artifact):
    manifest = json.loads((smollm2_artifact / "modelkiln.json").read_text())
    assert manifest["model_type"] == "llama"
    assert manifest["kv_cache"] | {} == manifest["kv_cache"]
    assert (manifest["kv_cache"]["num_layers"], manifest["kv_cache"]["num_kv_heads"],
            manifest["kv_cache"]["head_dim"]) == (30, 3, 64)
    assert manifest["generation"]["eos_token_id"] == [2]
    assert "<|im_start|>" in manifest["generation"]["chat_template"]
    weights = manifest["files"]["model.onnx.data"]["size"]
    # 134.5M parameters in fp32 with the tied 49152 x 576 embedding once (twice would be +113 MB)
    assert 530e6 < weights < 545e6
    assert manifest["source"]["files"]["SmolLM2-135M-Instruct.Q4_1.gguf"]["sha256"]


def test_inspect_and_validate_cli(smollm2_artifact, tmp_path):
    result = CliRunner().invoke(cli, ["inspect", str(smollm2_artifact)])
    assert result.exit_code == 0, result.output
    assert "30 layers × 3 kv heads × 64 head dim" in result.output
    assert "present.29.value" in result.output

    junit = tmp_path / "parity.xml"
    result = CliRunner().invoke(cli, ["validate", str(smollm2_artifact), "--reference", "embedded:smollm2",
                                      "--junit", str(junit), "--no-save", "-q", "--new-tokens", "8"])
    assert result.exit_code == 0, result.output
    assert "PASS | parity" in result.output
    import xml.etree.ElementTree as ET

    suite = ET.parse(junit).getroot()
    assert int(suite.get("tests")) == len(suite.findall("testcase")) >= 10
    assert int(suite.get("failures")) == 0


def test_greedy_chat_answer_matches_transformers(smollm2_artifact):
    """The runtime loop's chat answer is transformers' answer, token for token (64 new tokens)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from modelkiln.exporter.embedded import resolve_embedded
    from modelkiln.runtime.decoder import DecoderLM
    from modelkiln.runtime.generation import generate_greedy

    gguf = resolve_embedded("smollm2")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    text = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                   tokenize=False, add_generation_prompt=True)
    ids = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        expected = model.generate(**ids, max_new_tokens=64, do_sample=False)[0, ids["input_ids"].shape[1]:]
    lm = DecoderLM.load(smollm2_artifact, verify="size")
    got = generate_greedy(lm, ids["input_ids"].numpy(), ids["attention_mask"].numpy(), max_new_tokens=64,
                          eos_token_ids=[2])[0]
    assert got.tolist() == expected.tolist()
    assert "Paris" in tok.decode(got, skip_special_tokens=True)
    assert np.all(got >= 0)
