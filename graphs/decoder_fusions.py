"""Decoder-only fusions into ONNX Runtime contrib ops (`com.microsoft`).

`fuse_group_query_attention` replaces each layer's attention (rotary on q/k, past+new concatenation, repeat-kv,
masked softmax attention) by one `GroupQueryAttention` node with `do_rotary=1`. Its cos/sin caches are computed
by running the graph's own rotary subgraph over every position, so whatever rope variant transformers traced
(default, linear, llama3, yarn scaling) is reproduced exactly. The fused graph keeps the artifact's I/O names;
what changes is their meaning, recorded in the manifest (`kv_cache.attention`):
- rows are right-padded: a row's tokens sit at the start of the sequence and `attention_mask` is a prefix of
  ones (GroupQueryAttention reads only each row's length, `sum(mask) - 1`, and the mask's width);
- `past_key_values.*` may be a buffer longer than the valid past; bound as the same OrtValue as `present.*`,
  the op writes new entries in place (the runtime's preallocated KV cache);
- `position_ids` is unused: positions come from the row lengths.

`fuse_rms_norm` turns RMSNorm (+ the residual Add before it) into `SimplifiedLayerNormalization` /
`SkipSimplifiedLayerNormalization` with onnxscript's rewrite rules.

Each is found by walking the traced graph from the KV-cache inputs and outputs, not by matching a full
pattern: layer i's `present.{i}.key` Concat leads to the rotary k, the attention MatMuls and the o_proj input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx_ir as ir

from modelkiln.graphs.initializers import add_initializer as _const
from modelkiln.graphs.passes import PassContext, register_pass
from modelkiln.runtime.errors import ModelkilnError

MS = "com.microsoft"
GQA_ATTENTION = "group_query_attention"
_UNSUPPORTED_ROPE = ("dynamic", "longrope")


def _is_weight(value: ir.Value | None) -> bool:
    if value is None:
        return False
    if value.const_value is not None or value.is_initializer():
        return True
    producer = value.producer()
    return producer is not None and producer.op_type == "Constant"


def _producer(value: ir.Value, op_type: str | tuple[str, ...]) -> ir.Node | None:
    node = value.producer()
    types = (op_type,) if isinstance(op_type, str) else op_type
    return node if node is not None and node.op_type in types else None


def _downstream(value: ir.Value, op_type: str, limit: int = 40) -> ir.Node | None:
    """The first node of `op_type` reached from `value` through consumers (breadth first)."""
    seen, frontier = set(), [value]
    while frontier and len(seen) < limit:
        nxt = []
        for v in frontier:
            for node in v.consumers():
                if id(node) in seen:
                    continue
                seen.add(id(node))
                if node.op_type == op_type:
                    return node
                nxt.extend(node.outputs)
        frontier = nxt
    return None


def _rotary_source(rotated: ir.Value) -> tuple[ir.Value, ir.Value]:
    """For x_rot = x * cos + rotate_half(x) * sin, return (x, cos) — x in [B, H, S, D]."""
    add = _producer(rotated, "Add")
    if add is None:
        raise ModelkilnError("fuse_group_query_attention: no rotary embedding before the attention (only rotary "
                             "decoder families fuse: llama, mistral, qwen2, qwen3, phi3)")
    for mul in (_producer(v, "Mul") for v in add.inputs):
        if mul is None:
            continue
        a, b = mul.inputs
        for x, other in ((a, b), (b, a)):
            if any(c.op_type == "Slice" for c in x.consumers()) and _producer(x, "Concat") is None:
                return x, other
    raise ModelkilnError("fuse_group_query_attention: the rotary embedding has an unknown form "
                         "(interleaved or partial rotary is not fused)")


def _as_bsd(graph: ir.Graph, x_bhsd: ir.Value, before: ir.Node, name: str) -> ir.Value:
    """[B, H, S, D] → [B, S, H*D]: reuse the projection when x is Transpose(Reshape(proj)), else add both."""
    transpose = _producer(x_bhsd, "Transpose")
    if transpose is not None and list(transpose.attributes["perm"].value) == [0, 2, 1, 3]:
        reshape = _producer(transpose.inputs[0], "Reshape")
        if reshape is not None and reshape.inputs[0].shape is not None and reshape.inputs[0].shape.rank() == 3:
            return reshape.inputs[0]
    t = ir.Node("", "Transpose", [x_bhsd], [ir.AttrInt64s("perm", [0, 2, 1, 3])], name=f"{name}_bshd")
    shape = _const(graph, f"{name}_bsd_shape", np.array([0, 0, -1], np.int64))
    r = ir.Node("", "Reshape", [t.outputs[0], shape], name=f"{name}_bsd")
    graph.insert_before(before, [t, r])
    return r.outputs[0]


def _scale_of(scores: ir.Node) -> float | None:
    """The product of the constants multiplied into q and k before q·kᵀ (torch's sdpa splits √scale onto both)."""
    scale = 1.0
    for v in scores.inputs:
        mul = _producer(v, "Mul")
        consts = [ir.convenience.get_const_tensor(i) for i in mul.inputs] if mul is not None else []
        found = [c for c in consts if c is not None and c.size == 1]
        if not found:
            return None
        scale *= float(found[0].numpy().reshape(()))
    return scale


class _Layer:
    """One traced attention layer, found from its KV-cache Concat nodes."""

    def __init__(self, graph: ir.Graph, i: int):
        outputs = {v.name: v for v in graph.outputs}
        self.present_k, self.present_v = outputs[f"present.{i}.key"], outputs[f"present.{i}.value"]
        cat_k, cat_v = _producer(self.present_k, "Concat"), _producer(self.present_v, "Concat")
        if cat_k is None or cat_v is None:
            raise ModelkilnError(f"fuse_group_query_attention: layer {i} has no past/new KV Concat (already fused?)")
        self.past_k, k_rot = cat_k.inputs
        self.past_v, self.v = cat_v.inputs
        self.k, self.cos = _rotary_source(k_rot)
        pv = _downstream(self.present_v, "MatMul")
        softmax = _producer(pv.inputs[0], "Softmax") or _find_upstream(pv.inputs[0], "Softmax")
        scores = _find_upstream(softmax.inputs[0], "MatMul") if softmax is not None else None
        if scores is None:
            raise ModelkilnError(f"fuse_group_query_attention: layer {i} has no softmax attention to replace")
        self.scale = _scale_of(scores)
        q_rot = scores.inputs[0]
        mul = _producer(q_rot, "Mul")
        if mul is not None and any(ir.convenience.get_const_tensor(x) is not None for x in mul.inputs):
            q_rot = next(x for x in mul.inputs if ir.convenience.get_const_tensor(x) is None)
        self.q, _ = _rotary_source(q_rot)
        self.attn_out = _attention_output(pv)


def _find_upstream(value: ir.Value, op_type: str, limit: int = 12) -> ir.Node | None:
    frontier = [value]
    for _ in range(limit):
        nxt = []
        for v in frontier:
            node = v.producer()
            if node is None:
                continue
            if node.op_type == op_type:
                return node
            nxt.extend(x for x in node.inputs if x is not None and not _is_weight(x))
        frontier = nxt
    return None


def _attention_output(pv: ir.Node) -> ir.Value:
    """Follow the attention result through its Transpose/Reshape to the o_proj input, [B, S, H*D]."""
    value = pv.outputs[0]
    for _ in range(4):
        consumers = value.consumers()
        if len(consumers) != 1 or consumers[0].op_type not in ("Transpose", "Reshape"):
            break
        value = consumers[0].outputs[0]
    consumers = value.consumers()
    if not consumers or not all(c.op_type == "MatMul" and _is_weight(c.inputs[1]) for c in consumers):
        raise ModelkilnError("fuse_group_query_attention: the attention output does not feed an o_proj MatMul")
    return value


def _rotary_caches(model: ir.Model, cos: ir.Value, max_positions: int) -> tuple[np.ndarray, np.ndarray]:
    """Run the graph's own cos/sin subgraph for positions 0..max-1: [max, D/2] each."""
    import onnxruntime as ort

    graph = model.graph
    inputs = {v.name: v for v in graph.inputs}
    sin = _sin_partner(cos)
    sub = ir.convenience.extract(graph, inputs=[inputs["position_ids"]], outputs=[cos, sin])
    sub_model = ir.Model(sub, ir_version=model.ir_version)
    session = ort.InferenceSession(ir.to_proto(sub_model).SerializeToString(), providers=["CPUExecutionProvider"])
    positions = np.arange(max_positions, dtype=np.int64)[None, :]
    cos_full, sin_full = (np.asarray(a, np.float32).reshape(max_positions, -1)
                          for a in session.run(None, {"position_ids": positions}))
    half = cos_full.shape[1] // 2
    if not (np.array_equal(cos_full[:, :half], cos_full[:, half:]) and
            np.array_equal(sin_full[:, :half], sin_full[:, half:])):
        raise ModelkilnError("fuse_group_query_attention: the rotary tables are not in rotate-half form")
    return np.ascontiguousarray(cos_full[:, :half]), np.ascontiguousarray(sin_full[:, :half])


def _sin_partner(cos: ir.Value) -> ir.Value:
    """The sin table used beside `cos` in the same rotary: the other Mul operand next to rotate_half(x)."""
    for mul in cos.consumers():
        add = next((c for c in mul.outputs[0].consumers() if c.op_type == "Add"), None)
        if add is None:
            continue
        other = next(v for v in add.inputs if v is not mul.outputs[0])
        mul2 = _producer(other, "Mul")
        if mul2 is not None:
            return next(v for v in mul2.inputs if _producer(v, "Concat") is None)
    raise ModelkilnError("fuse_group_query_attention: cannot find the rotary sin table")


@register_pass("fuse_group_query_attention")
def fuse_group_query_attention(model: ir.Model, *, context: PassContext) -> dict[str, Any]:
    """Every attention layer → GroupQueryAttention(do_rotary=1); see the module docstring."""
    config, kv = context.config, context.manifest.get("kv_cache") or {}
    if context.manifest.get("task") != "text-generation" or not kv:
        raise ModelkilnError("fuse_group_query_attention applies to text-generation artifacts only")
    if kv.get("attention") == GQA_ATTENTION:
        raise ModelkilnError("this artifact's attention is already fused (kv_cache.attention is "
                             "group_query_attention)")
    rope = config.get("rope_scaling") or config.get("rope_parameters") or {}
    if isinstance(rope, dict) and (rope.get("rope_type") or rope.get("type")) in _UNSUPPORTED_ROPE:
        raise ModelkilnError(f"fuse_group_query_attention: rope type {rope.get('rope_type') or rope.get('type')!r} "
                             "depends on the sequence length and is not fused; keep the unfused graph")
    graph = model.graph
    num_layers, kv_heads, head_dim = kv["num_layers"], kv["num_kv_heads"], kv["head_dim"]
    num_heads = int(config.get("num_attention_heads") or config.get("n_head"))
    max_positions = int(config.get("max_position_embeddings") or config.get("n_positions") or 4096)
    window = config.get("sliding_window") if config.get("use_sliding_window", True) else None
    layer_types = config.get("layer_types") or []
    layers = [_Layer(graph, i) for i in range(num_layers)]
    cos_cache, sin_cache = _rotary_caches(model, layers[0].cos, max_positions)
    if cos_cache.shape[1] * 2 != head_dim:
        raise ModelkilnError("fuse_group_query_attention: partial rotary (rotary dim < head dim) is not fused")
    cos_value = _const(graph, "gqa_cos_cache", cos_cache.astype(_np_dtype(layers[0].q)))
    sin_value = _const(graph, "gqa_sin_cache", sin_cache.astype(_np_dtype(layers[0].q)))
    seqlens_k, total = _sequence_lengths(graph, layers[0])

    for i, layer in enumerate(layers):
        anchor = layer.attn_out.consumers()[0]
        q, k, v = (_as_bsd(graph, x, anchor, f"layer{i}_{n}") for n, x in (("q", layer.q), ("k", layer.k),
                                                                              ("v", layer.v)))
        sliding = window and (not layer_types or layer_types[i] == "sliding_attention")
        attrs = [ir.AttrInt64("num_heads", num_heads), ir.AttrInt64("kv_num_heads", kv_heads),
                 ir.AttrInt64("do_rotary", 1), ir.AttrInt64("rotary_interleaved", 0),
                 ir.AttrInt64("local_window_size", int(window) if sliding else -1)]
        if layer.scale is not None:
            attrs.append(ir.AttrFloat32("scale", layer.scale))
        gqa = ir.Node(MS, "GroupQueryAttention",
                      [q, k, v, layer.past_k, layer.past_v, seqlens_k, total, cos_value, sin_value],
                      attrs, num_outputs=3, name=f"layer{i}_group_query_attention")
        graph.insert_before(anchor, gqa)
        layer.attn_out.replace_all_uses_with(gqa.outputs[0])
        for old, new in ((layer.present_k, gqa.outputs[1]), (layer.present_v, gqa.outputs[2])):
            index = list(graph.outputs).index(old)
            name = old.name
            old.name = f"{name}_unfused"
            new.name, new.type, new.shape = name, old.type, old.shape
            graph.outputs[index] = new
    if MS not in model.opset_imports:
        model.opset_imports[MS] = 1
    from onnx_ir.passes import common as ir_common

    ir_common.RemoveUnusedNodesPass()(model)
    ir_common.TopologicalSortPass()(model)
    context.manifest_updates.setdefault("kv_cache", {}).update(
        {"attention": GQA_ATTENTION, "padding_side": "right", "shared_buffer": True,
         "max_sequence_length": max_positions})
    return {"layers": num_layers, "num_heads": num_heads, "kv_num_heads": kv_heads,
            "local_window_size": int(window) if window else -1, "rotary_cache_positions": max_positions}


def _np_dtype(value: ir.Value) -> np.dtype:
    return value.dtype.numpy() if value.dtype is not None else np.dtype(np.float32)


def _sequence_lengths(graph: ir.Graph, first: _Layer) -> tuple[ir.Value, ir.Value]:
    """seqlens_k = sum(attention_mask, 1) - 1 and total_sequence_length = width of the mask, both int32."""
    mask = next(v for v in graph.inputs if v.name == "attention_mask")
    axes = _const(graph, "gqa_sum_axes", np.array([1], np.int64))
    one = _const(graph, "gqa_one", np.array(1, np.int64))
    nodes = [ir.Node("", "ReduceSum", [mask, axes], [ir.AttrInt64("keepdims", 0)], name="gqa_mask_sum")]
    nodes.append(ir.Node("", "Sub", [nodes[-1].outputs[0], one], name="gqa_seqlens_minus_one"))
    nodes.append(ir.Node("", "Cast", [nodes[-1].outputs[0]], [ir.AttrInt64("to", ir.DataType.INT32)],
                         name="gqa_seqlens_k"))
    seqlens = nodes[-1].outputs[0]
    nodes.append(ir.Node("", "Shape", [mask], [ir.AttrInt64("start", 1), ir.AttrInt64("end", 2)],
                         name="gqa_mask_width"))
    nodes.append(ir.Node("", "Squeeze", [nodes[-1].outputs[0]], name="gqa_mask_width_scalar"))
    nodes.append(ir.Node("", "Cast", [nodes[-1].outputs[0]], [ir.AttrInt64("to", ir.DataType.INT32)],
                         name="gqa_total_sequence_length"))
    graph.insert_before(graph.node(0), nodes)
    return seqlens, nodes[-1].outputs[0]


@register_pass("fuse_rms_norm")
def fuse_rms_norm(model: ir.Model) -> dict[str, Any]:
    """RMSNorm → SimplifiedLayerNormalization, residual Add + RMSNorm → SkipSimplifiedLayerNormalization."""
    from onnxscript.rewriter.ort_fusions.rms_normalization import fuse_rms_normalization
    from onnxscript.rewriter.ort_fusions.skip_normalization import fuse_skip_rms_normalization

    norms = fuse_rms_normalization(model)
    skips = fuse_skip_rms_normalization(model)
    if MS not in model.opset_imports:
        model.opset_imports[MS] = 1
    return {"simplified_layer_norm": norms, "skip_simplified_layer_norm": skips}
