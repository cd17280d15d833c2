"""Bad input: one clear line on stderr naming the problem and the fix, exit code 2, nothing half-written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelkiln.exporter.cli import cli


def run_cli(*args: str):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output, result.stderr


def assert_usage_error(args, *fragments):
    code, out, err = run_cli(*args)
    assert code == 2, (code, out, err)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err + out
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_missing_source(tmp_path):
    assert_usage_error(["export", str(tmp_path / "nope"), str(tmp_path / "out")], "does not exist")
    assert not (tmp_path / "out").exists()


def test_directory_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_usage_error(["export", str(tmp_path / "empty"), str(tmp_path / "out")], "not a checkpoint directory",
                       "config.json")


def test_unreadable_source(tmp_path, tiny_checkpoint, monkeypatch):
    """chmod cannot lock out root (CI runs as root), so the permission answer itself is simulated."""
    import os

    locked = str(tiny_checkpoint("llama"))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == locked else real_access(p, mode, **kw))
    assert_usage_error(["export", locked, str(tmp_path / "out")], "not readable")


def test_file_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert_usage_error(["export", str(tmp_path / "notes.txt"), str(tmp_path / "out")], "not a .gguf")


def test_unsupported_task(tmp_path, tiny_checkpoint):
    assert_usage_error(["export", str(tiny_checkpoint("llama")), str(tmp_path / "out"), "--task", "translation"],
                       "unsupported task 'translation'", "text-generation")


def test_unsupported_family(tmp_path):
    from transformers import AutoModelForCausalLM, MambaConfig

    src = tmp_path / "mamba"
    config = MambaConfig(vocab_size=64, hidden_size=32, state_size=4, num_hidden_layers=1)
    AutoModelForCausalLM.from_config(config).save_pretrained(src)
    assert_usage_error(["export", str(src), str(tmp_path / "out"), "-q"], "'mamba'", "key/value cache")
    assert not (tmp_path / "out").exists()


def test_encoder_only_family_for_text_generation(tmp_path):
    from transformers import BertConfig, BertModel

    src = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(src)
    assert_usage_error(["export", str(src), str(tmp_path / "out"), "-q"], "'bert'")


def test_output_exists(tmp_path, tiny_checkpoint):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert_usage_error(["export", str(tiny_checkpoint("llama")), str(tmp_path / "out")], "already exists",
                       "--force")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_weights(tmp_path, tiny_checkpoint, damage):
    src = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint("llama"), src)
    weights = src / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\xff" * 64)
    assert_usage_error(["export", str(src), str(tmp_path / "out")], "model.safetensors", "corrupt")
    assert not (tmp_path / "out").exists()


def test_hub_id_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_usage_error(["export", "someone/not-a-cached-model", str(tmp_path / "out")], "Hugging Face Hub",
                       "local checkpoint")


def _copy_artifact(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_artifact_file_fails_hash(tmp_path, tiny_artifact, tiny_checkpoint):
    art = _copy_artifact(tiny_artifact("llama"), tmp_path / "art")
    data = bytearray((art / "model.onnx.data").read_bytes())
    data[100] ^= 0xFF  # same size, different bytes
    (art / "model.onnx.data").write_bytes(bytes(data))
    assert_usage_error(["inspect", str(art)], "model.onnx.data", "sha256")
    assert_usage_error(["validate", str(art), "--reference", str(tiny_checkpoint("llama"))], "sha256")


def test_artifact_file_truncated(tmp_path, tiny_artifact):
    art = _copy_artifact(tiny_artifact("llama"), tmp_path / "art")
    data = (art / "model.onnx.data").read_bytes()
    (art / "model.onnx.data").write_bytes(data[:-10])
    assert_usage_error(["inspect", str(art)], "model.onnx.data", "truncated")


def test_external_data_pointing_outside(tmp_path, tiny_artifact):
    """Even with a manifest re-hashed to match, a graph reading ../secret is refused before ORT opens it."""
    import onnx

    from modelkiln.exporter.artifact_writer import file_table

    art = _copy_artifact(tiny_artifact("llama"), tmp_path / "art")
    (tmp_path / "secret.bin").write_bytes(bytes(1 << 20))
    model = onnx.load(art / "model.onnx", load_external_data=False)
    for init in model.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                entry.value = "../secret.bin"
                break
        else:
            continue
        break
    onnx.save(model, art / "model.onnx")
    manifest = json.loads((art / "modelkiln.json").read_text())
    manifest["files"] = file_table(art)
    (art / "modelkiln.json").write_text(json.dumps(manifest))
    assert_usage_error(["inspect", str(art)], "../secret.bin", "outside the artifact")


def test_manifest_file_name_escaping(tmp_path, tiny_artifact):
    art = _copy_artifact(tiny_artifact("llama"), tmp_path / "art")
    manifest = json.loads((art / "modelkiln.json").read_text())
    manifest["files"]["../../etc/passwd"] = {"sha256": "0" * 64, "size": 1}
    (art / "modelkiln.json").write_text(json.dumps(manifest))
    assert_usage_error(["inspect", str(art)], "outside the artifact")


def test_not_an_artifact(tmp_path):
    assert_usage_error(["inspect", str(tmp_path)], "not a modelkiln artifact")


def test_validate_reference_that_does_not_match(tmp_path, tiny_artifact, tiny_checkpoint):
    assert_usage_error(["validate", str(tiny_artifact("llama")), "--reference", str(tiny_checkpoint("qwen2"))],
                       "does not match the artifact")


def test_validate_reference_with_other_weights(tmp_path, tiny_artifact, tiny_checkpoint):
    """Same architecture, different weights: refused as a mismatch, not reported as a parity failure."""
    import torch
    from transformers import AutoModelForCausalLM

    src = tmp_path / "retrained"
    shutil.copytree(tiny_checkpoint("llama"), src)
    model = AutoModelForCausalLM.from_pretrained(src)
    with torch.no_grad():
        model.model.norm.weight.mul_(1.5)
    model.save_pretrained(src)
    assert_usage_error(["validate", str(tiny_artifact("llama")), "--reference", str(src)],
                       "does not match the artifact", "model.safetensors")


def test_bad_tolerance_option(tiny_artifact, tiny_checkpoint):
    code, out, err = run_cli("validate", str(tiny_artifact("llama")), "--reference", str(tiny_checkpoint("llama")),
                             "--tolerance", "logits")
    assert code == 2 and "NAME=ATOL" in err


def test_console_script_is_one_line_without_traceback(tmp_path):
    """The installed entry point, in a real process: exit 2, one line, no traceback."""
    exe = Path(sys.executable).with_name("modelkiln")
    proc = subprocess.run([str(exe), "export", str(tmp_path / "missing"), str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: ")


def test_hash_check_is_remembered_until_the_file_changes(tmp_path, tiny_artifact, monkeypatch):
    """A second full load skips re-hashing unchanged files; same-size edits with the mtime put back are caught."""
    import os

    import modelkiln.runtime.artifact as artifact_module
    from modelkiln.runtime.artifact import Artifact
    from modelkiln.runtime.errors import ArtifactError

    monkeypatch.setenv("MODELKILN_CACHE", str(tmp_path / "cache"))
    art = _copy_artifact(tiny_artifact("llama"), tmp_path / "art")
    hashed = []
    real = artifact_module.sha256_file
    monkeypatch.setattr(artifact_module, "sha256_file", lambda p: hashed.append(p.name) or real(p))
    Artifact.load(art)
    assert "model.onnx.data" in hashed
    hashed.clear()
    Artifact.load(art)
    assert hashed == []
    data = art / "model.onnx.data"
    st = data.stat()
    raw = bytearray(data.read_bytes())
    raw[200] ^= 0xFF
    data.write_bytes(bytes(raw))
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: only ctime tells
    with pytest.raises(ArtifactError, match="sha256"):
        Artifact.load(art)
