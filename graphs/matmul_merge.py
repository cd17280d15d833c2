"""`merge_parallel_matmuls`: MatMuls that read the same activation with constant weights become one.

q/k/v projections (and gate/up in gated MLPs) each read the normed hidden state: three small matrix-vector
products per layer at decode time, each paying a kernel launch and a pass over the activation. Concatenating
their weights along N gives one [K, N1+N2+...] MatMul and a Split; the arithmetic is identical column by column,
and block-wise weight quantization after it stays identical too (its blocks run along K, per column). A fused
graph's q/k/v Split goes too: GroupQueryAttention reads the packed projection itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx_ir as ir

from modelkiln.graphs.initializers import add_initializer
from modelkiln.graphs.passes import register_pass


def _weight(node: ir.Node) -> np.ndarray | None:
    if node.op_type != "MatMul" or len(node.inputs) != 2:
        return None
    tensor = ir.convenience.get_const_tensor(node.inputs[1])
    if tensor is None:
        return None
    array = tensor.numpy()
    return array if array.ndim == 2 else None


@register_pass("merge_parallel_matmuls")
def merge_parallel_matmuls(model: ir.Model) -> dict[str, Any]:
    graph = model.graph
    groups: dict[int, list[ir.Node]] = {}
    activations: dict[int, ir.Value] = {}
    for node in graph:
        w = _weight(node)
        if w is not None:
            groups.setdefault(id(node.inputs[0]), []).append(node)
            activations[id(node.inputs[0])] = node.inputs[0]
    merged = packed = 0
    for key, nodes in groups.items():
        weights = [_weight(n) for n in nodes]
        if len(nodes) < 2 or len({(w.shape[0], w.dtype) for w in weights}) != 1:
            continue
        first = nodes[0]
        concat = np.ascontiguousarray(np.concatenate(weights, axis=1))
        value = add_initializer(graph, f"{first.name}_merged_weight", concat)
        matmul = ir.Node("", "MatMul", [activations[key], value], name=f"{first.name}_merged")
        out, like = matmul.outputs[0], first.outputs[0]
        out.type = like.type  # typed like its parts, so later passes (fp16 conversion) see the packed value's dtype
        if like.shape is not None and like.shape.rank():
            out.shape = ir.Shape([*list(like.shape)[:-1], int(concat.shape[1])])
        sizes_value = add_initializer(graph, f"{first.name}_merged_split",
                                      np.array([w.shape[1] for w in weights], np.int64))
        split = ir.Node("", "Split", [matmul.outputs[0], sizes_value], [ir.AttrInt64("axis", -1)],
                        num_outputs=len(nodes), name=f"{first.name}_merged_split")
        graph.insert_before(first, [matmul, split])
        for node, out in zip(nodes, split.outputs):
            old = node.outputs[0]
            out.name, out.type, out.shape = f"{old.name}_split", old.type, old.shape
            old.replace_all_uses_with(out)
            graph.remove(node, safe=True)
        merged += 1
        packed += _pack_into_attention(graph, split)
    from onnx_ir.passes import common as ir_common

    ir_common.RemoveUnusedNodesPass()(model)  # the merged weights' old initializers
    ir_common.TopologicalSortPass()(model)
    return {"merged_groups": merged, "packed_qkv": packed}


def _pack_into_attention(graph: ir.Graph, split: ir.Node) -> int:
    """A Split whose three outputs are exactly a GroupQueryAttention's query, key and value: the op takes the
    packed [b, s, (heads + 2 kv_heads) · head_dim] projection as its query with key and value left empty, so the
    Split (a copy of q, k and v per layer and step) goes. Returns 1 when it did."""
    outputs = list(split.outputs)
    if len(outputs) != 3 or any(len(out.uses()) != 1 or out.is_graph_output() for out in outputs):
        return 0
    uses = [next(iter(out.uses())) for out in outputs]
    attention = uses[0].node
    if attention.op_type != "GroupQueryAttention" or attention.domain != "com.microsoft" \
            or [(u.node, u.idx) for u in uses] != [(attention, 0), (attention, 1), (attention, 2)]:
        return 0
    attention.replace_input_with(0, split.inputs[0])
    attention.replace_input_with(1, None)
    attention.replace_input_with(2, None)
    graph.remove(split, safe=True)
    return 1
