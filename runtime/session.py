"""onnxruntime sessions for artifact graphs."""

from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort

from modelkiln.runtime.errors import ArtifactError


def create_session(path: Path, providers: list[str] | None = None, intra_op_threads: int | None = None,
                   ) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    options.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise to users
    try:
        return ort.InferenceSession(os.fspath(path), options, providers=providers or ["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types (Fail, InvalidGraph, NotImplemented...)
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ArtifactError(f"onnxruntime cannot load {path.name}: {first}") from e
