"""An interrupted or failed export leaves no partial OUTPUT; --force swaps in the new artifact whole."""

from __future__ import annotations

import json

import pytest

from modelkiln.exporter import ExportOptions, export


def _siblings(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failed_export_leaves_nothing(tmp_path, tiny_checkpoint, monkeypatch, error):
    import modelkiln.exporter.api as export_module

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(export_module, "write_manifest", broken)
    with pytest.raises(type(error)):
        export(str(tiny_checkpoint("llama")), tmp_path / "out", ExportOptions(quiet=True))
    assert _siblings(tmp_path) == []  # neither OUTPUT nor a temporary sibling


def test_force_replaces_whole(tmp_path, tiny_checkpoint, monkeypatch):
    out = tmp_path / "out"
    export(str(tiny_checkpoint("llama")), out, ExportOptions(quiet=True))
    (out / "stale.txt").write_text("from the old export")
    first = json.loads((out / "modelkiln.json").read_text())

    import modelkiln.exporter.api as export_module

    monkeypatch.setattr(export_module, "write_manifest", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("x")))
    with pytest.raises(RuntimeError):
        export(str(tiny_checkpoint("qwen2")), out, ExportOptions(quiet=True, force=True))
    assert json.loads((out / "modelkiln.json").read_text()) == first  # a failed --force keeps the old artifact
    monkeypatch.undo()

    export(str(tiny_checkpoint("qwen2")), out, ExportOptions(quiet=True, force=True))
    assert json.loads((out / "modelkiln.json").read_text())["model_type"] == "qwen2"
    assert not (out / "stale.txt").exists()
    assert _siblings(tmp_path) == ["out"]
