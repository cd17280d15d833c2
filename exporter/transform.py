"""`transform(artifact, output, passes)`: artifact → new artifact with more graph passes applied.

    from modelkiln.exporter.transform import transform
    transform("smollm2/", "smollm2-int4/", [("fuse_group_query_attention", {}), ("quantize_matmul_nbits", {"bits": 4})])

What `modelkiln optimize` and `modelkiln quantize` run (and `export --optimize/--weights`, after the export). The
source artifact is verified first and never modified; the output is written atomically like an export. The new
manifest is the old one with the graph's I/O signature and file table recomputed, the pass records appended,
and whatever the passes put in `context.manifest_updates` merged in (precision, attention kind, quantization).
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

from modelkiln.exporter.artifact_writer import check_output, staging_directory, write_manifest
from modelkiln.exporter.progress import Progress
from modelkiln.runtime.artifact import MANIFEST, REPORT_FILES, Artifact
from modelkiln.runtime.errors import ModelkilnError


def deep_merge(base: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def transform(artifact: str | Path, output: str | Path, passes: list[tuple[str, dict[str, Any]]], *,
              force: bool = False, validate: bool = False, reference: str | None = None,
              quiet: bool = False) -> Path:
    import onnx_ir as ir

    from modelkiln.graphs import PassContext, io_signature, run_passes, save_with_external_data

    progress = Progress(quiet)
    output = Path(output)
    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    if output.resolve() == art.root.resolve():
        raise ModelkilnError("OUTPUT is the input artifact; write the transformed artifact to a new directory")
    check_output(output, force)
    if not passes:
        raise ModelkilnError("nothing to do: name at least one pass (see `modelkiln optimize --help`)")
    config_file = art.file("config.json")
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file else {}
    context = PassContext(config=config, manifest=copy.deepcopy(art.manifest), artifact_dir=art.root)
    graph_entry = art.graph("model")
    with progress.step(f"loading {art.root.name}/{graph_entry['file']}"):
        model = ir.load(art.graph_path("model"))
    records = []
    for name, params in passes:
        with progress.step(f"pass {name}"):
            records += run_passes(model, [(name, params)], context)
        progress.info(f"  {_summary(records[-1]['result'])}")
    graph_files = {graph_entry["file"], *graph_entry.get("external_data", [])}
    with staging_directory(output, force) as tmp:
        with progress.step("saving the artifact"):
            files = save_with_external_data(model, tmp, graph_entry["file"])
            for name in art.manifest["files"]:
                if name not in graph_files and name != MANIFEST and name not in REPORT_FILES:
                    (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(art.root / name, tmp / name)
            manifest = deep_merge({k: v for k, v in art.manifest.items() if k not in ("files", "schema_version")},
                                  context.manifest_updates)
            opset = max(model.opset_imports.get("", 0), graph_entry.get("opset", 0))
            manifest["graphs"]["model"] = {**manifest["graphs"]["model"], "file": files[0],
                                           "external_data": files[1:], "opset": opset,
                                           "passes": graph_entry.get("passes", []) + records, **io_signature(model)}
            write_manifest(tmp, manifest)
        if validate:
            _validate_staged(tmp, reference or art.manifest.get("source", {}).get("id"), progress, output)
    return output


def _validate_staged(folder: Path, reference: str | None, progress: Progress, output: Path) -> None:
    from modelkiln.validate import validate as run_validate

    if not reference:
        raise ModelkilnError("--validate needs --reference SOURCE: the manifest does not name a loadable source")
    with progress.step(f"validating against eager PyTorch ({reference})"):
        report = run_validate(Artifact.load(folder), reference, quiet=True)
        report.write(json=folder / "parity.json", markdown=folder / "parity.md")
    for line in report.lines(verbose=False):
        progress.info(line)
    if not report.passed:
        progress.info(f"parity FAILED; the artifact and its report are in {output}")


def _summary(result: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in result.items() if not isinstance(v, (list, dict))) or "done"
