"""Load and check an artifact directory (the contract between export, runtime and validate).

    art = Artifact.load("smollm2/")      # reads modelkiln.json, checks every file's size and sha256
    art.task                             # "text-generation"
    art.graph_path("model")              # Path(".../smollm2/model.onnx"), safe to hand to onnxruntime

Checks, each failing with a one-line `ArtifactError`: the manifest exists and parses; its schema version is
one we read; every listed file exists inside the directory (no absolute paths, no `..`, no symlink leaving
it), has its recorded size and sha256; every external-data `location` inside a graph is a listed file of
the artifact. Reports (`parity.json`, `parity.md`) are written after export by `validate`, so they are
not hash-listed: they describe the artifact, they are not part of what gets served.

Hashing 540 MB costs ~0.6 s of a serving process's cold start, so a full check remembers what it verified, git-index
style: `~/.cache/modelkiln/verified.json` (or `$MODELKILN_CACHE`) maps each verified file to its sha256 and its
(size, mtime_ns, ctime_ns, inode). A later load skips hashing a file only when all of those still match; any
write to the file changes its ctime, which an unprivileged process cannot set back.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelkiln.runtime.errors import ArtifactError
from modelkiln.runtime.onnx_proto import external_data_locations

MANIFEST = "modelkiln.json"
SCHEMA_VERSION = 1
REPORT_FILES = ("parity.json", "parity.md")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def safe_member(root: Path, name: str) -> Path:
    """`root/name`, or ArtifactError when `name` would leave `root` (absolute, `..`, symlinks)."""
    if not name or os.path.isabs(name) or "\\" in name or ".." in Path(name).parts:
        raise ArtifactError(f"artifact file name {name!r} points outside the artifact; re-export the artifact")
    path = root / name
    resolved = path.resolve()
    if resolved != root.resolve() and root.resolve() not in resolved.parents:
        raise ArtifactError(f"artifact file {name!r} resolves outside the artifact ({resolved}); re-export it")
    return path


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class _VerifiedCache:
    """Files whose sha256 a full check already computed, keyed by resolved path, valid while their stat holds."""

    def __init__(self, location: Path, entries: dict):
        self.location, self.entries, self.dirty = location, entries, False

    @classmethod
    def load(cls) -> _VerifiedCache:
        root = os.environ.get("MODELKILN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "modelkiln")
        location = Path(root) / "verified.json"
        try:
            entries = json.loads(location.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # no cache yet, or unreadable: everything gets hashed
            entries = {}
        return cls(location, entries if isinstance(entries, dict) else {})

    def still_verified(self, path: Path, sha256: str | None) -> bool:
        entry = self.entries.get(str(path.resolve()))
        return bool(entry) and entry[0] == sha256 and entry[1:] == _stat_key(path)

    def remember(self, path: Path, sha256: str) -> None:
        self.entries[str(path.resolve())] = [sha256, *_stat_key(path)]
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        try:
            self.location.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.location.with_name(f".verified.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.entries), encoding="utf-8")
            os.replace(tmp, self.location)
        except OSError:  # a read-only home only costs the next process a re-hash
            pass


@dataclass(frozen=True)
class Artifact:
    root: Path
    manifest: dict[str, Any]

    @classmethod
    def load(cls, path: str | os.PathLike, verify: str = "full") -> Artifact:
        """Read the manifest and check the files: verify="full" (sizes + sha256), "size", or "none"."""
        root = Path(path)
        if not root.is_dir():
            raise ArtifactError(f"artifact {str(path)!r} does not exist or is not a directory")
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            raise ArtifactError(f"{str(path)!r} is not a modelkiln artifact (no {MANIFEST}); export one first")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise ArtifactError(f"{manifest_path} is not valid JSON ({e}); re-export the artifact") from None
        if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
            found = manifest.get("schema_version") if isinstance(manifest, dict) else None
            raise ArtifactError(
                f"{manifest_path} has schema version {found!r}; this modelkiln reads version {SCHEMA_VERSION}, "
                "re-export the artifact with this version")
        artifact = cls(root, manifest)
        if verify != "none":
            artifact.verify(hashes=(verify == "full"))
        return artifact

    # -- checks ---------------------------------------------------------------------------------------
    def verify(self, hashes: bool = True) -> None:
        files = self.manifest.get("files")
        cache = _VerifiedCache.load() if hashes else None
        if not isinstance(files, dict) or not files:
            raise ArtifactError(f"{self.root / MANIFEST} lists no files; re-export the artifact")
        for name, meta in files.items():
            path = safe_member(self.root, name)
            if not path.is_file():
                raise ArtifactError(f"artifact file {name} is missing from {self.root}; re-export the artifact")
            size = path.stat().st_size
            if size != meta.get("size"):
                raise ArtifactError(
                    f"artifact file {name} has {size} bytes, the manifest says {meta.get('size')}: truncated or "
                    "modified; re-export the artifact")
            if hashes and not cache.still_verified(path, meta.get("sha256")):
                if sha256_file(path) != meta.get("sha256"):
                    raise ArtifactError(f"artifact file {name} fails its sha256 check (modified or corrupt); "
                                        "re-export the artifact")
                cache.remember(path, meta["sha256"])
        if cache is not None:
            cache.save()
        for graph in self.manifest.get("graphs", {}).values():
            self._check_external_data(graph["file"])

    def _check_external_data(self, graph_file: str) -> None:
        path = safe_member(self.root, graph_file)
        try:
            locations = external_data_locations(path.read_bytes())
        except (ValueError, IndexError):
            raise ArtifactError(f"graph {graph_file} is not a valid ONNX file; re-export the artifact") from None
        listed = set(self.manifest["files"])
        for location in sorted(locations):
            safe_member(self.root, location)
            if location not in listed:
                raise ArtifactError(
                    f"graph {graph_file} reads external data from {location!r}, which is not a file of the "
                    "artifact; re-export the artifact")

    # -- accessors ------------------------------------------------------------------------------------
    @property
    def task(self) -> str:
        return self.manifest["task"]

    @property
    def precision(self) -> str:
        return self.manifest.get("precision", "fp32")

    def graph(self, name: str = "model") -> dict[str, Any]:
        graphs = self.manifest.get("graphs", {})
        if name not in graphs:
            raise ArtifactError(f"artifact {self.root} has no graph {name!r} (it has {sorted(graphs)})")
        return graphs[name]

    def graph_path(self, name: str = "model") -> Path:
        return safe_member(self.root, self.graph(name)["file"])

    def file(self, name: str) -> Path | None:
        """Path of an optional artifact file (tokenizer.json, ...) or None when the export did not write it."""
        return safe_member(self.root, name) if name in self.manifest.get("files", {}) else None
