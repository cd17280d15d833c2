"""`export(source, output, ExportOptions(...))`: eager checkpoint → self-contained artifact directory.

    from modelkiln.exporter import export, ExportOptions
    export("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2/", ExportOptions(task="text-generation"))

Steps (each a progress line): load → trace → graph passes → write (graph, tokenizer, configs, manifest)
→ optional validation → atomic rename into OUTPUT.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from modelkiln.exporter.artifact_writer import check_output, staging_directory, write_manifest
from modelkiln.exporter.progress import Progress, quiet_libraries
from modelkiln.exporter.sources import LoadedModel, load_config, load_source, resolve_source
from modelkiln.runtime.errors import ModelkilnError

TASK_ALIASES = {"text-generation": "text-generation", "causal-lm": "text-generation",
                "text-generation-with-past": "text-generation",
                # encoder tasks (exporter/encoder.py), with the aliases transformers.pipeline accepts
                "feature-extraction": "feature-extraction", "sentence-similarity": "sentence-similarity",
                "text-classification": "text-classification", "sentiment-analysis": "text-classification",
                "token-classification": "token-classification", "ner": "token-classification",
                "question-answering": "question-answering", "fill-mask": "fill-mask",
                "auto": "auto"}  # auto: from the checkpoint's `architectures`
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
PRECISION_OF_DTYPE = {v: k for k, v in DTYPES.items()}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")
_VERSIONED_TOOLS = ("modelkiln", "torch", "transformers", "onnx", "onnxscript", "onnx-ir", "onnxruntime",
                    "numpy", "gguf")


@dataclass(frozen=True)
class ExportOptions:
    task: str = "text-generation"
    dtype: str = "fp32"  # fp32 | fp16 | bf16
    opset: int = 18
    force: bool = False
    validate: bool = False
    quiet: bool = False
    trust_remote_code: bool = False
    revision: str | None = None

    def normalized(self) -> ExportOptions:
        task = TASK_ALIASES.get(self.task)
        if task is None:
            raise ModelkilnError(
                f"unsupported task {self.task!r}; supported: {', '.join(sorted(set(TASK_ALIASES.values())))}")
        if self.dtype not in DTYPES:
            raise ModelkilnError(f"unsupported --dtype {self.dtype!r}; use one of {', '.join(DTYPES)}")
        if not 17 <= self.opset <= 23:
            raise ModelkilnError(f"unsupported --opset {self.opset}; use 17 to 23")
        return ExportOptions(**{**self.__dict__, "task": task})


def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED_TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def export(source: str, output: str | Path, options: ExportOptions = ExportOptions()) -> Path:
    """Export SOURCE to the artifact directory OUTPUT and return its path (see module docstring)."""
    options = options.normalized()
    output = Path(output)
    check_output(output, options.force)  # fail before the slow load, not after
    src = resolve_source(source, options.revision)
    quiet_libraries(options.quiet)
    progress = Progress(options.quiet)
    if options.task == "auto":
        options = dataclasses.replace(options, task=_infer_task(src, options))
        progress.info(f"task {options.task} (from the checkpoint's architectures)")
    from modelkiln.exporter.encoder import ENCODER_TASKS

    if options.task in ENCODER_TASKS:
        return _export_encoder(src, output, options, progress)

    from modelkiln.exporter.decoder import probe_kv_layout, trace_decoder
    from modelkiln.exporter.families import check_decoder_family

    with progress.step(f"loading {source}"):
        check_decoder_family(load_config(src, options.trust_remote_code))  # refuse before loading weights
        loaded = load_source(src, dtype=DTYPES[options.dtype], trust_remote_code=options.trust_remote_code)
    layout = probe_kv_layout(loaded.model)
    with progress.step(f"tracing {loaded.config.model_type} ({layout.num_layers} layers) to ONNX"):
        graph = trace_decoder(loaded.model, layout, opset=options.opset)

    from modelkiln.exporter.decoder import PAST, SEQ, TOTAL
    from modelkiln.graphs import EXPORT_PASSES, rename_dims, run_passes

    with progress.step("optimizing the graph"):
        rename_dims(graph, {f"{PAST} + {SEQ}": TOTAL, f"{SEQ} + {PAST}": TOTAL})
        pass_records = run_passes(graph, EXPORT_PASSES)

    return _write_artifact(output, options, progress, loaded, graph, lambda files, tokenizer_files: _manifest(
        loaded, options, layout, graph, files, pass_records, tokenizer_files))


def _write_artifact(output: Path, options: ExportOptions, progress: Progress, loaded: LoadedModel, graph,
                    manifest_for) -> Path:
    """Save graph + sidecar files + manifest into a staging directory, validate there when asked, and let
    `staging_directory` rename it into OUTPUT. `manifest_for(files, tokenizer_files)` builds the manifest."""
    from modelkiln.graphs import save_with_external_data

    with staging_directory(output, options.force) as tmp:
        with progress.step("saving the artifact"):
            files = save_with_external_data(graph, tmp, "model.onnx")
            tokenizer_files = _save_sidecar_files(loaded, tmp)
            manifest = write_manifest(tmp, manifest_for(files, tokenizer_files))
        progress.info(f"  {_size_mb(manifest)} MB in {len(manifest['files'])} files")
        if options.validate:
            validate_staged(tmp, loaded, progress, output)
    return output


def validate_staged(folder: Path, reference, progress: Progress, output: Path) -> None:
    """Validate the staged artifact in `folder` against `reference` (a SOURCE or LoadedModel) and store its
    parity.json/parity.md there; a failure is reported, and the artifact is still written to `output`."""
    from modelkiln.validate import validate

    with progress.step("validating against eager PyTorch"):
        report = validate(folder, reference, quiet=True)
        report.write(json=folder / "parity.json", markdown=folder / "parity.md")
    for line in report.lines(verbose=False):
        progress.info(line)
    if not report.passed:
        progress.info(f"parity FAILED; the artifact and its report are in {output}")


def _infer_task(src, options: ExportOptions) -> str:
    from modelkiln.exporter.encoder import has_sentence_transformers_config, infer_task

    config = load_config(src, options.trust_remote_code)
    return infer_task({"architectures": getattr(config, "architectures", None)},
                      has_sentence_transformers_config(src.path if src.kind == "directory" else None))


def _export_encoder(src, output: Path, options: ExportOptions, progress: Progress) -> Path:
    """The encoder path (exporter/encoder.py): one graph, task head included, no KV cache."""
    from modelkiln.exporter.encoder import ENCODER_TASKS, check_encoder_family, check_labels, trace_encoder
    from modelkiln.graphs import EXPORT_PASSES, run_passes

    task = ENCODER_TASKS[options.task]
    with progress.step(f"loading {src.spec}"):
        check_encoder_family(load_config(src, options.trust_remote_code), options.task)  # before the weights
        # eager attention: a plainer graph than SDPA's (no NaN guards for fully masked rows), and faster on ORT
        loaded = load_source(src, auto_class=task.auto_class, dtype=DTYPES[options.dtype],
                             trust_remote_code=options.trust_remote_code, attn_implementation="eager")
    if loaded.tokenizer is None:
        raise ModelkilnError(f"SOURCE {src.spec!r} ships no tokenizer; encoder tasks need one (tokenizer.json) to "
                             "serve text")
    check_labels(loaded.model, options.task, src.path if src.kind == "directory" else None)
    with progress.step(f"tracing {loaded.config.model_type} ({options.task}) to ONNX"):
        graph, _ = trace_encoder(loaded.model, options.task, opset=options.opset)
    with progress.step("optimizing the graph"):
        pass_records = run_passes(graph, EXPORT_PASSES)
    return _write_artifact(output, options, progress, loaded, graph, lambda files, tokenizer_files: _encoder_manifest(
        loaded, options, graph, files, pass_records, tokenizer_files))


def _encoder_manifest(loaded: LoadedModel, options: ExportOptions, graph, files, pass_records,
                      tokenizer_files) -> dict[str, Any]:
    from modelkiln.exporter.encoder import head_info, labels_of
    from modelkiln.graphs import io_signature

    config, src = loaded.config, loaded.source
    tok = loaded.tokenizer
    return {
        "task": options.task,
        "model_type": config.model_type,
        "precision": options.dtype,
        "source": {"kind": src.kind, "id": src.spec, "gguf_file": src.gguf_file, "revision": src.revision,
                   "files": loaded.file_hashes, "fingerprint": config_fingerprint(config)},
        "graphs": {"model": {"file": files[0], "external_data": files[1:], "opset": options.opset,
                             "precision": options.dtype, "passes": pass_records, **io_signature(graph)}},
        "tokenizer": {"files": tokenizer_files, "class": type(tok).__name__,
                      "model_max_length": tok.model_max_length if tok.model_max_length < 1e20 else None},
        "encoder": head_info(config, options.task, src.path if src.kind == "directory" else None),
        "labels": labels_of(config, options.task),
        "versions": tool_versions(),
    }


def _size_mb(manifest: dict[str, Any]) -> str:
    return f"{sum(f['size'] for f in manifest['files'].values()) / 1e6:.1f}"


def _compact_json(path: Path) -> None:
    """Rewrite a pretty-printed JSON file without indentation: the same document at less than half the bytes
    (SmolLM2's tokenizer.json: 3.5 → 1.6 MB)."""
    if path.is_file():
        text = json.dumps(json.loads(path.read_text(encoding="utf-8")), ensure_ascii=False, separators=(",", ":"))
        path.write_text(text, encoding="utf-8")


def _save_sidecar_files(loaded: LoadedModel, folder: Path) -> list[str]:
    """Write config.json, generation_config.json and the tokenizer files; return the tokenizer files."""
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):  # a GGUF source was dequantized on load: the graph is float
        del config.quantization_config
    config.save_pretrained(folder)
    generation_config = getattr(loaded.model, "generation_config", None)  # encoders (no generate) have none
    if generation_config is not None:
        generation_config.save_pretrained(folder)
    if loaded.tokenizer is not None:
        staging = folder / ".tokenizer"
        loaded.tokenizer.save_pretrained(staging)
        for name in _TOKENIZER_FILES:
            if (staging / name).is_file():
                (staging / name).rename(folder / name)
        for leftover in staging.iterdir():
            leftover.unlink()
        staging.rmdir()
        _compact_json(folder / "tokenizer.json")
    return [name for name in _TOKENIZER_FILES if (folder / name).is_file()]


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def _generation_defaults(loaded: LoadedModel) -> dict[str, Any]:
    config, gen = loaded.config, loaded.model.generation_config
    tok = loaded.tokenizer
    eos = _as_list(getattr(gen, "eos_token_id", None)) or _as_list(getattr(config, "eos_token_id", None))
    pad = getattr(gen, "pad_token_id", None)
    if pad is None and tok is not None:
        pad = tok.pad_token_id
    context = next((getattr(config, n) for n in ("max_position_embeddings", "n_positions", "max_sequence_length")
                    if getattr(config, n, None)), None)
    chat_template = getattr(tok, "chat_template", None) if tok is not None else None
    return {
        "bos_token_id": getattr(gen, "bos_token_id", None) or getattr(config, "bos_token_id", None),
        "eos_token_id": eos,
        "pad_token_id": pad,
        "context_length": context,
        "chat_template": chat_template if isinstance(chat_template, str) else None,
    }


def _manifest(loaded: LoadedModel, options: ExportOptions, layout, graph, files, pass_records,
              tokenizer_files) -> dict[str, Any]:
    from modelkiln.graphs import io_signature

    config = loaded.config
    precision = options.dtype
    src = loaded.source
    return {
        "task": options.task,
        "model_type": config.model_type,
        "precision": precision,
        "source": {
            "kind": src.kind,
            "id": src.spec,
            "gguf_file": src.gguf_file,
            "revision": src.revision,
            "files": loaded.file_hashes,
            "fingerprint": config_fingerprint(config),
        },
        "graphs": {
            "model": {
                "file": files[0],
                "external_data": files[1:],
                "opset": options.opset,
                "precision": precision,
                "passes": pass_records,
                **io_signature(graph),
            }
        },
        "kv_cache": {
            "num_layers": layout.num_layers,
            "num_kv_heads": layout.num_kv_heads,
            "head_dim": layout.head_dim,
            "key_head_dim": layout.key_head_dim,
            "dtype": PRECISION_OF_DTYPE.get(DTYPES[precision], precision),
            "layout": "batch, kv_heads, sequence, head_dim",
            "past_key": "past_key_values.{i}.key",
            "past_value": "past_key_values.{i}.value",
            "present_key": "present.{i}.key",
            "present_value": "present.{i}.value",
        },
        "tokenizer": {
            "files": tokenizer_files,
            "class": type(loaded.tokenizer).__name__ if loaded.tokenizer is not None else None,
        },
        "generation": _generation_defaults(loaded),
        "labels": None,
        "versions": tool_versions(),
    }


def config_fingerprint(config) -> dict[str, Any]:
    """The architecture facts a reference must share with the artifact for `validate` to compare them."""
    keys = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "intermediate_size", "n_embd", "n_layer", "n_head")
    return {k: getattr(config, k) for k in keys if getattr(config, k, None) is not None}
