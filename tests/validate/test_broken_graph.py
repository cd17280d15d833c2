"""Parity catches a subtly wrong graph: RMSNorm weights scaled by 1.01 fail fp32 validation (exit 1).

(The random checkpoint's norm weights are all ones, so the export stores them as one shared initializer.)
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
from click.testing import CliRunner
from onnx import numpy_helper

from modelkiln.exporter.artifact_writer import file_table
from modelkiln.exporter.cli import cli


def test_scaled_norm_weight_fails_parity(tmp_path, tiny_artifact, tiny_checkpoint):
    art = tmp_path / "art"
    shutil.copytree(tiny_artifact("llama"), art)
    model = onnx.load(art / "model.onnx")  # with external data
    names = [i.name for i in model.graph.initializer if "norm" in i.name]
    assert names, [i.name for i in model.graph.initializer][:20]
    for init in model.graph.initializer:
        if init.name == names[0]:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(1.01), init.name))
    (art / "model.onnx.data").unlink()
    onnx.save(model, art / "model.onnx", save_as_external_data=True, location="model.onnx.data",
              size_threshold=1024)
    manifest = json.loads((art / "modelkiln.json").read_text())
    manifest["files"] = file_table(art)
    (art / "modelkiln.json").write_text(json.dumps(manifest))

    result = CliRunner().invoke(cli, ["validate", str(art), "--reference", str(tiny_checkpoint("llama")),
                                      "--json", str(tmp_path / "p.json")])
    assert result.exit_code == 1, result.output
    assert "FAIL | parity" in result.output
    report = json.loads((tmp_path / "p.json").read_text())
    failed = [o for c in report["cases"] for o in c["outputs"] if not o["passed"]]
    assert any(o["name"] == "logits" for o in failed)
