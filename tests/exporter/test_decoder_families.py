"""Every named decoder family exports to one KV-cache graph that matches eager transformers."""

from __future__ import annotations

import json

import onnx
import pytest

from modelkiln.validate.report import ParityReport

FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "phi3", "gpt2"]


@pytest.mark.parametrize("family", FAMILIES)
def test_family_exports_with_parity(tiny_artifact, family):
    art = tiny_artifact(family)
    report = ParityReport.from_json((art / "parity.json").read_text())
    assert report.passed, "\n".join(report.lines())
    kinds = {c.kind for c in report.cases}
    assert kinds == {"prefill", "decode", "prompt", "generation"}
    assert any(c.name == "decode[b=1,past=254]" for c in report.cases)  # the long past, up to the context
    generation = [t for c in report.cases for t in c.tokens]
    assert generation and all(t.expected_length == 32 for t in generation)


@pytest.mark.parametrize("family", FAMILIES)
def test_graph_signature(tiny_artifact, family):
    art = tiny_artifact(family)
    manifest = json.loads((art / "modelkiln.json").read_text())
    graph = onnx.load(art / "model.onnx", load_external_data=False)
    assert not [n.op_type for n in graph.graph.node if n.op_type in ("If", "Loop", "Scan")]
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.graph.input}
    outputs = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in graph.graph.output}
    kv = manifest["kv_cache"]
    assert inputs["input_ids"] == ["batch_size", "sequence_length"]
    assert inputs["attention_mask"] == ["batch_size", "total_sequence_length"]
    assert inputs["position_ids"] == ["batch_size", "sequence_length"]
    for i in range(kv["num_layers"]):
        for part in ("key", "value"):
            assert inputs[f"past_key_values.{i}.{part}"] == ["batch_size", kv["num_kv_heads"],
                                                             "past_sequence_length", kv["head_dim"]]
            assert outputs[f"present.{i}.{part}"] == ["batch_size", kv["num_kv_heads"],
                                                      "total_sequence_length", kv["head_dim"]]
    assert outputs["logits"][:2] == ["batch_size", "sequence_length"]
    # weights live in the external-data file, listed and hashed in the manifest
    assert manifest["graphs"]["model"]["external_data"] == ["model.onnx.data"]
    assert set(manifest["files"]) >= {"model.onnx", "model.onnx.data", "config.json", "tokenizer.json"}


def test_tied_embedding_stored_once(tiny_checkpoint, tmp_path):
    """A tied LM head is written once (torch.export folds its transpose into a second copy otherwise)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from modelkiln.exporter import ExportOptions, export

    src = tmp_path / "tied"
    tok_dir = tiny_checkpoint("llama")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tok_dir / name).exists():
            (src / name).parent.mkdir(exist_ok=True)
            (src / name).write_bytes((tok_dir / name).read_bytes())
    torch.manual_seed(0)
    # vocab x hidden = 1024 x 96 = 98304 elements: above the pass's size floor, like any real LM head
    config = LlamaConfig(vocab_size=1024, hidden_size=96, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                         max_position_embeddings=128)
    AutoModelForCausalLM.from_config(config).save_pretrained(src)
    out = export(str(src), tmp_path / "art", ExportOptions(quiet=True, validate=True))
    graph = onnx.load(out / "model.onnx", load_external_data=False)
    embedding_sized = [i.name for i in graph.graph.initializer if sorted(i.dims) == [96, 1024]]
    assert len(embedding_sized) == 1, embedding_sized
    assert ParityReport.from_json((out / "parity.json").read_text()).passed


def test_weights_only_checkpoint(tmp_path):
    """No tokenizer files: still exportable; validation feeds random ids and the manifest says no tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config

    from modelkiln.exporter import ExportOptions, export

    torch.manual_seed(1)
    config = Qwen3Config(vocab_size=200, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=64)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "ckpt")
    out = export(str(tmp_path / "ckpt"), tmp_path / "art", ExportOptions(quiet=True, validate=True))
    manifest = json.loads((out / "modelkiln.json").read_text())
    assert manifest["tokenizer"]["files"] == []
    report = ParityReport.from_json((out / "parity.json").read_text())
    assert report.passed and not any(c.kind == "prompt" for c in report.cases)
    assert any(c.name == "decode[b=1,past=62]" for c in report.cases)  # long past capped by the context
