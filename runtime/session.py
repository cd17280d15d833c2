"""onnxruntime sessions for artifact graphs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

from modelkiln.runtime.errors import ArtifactError

BF16_ON_CPU = ("this artifact is bf16: onnxruntime's CPU provider has no bf16 kernels; serve it with a GPU provider "
               "(providers=['CUDAExecutionProvider']), or use an fp16/fp32 artifact on CPU "
               "(`modelkiln optimize FP32_ARTIFACT OUT --precision fp16`)")


def create_session(path: Path, providers: list[str] | None = None, intra_op_threads: int | None = None,
                   precision: str = "fp32", disabled_optimizers: Sequence[str] = ()) -> ort.InferenceSession:
    """`precision` is the artifact's (manifest `precision`): a bf16 graph on the CPU provider alone is refused with
    one line instead of onnxruntime's "Could not find an implementation for Add(14)". `disabled_optimizers`: names
    of onnxruntime graph transformers not to run at load (the encoders': see runtime/encoder.py)."""
    if precision == "bf16" and set(providers or ["CPUExecutionProvider"]) <= {"CPUExecutionProvider"}:
        raise ArtifactError(BF16_ON_CPU)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    options.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise to users
    try:
        return ort.InferenceSession(os.fspath(path), options, providers=providers or ["CPUExecutionProvider"],
                                    disabled_optimizers=list(disabled_optimizers))
    except Exception as e:  # onnxruntime raises its own exception types (Fail, InvalidGraph, NotImplemented...)
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ArtifactError(f"onnxruntime cannot load {path.name}: {first}") from e
