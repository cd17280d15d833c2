"""Weight-only block quantization: float MatMul weights → `MatMulNBits` (int4 or int8), activations stay float.

    quantize_matmul_nbits(model, bits=4, block_size=32, symmetric=True, accuracy_level=4, exclude=["lm_head"])

Each MatMul whose second input is a constant [K, N] weight becomes MatMulNBits(K, N, bits, block_size): the
weight is split into blocks of `block_size` along K, each block stored with one float scale (and a zero point
when asymmetric), packed with onnxruntime's own quantizer kernels (`DefaultWeightOnlyQuantizer`) so the layout
is exactly what the op reads. `accuracy_level` 4 lets ORT's CPU kernel quantize activations to int8 per block
and use VNNI dot products — the fast path; 0 keeps float activations.

The tied embedding / LM head (our export stores it once and computes the head as Gemm(transB) over the
embedding table, see tied_weights.py) is handled deliberately, not skipped: the head becomes MatMulNBits over
the quantized [vocab, hidden] table and the embedding lookup becomes `GatherBlockQuantized` reading the same
packed initializer (through a Reshape), so the table is stored once, quantized. `exclude` patterns (regular
expressions matched against node names, which carry the torch module path, e.g. `model.layers.0.mlp.down_proj/
MatMul`; `lm_head` and `embed_tokens` name the tied pair) keep weights in float.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import onnx_ir as ir

from modelkiln.graphs.passes import PassContext, register_pass
from modelkiln.runtime.errors import ModelkilnError

MS = "com.microsoft"
_VALID_BLOCKS = (16, 32, 64, 128, 256)


def _constant(value: ir.Value | None) -> np.ndarray | None:
    if value is None:
        return None
    tensor = ir.convenience.get_const_tensor(value)
    return None if tensor is None else tensor.numpy()


def _quantizer(bits: int, block_size: int, symmetric: bool):
    import logging

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    # subtle: importing onnxruntime's quantizer calls logging.basicConfig(level=INFO), which would print every
    # INFO line of onnx_ir's passes from then on; put the root logger back as it was.
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        DefaultWeightOnlyQuantizer,
    )

    root.setLevel(level)
    root.handlers[:] = handlers

    return DefaultWeightOnlyQuantizer(DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=symmetric,
                                                                   bits=bits))


def _initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    value = ir.Value(name=name, const_value=ir.tensor(np.ascontiguousarray(array), name=name),
                     shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.from_numpy(array.dtype)))
    graph.register_initializer(value)
    return value


class _Packed:
    """One quantized [K, N] weight: initializers for MatMulNBits (and GatherBlockQuantized, which reads the same)."""

    def __init__(self, graph: ir.Graph, name: str, weight_kn: np.ndarray, quantizer, symmetric: bool):
        packed, scales, zero_points = quantizer.qbits_block_quant(np.ascontiguousarray(weight_kn, np.float32))
        self.k, self.n = weight_kn.shape
        self.packed = _initializer(graph, f"{name}_q", packed)
        self.scales = _initializer(graph, f"{name}_scales", scales.astype(np.float32))
        self.zero_points = None if symmetric else _initializer(graph, f"{name}_zero_points", zero_points)
        self.bytes = packed.nbytes + scales.nbytes + (0 if symmetric else zero_points.nbytes)

    def matmul(self, x: ir.Value, bits: int, block_size: int, accuracy_level: int, name: str) -> ir.Node:
        inputs = [x, self.packed, self.scales] + ([self.zero_points] if self.zero_points is not None else [])
        attrs = [ir.AttrInt64("K", self.k), ir.AttrInt64("N", self.n), ir.AttrInt64("bits", bits),
                 ir.AttrInt64("block_size", block_size)]
        if accuracy_level:
            attrs.append(ir.AttrInt64("accuracy_level", accuracy_level))
        return ir.Node(MS, "MatMulNBits", inputs, attrs, name=name)


def _tied_pairs(graph: ir.Graph) -> list[tuple[ir.Node, ir.Node, ir.Value]]:
    """(Gather, Gemm(transB), table) for an embedding table also used as the transposed LM head."""
    pairs = []
    for gemm in graph:
        if gemm.op_type != "Gemm" or len(gemm.inputs) != 2 or not gemm.attributes.get_int("transB", 0):
            continue
        table = gemm.inputs[1]
        if gemm.attributes.get_int("transA", 0) or _constant(table) is None:
            continue
        gathers = [c for c in table.consumers() if c.op_type == "Gather" and c.inputs[0] is table
                   and c.attributes.get_int("axis", 0) == 0]
        if len(gathers) == 1 and len(table.uses()) == 2:
            pairs.append((gathers[0], gemm, table))
    return pairs


@register_pass("quantize_matmul_nbits")
def quantize_matmul_nbits(model: ir.Model, *, bits: int = 4, block_size: int = 32, symmetric: bool = True,
                          accuracy_level: int = 4, exclude: list[str] | tuple[str, ...] = (),
                          tied_embedding: str = "quantize", context: PassContext) -> dict[str, Any]:
    """See the module docstring. Records what was quantized and the weight bytes before and after."""
    if bits not in (4, 8):
        raise ModelkilnError(f"--weights int{bits} is not supported; use int4 or int8")
    if block_size not in _VALID_BLOCKS:
        raise ModelkilnError(f"--block-size {block_size} is not supported; use one of "
                             f"{', '.join(map(str, _VALID_BLOCKS))} (a power of two, at least 16)")
    if accuracy_level not in (0, 1, 2, 3, 4):
        raise ModelkilnError(f"--accuracy-level {accuracy_level} is not valid; use 0 (unset) or 1 to 4 "
                             "(4: int8 activations, the fast CPU path)")
    if tied_embedding not in ("quantize", "keep"):
        raise ModelkilnError(f"tied_embedding must be 'quantize' or 'keep', not {tied_embedding!r}")
    try:
        patterns = [re.compile(p) for p in exclude]
    except re.error as e:
        raise ModelkilnError(f"--exclude pattern is not a valid regular expression: {e}") from None

    def excluded(*names: str) -> bool:
        return any(p.search(n) for p in patterns for n in names if n)

    graph = model.graph
    quantizer = _quantizer(bits, block_size, symmetric)
    targets = [n for n in graph if n.op_type == "MatMul" and (w := _constant(n.inputs[1])) is not None
               and w.ndim == 2 and w.dtype == np.float32]
    tied = [] if tied_embedding == "keep" else _tied_pairs(graph)
    if not targets and not tied:
        raise ModelkilnError("this graph has no float32 MatMul weights to quantize (int4/int8 weight "
                             "quantization needs MatMul layers with constant weights; fp16 graphs are not supported)")
    hidden = {_constant(n.inputs[1]).shape[0] for n in targets} | {_constant(t).shape[1] for _, _, t in tied}
    bad = sorted(k for k in hidden if k % block_size)
    if bad:
        raise ModelkilnError(f"--block-size {block_size} does not divide the weights' input size {bad[0]}; pick a "
                             f"block size that divides {bad[0]}")
    before = after = 0
    quantized, kept = [], []
    for node in targets:
        weight = _constant(node.inputs[1])
        if excluded(node.name, node.inputs[1].name):
            kept.append(node.name)
            continue
        packed = _Packed(graph, node.inputs[1].name or node.name, weight, quantizer, symmetric)
        new = packed.matmul(node.inputs[0], bits, block_size, accuracy_level, f"{node.name}_Q{bits}")
        _replace(graph, node, new)
        before, after = before + weight.nbytes, after + packed.bytes
        quantized.append(node.name)
    for gather, gemm, table in tied:
        if excluded(gather.name, gemm.name, table.name, "lm_head", "embed_tokens"):
            kept.append(f"{gather.name} + {gemm.name}")
            continue
        weight = _constant(table)  # [vocab, hidden]: the head's weight, transposed
        packed = _Packed(graph, table.name, weight.T, quantizer, symmetric)
        head = packed.matmul(gemm.inputs[0], bits, block_size, accuracy_level, f"{gemm.name}_Q{bits}")
        _replace(graph, gemm, head)
        vocab, hidden_size = weight.shape
        shape = _initializer(graph, f"{table.name}_rows_shape",
                             np.array([vocab, hidden_size * bits // 8], np.int64))
        rows = ir.Node("", "Reshape", [packed.packed, shape], name=f"{gather.name}_packed_rows")
        inputs = [rows.outputs[0], gather.inputs[1], packed.scales]
        if packed.zero_points is not None:
            inputs.append(packed.zero_points)
        lookup = ir.Node(MS, "GatherBlockQuantized", inputs,
                         [ir.AttrInt64("gather_axis", 0), ir.AttrInt64("quantize_axis", 1),
                          ir.AttrInt64("block_size", block_size), ir.AttrInt64("bits", bits)],
                         name=f"{gather.name}_Q{bits}")
        graph.insert_before(gather, rows)
        _replace(graph, gather, lookup)
        before, after = before + weight.nbytes, after + packed.bytes
        quantized.append(f"{gather.name} + {gemm.name} (tied, stored once)")
    if not quantized:
        raise ModelkilnError("--exclude keeps every weight in float: nothing left to quantize")
    if MS not in model.opset_imports:
        model.opset_imports[MS] = 1
    from onnx_ir.passes import common as ir_common

    ir_common.RemoveUnusedNodesPass()(model)
    ir_common.TopologicalSortPass()(model)
    _drop_unused_initializers(graph)
    settings = {"weights": f"int{bits}", "method": "block-wise round-to-nearest", "block_size": block_size,
                "symmetric": symmetric, "accuracy_level": accuracy_level, "kept_float": kept}
    context.manifest_updates["quantization"] = settings
    return {"quantized": len(quantized), "kept_float": len(kept), "weight_mb_before": round(before / 2**20, 1),
            "weight_mb_after": round(after / 2**20, 1), "kept": kept}


def _replace(graph: ir.Graph, old: ir.Node, new: ir.Node) -> None:
    graph.insert_before(old, new)
    output = old.outputs[0]
    new.outputs[0].name, new.outputs[0].type, new.outputs[0].shape = f"{output.name}_q", output.type, output.shape
    if output.is_graph_output():
        index = list(graph.outputs).index(output)
        name = output.name
        output.name = f"{name}_float"
        new.outputs[0].name = name
        graph.outputs[index] = new.outputs[0]
    output.replace_all_uses_with(new.outputs[0])
    graph.remove(old, safe=True)


def _drop_unused_initializers(graph: ir.Graph) -> None:
    for name in [n for n, v in graph.initializers.items() if not v.uses() and not v.is_graph_output()]:
        graph.initializers.pop(name)
