"""Named passes over an ONNX model, each recorded in the manifest with its parameters.

A pass is a function `(ir.Model, **params) -> dict` (details for the manifest); `run_passes` applies a list
of `(name, params)` in order and returns the records, e.g.
`[{"name": "share_transposed_initializers", "params": {}, "result": {"removed": ["val_458"]}}]`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import common as ir_common

from modelkiln.graphs.tied_weights import share_transposed_initializers
from modelkiln.runtime.errors import ModelkilnError


def _share_transposed(model: ir.Model) -> dict[str, Any]:
    return {"removed": share_transposed_initializers(model)}


def _deduplicate_initializers(model: ir.Model) -> dict[str, Any]:
    """Initializers with identical dtype, shape and bytes become one (e.g. all-ones norm weights of a fresh
    checkpoint, repeated rotary tables).

    Our own rather than onnx_ir's DeduplicateHashedInitializersPass, which rejects the non-contiguous
    arrays torch.export hands over. Only tensors that share dtype and shape with another are hashed.
    """
    graph = model.graph
    groups: dict[tuple, list[tuple[str, ir.Value]]] = {}
    for name, value in graph.initializers.items():
        if value.const_value is None or value.is_graph_input() or value.is_graph_output():
            continue
        groups.setdefault((value.dtype, tuple(value.const_value.shape.numpy())), []).append((name, value))
    removed = 0
    for members in groups.values():
        if len(members) < 2:
            continue
        seen: dict[str, ir.Value] = {}
        for name, value in members:
            array = value.const_value.numpy()
            keep = seen.setdefault(hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest(), value)
            if keep is not value:
                value.replace_all_uses_with(keep)
                graph.initializers.pop(name)
                removed += 1
    return {"removed": removed}


def _remove_unused(model: ir.Model) -> dict[str, Any]:
    before = model.graph.num_nodes()
    ir_common.RemoveUnusedNodesPass()(model)
    return {"removed_nodes": before - model.graph.num_nodes()}


def _clear_metadata(model: ir.Model) -> dict[str, Any]:
    """Drop torch.onnx's per-node provenance (stack traces, fx node text, namespaces): half of a 30-layer
    graph file's bytes, read at every load and useful only while debugging the exporter."""
    ir_common.ClearMetadataAndDocStringPass()(model)
    return {}


def _topological_sort(model: ir.Model) -> dict[str, Any]:
    ir_common.TopologicalSortPass()(model)
    return {}


PASSES: dict[str, Callable[..., dict[str, Any]]] = {
    "share_transposed_initializers": _share_transposed,
    "deduplicate_initializers": _deduplicate_initializers,
    "remove_unused": _remove_unused,
    "topological_sort": _topological_sort,
    "clear_metadata": _clear_metadata,
}

# What every exported graph gets: store tied weights once, drop exact duplicates, tidy up.
EXPORT_PASSES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("share_transposed_initializers", {}),
    ("deduplicate_initializers", {}),
    ("remove_unused", {}),
    ("topological_sort", {}),
    ("clear_metadata", {}),
)


def run_passes(model: ir.Model, passes: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    records = []
    for name, params in passes:
        if name not in PASSES:
            raise ModelkilnError(f"unknown graph pass {name!r}; known passes: {', '.join(sorted(PASSES))}")
        result = PASSES[name](model, **params)
        records.append({"name": name, "params": dict(params), "result": result})
    return records
