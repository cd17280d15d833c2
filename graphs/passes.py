"""Named passes over an ONNX model, each recorded in the manifest with its parameters.

A pass is a function `(ir.Model, **params) -> dict` (details for the manifest); `run_passes` applies a list
of `(name, params)` in order and returns the records, e.g.
`[{"name": "share_transposed_initializers", "params": {}, "result": {"removed": ["val_458"]}}]`.

Passes that need more than the graph (the model config, the artifact's tokenizer for an accuracy guard, the
manifest they update: precision, attention kind) take a keyword-only `context: PassContext`; it is never
recorded, only `params` are. Modules outside this file add their passes with `@register_pass("name")`.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
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


def _name_nodes_by_module(model: ir.Model) -> dict[str, Any]:
    """Name each node after the torch module that produced it (`model.layers.3.self_attn.q_proj/MatMul`), from
    torch.onnx's name-scope metadata, before `clear_metadata` drops it: `quantize --exclude` patterns, `inspect`
    and ORT profiles then speak in module names instead of `node_linear_14`."""
    counts: dict[str, int] = {}
    renamed = 0
    for node in model.graph:
        scopes = node.metadata_props.get("pkg.torch.onnx.name_scopes")
        if not scopes:
            continue
        try:
            module_scopes = [s for s in eval_scopes(scopes) if s][:-1]  # the last scope is the fx op
        except (ValueError, SyntaxError):
            continue
        if not module_scopes:
            continue
        module = module_scopes[-1]
        wrapper = node.metadata_props.get("pkg.torch.onnx.class_hierarchy", "")
        if wrapper.startswith("['modelkiln.") and "." in module:  # our export wrapper's attribute prefix
            module = module.split(".", 1)[1]
        base = f"{module}/{node.op_type}"
        counts[base] = counts.get(base, 0) + 1
        node.name = base if counts[base] == 1 else f"{base}_{counts[base] - 1}"
        renamed += 1
    return {"renamed": renamed}


def eval_scopes(text: str) -> list[str]:
    """torch.onnx stores name scopes as a Python list literal of strings."""
    import ast

    value = ast.literal_eval(text)
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise ValueError(text)
    return value


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
    "name_nodes_by_module": _name_nodes_by_module,
    "clear_metadata": _clear_metadata,
}

# What every exported graph gets: store tied weights once, drop exact duplicates, tidy up.
EXPORT_PASSES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("share_transposed_initializers", {}),
    ("deduplicate_initializers", {}),
    ("remove_unused", {}),
    ("topological_sort", {}),
    ("name_nodes_by_module", {}),
    ("clear_metadata", {}),
)


@dataclass
class PassContext:
    """What a pass may read besides the graph: `config` (config.json as a dict), `manifest` (the source
    artifact's, read-only) and `artifact_dir` (the source artifact, e.g. for its tokenizer). A pass that changes
    what the runtime must know (precision, attention kind, quantization) writes it into `manifest_updates`,
    which is deep-merged into the new artifact's manifest."""

    config: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    artifact_dir: Path | None = None
    manifest_updates: dict[str, Any] = field(default_factory=dict)


def register_pass(name: str) -> Callable[[Callable[..., dict[str, Any]]], Callable[..., dict[str, Any]]]:
    def add(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        PASSES[name] = fn
        return fn

    return add


def run_passes(model: ir.Model, passes: Sequence[tuple[str, dict[str, Any]]],
               context: PassContext | None = None) -> list[dict[str, Any]]:
    records = []
    for name, params in passes:
        if name not in PASSES:
            raise ModelkilnError(f"unknown graph pass {name!r}; known passes: {', '.join(sorted(PASSES))}")
        fn = PASSES[name]
        extra = {"context": context or PassContext()} if "context" in inspect.signature(fn).parameters else {}
        result = fn(model, **params, **extra)
        records.append({"name": name, "params": dict(params), "result": result})
    return records
