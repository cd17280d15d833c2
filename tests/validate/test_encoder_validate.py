"""Encoder validation catches wrong graphs and wrong answers, and compares answers field by field."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
from click.testing import CliRunner
from encoder_fixtures import get_artifact, get_checkpoint
from modelkiln.exporter.artifact_writer import file_table
from modelkiln.exporter.cli import cli
from modelkiln.validate.encoder_cases import compare_answers
from onnx import numpy_helper


def test_compare_answers_exact_fields_and_score_tolerance():
    expected = [{"entity_group": "PER", "score": np.float32(0.91), "word": "wolfgang", "start": 11, "end": 19}]
    same = [{"entity_group": "PER", "score": 0.91004, "word": "wolfgang", "start": 11, "end": 19}]
    outputs, tokens = compare_answers(same, expected)
    assert tokens[0].passed and outputs[0].passed
    outputs, tokens = compare_answers([{**same[0], "score": 0.9102}], expected)
    assert tokens[0].passed and not outputs[0].passed  # score off by 2e-4 > 1e-4
    for field, value in (("word", "wolf"), ("end", 18), ("entity_group", "LOC")):
        outputs, tokens = compare_answers([{**same[0], field: value}], expected)
        assert not tokens[0].passed and field in tokens[0].name, tokens[0].name
        assert outputs == []  # scores of different answers are not compared
    outputs, tokens = compare_answers(same + same, expected)
    assert not tokens[0].passed


def test_scaled_classifier_weight_fails_parity(tmp_path):
    """A classifier head off by 1% fails fp32 validation on logits and on the pipeline's scores: exit 1."""
    art = tmp_path / "art"
    shutil.copytree(get_artifact("bert", "text-classification"), art)
    model = onnx.load(art / "model.onnx")
    names = [i.name for i in model.graph.initializer if "classifier" in i.name and len(i.dims) == 2]
    assert names, [i.name for i in model.graph.initializer][:30]
    for init in model.graph.initializer:
        if init.name == names[0]:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(1.01), init.name))
    for extra in art.glob("model.onnx.data"):
        extra.unlink()
    onnx.save(model, art / "model.onnx", save_as_external_data=True, location="model.onnx.data", size_threshold=1024)
    manifest = json.loads((art / "modelkiln.json").read_text())
    manifest["files"] = file_table(art)
    (art / "modelkiln.json").write_text(json.dumps(manifest))

    result = CliRunner().invoke(cli, ["validate", str(art), "--reference", str(get_checkpoint("bert",
                                      "text-classification")), "--json", str(tmp_path / "p.json")])
    assert result.exit_code == 1, result.output
    report = json.loads((tmp_path / "p.json").read_text())
    failed = {c["kind"] for c in report["cases"] if not c["passed"]}
    assert {"forward", "texts"} <= failed


def test_reference_of_another_family_is_refused(tmp_path):
    result = CliRunner().invoke(cli, ["validate", str(get_artifact("bert", "text-classification")), "--reference",
                                      str(get_checkpoint("distilbert", "text-classification"))])
    assert result.exit_code == 2, result.output
    assert "does not match the artifact" in result.output
