"""Weight-only block quantization: float MatMul weights → `MatMulNBits` (int4 or int8), activations stay float.

    quantize_matmul_nbits(model, bits=4, block_size=32, scheme="minmax", accuracy_level=4, exclude=["lm_head"])

Each MatMul whose second input is a constant [K, N] weight becomes MatMulNBits(K, N, bits, block_size): the
weight is split into blocks of `block_size` along K, each block stored with one float scale and an offset or
zero point (see `_Packed` for the schemes; the default `minmax` keeps each block's exact min and max).
`accuracy_level` 4 lets ORT's CPU kernel quantize activations to int8 per block and use VNNI dot products — the
fast path; 0 keeps float activations.

The tied embedding / LM head (our export stores it once and computes the head as Gemm(transB) over the
embedding table, see tied_weights.py) is handled deliberately, not skipped: the head becomes MatMulNBits over
the quantized [vocab, hidden] table and the embedding lookup becomes `GatherBlockQuantized` reading the same
packed initializer (through a Reshape), so the table is stored once, quantized — at `tied_bits` (default 8, and
with the minmax scheme symmetric absmax/127: exactly GGUF's Q8_0): on SmolLM2 an int4 table alone costs 13 points
of top-1 agreement, the int8 table 14 MB. `exclude` patterns (regular expressions matched against node names,
which carry the torch module path, e.g. `model.layers.0.mlp.down_proj/MatMul`; `lm_head` and `embed_tokens`
name the tied pair) keep weights in float.

Storage: scales and block minima are float16 behind a Cast that onnxruntime folds at load (`_load_time_float`),
no zero points are stored, and GroupQueryAttention's rotary tables become float16 too: SmolLM2 int4 is 99.6 MB.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import numpy as np
import onnx_ir as ir

from modelkiln.graphs.initializers import add_initializer as _initializer
from modelkiln.graphs.initializers import constant_array, unique_initializer_name
from modelkiln.graphs.initializers import shared_initializer as _shared
from modelkiln.graphs.passes import PassContext, register_pass
from modelkiln.runtime.errors import ModelkilnError

MS = "com.microsoft"
_VALID_BLOCKS = (16, 32, 64, 128, 256)


@functools.lru_cache(maxsize=8)
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


def _minmax_blocks(weight_nk: np.ndarray, bits: int, block_size: int):
    """Per block of `block_size` along K: q = round((w - min) / scale), scale = (max - min) / (2^bits - 1).
    Returns packed [N, blocks, block_size * bits / 8] uint8 (two 4-bit values per byte, low nibble first — the
    MatMulNBits layout), scales [N, blocks] and offsets (the block minima) [N, blocks], all float32."""
    n, k = weight_nk.shape
    levels = (1 << bits) - 1
    blocks = weight_nk.reshape(n, k // block_size, block_size).astype(np.float32)
    low, high = blocks.min(axis=-1), blocks.max(axis=-1)
    scales = np.where(high > low, (high - low) / levels, 1.0).astype(np.float32)
    q = np.clip(np.rint((blocks - low[..., None]) / scales[..., None]), 0, levels).astype(np.uint8)
    packed = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8) if bits == 4 else q
    return np.ascontiguousarray(packed), scales, low.astype(np.float32)


def _absmax_blocks(weight_nk: np.ndarray, bits: int, block_size: int):
    """Per block: scale = max|w| / (2^(bits-1) - 1), q = round(w / scale) + 2^(bits-1) (MatMulNBits' and
    GatherBlockQuantized's implicit zero point). Returns packed [N, blocks, block_size * bits / 8] uint8 and
    scales [N, blocks] float32."""
    n, k = weight_nk.shape
    top = (1 << (bits - 1)) - 1
    blocks = weight_nk.reshape(n, k // block_size, block_size).astype(np.float32)
    peak = np.abs(blocks).max(axis=-1)
    scales = np.where(peak > 0, peak / top, 1.0).astype(np.float32)
    q = (np.clip(np.rint(blocks / scales[..., None]), -top, top) + (top + 1)).astype(np.uint8)
    packed = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8) if bits == 4 else q
    return np.ascontiguousarray(packed), scales


def _block_indicator(graph: ir.Graph, k: int, block_size: int) -> ir.Value:
    """[K, K / block_size] with ones where row k belongs to block b: one shared initializer per shape."""
    indicator = np.kron(np.eye(k // block_size, dtype=np.float32), np.ones((block_size, 1), np.float32))
    return _shared(graph, f"block_indicator_{k}x{block_size}", indicator)


_FP16_TINY, _FP16_MAX = 2.0 ** -14, 65504.0  # smallest normal and largest finite float16


def _load_time_float(graph: ir.Graph, name: str, array: np.ndarray, relative: bool) -> ir.Value:
    """`array` as a float32 value, stored as float16 when that loses nothing that matters: a Cast that onnxruntime
    folds into a float32 initializer at load (constant folding runs before kernels pre-pack their weights), so
    the file is half the size and the kernels see float32. `relative`: the values multiply (scales: each must
    be a normal float16, keeping 11 significant bits); otherwise they add (offsets: only range matters).
    Stays float32 when out of range."""
    finite = np.abs(array[np.isfinite(array)])
    fits = finite.size == array.size and (finite.max(initial=0.0) <= _FP16_MAX)
    if relative:
        fits = fits and not np.any((finite > 0) & (finite < _FP16_TINY))
    if not fits:
        return _initializer(graph, name, array.astype(np.float32))
    half = _initializer(graph, f"{name}_fp16", array.astype(np.float16))
    cast = ir.Node("", "Cast", [half], [ir.AttrInt64("to", ir.DataType.FLOAT)], name=f"{name}_to_float")
    cast.outputs[0].name = unique_initializer_name(graph, name)
    graph.append(cast)  # ordered before its users by the pass's final topological sort
    return cast.outputs[0]


class _Packed:
    """One quantized weight ([K, N] for x @ W): initializers for MatMulNBits, which GatherBlockQuantized can
    read too. `scheme`:
    - "minmax" (default): each block's own min and max, scale = (max - min) / (2^bits - 1) and a float offset
      per block. MatMulNBits only takes integer zero points on its fast path, so the offsets are applied outside
      it: x @ W = MatMulNBits(x, q, scale) + blocksum(x) @ offsets — a [.., blocks] × [blocks, N] product, 1/32
      of the work. MatMulNBits' implicit zero point (2^(bits-1)) is folded into the offsets (min + 8·scale,
      computed at load), so no zero points are stored. A block that already sits on a 4-bit min/max grid (GGUF
      Q4_1 checkpoints: llama.cpp stores exactly min + scale·q, scale and min in float16) is reproduced exactly
      instead of being re-rounded;
    - "absmax": symmetric, scale = max|w| / (2^(bits-1) - 1), no offsets, implicit zero point: exact on GGUF
      Q8_0 (llama.cpp's int8 format, scale = max|w| / 127), used for minmax's int8 tied table;
    - "symmetric" / "asymmetric": onnxruntime's round-to-nearest (`DefaultWeightOnlyQuantizer`), integer zero
      points (8 when symmetric).
    Scales and offsets are stored as float16 where they fit (`_load_time_float`): GGUF's own precision.
    """

    def __init__(self, graph: ir.Graph, name: str, weight_kn: np.ndarray, bits: int, block_size: int, scheme: str):
        weight_nk = np.ascontiguousarray(weight_kn.T, np.float32)
        self.k, self.n = weight_kn.shape
        self.offsets = zero_points = None
        existing = set(graph.initializers)
        if scheme == "minmax":
            packed, scales, offsets = _minmax_blocks(weight_nk, bits, block_size)
            self.scales = _load_time_float(graph, f"{name}_scales", scales, relative=True)
            # offsets [blocks, N] = min + 2^(bits-1) · scale, in float32 at load (exact for float16 min and scale)
            minima = _load_time_float(graph, f"{name}_minima", np.ascontiguousarray(offsets.T), relative=False)
            shifted = [ir.Node("", "Transpose", [self.scales], [ir.AttrInt64s("perm", [1, 0])],
                               name=f"{name}_scales_bn")]
            shifted.append(ir.Node("", "Mul", [shifted[0].outputs[0], _shared(
                graph, f"zero_point_{bits}bit", np.array(1 << (bits - 1), np.float32))], name=f"{name}_zero_shift"))
            shifted.append(ir.Node("", "Add", [minima, shifted[1].outputs[0]], name=f"{name}_offsets"))
            graph.extend(shifted)
            self.offsets = shifted[-1].outputs[0]
            self.offsets.name = unique_initializer_name(graph, f"{name}_offsets")
        elif scheme == "absmax":
            packed, scales = _absmax_blocks(weight_nk, bits, block_size)
            self.scales = _load_time_float(graph, f"{name}_scales", scales, relative=True)
        else:
            quantizer = _quantizer(bits, block_size, scheme == "symmetric")
            packed, scales, zero_points = quantizer.qbits_block_quant(np.ascontiguousarray(weight_kn, np.float32))
            zero_points = None if scheme == "symmetric" else zero_points
            self.scales = _initializer(graph, f"{name}_scales", scales.astype(np.float32))
        self.packed = _initializer(graph, f"{name}_q", packed)
        self.zero_points = None if zero_points is None else _initializer(graph, f"{name}_zero_points", zero_points)
        self.bytes = sum(graph.initializers[n].const_value.nbytes for n in set(graph.initializers) - existing)

    def matmul(self, graph: ir.Graph, x: ir.Value, bits: int, block_size: int, accuracy_level: int, name: str,
               before: ir.Node) -> ir.Value:
        """Insert x @ W before `before`; returns its value."""
        inputs = [x, self.packed, self.scales] + ([self.zero_points] if self.zero_points is not None else [])
        attrs = [ir.AttrInt64("K", self.k), ir.AttrInt64("N", self.n), ir.AttrInt64("bits", bits),
                 ir.AttrInt64("block_size", block_size)]
        if accuracy_level:
            attrs.append(ir.AttrInt64("accuracy_level", accuracy_level))
        nodes = [ir.Node(MS, "MatMulNBits", inputs, attrs, name=name)]
        if self.offsets is not None:  # + blocksum(x) @ offsets, blocksum as x @ [K, blocks] 0/1 (any rank of x)
            if x.shape is not None and x.shape.rank() == 3:  # [b, s, K] → [b, s, blocks, B] → sum
                shape = _shared(graph, f"block_shape_{self.k}x{block_size}",
                                np.array([0, 0, self.k // block_size, block_size], np.int64))
                nodes.append(ir.Node("", "Reshape", [x, shape], name=f"{name}_blocks"))
                nodes.append(ir.Node("", "ReduceSum", [nodes[-1].outputs[0], _shared(
                    graph, "block_sum_axes", np.array([-1], np.int64))], [ir.AttrInt64("keepdims", 0)],
                    name=f"{name}_block_sums"))
            else:
                nodes.append(ir.Node("", "MatMul", [x, _block_indicator(graph, self.k, block_size)],
                                     name=f"{name}_block_sums"))
            nodes.append(ir.Node("", "MatMul", [nodes[-1].outputs[0], self.offsets], name=f"{name}_offsets"))
            nodes.append(ir.Node("", "Add", [nodes[0].outputs[0], nodes[-1].outputs[0]], name=f"{name}_plus_offsets"))
        graph.insert_before(before, nodes)
        return nodes[-1].outputs[0]

    def gather(self, graph: ir.Graph, ids: ir.Value, bits: int, block_size: int, name: str,
               before: ir.Node) -> ir.Value:
        """Insert the dequantized rows W.T[ids] ([.., K]) before `before`: GatherBlockQuantized over the same packed
        initializer (through a Reshape to [N, K * bits / 8]), plus the gathered block offsets."""
        shape = _initializer(graph, f"{name}_rows_shape", np.array([self.n, self.k * bits // 8], np.int64))
        nodes = [ir.Node("", "Reshape", [self.packed, shape], name=f"{name}_packed_rows")]
        inputs = [nodes[0].outputs[0], ids, self.scales]
        if self.zero_points is not None:
            inputs.append(self.zero_points)
        nodes.append(ir.Node(MS, "GatherBlockQuantized", inputs,
                             [ir.AttrInt64("gather_axis", 0), ir.AttrInt64("quantize_axis", 1),
                              ir.AttrInt64("block_size", block_size), ir.AttrInt64("bits", bits)], name=name))
        if self.offsets is not None:  # + offsets[:, ids] repeated over each block
            axis1 = _initializer(graph, f"{name}_offset_axis", np.array([-1], np.int64))
            flat = _initializer(graph, f"{name}_offset_flat", np.array([0, 0, self.k], np.int64))
            nodes.append(ir.Node("", "Gather", [self.offsets, ids], [ir.AttrInt64("axis", 1)],
                                 name=f"{name}_offsets"))                                   # [blocks, b, s]
            nodes.append(ir.Node("", "Transpose", [nodes[-1].outputs[0]], [ir.AttrInt64s("perm", [1, 2, 0])],
                                 name=f"{name}_offsets_bsk"))                               # [b, s, blocks]
            nodes.append(ir.Node("", "Unsqueeze", [nodes[-1].outputs[0], axis1], name=f"{name}_offsets_4d"))
            nodes.append(ir.Node("", "Tile", [nodes[-1].outputs[0], _initializer(
                graph, f"{name}_offset_tile", np.array([1, 1, 1, block_size], np.int64))], name=f"{name}_offsets_tile"))
            nodes.append(ir.Node("", "Reshape", [nodes[-1].outputs[0], flat], name=f"{name}_offsets_rows"))
            nodes.append(ir.Node("", "Add", [nodes[1].outputs[0], nodes[-1].outputs[0]], name=f"{name}_plus_offsets"))
        graph.insert_before(before, nodes)
        return nodes[-1].outputs[0]


def _tied_pairs(graph: ir.Graph) -> list[tuple[ir.Node, ir.Node, ir.Value]]:
    """(Gather, Gemm(transB), table) for an embedding table also used as the transposed LM head."""
    pairs = []
    for gemm in graph:
        if gemm.op_type != "Gemm" or len(gemm.inputs) != 2 or not gemm.attributes.get_int("transB", 0):
            continue
        table = gemm.inputs[1]
        if gemm.attributes.get_int("transA", 0) or constant_array(table) is None:
            continue
        gathers = [c for c in table.consumers() if c.op_type == "Gather" and c.inputs[0] is table
                   and c.attributes.get_int("axis", 0) == 0]
        if len(gathers) == 1 and len(table.uses()) == 2:
            pairs.append((gathers[0], gemm, table))
    return pairs


SCHEMES = ("minmax", "symmetric", "asymmetric")


@register_pass("quantize_matmul_nbits")
def quantize_matmul_nbits(model: ir.Model, *, bits: int = 4, block_size: int = 32, scheme: str = "minmax",
                          accuracy_level: int = 4, exclude: list[str] | tuple[str, ...] = (),
                          tied_embedding: str = "quantize", tied_bits: int = 8,
                          context: PassContext) -> dict[str, Any]:
    """See the module docstring. Records what was quantized and the weight bytes before and after."""
    if bits not in (4, 8):
        raise ModelkilnError(f"--weights int{bits} is not supported; use int4 or int8")
    if block_size not in _VALID_BLOCKS:
        raise ModelkilnError(f"--block-size {block_size} is not supported; use one of "
                             f"{', '.join(map(str, _VALID_BLOCKS))} (a power of two, at least 16)")
    if accuracy_level not in (0, 1, 2, 3, 4):
        raise ModelkilnError(f"--accuracy-level {accuracy_level} is not valid; use 0 (unset) or 1 to 4 "
                             "(4: int8 activations, the fast CPU path)")
    if scheme not in SCHEMES:
        raise ModelkilnError(f"unknown quantization scheme {scheme!r}; use one of {', '.join(SCHEMES)}")
    if tied_embedding not in ("quantize", "keep"):
        raise ModelkilnError(f"tied_embedding must be 'quantize' or 'keep', not {tied_embedding!r}")
    try:
        patterns = [re.compile(p) for p in exclude]
    except re.error as e:
        raise ModelkilnError(f"--exclude pattern is not a valid regular expression: {e}") from None

    def excluded(*names: str) -> bool:
        return any(p.search(n) for p in patterns for n in names if n)

    graph = model.graph
    targets = [(n, w) for n in graph if n.op_type == "MatMul" and (w := constant_array(n.inputs[1])) is not None
               and w.ndim == 2 and w.dtype == np.float32]  # each weight read once
    tied = [] if tied_embedding == "keep" else _tied_pairs(graph)
    if not targets and not tied:
        raise ModelkilnError("this graph has no float32 MatMul weights to quantize (int4/int8 weight "
                             "quantization needs MatMul layers with constant weights; fp16 graphs are not supported)")
    hidden = {w.shape[0] for _, w in targets} | {table.shape[1] for _, _, table in tied}
    bad = sorted(k for k in hidden if k % block_size)
    if bad:
        raise ModelkilnError(f"--block-size {block_size} does not divide the weights' input size {bad[0]}; pick a "
                             f"block size that divides {bad[0]}")
    before = after = 0
    quantized, kept = [], []
    for node, weight in targets:
        if excluded(node.name, node.inputs[1].name):
            kept.append(node.name)
            continue
        packed = _Packed(graph, node.inputs[1].name or node.name, weight, bits, block_size, scheme)
        result = packed.matmul(graph, node.inputs[0], bits, block_size, accuracy_level, f"{node.name}_Q{bits}",
                               before=node)
        _replace(graph, node, result)
        before, after = before + weight.nbytes, after + packed.bytes
        quantized.append(node.name)
    table_bits = max(tied_bits, bits)
    table_scheme = "absmax" if scheme == "minmax" and table_bits == 8 else scheme  # exact on GGUF Q8_0 tables
    for gather, gemm, table in tied:
        if excluded(gather.name, gemm.name, table.name, "lm_head", "embed_tokens"):
            kept.append(f"{gather.name} + {gemm.name}")
            continue
        weight = constant_array(table)  # [vocab, hidden]: the head's weight, transposed
        packed = _Packed(graph, table.name, weight.T, table_bits, block_size, table_scheme)
        _replace(graph, gemm, packed.matmul(graph, gemm.inputs[0], table_bits, block_size, accuracy_level,
                                            f"{gemm.name}_Q{table_bits}", before=gemm))
        _replace(graph, gather, packed.gather(graph, gather.inputs[1], table_bits, block_size,
                                              f"{gather.name}_Q{table_bits}", before=gather))
        before, after = before + weight.nbytes, after + packed.bytes
        quantized.append(f"{gather.name} + {gemm.name} (tied, stored once)")
    if not quantized:
        raise ModelkilnError("--exclude keeps every weight in float: nothing left to quantize")
    rotary = _rotary_tables_as_float16(graph)
    if MS not in model.opset_imports:
        model.opset_imports[MS] = 1
    from onnx_ir.passes import common as ir_common

    ir_common.RemoveUnusedNodesPass()(model)  # unused initializers too
    ir_common.TopologicalSortPass()(model)
    settings = {"weights": f"int{bits}", "scheme": scheme, "block_size": block_size,
                "accuracy_level": accuracy_level, "tied_bits": table_bits if tied else None,
                "tied_scheme": table_scheme if tied else None, "rotary_tables": rotary,
                "kept_float": kept}
    context.manifest_updates["quantization"] = settings
    return {"quantized": len(quantized), "kept_float": len(kept), "weight_mb_before": round(before / 2**20, 1),
            "weight_mb_after": round(after / 2**20, 1), "kept": kept}


def _rotary_tables_as_float16(graph: ir.Graph) -> str | None:
    """GroupQueryAttention's cos/sin caches (inputs 7 and 8, [max positions, head_dim / 2], 2 MB on SmolLM2) stored
    as float16 and cast at load: values in [-1, 1] keep 11 significant bits, far below the int4 weights' error.
    Returns "float16" when any was converted."""
    converted = None
    for node in graph:
        if node.op_type != "GroupQueryAttention" or len(node.inputs) < 9:
            continue
        for index in (7, 8):
            table = node.inputs[index]
            array = constant_array(table) if table is not None and table.is_initializer() else None
            if array is None or array.dtype != np.float32:
                continue
            table.replace_all_uses_with(_load_time_float(graph, table.name, array, relative=False))
            converted = "float16"
    return converted


def _replace(graph: ir.Graph, old: ir.Node, new: ir.Value) -> None:
    """Make `new` (already inserted) take the place of `old`'s only output, graph output name included."""
    output = old.outputs[0]
    new.name, new.type, new.shape = f"{output.name}_q", output.type, output.shape
    if output.is_graph_output():
        index = list(graph.outputs).index(output)
        name = output.name
        output.name = f"{name}_float"
        new.name = name
        graph.outputs[index] = new
    output.replace_all_uses_with(new)
    graph.remove(old, safe=True)
