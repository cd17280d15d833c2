"""`fuse_encoder`: BERT-like encoder graphs -> ONNX Runtime's fused contrib ops, same outputs at fp32.

    from modelkiln.exporter.transform import transform
    transform("art/minilm", "art/minilm-fused", [("fuse_encoder", {})])    # what `modelkiln optimize` runs
    # result: {"Attention": 6, "SkipLayerNormalization": 12, "BiasGelu": 6, "EmbedLayerNormalization": 1, ...}

Per layer of all-MiniLM-L6-v2 (the dynamo export, eager attention with an additive mask):

    before  MatMul+Add x3, Reshape/Transpose x4, MatMul, Mul(scale), Add(mask), Softmax, MatMul, ...   (~50 nodes)
            MatMul, Add(bias), Add(residual), LayerNormalization; MatMul, Add, Div, Erf, Add, Mul, Mul; ...
    after   Attention(x, W_qkv, b_qkv, attention_bias=mask)        (com.microsoft, one packed QKV weight)
            MatMul, SkipLayerNormalization(y, residual, gamma, beta, bias); MatMul, BiasGelu; MatMul,
            SkipLayerNormalization                                                              (7 nodes)

The pattern work is onnxscript's `optimize_for_ort` (SDPA -> MultiHeadAttention -> Attention, SkipLayerNorm,
BiasGelu, Gelu): it matches our dynamo graphs, while onnxruntime's `transformers.optimizer` (written for the
TorchScript exporter's patterns) fuses only BiasGelu on them (measured on MiniLM: 0 Attention, 0 SkipLayerNorm).
What it leaves for us: the packed QKV weight is a `Concat` of three initializers (folded here into one, named
after the layer, so ORT does not concatenate at every session start and the int8 pass sees a plain weight), the
BERT embedding sum + LayerNorm (fused here into EmbedLayerNormalization when the positions are 0..S-1), and the
graph's I/O shapes, which shape inference may rewrite (restored: the manifest's signature must not change).

Families whose attention does not match (DeBERTa-v2's disentangled attention, MPNet's relative bias) come out
less fused but equal; the result dict counts each fused op so `modelkiln optimize` shows what happened.
"""

from __future__ import annotations

import collections
import os
from typing import Any

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import common as ir_common

from modelkiln.graphs.passes import register_pass
from modelkiln.runtime.errors import ModelkilnError

MS_DOMAIN = "com.microsoft"
FUSED_OPS = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "EmbedLayerNormalization", "BiasGelu",
             "FastGelu", "Gelu")


@register_pass("fuse_encoder")
def fuse_encoder(model: ir.Model, *, embed_layer_norm: bool = True) -> dict[str, Any]:
    """Fuse in place; returns {op: count} for each fused op present, plus what is left unfused."""
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    if any(node.domain == MS_DOMAIN for node in model.graph):
        raise ModelkilnError("the graph already has onnxruntime contrib ops (it was fused before); run "
                             "`modelkiln optimize` on the exported artifact, not on an optimized one")
    shapes = {v.name: (v.shape, v.dtype) for v in [*model.graph.inputs, *model.graph.outputs]}
    fused, rule_counts = optimize_for_ort(model)
    assert fused is model, "optimize_for_ort is expected to work in place"
    folded = _fold_packed_weights(model)
    embed = _fuse_embed_layer_norm(model) if embed_layer_norm else 0
    ir_common.RemoveUnusedNodesPass()(model)
    ir_common.TopologicalSortPass()(model)
    _restore_io(model, shapes)
    counts = collections.Counter(node.op_type for node in model.graph if node.domain == MS_DOMAIN)
    result: dict[str, Any] = {op: counts[op] for op in FUSED_OPS if counts[op]}
    assert embed == counts["EmbedLayerNormalization"]
    result["unfused_softmax"] = sum(node.op_type == "Softmax" for node in model.graph)
    result["unfused_layer_norm"] = sum(node.op_type == "LayerNormalization" for node in model.graph)
    result["packed_weights_folded"] = folded
    result["rules"] = {name: n for name, n in rule_counts.items() if n}
    return result


# ---------------------------------------------------------------------------------------------- packed weights


def _fold_packed_weights(model: ir.Model) -> int:
    """Concat(W_q, W_k, W_v) of initializers -> one initializer (what onnxscript's QKV packing leaves behind).

    Named after what the parts share: `...layer.0.attention.self.query.bias` + `.key.bias` + `.value.bias` ->
    `...layer.0.attention.self.qkv.bias`; the weights (named val_N by torch.export, transposed) take the name of the
    bias they go with, so kept-float lists in the quantization manifest read as layer names.
    """
    graph = model.graph
    folded = 0
    renames: dict[ir.Value, str] = {}
    for node in list(graph):
        if node.op_type != "Concat" or node.domain not in ("", "ai.onnx"):
            continue
        parts = list(node.inputs)
        if not parts or any(p is None or not p.is_initializer() or p.const_value is None for p in parts):
            continue
        array = np.concatenate([p.const_value.numpy() for p in parts], axis=node.attributes["axis"].as_int())
        name = _packed_name([p.name for p in parts]) or node.outputs[0].name
        value = _new_initializer(graph, name, array)
        node.outputs[0].replace_all_uses_with(value)
        graph.remove(node, safe=True)
        for part in parts:
            if not part.uses() and not part.is_graph_output():
                graph.initializers.pop(part.name, None)
        folded += 1
        renames[value] = name
    # weight of an Attention node: take the packed bias's name
    for node in graph:
        if node.op_type == "Attention" and node.domain == MS_DOMAIN and len(node.inputs) > 2:
            weight, bias = node.inputs[1], node.inputs[2]
            if bias is not None and bias.name.endswith(".bias") and weight is not None and weight in renames \
                    and not weight.name.endswith(".bias"):
                weight.name = _unique(graph, bias.name.removesuffix(".bias") + ".weight")
                graph.initializers.pop(next(k for k, v in graph.initializers.items() if v is weight), None)
                graph.register_initializer(weight)
    return folded


def _packed_name(names: list[str]) -> str | None:
    """['a.self.query.bias', 'a.self.key.bias', 'a.self.value.bias'] -> 'a.self.qkv.bias' (None: nothing shared)."""
    prefix = os.path.commonprefix(names)
    prefix = prefix[:prefix.rfind(".") + 1] if "." in prefix else ""
    suffixes = [n[len(prefix):] for n in names]
    tails = {s.split(".", 1)[1] if "." in s else "" for s in suffixes}
    if not prefix or len(tails) != 1:
        return None
    tail = tails.pop()
    return prefix + "qkv" + (f".{tail}" if tail else "")


def _unique(graph: ir.Graph, name: str) -> str:
    taken = set(graph.initializers)
    if name not in taken:
        return name
    i = 1
    while f"{name}.{i}" in taken:
        i += 1
    return f"{name}.{i}"


def _new_initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    name = _unique(graph, name)
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                     const_value=ir.tensor(np.ascontiguousarray(array), name=name))
    graph.register_initializer(value)
    return value


# ---------------------------------------------------------------------------------------------- embeddings


def _producer(value: ir.Value | None, op_type: str) -> ir.Node | None:
    node = value.producer() if value is not None else None
    return node if node is not None and node.op_type == op_type and node.domain in ("", "ai.onnx") else None


def _gathered_table(value: ir.Value | None) -> tuple[ir.Value, ir.Value] | None:
    """Gather(table initializer, indices) -> (table, indices)."""
    node = _producer(value, "Gather")
    if node is None or node.attributes.get_int("axis", 0) != 0:
        return None
    table, indices = node.inputs
    if table is None or not table.is_initializer() or table.const_value is None or len(table.shape) != 2:
        return None
    return table, indices


def _is_arange_positions(indices: ir.Value, input_ids: ir.Value) -> bool:
    """True when `indices` is position_ids[:, 0:S] of a registered 0..N-1 buffer (BERT's absolute positions), the
    positions EmbedLayerNormalization uses when it is given none."""
    node = _producer(indices, "Slice")
    if node is None or len(node.inputs) < 3:
        return False
    data, starts, ends = node.inputs[:3]
    axes = node.inputs[3] if len(node.inputs) > 3 else None
    steps = node.inputs[4] if len(node.inputs) > 4 else None
    if data is None or data.const_value is None:
        return False
    buffer = data.const_value.numpy()
    if buffer.ndim != 2 or buffer.shape[0] != 1 or not np.array_equal(buffer[0], np.arange(buffer.shape[1])):
        return False

    def const(value: ir.Value | None) -> list | None:
        return None if value is None or value.const_value is None else value.const_value.numpy().reshape(-1).tolist()

    return (const(starts) == [0] and const(axes) in ([1], [-1]) and (steps is None or const(steps) == [1])
            and _is_dim(ends, input_ids, 1))


def _is_dim(value: ir.Value | None, source: ir.Value, axis: int) -> bool:
    """value == Shape(source)[axis:axis+1] (possibly via Shape of a same-shaped input)."""
    node = _producer(value, "Shape")
    if node is None:
        return False
    start = node.attributes.get_int("start", 0)
    end = node.attributes.get_int("end", None)
    shaped = node.inputs[0]
    same = shaped is source or (shaped is not None and shaped.is_graph_input() and shaped.shape == source.shape)
    return same and start == axis and end == axis + 1


def _fuse_embed_layer_norm(model: ir.Model) -> int:
    """LayerNorm(Gather(word, ids) [+ Gather(type, token_type_ids)] + Gather(pos, 0..S-1)) -> EmbedLayerNormalization.

    Only the BERT layout (learned absolute positions 0..S-1, int64 ids as graph inputs); RoBERTa-style positions
    computed from the padding mask, and families without position embeddings, are left as they are.
    """
    graph = model.graph
    inputs = {v.name: v for v in graph.inputs}
    ids, types = inputs.get("input_ids"), inputs.get("token_type_ids")
    if ids is None:
        return 0
    for node in list(graph):
        if node.op_type != "LayerNormalization" or node.domain not in ("", "ai.onnx"):
            continue
        if node.attributes.get_int("axis", -1) not in (-1, 2) or len(node.inputs) < 3 or node.inputs[2] is None:
            continue
        terms = _sum_terms(node.inputs[0])
        if terms is None or len(terms) not in (2, 3):
            continue
        word = position = segment = None
        for term in terms:
            gathered = _gathered_table(term)
            if gathered is None:
                break
            table, indices = gathered
            if indices is ids:
                word = table
            elif types is not None and indices is types:
                segment = table
            elif _is_arange_positions(indices, ids):
                position = table
        if word is None or position is None or (len(terms) == 3 and segment is None):
            continue
        gamma, beta = node.inputs[1], node.inputs[2]
        epsilon = node.attributes.get_float("epsilon", 1e-5)
        casts = [ir.node("Cast", [v], attributes={"to": ir.DataType.INT32}) for v in (ids, types) if v is not None
                 and (v is ids or segment is not None)]
        ids32 = casts[0].outputs[0]
        types32 = casts[1].outputs[0] if segment is not None else None
        embed = ir.node("EmbedLayerNormalization", [ids32, types32, word, position, segment, gamma, beta],
                        attributes={"epsilon": epsilon}, domain=MS_DOMAIN, num_outputs=2)
        for new in (*casts, embed):
            graph.insert_before(node, new)
        node.outputs[0].replace_all_uses_with(embed.outputs[0])
        graph.remove(node, safe=False)
        model.opset_imports.setdefault(MS_DOMAIN, 1)
        return 1
    return 0


def _sum_terms(value: ir.Value) -> list[ir.Value] | None:
    """Add(Add(a, b), c) -> [a, b, c] (any nesting); None when value is not a sum of 2+ single-use terms."""
    node = _producer(value, "Add")
    if node is None:
        return None
    terms: list[ir.Value] = []
    for operand in node.inputs:
        inner = _sum_terms(operand) if operand is not None and len(operand.uses()) == 1 else None
        terms += inner if inner is not None else [operand]
    return terms


# ---------------------------------------------------------------------------------------------- I/O


def _restore_io(model: ir.Model, shapes: dict[str, tuple]) -> None:
    """Keep the graph's inputs and outputs exactly as exported (names, dtypes, symbolic dims)."""
    for value in [*model.graph.inputs, *model.graph.outputs]:
        if value.name not in shapes:
            raise ModelkilnError(f"fusion changed the graph's I/O: {value.name!r} is new; this is a bug")
        value.shape, value.dtype = shapes[value.name]
    names = [v.name for v in [*model.graph.inputs, *model.graph.outputs]]
    if sorted(names) != sorted(shapes):
        raise ModelkilnError(f"fusion changed the graph's I/O ({sorted(names)} != {sorted(shapes)}); this is a bug")
