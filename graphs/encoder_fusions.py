"""`fuse_encoder`: BERT-like encoder graphs -> ONNX Runtime's fused contrib ops, same outputs at fp32.

    from modelkiln.exporter.transform import transform
    transform("art/minilm", "art/minilm-fused", [("fuse_encoder", {})])    # what `modelkiln optimize` runs
    # result: {"Attention": 6, "EmbedLayerNormalization": 1, "BiasGelu": 6, "residual_sum_layer_norm": 12, ...}

Per layer of all-MiniLM-L6-v2 (the dynamo export, eager attention with an additive mask):

    before  MatMul+Add x3, Reshape/Transpose x4, MatMul, Mul(scale), Add(mask), Softmax, MatMul, ...   (~50 nodes)
            MatMul, Add(bias), Add(residual), LayerNormalization; MatMul, Add, Div, Erf, Add, Mul, Mul; ...
    after   MatMul(x, W_q), Add(b_q), MatMul(x, W_k), MatMul(x, W_v), Attention(q, k, v, mask)   (ONNX's, opset 23;
            the key bias dropped and the value bias moved into the output projection's: `_standard_attention`,
            `_fold_key_value_biases`)
            MatMul, Add(Add(y, bias), residual), LayerNormalization; MatMul, BiasGelu; MatMul, Add, Add, LayerNorm
            (a [CLS] head's last layer: for token 0 alone, its attention with one query, `_first_token_only`)

The pattern work is onnxscript's `optimize_for_ort` (SDPA -> MultiHeadAttention -> Attention, SkipLayerNorm,
BiasGelu, Gelu): it matches our dynamo graphs, while onnxruntime's `transformers.optimizer` (written for the
TorchScript exporter's patterns) fuses only BiasGelu on them (measured on MiniLM: 0 Attention, 0 SkipLayerNorm).
What it leaves for us: the packed QKV weight is a `Concat` of three initializers (folded here into one, named
after the layer, so ORT does not concatenate at every session start and the int8 pass sees a plain weight), the
BERT embedding sum + LayerNorm (fused here into EmbedLayerNormalization when the positions are 0..S-1), the
residual + LayerNorm (SkipLayerNormalization is slower than what it replaces on onnxruntime 1.31's CPU kernels,
see `_unfuse_skip_layer_norm` and `residual_adds`; `skip_layer_norm=True` keeps it), and the graph's I/O shapes,
which shape inference may rewrite (restored: the manifest's signature must not change).

Measured (all-MiniLM-L6-v2, one thread, CPU time of the graph, median), with onnxscript's contrib Attention:
batch 32 x 20 tokens 151 -> 127 ms, batch 32 x 128 tokens 1149 -> 930 ms, batch 1 x 20 tokens 7.4 -> 6.7 ms; the ONNX
attention and the bias folds then took the two-thread graph at [32, 20] from 57.3 to 54.0 ms.

Families whose attention does not match (DeBERTa-v2's disentangled attention, MPNet's relative bias) come out
less fused but equal; the result dict counts each fused op so `modelkiln optimize` shows what happened.
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import common as ir_common

from modelkiln.graphs.initializers import add_initializer as _new_initializer
from modelkiln.graphs.initializers import shared_initializer
from modelkiln.graphs.initializers import unique_initializer_name as _unique
from modelkiln.graphs.passes import PassContext, register_pass
from modelkiln.runtime.errors import ModelkilnError

MS_DOMAIN = "com.microsoft"
FUSED_OPS = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "EmbedLayerNormalization", "BiasGelu",
             "FastGelu", "Gelu")


@register_pass("fuse_encoder")
def fuse_encoder(model: ir.Model, *, embed_layer_norm: bool = True, skip_layer_norm: bool = False,
                 first_token_only: bool = True, fold_value_bias: bool = True,
                 context: PassContext | None = None) -> dict[str, Any]:
    """Fuse in place; returns {op: count} for each fused op present, plus what is left unfused.

    `skip_layer_norm=False` (the default) writes residual + LayerNorm as Adds + LayerNormalization instead of
    SkipLayerNormalization: see `_unfuse_skip_layer_norm` and `residual_adds` for the measurements.
    `first_token_only`: a head that reads only the first token ([CLS] pooling) gets the last layer computed for that
    token alone (`_first_token_only`). `fold_value_bias`: the value projection's bias joins the output projection's
    (`_fold_key_value_biases`; the int8 pass turns it off, see `plan_quantize`)."""
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    task = (context.manifest.get("task") if context is not None else None) or "feature-extraction"
    if task == "text-generation" or any(v.name.startswith("past_key_values") for v in model.graph.inputs):
        raise ModelkilnError("fuse_encoder is for encoder artifacts (BERT and friends); this one is a decoder")
    if any(node.domain == MS_DOMAIN for node in model.graph):
        raise ModelkilnError("the graph already has onnxruntime contrib ops (it was fused before); run "
                             "`modelkiln optimize` on the exported artifact, not on an optimized one")
    shapes = {v.name: (v.shape, v.dtype) for v in [*model.graph.inputs, *model.graph.outputs]}
    fused, rule_counts = optimize_for_ort(model)
    assert fused is model, "optimize_for_ort is expected to work in place"
    folded = _fold_packed_weights(model)
    attention = _standard_attention(model)
    embed = _fuse_embed_layer_norm(model) if embed_layer_norm else 0
    residual_sums = 0 if skip_layer_norm else _unfuse_skip_layer_norm(model)
    ir_common.TopologicalSortPass()(model)
    first_token = _first_token_only(model) if first_token_only else 0
    ir_common.RemoveUnusedNodesPass()(model)  # (the full-length last layer the first-token rewrite replaced)
    bias_folds = _fold_key_value_biases(model, value=fold_value_bias)
    if not skip_layer_norm:
        residual_adds(model)
    ir_common.RemoveUnusedNodesPass()(model)
    ir_common.TopologicalSortPass()(model)
    _restore_io(model, shapes)
    counts = collections.Counter(node.op_type for node in model.graph if node.domain == MS_DOMAIN)
    result: dict[str, Any] = {op: counts[op] for op in FUSED_OPS if counts[op]}
    if attention:
        # ONNX's (opset 23), from contrib Attention (see _standard_attention), with any contrib one left
        result["Attention"] = result.get("Attention", 0) + attention
    assert embed == counts["EmbedLayerNormalization"]
    # what did not fuse: a Softmax left means an attention pattern onnxscript did not recognize (DeBERTa, MPNet)
    result["unfused_attention_softmax"] = sum(node.op_type == "Softmax" for node in model.graph)
    result["residual_sum_layer_norm"] = residual_sums  # SkipLayerNormalization written as Adds + LayerNormalization
    result["packed_weights_folded"] = folded
    result["first_token_only_nodes"] = first_token
    result["key_value_biases_folded"] = bias_folds
    result["rules"] = {name: n for name, n in rule_counts.items() if n}
    return result


# ---------------------------------------------------------------------------------------------- packed weights


def _fold_packed_weights(model: ir.Model) -> int:
    """Concat(W_q, W_k, W_v) of initializers -> one initializer (what onnxscript's QKV packing leaves behind), and
    each Attention node's packed weight and bias named after its layer: `...layer.0.attention.qkv.weight`.

    torch.export names transposed weights val_N; the layer name lets `kept` and `--exclude` of the int8 pass
    say `model.encoder.layer.0.attention.query` instead of val_64.
    """
    graph = model.graph
    folded = 0
    for node in list(graph):
        if node.op_type != "Concat" or node.domain not in ("", "ai.onnx"):
            continue
        parts = list(node.inputs)
        if not parts or any(p is None or not p.is_initializer() or p.const_value is None for p in parts):
            continue
        array = np.concatenate([p.const_value.numpy() for p in parts], axis=node.attributes["axis"].as_int())
        value = _new_initializer(graph, f"{node.outputs[0].name}_folded", array)
        node.outputs[0].replace_all_uses_with(value)
        graph.remove(node, safe=True)
        for part in parts:
            if not part.uses() and not part.is_graph_output():
                graph.initializers.pop(part.name, None)
        folded += 1
    for node in graph:
        if node.op_type == "Attention" and node.domain == MS_DOMAIN:
            prefix = _attention_prefix(node)
            for value, suffix in ((node.inputs[1], "weight"), (node.inputs[2] if len(node.inputs) > 2 else None, "bias")):
                if prefix and value is not None and value.is_initializer() and len(value.uses()) == 1:
                    _rename_initializer(graph, value, f"{prefix}.qkv.{suffix}")
    return folded


# ---------------------------------------------------------------------------------------------- attention

ONNX_ATTENTION_OPSET = 23  # the first with ONNX's own Attention (onnxruntime >= 1.23 runs it on CPU)
ONNX_ATTENTION_IR_VERSION = 11


def _standard_attention(model: ir.Model) -> int:
    """contrib Attention(x, W_qkv, b_qkv, attention_bias=M) -> ONNX Attention (opset 23) over three projections:

        q = x·W_q + b_q,  k = x·W_k + b_k,  v = x·W_v + b_v,  Attention(q, k, v, M, q_num_heads=kv_num_heads=N)

    Same math, up to float summation order (all-MiniLM-L6-v2's hidden states: 2.7e-6 at most). Faster on
    onnxruntime's CPU provider, for two reasons. First, the contrib kernel computes the packed projection as one
    small GEMM per (batch, head, q/k/v), [20, 384] x [384, 32] at batch 32 x 20 tokens, 1152 of them per layer on
    unpacked weights; the three MatMuls run MLAS's full-size GEMM on weights pre-packed at load. Second, ONNX's
    attention core (MiniLM's shape, two threads: 0.40 ms a layer) is twice as fast as the contrib
    MultiHeadAttention's (0.86 ms). Graph time, two threads: 57.7 -> 54.5 ms at [32, 20], 3.05 -> 2.88 ms at [1, 20],
    427 -> 411 ms at [32, 128]. The int8 pass quantizes the three MatMuls like any other, with their bias Adds.
    Three MatMuls rather than one + Split: the Split's copy made it 56.2 ms. The cost: the graph needs onnxruntime
    >= 1.23, and GPU providers older than 1.25 have no kernel for this op (the node would run on the CPU).
    Nodes with a mask_index, a past, rotary or causal attention, or unequal q/k/v sizes stay as they are.
    """
    graph = model.graph
    count = 0
    for node in list(graph):
        if not _plain_self_attention(node):
            continue
        x, weight, bias = node.inputs[:3]
        mask = node.inputs[5] if len(node.inputs) > 5 else None
        w = weight.const_value.numpy()
        b = bias.const_value.numpy() if bias is not None else None
        hidden = w.shape[1] // 3
        base = weight.name.removesuffix(".weight").removesuffix(".qkv")
        prefix = node.name or f"attention_{count}"
        projections = []
        for i, part in enumerate(("query", "key", "value")):
            columns = slice(i * hidden, (i + 1) * hidden)
            matmul = ir.node("MatMul", [x, _new_initializer(graph, f"{base}.{part}.weight",
                                                             np.ascontiguousarray(w[:, columns]))],
                             name=f"{prefix}_{part}")
            graph.insert_before(node, matmul)
            projection = matmul.outputs[0]
            if b is not None:
                add = ir.node("Add", [projection, _new_initializer(graph, f"{base}.{part}.bias", b[columns].copy())],
                              name=f"{prefix}_{part}_bias")
                graph.insert_before(node, add)
                projection = add.outputs[0]
            projections.append(projection)
        heads = node.attributes.get_int("num_heads")
        attributes: dict[str, Any] = {"q_num_heads": heads, "kv_num_heads": heads}
        if node.attributes.get_float("scale", 0.0):
            attributes["scale"] = node.attributes.get_float("scale")
        attention = ir.node("Attention", [*projections, mask], attributes=attributes, name=f"{prefix}_onnx")
        graph.insert_before(node, attention)
        _replace(graph, node.outputs[0], attention.outputs[0])
        graph.remove(node, safe=True)
        count += 1
    if count:
        model.opset_imports[""] = max(model.opset_imports.get("", 0), ONNX_ATTENTION_OPSET)
        model.ir_version = max(model.ir_version or 0, ONNX_ATTENTION_IR_VERSION)
    return count


def _fold_key_value_biases(model: ir.Model, value: bool = True) -> int:
    """Attention(q, x·W_k + b_k, x·W_v + b_v) -> Attention(q, x·W_k, x·W_v), b_v·W_o joining the output projection's
    bias: two full-size Adds per layer fewer (all-MiniLM-L6-v2 at [32, 20]: ~0.16 ms a layer; at [1, 20], 12 of
    the graph's ~110 nodes).

    Exact in real arithmetic: the key bias adds q_i·b_k to every score of query i, a shift softmax ignores; each
    row of attention weights sums to one, so the value bias comes out as b_v at every token, and through the output
    projection as b_v·W_o. In float the results differ by rounding (the scores by ~1e-7 relative). The value bias
    moves only where the output projection is a MatMul whose bias is a constant term of the residual sum that
    alone reads it (`Sum` form, before `residual_adds`). Returns the number of biases removed."""
    graph = model.graph
    folded = 0
    for node in list(graph):
        if node.op_type != "Attention" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 3:
            continue
        key = _biased_projection(node.inputs[1], 1)
        biased_value = _biased_projection(node.inputs[2], 2) if value else None
        if key is not None:
            node.replace_input_with(1, key[0])
            folded += 1
        target = _output_projection_bias(node) if biased_value is not None else None
        if target is not None:
            projected, bias_node, index = target
            b_v = biased_value[1].const_value.numpy().astype(np.float64)
            b_o = bias_node.inputs[index].const_value.numpy().astype(np.float64)
            merged = (b_o + b_v @ projected.astype(np.float64)).astype(np.float32)
            name = bias_node.inputs[index].name or "output_bias"
            bias_node.replace_input_with(index, _new_initializer(graph, f"{name}_with_value_bias", merged))
            node.replace_input_with(2, biased_value[0])
            folded += 1
    return folded


def _biased_projection(value: ir.Value | None, index: int) -> tuple[ir.Value, ir.Value] | None:
    """(x·W, b) for a value Add(MatMul(x, W), b) with constant 1-D b that only attentions read, all as their input
    `index` (the keys, or the values)."""
    add = _producer(value, "Add")
    if add is None or value.is_graph_output() or any(use.node.op_type != "Attention" or use.idx != index
                                                     for use in value.uses()):
        return None
    for product in add.inputs:
        if _producer(product, "MatMul") is not None:
            after, bias = bias_after(product)
            if after is add:
                return product, bias
    return None


def _output_projection_bias(attention: ir.Node) -> tuple[np.ndarray, ir.Node, int] | None:
    """(W_o, the node holding b_o, its input index) for an attention whose output only MatMul(·, W_o) reads, and
    whose product's bias is an Add after it or a constant term of the residual `Sum` that alone reads it."""
    projection = only_use(attention.outputs[0])
    if projection is None or projection.op_type != "MatMul" or projection.inputs[0] is not attention.outputs[0]:
        return None
    weight = projection.inputs[1]
    if weight is None or weight.const_value is None or len(weight.shape) != 2:
        return None
    holder, bias = bias_after(projection.outputs[0])
    if holder is None:
        holder, bias = bias_in_sum(projection.outputs[0], weight.shape[1])
    if holder is None:
        return None
    return weight.const_value.numpy(), holder, list(holder.inputs).index(bias)


def _plain_self_attention(node: ir.Node) -> bool:
    """A contrib Attention `_standard_attention` converts: constant packed weight (and bias) with equal q/k/v
    sizes, an additive mask (attention_bias) [batch or 1, heads or 1, queries, keys] or none, no mask_index, no
    past, not causal, no rotary."""
    if node.op_type != "Attention" or node.domain != MS_DOMAIN:
        return False
    inputs = list(node.inputs) + [None] * (6 - len(node.inputs))
    weight, bias, mask_index, past, mask = inputs[1:6]
    if mask is not None and (mask.shape is None or len(mask.shape) != 4 or mask.shape[2] == 1):
        return False  # onnxruntime's CPU kernel does not broadcast a mask over the queries (1.31)
    attrs = node.attributes
    sizes = attrs.get_ints("qkv_hidden_sizes", None)
    return (mask_index is None and past is None and len(node.inputs) <= 6 and not attrs.get_int("unidirectional", 0)
            and not attrs.get_int("do_rotary", 0) and weight is not None and weight.const_value is not None
            and len(weight.shape) == 2 and weight.shape[1] % 3 == 0 and (sizes is None or len(set(sizes)) == 1)
            and (bias is None or bias.const_value is not None)
            and not any(o.uses() or o.is_graph_output() for o in node.outputs[1:]))


def _attention_prefix(node: ir.Node) -> str | None:
    """`model.encoder.layer.0.attention` for an Attention node, read from the bias of the output projection that
    follows it (`...attention.output.dense.bias`, DistilBERT's `...attention.out_lin.bias`)."""
    for use in node.outputs[0].uses():
        projection = use.node
        if projection.op_type != "MatMul":
            continue
        for after in projection.outputs[0].uses():
            for value in after.node.inputs:
                if value is not None and value.is_initializer() and value.name.endswith(".bias"):
                    name = value.name.removesuffix(".bias").rsplit(".", 1)[0]  # drop "dense" / "out_lin"
                    # a zero bias deduplicated at export may carry another layer's name: only trust "attention"
                    return name.removesuffix(".output") if "attention" in name else None
    return None


def _rename_initializer(graph: ir.Graph, value: ir.Value, name: str) -> None:
    if value.name == name or not value.name.startswith(("val_", "_")) and "folded" not in value.name:
        return  # keep a name that already means something
    name = _unique(graph, name)
    graph.initializers.pop(value.name)
    value.name = name
    graph.register_initializer(value)


# ---------------------------------------------------------------------------------------------- residual + norm


def _unfuse_skip_layer_norm(model: ir.Model) -> int:
    """SkipLayerNormalization(x, skip, gamma, beta, bias) -> LayerNormalization(Sum(x, skip, bias)), and any
    Add -> LayerNormalization left in the graph -> Sum -> LayerNormalization.

    Why: onnxruntime 1.31's CPU SkipLayerNormalization kernel is 3-5x slower than Add + LayerNormalization
    (measured here on [32, 128, 384] fp32: 8.8 ms vs 1.7 ms on one thread, 4.4 vs 1.4 ms on two; on
    all-MiniLM-L6-v2 at batch 32 x 128 tokens its 12 calls were 18% of the int8 graph's time), and onnxruntime
    fuses Add + LayerNormalization into it itself when a session loads. It does not fuse `Sum`, the form the
    passes edit; `residual_adds` writes the Sums as Adds at the end (faster still), and the runtime turns the
    fusion off for encoder sessions.
    """
    graph = model.graph
    count = 0
    for node in list(graph):
        if node.op_type == "SkipLayerNormalization" and node.domain == MS_DOMAIN:
            x, skip, gamma, beta, *rest = list(node.inputs) + [None]
            bias = rest[0] if rest else None
            if gamma is None or beta is None:
                continue
            total = ir.node("Sum", [v for v in (x, skip, bias) if v is not None])
            norm = ir.node("LayerNormalization", [total.outputs[0], gamma, beta],
                           attributes={"axis": -1, "epsilon": node.attributes.get_float("epsilon", 1e-12),
                                       "stash_type": 1})
            graph.insert_before(node, total)
            graph.insert_before(node, norm)
            if any(o.uses() or o.is_graph_output() for o in node.outputs[1:3]):
                raise ModelkilnError("SkipLayerNormalization's mean/inv_std outputs are used; cannot unfuse it")
            _replace(graph, node.outputs[0], norm.outputs[0])
            if len(node.outputs) > 3:  # input_skip_bias_sum
                _replace(graph, node.outputs[3], total.outputs[0])
            graph.remove(node, safe=True)
            count += 1
        elif node.op_type == "LayerNormalization" and node.domain in ("", "ai.onnx"):
            add = _producer(node.inputs[0], "Add")
            if add is not None and len(add.outputs[0].uses()) == 1 and not add.outputs[0].is_graph_output():
                total = ir.node("Sum", list(add.inputs))
                graph.insert_before(add, total)
                _replace(graph, add.outputs[0], total.outputs[0])
                graph.remove(add, safe=True)
                count += 1
    return count


def residual_adds(model: ir.Model) -> int:
    """Each residual `Sum` that only LayerNormalizations read -> a chain of Adds, the bias first:
    Sum(y, residual, bias) -> Add(Add(y, bias), residual) (eager's order), LayerNormalization unchanged.

    Why: onnxruntime's `Sum` kernel is 2-3x slower than two `Add`s on these shapes (MiniLM [32, 20, 384], three
    inputs: 0.15 vs 0.05 ms; the 12 sums were 3.4 ms of the fused fp32 graph at batch 32). The Adds are written
    this way only because the runtime turns off onnxruntime's SkipLayerNormFusion (runtime/encoder.py
    `DISABLED_OPTIMIZERS`), which would otherwise fuse them into the slower SkipLayerNormalization
    (`_unfuse_skip_layer_norm`). Passes that edit residual sums work on the `Sum` form (`residual_sums`)."""
    graph = model.graph
    count = 0
    for node in list(graph):
        if node.op_type != "Sum" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
            continue
        out = node.outputs[0]
        readers = [use.node for use in out.uses()]
        if out.is_graph_output() or not readers or any(
                r.op_type != "LayerNormalization" or r.domain not in ("", "ai.onnx") for r in readers):
            continue
        terms = list(node.inputs)
        constants = [v for v in terms if v is not None and v.const_value is not None]
        full = [v for v in terms if v not in constants]
        if not full or any(v is None for v in terms):
            continue
        order = [full[0], *constants, *full[1:]]
        total = order[0]
        for term in order[1:]:
            add = ir.node("Add", [total, term])
            graph.insert_before(node, add)
            total = add.outputs[0]
        out.replace_all_uses_with(total)
        graph.remove(node, safe=True)
        count += 1
    return count


def residual_sums(model: ir.Model) -> int:
    """The inverse of `residual_adds`: every Add tree that only a LayerNormalization reads -> one `Sum` of its terms
    (Add(Add(y, bias), residual) -> Sum(y, bias, residual)), the form the int8 pass edits (it moves the bias into
    the int8 MatMul and adds routed terms as more inputs)."""
    graph = model.graph
    count = 0
    for node in list(graph):
        if node.op_type != "LayerNormalization" or node.domain not in ("", "ai.onnx"):
            continue
        add = _producer(node.inputs[0], "Add")
        if add is None or len(add.outputs[0].uses()) != 1 or add.outputs[0].is_graph_output():
            continue
        terms = _sum_terms(node.inputs[0])
        if terms is None or any(t is None for t in terms):
            continue
        total = ir.node("Sum", terms)
        graph.insert_before(node, total)
        node.replace_input_with(0, total.outputs[0])
        count += 1
    ir_common.RemoveUnusedNodesPass()(model)
    return count


def _replace(graph: ir.Graph, old: ir.Value, new: ir.Value) -> None:
    """old.replace_all_uses_with(new), and when old is a graph output, new takes its place and its name."""
    if old.is_graph_output():
        index = graph.outputs.index(old)
        name, shape, dtype = old.name, old.shape, old.dtype
        old.name = f"{name}_replaced"
        new.name, new.shape, new.dtype = name, shape, dtype
        graph.outputs[index] = new
    old.replace_all_uses_with(new)


# ---------------------------------------------------------------------------------------------- biases


def bias_after(out: ir.Value) -> tuple[ir.Node | None, ir.Value | None]:
    """The Add(out, bias[N]) or BiasGelu(out, bias[N]) that is out's only use, if any (the int8 pass moves the
    bias into DynamicQuantizeMatMul's bias input)."""
    uses = list(out.uses())
    if len(uses) != 1 or out.is_graph_output():
        return None, None
    after, index = uses[0].node, uses[0].idx
    if after.op_type == "Add" and after.domain in ("", "ai.onnx"):
        bias = after.inputs[1 - index]
    elif after.op_type == "BiasGelu" and after.domain == MS_DOMAIN and index == 0:
        bias = after.inputs[1]
    else:
        return None, None
    if bias is None or not bias.is_initializer() or bias.const_value is None or len(bias.shape) != 1:
        return None, None
    return after, bias


def bias_in_sum(out: ir.Value, columns: int) -> tuple[ir.Node | None, ir.Value | None]:
    """The Sum that is out's only reader and adds one constant [columns] vector (a bias) among full-size terms."""
    total = only_use(out)
    if total is None or total.op_type != "Sum" or total.domain not in ("", "ai.onnx"):
        return None, None
    biases = [v for v in total.inputs if v is not None and v.const_value is not None and len(v.shape) == 1
              and v.shape[0] == columns]
    if len(biases) != 1 or len(total.inputs) < 3 or list(total.inputs).count(out) != 1:
        return None, None
    return total, biases[0]


def only_use(value: ir.Value | None) -> ir.Node | None:
    """The node that reads `value`, when it is its only reader and `value` is not a graph output."""
    if value is None or value.is_graph_output():
        return None
    uses = list(value.uses())
    return uses[0].node if len(uses) == 1 else None


# ---------------------------------------------------------------------------------------------- first token

ROWWISE_OPS = {("", "Add"), ("", "Sub"), ("", "Mul"), ("", "Div"), ("", "Sum"), ("", "Tanh"), ("", "Relu"),
               ("", "Erf"), ("", "Sigmoid"), ("", "Gelu"), (MS_DOMAIN, "Gelu"), (MS_DOMAIN, "BiasGelu"),
               (MS_DOMAIN, "FastGelu")}


def _first_token_only(model: ir.Model) -> int:
    """A head that reads only token 0 of the last hidden states (`Gather(h, 0, axis=1)`: BERT's pooler, the
    [CLS] classifier of RoBERTa, DistilBERT, ELECTRA, DeBERTa) -> everything after the last attention computed
    for that token alone, and the last attention with one query:

        Attention(x·W_q + b_q, k, v, mask) -> MatMul -> Add -> LayerNorm -> FFN -> Add -> LayerNorm -> Gather(0)
     => Attention(x[:, :1]·W_q + b_q, k, v, mask[..., :1, :]) -> ... on [batch, 1, hidden] -> Gather(0)

    Exact: every op on the way is row-wise (the same per token), and the keys and values still see every token.
    all-MiniLM-L6-v2's classifier: 10 of the last layer's 12 [tokens, 384]-sized weight products are gone, ~14% of
    the graph's multiply-adds. Where the last attention is not ONNX's `Attention` (`_standard_attention`; DeBERTa's
    and MPNet's do not fuse), the rewrite stops at its output projection. Returns the number of nodes moved to one
    token."""
    graph = model.graph
    moved = 0
    for gather in list(graph):
        if gather.op_type != "Gather" or gather.domain not in ("", "ai.onnx") or gather.attributes.get_int(
                "axis", 0) != 1:
            continue
        hidden, index = gather.inputs
        if (index is None or index.const_value is None or index.const_value.numpy().shape != ()
                or int(index.const_value.numpy()) != 0 or hidden is None or _rank(hidden) != 3):
            continue
        region = _first_token_region(graph, gather)
        if region:
            _rewrite_first_token(graph, gather, region)
            moved += len(region)
    return moved


def _rowwise(node: ir.Node) -> bool:
    if len(node.outputs) != 1 or node.outputs[0].is_graph_output():
        return False
    if (node.domain or "", node.op_type) in ROWWISE_OPS:
        return all(v is not None for v in node.inputs)
    if node.op_type == "LayerNormalization" and node.domain in ("", "ai.onnx"):
        return node.attributes.get_int("axis", -1) in (-1, 2) and all(
            v is not None and v.const_value is not None for v in node.inputs[1:])
    if node.op_type == "MatMul" and node.domain in ("", "ai.onnx"):
        weight = node.inputs[1]
        return weight is not None and weight.const_value is not None and len(weight.shape) == 2
    return False


def _one_query_attention(node: ir.Node) -> bool:
    """An ONNX self-attention (`_standard_attention`'s) `_rewrite_first_token` can give one query: 3D q, k, v, an
    additive or boolean mask or none, no past, not causal, one output."""
    inputs = list(node.inputs) + [None] * (4 - len(node.inputs))
    return (node.op_type == "Attention" and node.domain in ("", "ai.onnx") and len(node.inputs) <= 4
            and all(v is not None for v in inputs[:3]) and not node.attributes.get_int("is_causal", 0)
            and len(node.outputs) == 1 and _rank(inputs[0]) == 3)


def _first_token_region(graph: ir.Graph, gather: ir.Node) -> list[ir.Node]:
    """The nodes above `gather` whose outputs only it (and others of them) read, row-wise ones up to and including
    the last attention, in graph order."""
    position = {node: i for i, node in enumerate(graph)}
    region: set[ir.Node] = set()
    members = {gather}
    heap = [gather.inputs[0].producer()]
    while heap:  # latest node first: every reader of a node is decided before the node is
        heap.sort(key=lambda n: position.get(n, -1))
        node = heap.pop()
        if node is None or node in members:
            continue
        attention = _one_query_attention(node)
        if not (attention or _rowwise(node)):
            continue
        if any(use.node not in members or _one_query_attention(use.node) and use.idx != 0
               for use in node.outputs[0].uses()):
            continue  # (an attention's keys and values stay whole: they read every token)
        tokens = node.inputs[:1] if attention else [v for v in node.inputs if v is not None and v.const_value is None]
        if any(_rank(v) != 3 for v in tokens):  # (each is sliced to token 0 on axis 1, or computed for it)
            continue
        members.add(node)
        region.add(node)
        heap += [v.producer() for v in tokens if v.producer() is not None]
    return sorted(region, key=position.get)


def _rewrite_first_token(graph: ir.Graph, gather: ir.Node, region: list[ir.Node]) -> None:
    first: dict[ir.Value, ir.Value] = {}  # value [batch, sequence, ...] -> its token 0 [batch, 1, ...]
    zero = shared_initializer(graph, "modelkiln_first_token_start", np.array([0], dtype=np.int64))
    one = shared_initializer(graph, "modelkiln_first_token_end", np.array([1], dtype=np.int64))

    def token0(value: ir.Value, before: ir.Node, axis: int = 1) -> ir.Value:
        if value.producer() in members:
            return first[value]
        key = (value, axis)
        if key not in sliced:
            axes = shared_initializer(graph, f"modelkiln_first_token_axis_{axis}", np.array([axis], dtype=np.int64))
            node = ir.node("Slice", [value, zero, one, axes])
            graph.insert_before(before, node)
            sliced[key] = node.outputs[0]
        return sliced[key]

    members = set(region)
    sliced: dict[tuple[ir.Value, int], ir.Value] = {}
    for node in region:
        if _one_query_attention(node):  # the query of token 0; keys, values and mask columns of every token
            q, k, v, *mask = node.inputs
            inputs = [token0(q, node), k, v] + [token0(m, node, axis=-2) if m is not None else None for m in mask]
        else:
            inputs = [v if v.const_value is not None else token0(v, node) for v in node.inputs]
        new = ir.Node(node.domain, node.op_type, inputs,
                      attributes=[ir.Attr(a.name, a.type, a.value) for a in node.attributes.values()],
                      name=f"{node.name}_first_token")
        graph.insert_before(node, new)
        first[node.outputs[0]] = new.outputs[0]
    gather.replace_input_with(0, first[gather.inputs[0]])


def _rank(value: ir.Value | None, depth: int = 0) -> int | None:
    """The rank of a value whose shape the graph does not record, from its producer (row-wise ops keep it)."""
    if value is None or depth > 200:
        return None
    if value.shape is not None:
        return len(value.shape)
    if value.const_value is not None:
        return value.const_value.numpy().ndim
    node = value.producer()
    if node is None:
        return None
    if node.op_type in ("Attention", "MultiHeadAttention", "EmbedLayerNormalization", "SkipLayerNormalization"):
        return 3
    if node.op_type in ("LayerNormalization", "MatMul") or (node.domain or "", node.op_type) in ROWWISE_OPS:
        ranks = [_rank(v, depth + 1) for v in (node.inputs[:1] if node.op_type in ("LayerNormalization", "MatMul")
                                                else node.inputs)]
        return None if None in ranks else max(ranks)
    return None


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
        _replace(graph, node.outputs[0], embed.outputs[0])
        graph.remove(node, safe=True)
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
