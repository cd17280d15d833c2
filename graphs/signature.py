"""The I/O signature of a graph, as the manifest records it, and symbolic-dimension naming.

    io_signature(model) -> {"inputs": [{"name": "input_ids", "dtype": "int64",
                                        "dims": ["batch_size", "sequence_length"]}, ...], "outputs": [...]}
"""

from __future__ import annotations

from typing import Any

import onnx_ir as ir


def _dims(value: ir.Value) -> list[int | str | None]:
    if value.shape is None:
        return []
    return [d if isinstance(d, int) else (d.value if d.value is not None else None) for d in value.shape]


def _dtype_name(value: ir.Value) -> str:
    return value.dtype.name.lower() if value.dtype is not None else "unknown"


def io_signature(model: ir.Model) -> dict[str, list[dict[str, Any]]]:
    def describe(values):
        return [{"name": v.name, "dtype": _dtype_name(v), "dims": _dims(v)} for v in values]

    return {"inputs": describe(model.graph.inputs), "outputs": describe(model.graph.outputs)}


def rename_dims(model: ir.Model, names: dict[str, str]) -> None:
    """Rename symbolic dims of graph inputs/outputs (torch.export calls the sum `past + seq`; we say
    `total_sequence_length`, the name ONNX Runtime GenAI and optimum use)."""
    for value in [*model.graph.inputs, *model.graph.outputs]:
        if value.shape is None:
            continue
        dims = [names.get(d.value, d.value) if isinstance(d, ir.SymbolicDim) else d for d in value.shape]
        value.shape = ir.Shape(dims)
