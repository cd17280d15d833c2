"""`transform(artifact, output, passes)`: artifact → new artifact with more graph passes applied.

    from modelkiln.exporter.transform import transform
    transform("smollm2/", "smollm2-int4/", [("fuse_group_query_attention", {}), ("quantize_matmul_nbits", {"bits": 4})])

What `modelkiln optimize` and `modelkiln quantize` run (and `export --optimize/--weights/--precision`, after the
export). The source artifact is verified first and never modified; the output is written atomically like an
export. The new manifest is the old one with the graph's I/O signature and file table recomputed, the pass records
appended, and whatever the passes put in `context.manifest_updates` merged in (precision, attention kind,
quantization).
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
    if validate:
        reference = reference or art.manifest.get("source", {}).get("id")
        if not reference:  # before the passes run, not after
            raise ModelkilnError("--validate needs --reference SOURCE: the manifest does not name a loadable source")
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
            from modelkiln.exporter.api import validate_staged

            validate_staged(tmp, reference, progress, output)
    return output


def _summary(result: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in result.items() if not isinstance(v, (list, dict))) or "done"


OPTIMIZE_LEVELS = ("none", "basic", "all")
PRECISIONS = ("fp16", "bf16")
BF16_VALIDATE = ("--validate runs the graph on onnxruntime's CPU provider, which has no bf16 kernels; drop --validate "
                 "for a bf16 artifact (it needs a GPU provider), or validate an --precision fp16 conversion instead")


def _applied(manifest: dict[str, Any]) -> set[str]:
    return {p["name"] for p in manifest.get("graphs", {}).get("model", {}).get("passes", [])}


def plan_optimize(manifest: dict[str, Any], level: str = "all") -> list[tuple[str, dict[str, Any]]]:
    """The fusion passes for an artifact's task. `basic`: normalization fusions and merged projections (the graph
    keeps standard attention and I/O); `all`: also GroupQueryAttention for decoders (in-place KV cache); `none`:
    no fusion (`optimize --level none --precision fp16` converts the graph as it is)."""
    if level not in OPTIMIZE_LEVELS:
        raise ModelkilnError(f"unknown optimization level {level!r}; use one of {', '.join(OPTIMIZE_LEVELS)}")
    if level == "none":
        return []
    done = _applied(manifest)
    if manifest.get("task") == "text-generation":
        passes = (["fuse_group_query_attention"] if level == "all" else []) + ["fuse_rms_norm",
                                                                               "merge_parallel_matmuls"]
    else:
        passes = ["fuse_encoder"]
    todo = [(name, {}) for name in passes if name not in done]
    if todo and manifest.get("precision_conversion"):
        raise ModelkilnError(f"this artifact was converted to {manifest['precision']}; the fusions match fp32 graphs: "
                             f"fuse and convert the fp32 artifact in one step (`modelkiln optimize FP32_ARTIFACT OUT "
                             f"--precision {manifest['precision']}`)")
    return todo


def plan_convert(manifest: dict[str, Any], precision: str, *,
                 validate: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """The fp16/bf16 conversion pass (graphs/float16.py), run after any fusions: half-precision weights and compute,
    float32 inputs and outputs, the KV cache in the new precision, sensitive ops in fp32."""
    if precision not in PRECISIONS:
        raise ModelkilnError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    current = manifest.get("precision", "fp32")
    if current != "fp32":
        how = "converted" if manifest.get("precision_conversion") else f"traced with --dtype {current}"
        raise ModelkilnError(f"this artifact is already {current} ({how}); convert an fp32 artifact to {precision}")
    if manifest.get("quantization"):
        raise ModelkilnError(f"this artifact is quantized ({manifest['quantization'].get('weights')}); --precision "
                             "converts float artifacts: convert the fp32 artifact instead")
    if precision == "bf16" and validate:
        raise ModelkilnError(BF16_VALIDATE)
    return [("convert_precision", {"precision": precision})]


def plan_quantize(manifest: dict[str, Any], weights: str, *, block_size: int = 32, accuracy_level: int = 4,
                  scheme: str = "minmax", exclude: tuple[str, ...] = (), optimize: str | None = "all",
                  min_cosine: float = 0.99) -> list[tuple[str, dict[str, Any]]]:
    """Fusions first (so merged projections are quantized as one), then the weight quantization pass."""
    if manifest.get("quantization"):
        raise ModelkilnError(f"this artifact is already quantized ({manifest['quantization'].get('weights')}); "
                             "quantize the float artifact instead")
    if manifest.get("precision_conversion"):
        raise ModelkilnError(f"this artifact was converted to {manifest['precision']}; quantize the fp32 artifact "
                             "instead")
    bits = {"int4": 4, "int8": 8}.get(weights)
    if bits is None:
        raise ModelkilnError(f"--weights {weights!r} is not supported; use int4 or int8")
    passes = plan_optimize(manifest, optimize) if optimize else []
    if manifest.get("task") == "text-generation":
        return passes + [("quantize_matmul_nbits", {"bits": bits, "block_size": block_size, "scheme": scheme,
                                                    "accuracy_level": accuracy_level, "exclude": list(exclude)})]
    if bits != 8:
        raise ModelkilnError("encoder artifacts quantize to --weights int8 (dynamic int8 with an accuracy guard); "
                             "int4 is for text-generation artifacts")
    # the value bias stays where it is: moved past the attention, it shifts the output projection's int8 input, and
    # on all-MiniLM-L6-v2 the guard then kept 8 MatMuls instead of 6 (graph [32, 20]: 22.4 vs 21.0 ms)
    passes = [(name, {**params, "fold_value_bias": False} if name == "fuse_encoder" else params)
              for name, params in passes]
    return passes + [("quantize_dynamic_int8", {"per_channel": True, "min_cosine": min_cosine,
                                                "exclude": list(exclude)})]


def export_transformed(source: str, output: str | Path, options, optimize: str | None, *, weights: str | None,
                       block_size: int = 32, accuracy_level: int = 4, scheme: str = "minmax",
                       exclude: tuple[str, ...] = (), precision: str | None = None) -> Path:
    """`export --optimize/--weights/--precision`: export the float artifact into a scratch directory beside OUTPUT,
    then transform it into OUTPUT (validated there when asked, against SOURCE)."""
    import dataclasses
    import tempfile

    from modelkiln.exporter.api import export

    output = Path(output)
    if precision:  # refused before the slow export, not after
        plan_convert({}, precision, validate=options.validate)  # unknown precision, bf16 with --validate
        if options.dtype != "fp32":
            raise ModelkilnError(f"--precision converts an fp32 export; --dtype {options.dtype} traces in "
                                 f"{options.dtype} instead: use one of them, not both")
        if weights:
            raise ModelkilnError("--precision and --weights do not combine: quantized weights keep float32 "
                                 "activations; pick one")
    check_output(output, options.force)
    output.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{output.name}.float-", dir=output.parent))
    try:
        # just written by us: sizes are enough, and `transform` gets the loaded artifact (no second sha256 pass)
        art = Artifact.load(export(source, scratch / "artifact", dataclasses.replace(options, validate=False,
                                                                                     force=False)), verify="size")
        manifest = art.manifest
        if weights:
            passes = plan_quantize(manifest, weights, block_size=block_size, accuracy_level=accuracy_level,
                                   scheme=scheme, exclude=exclude, optimize=optimize or "all")
        else:
            passes = plan_optimize(manifest, optimize or "none")
        if precision:
            passes += plan_convert(manifest, precision, validate=options.validate)
        return transform(art, output, passes, force=options.force, validate=options.validate, reference=source,
                         quiet=options.quiet)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
