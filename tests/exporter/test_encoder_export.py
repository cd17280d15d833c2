"""Encoder tasks export to one graph per task head, pass `validate`, and refuse what they cannot serve."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest
from click.testing import CliRunner
from encoder_fixtures import FAMILIES, MATRIX, NER_LABELS
from modelkiln.exporter.cli import cli
from modelkiln.exporter.encoder import ENCODER_FAMILIES, infer_task
from modelkiln.validate.report import ParityReport

EXPORTED = [(family, task) for task, families in MATRIX.items() for family in families]


def test_every_family_is_exported_somewhere():
    assert {family for family, _ in EXPORTED} == set(FAMILIES) == set(ENCODER_FAMILIES)


@pytest.mark.parametrize("family,task", EXPORTED)
def test_export_passes_parity(encoder_artifact, family, task):
    art = encoder_artifact(family, task)
    report = ParityReport.from_json((art / "parity.json").read_text())
    assert report.passed, "\n".join(report.lines())
    kinds = {c.kind for c in report.cases}
    assert kinds == {"forward", "texts", "pipeline"}
    pipeline_cases = [c for c in report.cases if c.kind == "pipeline"]
    assert all(c.outputs or c.tokens for c in pipeline_cases)

    manifest = json.loads((art / "modelkiln.json").read_text())
    assert manifest["task"] == task and manifest["model_type"] == family
    graph = onnx.load(art / "model.onnx", load_external_data=False)
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*graph.graph.input, *graph.graph.output]}
    expected_inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if ENCODER_FAMILIES[family].token_type_ids
                                                         else [])
    assert [i.name for i in graph.graph.input] == expected_inputs
    for name in expected_inputs:
        assert dims[name] == ["batch_size", "sequence_length"]
    outputs = [o.name for o in graph.graph.output]
    if task == "question-answering":
        assert outputs == ["start_logits", "end_logits"]
        assert dims["start_logits"] == ["batch_size", "sequence_length"]
    elif task == "feature-extraction":
        assert outputs == ["last_hidden_state"] and dims["last_hidden_state"][:2] == ["batch_size", "sequence_length"]
    elif task == "text-classification":
        assert outputs == ["logits"] and dims["logits"] == ["batch_size", 3]
        assert manifest["labels"] == {"0": "NEGATIVE", "1": "NEUTRAL", "2": "POSITIVE"}
    elif task == "token-classification":
        assert dims["logits"] == ["batch_size", "sequence_length", len(NER_LABELS)]
        assert manifest["labels"] == {str(i): label for i, label in enumerate(NER_LABELS)}
    assert {"model.onnx", "tokenizer.json", "tokenizer_config.json", "config.json"} <= set(manifest["files"])


def test_minilm_sentence_similarity_manifest(minilm_artifact):
    art = minilm_artifact("sentence-similarity")
    manifest = json.loads((art / "modelkiln.json").read_text())
    assert manifest["encoder"]["pooling"] == {"modes": ["mean"], "include_prompt": True, "normalize": True,
                                              "max_seq_length": 256}
    assert manifest["encoder"]["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert ParityReport.from_json((art / "parity.json").read_text()).passed


def test_task_auto_and_aliases(encoder_checkpoint, tmp_path):
    assert infer_task({"architectures": ["DistilBertForQuestionAnswering"]}, False) == "question-answering"
    assert infer_task({"architectures": ["BertModel"]}, True) == "sentence-similarity"
    assert infer_task({"architectures": ["BertModel"]}, False) == "feature-extraction"
    assert infer_task({"architectures": ["RobertaForMaskedLM"]}, False) == "fill-mask"
    assert infer_task({"architectures": ["LlamaForCausalLM"]}, False) == "text-generation"
    runner = CliRunner()
    for task, expected in (("auto", "token-classification"), ("ner", "token-classification")):
        out = tmp_path / f"art-{task}"
        result = runner.invoke(cli, ["export", str(encoder_checkpoint("bert", "token-classification")), str(out),
                                     "--task", task, "--quiet"])
        assert result.exit_code == 0, result.output
        assert json.loads((out / "modelkiln.json").read_text())["task"] == expected
    # and `modelkiln validate` on an encoder artifact: exit 0, one summary line
    result = runner.invoke(cli, ["validate", str(tmp_path / "art-ner"), "--reference",
                                 str(encoder_checkpoint("bert", "token-classification")), "--no-save", "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1].startswith("PASS | parity")


def _usage_error(args, *fragments):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def test_missing_head_is_refused(encoder_checkpoint, tmp_path):
    """A base checkpoint exported for a head task would answer with a random head: refused before loading."""
    base = encoder_checkpoint("distilbert", "feature-extraction")
    _usage_error(["export", str(base), str(tmp_path / "out"), "--task", "sentiment-analysis"],
                 "without a trained SequenceClassification head", "--task feature-extraction")
    assert not (tmp_path / "out").exists()


def test_unsupported_family_and_labels(encoder_checkpoint, tmp_path):
    from transformers import GPT2Config, GPT2Model

    gpt2 = tmp_path / "gpt2"
    GPT2Model(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100)).save_pretrained(gpt2)
    _usage_error(["export", str(gpt2), str(tmp_path / "out"), "--task", "feature-extraction"],
                 "'gpt2' is not supported for --task feature-extraction", "bert")
    # id2label that does not cover the head's outputs
    src = tmp_path / "bad-labels"
    shutil.copytree(encoder_checkpoint("bert", "text-classification"), src)
    config = json.loads((src / "config.json").read_text())
    config["id2label"] = {"0": "NEGATIVE", "1": "POSITIVE"}
    config["label2id"] = {"NEGATIVE": 0, "POSITIVE": 1}
    config["num_labels"] = 3
    (src / "config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(cli, ["export", str(src), str(tmp_path / "out2"), "--task", "text-classification"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert not (tmp_path / "out2").exists()
