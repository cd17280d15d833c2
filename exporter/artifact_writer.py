"""Write an artifact directory atomically, with its manifest and the sha256 of every file.

The artifact is built in a hidden temporary sibling of OUTPUT and renamed into place at the very end,
so an interrupted or failed export never leaves a partial OUTPUT (an existing OUTPUT replaced with
--force is only removed once the new one is complete).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelkiln.runtime.artifact import MANIFEST, REPORT_FILES, SCHEMA_VERSION, sha256_file
from modelkiln.runtime.errors import ModelkilnError


def check_output(output: Path, force: bool) -> None:
    if output.exists() and not force:
        raise ModelkilnError(f"OUTPUT {str(output)!r} already exists; pass --force to replace it")
    if output.exists() and not output.is_dir():
        raise ModelkilnError(f"OUTPUT {str(output)!r} is a file; pass a directory path")


@contextlib.contextmanager
def staging_directory(output: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary directory; on success it becomes `output`, on any error it disappears."""
    check_output(output, force)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    try:
        yield tmp
        if output.exists():  # --force: swap, then drop the old one
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
            os.replace(output, old / "artifact")
            os.replace(tmp, output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, output)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def file_table(folder: Path) -> dict[str, dict[str, Any]]:
    """{relative name: {sha256, size}} for every file but the manifest and reports."""
    table = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name == MANIFEST or name in REPORT_FILES:
            continue
        table[name] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return table


def write_manifest(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    manifest = {"schema_version": SCHEMA_VERSION, **manifest, "files": file_table(folder)}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return manifest
