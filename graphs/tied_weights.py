"""Store a tied embedding once.

torch.export constant-folds `lm_head.weight.T` into a second initializer, so a tied checkpoint
(embedding [vocab, hidden] gathered by the embedding layer, and its transpose [hidden, vocab] multiplied
by the LM head) would be written twice: +113 MB for SmolLM2 (optimum-onnx ships the 652 MB graph this way).

`share_transposed_initializers` finds a MatMul whose weight initializer is exactly the transpose of another
initializer and rewrites it as `Gemm(reshape(x, [-1, K]), E, transB=1)` reshaped back, so both consumers read
the single `E`. Gemm with transB reads E in place: nothing is materialized at load time.

    before: Gather(E[V,H], ids) ... MatMul(h[b,s,H], Et[H,V])           E and Et both on disk
    after:  Gather(E[V,H], ids) ... Reshape(Gemm(Reshape(h,[-1,H]), E, transB=1), [b,s,V])
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

# Only weights this large are worth the O(n) comparison (a real tied LM head is far above it; the tiny test
# checkpoints, 384 x 64, are above it too, so tests exercise the tied path).
_MIN_ELEMENTS = 1 << 12


def share_transposed_initializers(model: ir.Model) -> list[str]:
    """Rewrite MatMuls whose weight is the transpose of another initializer; return the weights removed."""
    graph = model.graph
    by_shape: dict[tuple[int, int], list[ir.Value]] = {}
    for value in graph.initializers.values():
        if value.const_value is not None and len(value.shape) == 2 and value.const_value.size >= _MIN_ELEMENTS:
            by_shape.setdefault(tuple(value.shape.numpy()), []).append(value)

    removed = []
    for node in list(graph):
        if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx"):
            continue
        weight = node.inputs[1]
        if weight is None or not weight.is_initializer() or len(weight.shape) != 2:
            continue
        rows, cols = weight.shape.numpy()
        original = _find_transpose_of(weight, by_shape.get((cols, rows), []))
        if original is None:
            continue
        _rewrite_as_gemm_trans_b(graph, node, original)
        if not weight.uses():
            graph.initializers.pop(weight.name)
            removed.append(weight.name)
    return removed


def _find_transpose_of(weight: ir.Value, candidates: list[ir.Value]) -> ir.Value | None:
    w = weight.const_value.numpy()
    for cand in candidates:
        if cand is weight or cand.dtype != weight.dtype:
            continue
        if np.array_equal(cand.const_value.numpy().T, w):
            return cand
    return None


def _rewrite_as_gemm_trans_b(graph: ir.Graph, matmul: ir.Node, weight_t: ir.Value) -> None:
    x = matmul.inputs[0]
    out = matmul.outputs[0]
    hidden, vocab = weight_t.shape[1], weight_t.shape[0]

    def const(name: str, data: list[int]) -> ir.Value:
        value = ir.Value(name=f"{matmul.name}_{name}", const_value=ir.tensor(np.array(data, dtype=np.int64)))
        graph.register_initializer(value)
        return value

    shape_x = ir.node("Shape", [x], name=f"{matmul.name}_shape_x")  # [b, s, H]
    lead = ir.node("Slice", [shape_x.outputs[0], const("zero", [0]), const("minus_one", [-1])],
                   name=f"{matmul.name}_lead_dims")  # [b, s]
    out_shape = ir.node("Concat", [lead.outputs[0], const("vocab", [vocab])], {"axis": 0},
                        name=f"{matmul.name}_out_shape")  # [b, s, V]
    flat = ir.node("Reshape", [x, const("flat_shape", [-1, hidden])], name=f"{matmul.name}_flatten")  # [b*s, H]
    gemm = ir.node("Gemm", [flat.outputs[0], weight_t], {"transB": 1}, name=f"{matmul.name}_gemm")  # [b*s, V]
    reshape = ir.node("Reshape", [gemm.outputs[0], out_shape.outputs[0]], name=f"{matmul.name}_unflatten")
    new_nodes = [shape_x, lead, out_shape, flat, gemm, reshape]
    graph.insert_before(matmul, new_nodes)

    new_out = reshape.outputs[0]
    new_out.type, new_out.shape = out.type, out.shape
    name = out.name
    out.replace_all_uses_with(new_out, replace_graph_outputs=True)
    out.name = None
    new_out.name = name  # keep the graph's output name (`logits`)
    graph.remove(matmul, safe=True)
