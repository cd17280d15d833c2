"""`quantize_dynamic_int8`: int8 weights, dynamically quantized uint8 activations, with an accuracy guard.

    transform("art/minilm", "art/minilm-int8", [("fuse_encoder", {"fold_value_bias": False}),
              ("quantize_dynamic_int8", {"per_channel": True, "min_cosine": 0.99, "exclude": []})])
    # all-MiniLM-L6-v2: {"quantized": 29, "gelu_routed": 4, "smoothed": 25, "kept": ["model.encoder.layer.5.attention
    #          .value", ... 6 of 36], "kept_as": "w8a16", "measured_worst_cosine": 0.9932, ...}

Each MatMul with a constant float weight W [K, N] becomes ONNX Runtime's `DynamicQuantizeMatMul(x, W_q, scale)`:
W_q int8 symmetric, one scale per output column (per_channel) or one for all; x is quantized to uint8 with one
scale for the whole tensor at run time, and the product runs on the integer (VNNI) kernels. The attention's q, k and
v projections are three such MatMuls (`fuse_encoder` writes ONNX's Attention over them, see `_standard_attention`).

Why plain dynamic int8 is not enough (all-MiniLM-L6-v2, worst sentence of graphs/encoder_corpus.py against fp32):
everything int8 gives cosine 0.963 (optimum-onnx's per-tensor config: 0.944). BERT's hidden states carry "massive
activations": at the [CLS] token one channel of the attention block's LayerNorm output reaches ~28 (and one
channel of some GELU outputs ~24) while the other channels' maxima are ~2-5, so one per-tensor uint8 scale leaves
the ordinary values a few levels. Every fix costs run time -- on MiniLM a full-size elementwise op costs about
as much as an int8 MatMul -- so, in order of cost:
  1. GELU routing (`_route_gelu_outliers`, exact): the FFN's few GELU channels with massive activations are
     computed in float at [tokens, 4] size around both FFN MatMuls (Gelu(0) = 0 lets their weight columns be
     zeroed), so the down projection's int8 input has none;
  2. smoothing (`_smooth_inputs`, exact in fp32): inputs whose largest channels stand above their
     `smooth_percentile` are divided per channel and the weight rows multiplied to match (SmoothQuant's
     migration, capped at the percentile), one Mul per input (folded into the LayerNorm where it feeds only the
     MatMuls); 0.963 -> 0.986 with both. The default percentile, 95, was chosen over 90, 75 and 50 by the guard's
     outcome on all-MiniLM-L6-v2: at 95 the guard keeps 7 MatMuls, 2 of them FFN up projections (W8A16 costs
     ~1 ms on one, ~0.3 ms on a value projection), at 90 it keeps 7 with 3, at 75 and 50 it keeps 9. Graph at
     [32, 20], two threads: 20.4-20.7 ms against 21.0-21.5 at 90, with a better worst cosine on validate's held-out
     texts (b=32: 0.9923 against 0.9917; b=1: 0.9962 against 0.9953). `outlier_channels=8` kept 6 and ran ~0.3 ms
     faster still, but its held-out worst fell to 0.9906;
  3. outlier split, for inputs neither rewrite takes (e.g. GELU outputs of unfused graphs): the top
     `outlier_channels` channels out of the int8 product, in float: y = DQMM(x * keep, W_q) + x[..., idx] @ W[idx];
  4. the guard: run the fp32 graph and the int8 graph on the corpus through the artifact's own tokenizer, compare
     them sentence by sentence (graphs/encoder_accuracy.py: the mean-pooled embedding cosine, or the head's argmax
     labels); if the worst sentence is below `min_cosine` or a label changed, rank the MatMuls by the damage each
     does when it alone is int8, per weight (one switchboard run per MatMul), and keep the top-k out of plain
     int8, k found by doubling then bisection, each k measured end to end. Kept MatMuls become W8A16 (`keep_as`):
     int8 weights with 16-bit activations in two int8 passes, about half the cost of float for its accuracy;
  5. raise when no k short of "everything kept" meets the target.
Measured on MiniLM (batch 32 x 20 tokens, graph only, one thread): fp32 fused 119 ms; the guarded int8 before
these rewrites (6 MatMuls float, 7 outlier splits) 62 ms; now 45 ms (7 W8A16); everything plain int8 35 ms.
MatMuls that read one input (q, k, v) quantize it once: one DynamicQuantizeLinear feeding MatMulIntegerToFloat
nodes (a W8A16 value's first digit included), instead of each DynamicQuantizeMatMul quantizing it again (MiniLM,
[32, 20] on two threads: 22.3 vs 23.0 ms, same outputs).

`activations="per_token"` (an option, not the default): one symmetric int8 scale per token instead of one per
tensor, so the [CLS] token's massive activation costs the other tokens nothing: on MiniLM every MatMul plain int8
(nothing kept) reaches 0.9939 on the corpus and 0.9928 on validate's held-out texts at batch 32 and 1 alike
(per tensor: 0.986 with nothing kept; 0.9917 / 0.9953 with the guard's 7 W8A16), and a text's embedding no longer
depends on its batch. It is slower on onnxruntime 1.31's CPU kernels, though: no kernel quantizes per row, so each
input takes Abs, ReduceMax, Div and QuantizeLinear nodes (~0.25 ms on [32, 20, 384] against 0.07 for a per-tensor
DynamicQuantizeLinear) and MatMulIntegerToFloat scales its output per row in one more pass; the bias stays out of
the product (it would be scaled per row too). MiniLM graph at [32, 20], two threads: ~25.5 ms against ~22.3 ms per
tensor with the guard's W8A16 (MatMulNBits with 8-bit weights and accuracy_level 4, which quantizes activations per
row and block inside the kernel, was 3-5x slower than DynamicQuantizeMatMul per MatMul on this CPU). Keeping the
guard's MatMuls per token instead of W8A16 needed 13 kept instead of 7 and was no faster.
What was routed, smoothed, split and kept, and the measured figures go into the result and the manifest's
`quantization`.
"""

from __future__ import annotations

import fnmatch
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from modelkiln.graphs.encoder_accuracy import EMBEDDING_TASKS, Agreement, agreement
from modelkiln.graphs.encoder_corpus import QUESTION_CONTEXTS, SENTENCES
from modelkiln.graphs.encoder_fusions import bias_after, bias_in_sum, only_use, residual_adds, residual_sums
from modelkiln.graphs.initializers import add_initializer as _initializer
from modelkiln.graphs.initializers import shared_initializer
from modelkiln.graphs.passes import PassContext, register_pass
from modelkiln.runtime.errors import ModelkilnError

MS_DOMAIN = "com.microsoft"
ENCODER_TASKS = ("feature-extraction", "sentence-similarity", "text-classification", "token-classification",
                 "question-answering", "fill-mask")
GUARD_MAX_LENGTH = 256  # sentence-transformers' usual max_seq_length; longer inputs add time, not information
GUARD_BATCH = 32
# Above this many MatMuls, ranking by one session per MatMul gets slow: rank by each MatMul's own output error.
MEASURED_RANKING_LIMIT = 96
RANKING_ROWS = 8
# The guard aims a quarter of the allowed loss above min_cosine (0.9925 for 0.99): int8 error depends on which
# sentences share a batch (one activation scale per tensor), so texts and batches the corpus does not have come
# out a little worse (MiniLM: 0.9915 on the corpus was 0.9867 on 20 other sentences in one batch).
GUARD_HEADROOM = 0.25
KEEP_AS = ("w8a16", "fp32")
ACTIVATION_MODES = ("int8", "w8a16", "per_token")
ACTIVATIONS = {"per_tensor": "int8", "per_token": "per_token"}  # the plain int8 MatMuls' activation scales


@register_pass("quantize_dynamic_int8")
def quantize_dynamic_int8(model: ir.Model, *, per_channel: bool = True, min_cosine: float | None = 0.99,
                          exclude: Sequence[str] = (), reduce_range: bool = False, outlier_channels: int = 4,
                          outlier_ratio: float = 3.0, smooth_percentile: float | None = 95.0,
                          keep_as: str = "w8a16", activations: str = "per_tensor",
                          context: PassContext) -> dict[str, Any]:
    """Quantize in place (see the module docstring).

    `exclude`: fnmatch patterns over MatMul labels (`*.layer.5.output.dense`), node names or weight names, kept in
    float. `min_cosine=None` (or 0) skips the search but still measures. `reduce_range`: 7-bit weights, for CPUs
    without VNNI whose u8s8 kernels can saturate. `outlier_channels=0` turns the GELU routing and the outlier
    split off; `smooth_percentile=None` the smoothing. `keep_as`: what the MatMuls the guard keeps out of plain
    int8 become, "w8a16" (int8 weights, 16-bit activations in two int8 passes) or "fp32". `activations`: the plain
    int8 MatMuls' activation scales, "per_tensor" (DynamicQuantizeMatMul) or "per_token" (more accurate, slower
    here; see the module docstring).
    """
    if min_cosine is not None and not 0 <= float(min_cosine) <= 1:
        raise ModelkilnError(f"min_cosine must be between 0 and 1, got {min_cosine!r}")
    if outlier_channels < 0 or outlier_ratio <= 1:
        raise ModelkilnError(f"outlier_channels must be >= 0 and outlier_ratio > 1, got {outlier_channels}, "
                             f"{outlier_ratio}")
    if smooth_percentile is not None and not 0 < float(smooth_percentile) <= 100:
        raise ModelkilnError(f"smooth_percentile must be in (0, 100], got {smooth_percentile!r}")
    if keep_as not in KEEP_AS:
        raise ModelkilnError(f"keep_as must be one of {', '.join(KEEP_AS)}, got {keep_as!r}")
    if activations not in ACTIVATIONS:
        raise ModelkilnError(f"activations must be one of {', '.join(ACTIVATIONS)}, got {activations!r}")
    plain = ACTIVATIONS[activations]
    task = context.manifest.get("task") or "feature-extraction"
    if task not in ENCODER_TASKS:
        raise ModelkilnError(f"quantize_dynamic_int8 is for encoder artifacts; this one is {task!r}")
    if any(n.op_type == "DynamicQuantizeMatMul" for n in model.graph):
        raise ModelkilnError("the graph is already quantized (it has DynamicQuantizeMatMul nodes); quantize the "
                             "fp32 artifact instead")
    # The guard's variants are sessions from bytes: weights in memory, before any numpy view of the mmap exists.
    ir.external_data.load_to_model(model)
    residual_sums(model)  # the residual sums as one Sum each while the bias moves and routed terms join them
    candidates = _candidates(model)
    if not candidates:
        raise ModelkilnError("int8 quantization needs MatMul nodes with constant float weights, and this graph has "
                             "none; nothing to quantize")
    excluded = [c.label for c in candidates if _matches(c, exclude)]
    pool = [c for c in candidates if c.label not in excluded]
    if not pool:
        raise ModelkilnError(f"--exclude {', '.join(exclude)} matches every quantizable MatMul "
                             f"({len(candidates)}); nothing would be quantized")

    inputs = [v.name for v in model.graph.inputs]
    guard = _Guard(model, task, lambda texts=None: corpus_batches(context.artifact_dir, task, inputs,
                                                                   context.manifest, texts), pool, keep_as, plain)
    amax = guard.channel_absmax() if outlier_channels or smooth_percentile else {}
    # fp32 rewrites that keep the outputs (up to float rounding) and leave the int8 inputs without outliers
    routed = _route_gelu_outliers(model, pool, amax, outlier_channels, outlier_ratio) if outlier_channels else {}
    smoothed = _smooth_inputs(model, pool, amax, float(smooth_percentile)) if smooth_percentile else {}
    if routed or smoothed:
        guard.rebase(model)
    for c in pool:
        if c.label not in smoothed:  # (a smoothed input has no channel far above the rest left)
            c.choose_outliers(amax.get(c.label), outlier_channels, outlier_ratio)
        c.quantize_weight(per_channel, reduce_range)
    if min_cosine:
        target = 1.0 - (1.0 - GUARD_HEADROOM) * (1.0 - float(min_cosine))
        kept, measured, trials = guard.search(target, asked=float(min_cosine))
    else:
        kept, measured, trials = [], guard.measure({c.label for c in pool}, exact=True), 1
    chosen = [c for c in pool if c.label not in kept]
    _apply_all(model, pool, {c.label: keep_as if c.label in kept else plain for c in pool})
    residual_adds(model)  # as fuse_encoder leaves them: Adds, faster than Sum (graphs/encoder_fusions.py)
    _tidy(model)

    outliers = {c.label: [int(i) for i in c.outliers] for c in chosen if c.outliers is not None}
    result: dict[str, Any] = {
        "quantized": len(chosen), "outlier_split": len(outliers), "gelu_routed": len(routed),
        "smoothed": len(smoothed), "kept": kept, "kept_as": keep_as, "excluded": excluded,
        "per_channel": per_channel, "reduce_range": reduce_range, "min_cosine": min_cosine,
        "activations": activations,
        "measured_worst_cosine": round(measured.worst_cosine, 6), "measured_mean_cosine": round(measured.mean_cosine, 6),
        "label_changes": measured.label_changes, "tied_label_changes": measured.tied_changes,
        "labels_compared": measured.labels, "guard_rows": len(measured.cosines), "guard_trials": trials,
    }
    criterion = ("worst mean-pooled embedding cosine >= min_cosine" if task in EMBEDDING_TASKS
                 else "argmax labels unchanged (the cosine is the logits', reported)")
    context.manifest_updates.update({  # `precision` stays the activations' (fp32), as for the decoders' int4/int8
        "quantization": {
            "weights": "int8", "activations": ("int8, dynamic, per token" if activations == "per_token"
                                               else "uint8, dynamic, per tensor"), "method": "dynamic",
            "per_channel": per_channel, "reduce_range": reduce_range, "kept": kept, "kept_as": keep_as,
            "excluded": excluded,
            "outlier_channels": outliers, "gelu_routed_channels": routed,
            "smoothed": {label: round(float(peak), 3) for label, peak in smoothed.items()}, "min_cosine": min_cosine,
            "measured_worst_cosine": result["measured_worst_cosine"],
            "measured_mean_cosine": result["measured_mean_cosine"], "label_changes": measured.label_changes,
            "criterion": criterion, "measured_against": "the fp32 graph, on modelkiln.graphs.encoder_corpus",
        },
    })
    return result


# ---------------------------------------------------------------------------------------------- candidates


@dataclass
class _Candidate:
    """One quantizable MatMul: `label` names it for people (its layer: `...layer.0.intermediate.dense`)."""

    node_name: str
    label: str
    weight_name: str
    weight: np.ndarray  # [K, N] float32
    outliers: np.ndarray | None = None  # input channels computed in float
    quantized: np.ndarray | None = None  # int8 [K, N] (outlier rows zero)
    scale: np.ndarray | None = None  # float32 [N] or scalar

    def choose_outliers(self, absmax: np.ndarray | None, count: int, ratio: float) -> None:
        """The `count` largest input channels, when the largest is `ratio` times the 99th percentile or more."""
        self.outliers = None
        if absmax is None or count == 0 or absmax.size <= count:
            return
        if absmax.max() >= ratio * max(float(np.percentile(absmax, 99)), 1e-12):
            self.outliers = np.sort(np.argsort(absmax)[::-1][:count]).astype(np.int64)

    def quantize_weight(self, per_channel: bool, reduce_range: bool) -> None:
        qmax = 63.0 if reduce_range else 127.0
        weight = self.weight
        if self.outliers is not None:
            weight = weight.copy()
            weight[self.outliers] = 0.0  # those rows run in float: keep them out of the int8 range too
        peak = np.abs(weight).max(axis=0) if per_channel else np.abs(weight).max(keepdims=False)
        scale = np.where(peak > 0, peak / qmax, 1.0).astype(np.float32)
        self.quantized = np.clip(np.rint(weight / scale), -qmax, qmax).astype(np.int8)
        self.scale = np.asarray(scale, dtype=np.float32)

    def apply(self, model: ir.Model, shared: dict | None = None, switch: ir.Value | None = None,
              mode: str = "int8") -> None:
        """MatMul(x, W) [-> Add(bias) | BiasGelu(bias)]  =>  DynamicQuantizeMatMul(x, W_q, scale[, bias]) [-> Gelu],
        plus, with outlier channels, `+ Gather(x, idx) @ W[idx]` on a `x * keep` input.

        `mode` "int8": as above; where `shared["int8_readers"]` counts several readers of x, x is quantized once
        for them (`_per_tensor_input`) and each reader is a MatMulIntegerToFloat.
        `mode` "per_token": one int8 scale per row of x (`_per_token_input`), MatMulIntegerToFloat(x_q, W_q,
        row scale, scale); the bias stays where it was.
        `mode` "w8a16": 16-bit activations in two int8 passes (W8A16), for the MatMuls the guard keeps out of plain
        int8: x = x_q + r with r = x - dequant(x_q) quantized again on its own (tiny) scale, so only the weights'
        rounding is left -- as accurate as float for the guard, at about half a float MatMul's cost (MiniLM FFN,
        [640, 384] x [384, 1536], one thread: 4.5 ms vs 6.7 ms float, 2.0 ms int8):
            DynamicQuantizeLinear(x) -> MatMulIntegerToFloat(x_q, W_q) + DynamicQuantizeMatMul(x - dequant(x_q), W_q)

        With `switch` (a bool scalar) the float path stays and `Where(switch, int8, float)` picks one at run time:
        the guard's switchboard graph (plain "int8" or "per_token" only)."""
        assert mode in ACTIVATION_MODES, mode
        precise = mode == "w8a16"
        assert not (precise and switch is not None), "the switchboard compares int8 with float"
        graph = model.graph
        node = next(n for n in graph if n.name == self.node_name)
        x = node.inputs[0]
        shared = {} if shared is None else shared
        key = self.weight_name if self.outliers is None else f"{self.weight_name}@{self.node_name}"
        if key not in shared:  # ALBERT-style shared layers: one int8 copy per shared weight
            shared[key] = (_initializer(graph, f"{self.weight_name}.int8", self.quantized),
                           _initializer(graph, f"{self.weight_name}.scale", self.scale))
        w_q, scale = shared[key]
        extra: list[ir.Node] = []
        correction = None
        if self.outliers is not None:
            keep = np.ones(self.weight.shape[0], dtype=np.float32)
            keep[self.outliers] = 0.0
            masked = ir.node("Mul", [x, _initializer(graph, f"{self.weight_name}.keep", keep)])
            gathered = ir.node("Gather", [x, _initializer(graph, f"{self.weight_name}.outlier_index", self.outliers)],
                               attributes={"axis": -1})
            small = ir.node("MatMul", [gathered.outputs[0], _initializer(graph, f"{self.weight_name}.outlier_rows",
                                                                         self.weight[self.outliers])])
            extra, x, correction = [masked, gathered, small], masked.outputs[0], small.outputs[0]
        out = node.outputs[0]
        after, bias = bias_after(out) if mode != "per_token" else (None, None)
        total = None
        if after is None and switch is None and mode != "per_token":  # residual Sum(y, x, bias) -> Sum(y + bias, x)
            total, bias = bias_in_sum(out, self.weight.shape[1])
        biased = [bias] if bias is not None else []
        if mode == "per_token":  # (the bias stays where it is: MatMulIntegerToFloat would scale it by the row's)
            x_q, x_scale = _per_token_input(graph, node, x, shared)
            fused = ir.node("MatMulIntegerToFloat", [x_q, w_q, x_scale, scale, shared_initializer(
                graph, "modelkiln_uint8_128", np.array(128, dtype=np.uint8))], domain=MS_DOMAIN,
                name=f"{self.node_name}_int8_per_token")
            more = [correction] if correction is not None else []
        elif precise:  # (the first digit is the plain int8 one: shared with the int8 MatMuls that read x)
            x_q, x_scale, x_zero = _per_tensor_input(graph, node, x, shared)
            rounded = ir.node("DequantizeLinear", [x_q, x_scale, x_zero])
            rest = ir.node("Sub", [x, rounded.outputs[0]])
            fused = ir.node("MatMulIntegerToFloat", [x_q, w_q, x_scale, scale, x_zero, None, *biased],
                            domain=MS_DOMAIN, name=f"{self.node_name}_w8a16")
            second = ir.node("DynamicQuantizeMatMul", [rest.outputs[0], w_q, scale], domain=MS_DOMAIN,
                             name=f"{self.node_name}_w8a16_rest")
            extra += [rounded, rest, second]
            more = [second.outputs[0]] + ([correction] if correction is not None else [])
        elif switch is None and shared.get("int8_readers", {}).get(x.name, 0) > 1:  # x quantized once for all
            x_q, x_scale, x_zero = _per_tensor_input(graph, node, x, shared)
            fused = ir.node("MatMulIntegerToFloat", [x_q, w_q, x_scale, scale, x_zero, None, *biased],
                            domain=MS_DOMAIN, name=f"{self.node_name}_int8")
            more = [correction] if correction is not None else []
        else:
            fused = ir.node("DynamicQuantizeMatMul", [x, w_q, scale, None, *biased], domain=MS_DOMAIN,
                            name=f"{self.node_name}_int8")
            more = [correction] if correction is not None else []
        for new in (*extra, fused):
            graph.insert_before(node, new)
        result = fused.outputs[0]
        model.opset_imports.setdefault(MS_DOMAIN, 1)
        if total is not None:  # one Sum fewer input of [tokens, N] to read; the other terms join it
            terms = [result if v is out else v for v in total.inputs if v is not bias]
            summed = ir.node("Sum", terms + more, name=total.name)
            graph.insert_before(total, summed)
            _replace(graph, total.outputs[0], summed.outputs[0])
            graph.remove([total, node], safe=True)
            return
        for term in more:
            add = ir.node("Add", [result, term])
            graph.insert_before(node, add)
            result = add.outputs[0]
        if after is not None and after.op_type == "BiasGelu":  # the bias went into the MatMul: plain Gelu now
            gelu = ir.node("Gelu", [result], domain=MS_DOMAIN)
            graph.insert_before(node, gelu)
            result = gelu.outputs[0]
        replaced = after.outputs[0] if after is not None else out
        if switch is not None:
            uses = list(replaced.uses())
            pick = ir.node("Where", [switch, result, replaced])
            graph.insert_after(after or node, pick)
            for use in uses:
                use.node.replace_input_with(use.idx, pick.outputs[0])
            if replaced.is_graph_output():  # (not _replace: pick itself reads `replaced`)
                _swap_output(graph, replaced, pick.outputs[0])
            return
        _replace(graph, replaced, result)
        graph.remove([n for n in (after, node) if n is not None], safe=True)


def _apply_all(model: ir.Model, pool: list[_Candidate], modes: dict[str, str]) -> None:
    """Each candidate as `modes[label]` says ("int8", "w8a16", "per_token"; "fp32" stays float)."""
    nodes = {n.name: n for n in model.graph}
    readers: dict[str, int] = {}
    for c in pool:  # int8 and W8A16 MatMuls that share an input share its (per-tensor) quantization
        if modes[c.label] in ("int8", "w8a16") and c.outliers is None:
            name = nodes[c.node_name].inputs[0].name
            readers[name] = readers.get(name, 0) + 1
    shared: dict = {"int8_readers": readers}
    for c in pool:
        if modes[c.label] != "fp32":
            c.apply(model, shared, mode=modes[c.label])


def _per_token_input(graph: ir.Graph, node: ir.Node, x: ir.Value, shared: dict) -> tuple[ir.Value, ir.Value]:
    """x [.., K] -> (uint8 x_q [.., K], float scale [.., 1]): symmetric int8 per row (token), stored with zero point
    128, scale = max |x| over the row / 127; one per input, shared by the MatMuls that read it (q, k, v).

    Abs, ReduceMax, Div, QuantizeLinear: in the whole MiniLM graph this was faster than ReduceMax/ReduceMin and a
    per-axis QuantizeLinear on a [rows, K] view (25.2 vs 26.8 ms at [32, 20]; alone that chain was faster, 0.17 vs
    0.26 ms on [32, 20, 384], but its extra Shape/Reshape/ConstantOfShape nodes cost more in the graph), and the
    blocked QuantizeLinear of opset 21, which takes [.., 1] scales directly, was 20x slower."""
    key = f"per_token@{x.name}"
    if key not in shared:
        absolute = ir.node("Abs", [x])
        peak = ir.node("ReduceMax", [absolute.outputs[0], shared_initializer(
            graph, "modelkiln_axes_last", np.array([-1], dtype=np.int64))], attributes={"keepdims": 1})  # [.., 1]
        step = ir.node("Mul", [peak.outputs[0], shared_initializer(graph, "modelkiln_inverse_127",
                                                                   np.array(1.0 / 127.0, dtype=np.float32))])
        safe = ir.node("Max", [step.outputs[0], shared_initializer(graph, "modelkiln_tiny_scale",
                                                                  np.array(1e-30, dtype=np.float32))])  # zero rows
        scaled = ir.node("Div", [x, safe.outputs[0]])
        quantized = ir.node("QuantizeLinear", [scaled.outputs[0], shared_initializer(
            graph, "modelkiln_one", np.array(1.0, dtype=np.float32)), shared_initializer(
            graph, "modelkiln_uint8_128", np.array(128, dtype=np.uint8))])
        for new in (absolute, peak, step, safe, scaled, quantized):
            graph.insert_before(node, new)
        shared[key] = (quantized.outputs[0], safe.outputs[0])
    return shared[key]


def _per_tensor_input(graph: ir.Graph, node: ir.Node, x: ir.Value, shared: dict) -> tuple[ir.Value, ...]:
    """DynamicQuantizeLinear(x), once for all the plain int8 MatMuls that read x (q, k and v read one input): what
    DynamicQuantizeMatMul does inside, without quantizing x three times (MiniLM: 0.07 ms per [32, 20, 384])."""
    key = f"per_tensor@{x.name}"
    if key not in shared:
        digits = ir.node("DynamicQuantizeLinear", [x], num_outputs=3)
        graph.insert_before(node, digits)
        shared[key] = tuple(digits.outputs)
    return shared[key]


def _candidates(model: ir.Model) -> list[_Candidate]:
    found = []
    for i, node in enumerate(model.graph):
        if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx"):
            continue
        x, w = node.inputs
        if w is None or not w.is_initializer() or w.const_value is None or w.dtype != ir.DataType.FLOAT:
            continue
        if len(w.shape) != 2 or x is None or x.dtype not in (None, ir.DataType.FLOAT):
            continue
        if not node.name:
            node.name = f"matmul_{i}"
        found.append(_Candidate(node.name, _label(node), w.name, w.const_value.numpy()))
    labels = [c.label for c in found]
    for c in found:  # labels must be unique: they are what `kept` and --exclude name
        if labels.count(c.label) > 1:
            c.label = f"{c.label}:{c.node_name}"
    return found


def _label(node: ir.Node) -> str:
    """The weight's layer name: its own name when it has one (`...attention.query.weight`), else the name of the
    bias that follows it (`...layer.0.intermediate.dense.bias`), else the node's name."""
    weight = node.inputs[1]
    if weight is not None and not weight.name.startswith(("val_", "_")) and "folded" not in weight.name:
        return weight.name.removesuffix(".weight")
    for use in node.outputs[0].uses():
        consumer = use.node
        biases = {"Add": [1 - use.idx], "Sum": range(len(consumer.inputs)), "BiasGelu": [1],
                  "SkipLayerNormalization": [4]}.get(consumer.op_type, [])
        for i in biases:
            bias = consumer.inputs[i] if i < len(consumer.inputs) else None
            if bias is not None and bias.is_initializer() and len(bias.shape or ()) == 1 and bias.name.endswith(".bias"):
                return bias.name.removesuffix(".bias")
    return node.name


def _matches(c: _Candidate, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns for name in (c.label, c.node_name, c.weight_name))


def _replace(graph: ir.Graph, old: ir.Value, new: ir.Value) -> None:
    """old.replace_all_uses_with(new); a graph output keeps its place and name."""
    if old.is_graph_output():
        _swap_output(graph, old, new)
    old.replace_all_uses_with(new)


def _swap_output(graph: ir.Graph, old: ir.Value, new: ir.Value) -> None:
    index = graph.outputs.index(old)
    name, shape, dtype = old.name, old.shape, old.dtype
    old.name = f"{name}_float"
    new.name, new.shape, new.dtype = name, shape, dtype
    graph.outputs[index] = new


# ---------------------------------------------------------------------------------------------- outlier rewrites
# Both rewrites change the fp32 graph without changing what it computes (up to float rounding), so that the int8
# inputs they leave behind have no channel far above the rest; both cost less than the outlier split, whose
# full-size Mul and Add cost as much as an int8 MatMul on MiniLM.

SMOOTH_RATIO = 2.0  # smooth an input whose largest channel is this many times its `smooth_percentile` or more


def _route_gelu_outliers(model: ir.Model, pool: list[_Candidate], amax: dict[str, np.ndarray], count: int,
                         ratio: float) -> dict[str, list[int]]:
    """The FFN's GELU output channels that carry massive activations, taken around both FFN MatMuls:

        MatMul(r, Wi) -> BiasGelu(bi) -> MatMul(h, Wd) -> Sum(..)
     => MatMul(r, Wi·keep) -> BiasGelu(bi·keep) -> MatMul(h, Wd·keep)
            -> Sum(.., BiasGelu(r @ Wi[:, idx], bi[idx]) @ Wd[idx])

    Exact, because Gelu(0) = 0: the zeroed columns of Wi give zero GELU outputs, so the int8 input of the down
    projection has no outliers left, and the `count` channels are computed in float from r at [tokens, count] size
    (no full-size Mul or Add, unlike the outlier split). For each FFN whose GELU output's largest channel is `ratio`
    times its 99th percentile or more (MiniLM: 24 vs 4.8 at the [CLS] token of layer 0). Returns {down label: idx}.
    """
    graph = model.graph
    nodes = {n.name: n for n in graph}
    by_node = {c.node_name: c for c in pool}
    routed: dict[str, list[int]] = {}
    for down in pool:
        peak = amax.get(down.label)
        node = nodes[down.node_name]
        gelu = node.inputs[0].producer() if node.inputs[0] is not None else None
        if peak is None or peak.size <= count or gelu is None or gelu.op_type != "BiasGelu" or gelu.domain != MS_DOMAIN:
            continue
        up_node = gelu.inputs[0].producer() if gelu.inputs[0] is not None else None
        bias = gelu.inputs[1]
        up = by_node.get(up_node.name) if up_node is not None else None
        if (up is None or bias is None or bias.const_value is None or len(bias.shape) != 1
                or only_use(gelu.inputs[0]) is not gelu or only_use(node.inputs[0]) is not node
                or any(len(v.uses()) != 1 for v in (up_node.inputs[1], node.inputs[1]))):
            continue  # (shared weights, ALBERT-style, would be rewritten for every layer that reads them)
        if peak.max() < ratio * max(float(np.percentile(peak, 99)), 1e-12):
            continue
        idx = np.sort(np.argsort(peak)[::-1][:count]).astype(np.int64)
        b = bias.const_value.numpy()
        name = down.label.replace(":", "_")
        small_up = ir.node("MatMul", [up_node.inputs[0], _initializer(graph, f"{name}.routed_in", up.weight[:, idx])],
                           name=f"{down.node_name}_routed_up")
        small_gelu = ir.node("BiasGelu", [small_up.outputs[0], _initializer(graph, f"{name}.routed_bias", b[idx])],
                             domain=MS_DOMAIN)
        small_down = ir.node("MatMul", [small_gelu.outputs[0],
                                        _initializer(graph, f"{name}.routed_out", down.weight[idx])],
                             name=f"{down.node_name}_routed_down")
        for new in (small_up, small_gelu, small_down):
            graph.insert_before(node, new)
        up.weight = up.weight.copy()
        up.weight[:, idx] = 0.0
        down.weight = down.weight.copy()
        down.weight[idx] = 0.0
        b = b.copy()
        b[idx] = 0.0
        if len(bias.uses()) > 1:  # a bias deduplicated at export (equal zeros of several layers): this layer's own
            gelu.replace_input_with(1, _initializer(graph, f"{name}.bias", b))
        else:
            bias.const_value = ir.tensor(b.astype(np.float32), name=bias.name)
        for value, array in ((up_node.inputs[1], up.weight), (node.inputs[1], down.weight)):
            value.const_value = ir.tensor(np.ascontiguousarray(array, dtype=np.float32), name=value.name)
        _add_to_output(graph, node, small_down.outputs[0])
        amax[down.label] = peak.copy()
        amax[down.label][idx] = 0.0
        routed[down.label] = [int(i) for i in idx]
    return routed


def _smooth_inputs(model: ir.Model, pool: list[_Candidate], amax: dict[str, np.ndarray],
                   percentile: float) -> dict[str, float]:
    """SmoothQuant-style: an input whose largest channels stand far above the rest is divided per channel by
    s = max(1, amax / percentile(amax)) and the weight rows multiplied by s (x/s @ s·W = x @ W): the outlier
    channels move into the weights, which are quantized per output column. One `Mul` per input, shared by the
    MatMuls that read it (q, k and v read one); folded into the LayerNorm instead when the MatMuls are its only
    readers (pre-LN models; BERT's post-LN output also feeds the residual, hence the Mul). GELU outputs are left
    to `_route_gelu_outliers`: a Mul on them costs four times as much. MiniLM: worst corpus cosine with every
    MatMul int8 0.963 -> 0.986 with both rewrites. Returns {label: largest s}.
    """
    graph = model.graph
    nodes = {n.name: n for n in graph}
    groups: dict[str, tuple[ir.Value, list[_Candidate]]] = {}
    for c in pool:
        x = nodes[c.node_name].inputs[0]
        producer = x.producer() if x is not None else None
        if x is None or amax.get(c.label) is None or len(nodes[c.node_name].inputs[1].uses()) != 1:
            continue
        if producer is not None and producer.op_type in ("Gelu", "BiasGelu", "FastGelu"):
            continue
        groups.setdefault(x.name, (x, []))[1].append(c)
    smoothed: dict[str, float] = {}
    for x, members in groups.values():
        peak = amax[members[0].label]
        floor = max(float(np.percentile(peak, percentile)), 1e-12)
        if peak.max() < SMOOTH_RATIO * floor:
            continue
        scale = np.maximum(1.0, peak / floor).astype(np.float32)  # [K]
        for c in members:
            c.weight = (c.weight * scale[:, None]).astype(np.float32)
            w = nodes[c.node_name].inputs[1]
            w.const_value = ir.tensor(c.weight, name=w.name)
            amax[c.label] = (peak / scale).astype(np.float32)
            smoothed[c.label] = float(scale.max())
        readers = {use.node.name for use in x.uses()}
        norm = x.producer()
        if (norm is not None and norm.op_type == "LayerNormalization" and readers == {c.node_name for c in members}
                and not x.is_graph_output() and len(norm.inputs) == 3
                and all(v is not None and v.const_value is not None and len(v.uses()) == 1 for v in norm.inputs[1:])):
            for value in norm.inputs[1:]:
                value.const_value = ir.tensor((value.const_value.numpy() / scale).astype(np.float32), name=value.name)
            continue
        name = members[0].label.replace(":", "_")
        mul = ir.node("Mul", [x, _initializer(graph, f"{name}.smooth_inverse", (1.0 / scale).astype(np.float32))],
                      name=f"{members[0].node_name}_smooth")
        graph.insert_before(nodes[members[0].node_name], mul)
        for c in members:
            nodes[c.node_name].replace_input_with(0, mul.outputs[0])
    return smoothed


def _add_to_output(graph: ir.Graph, node: ir.Node, term: ir.Value) -> None:
    """node's output + term, for every reader of node's output: an extra input of the Sum that reads it (the
    residual sum of a fused graph), else an Add after the node."""
    out = node.outputs[0]
    total = only_use(out)
    if total is not None and total.op_type == "Sum" and total.domain in ("", "ai.onnx"):
        wider = ir.node("Sum", [*total.inputs, term], name=total.name)
        graph.insert_before(total, wider)
        _replace(graph, total.outputs[0], wider.outputs[0])
        graph.remove(total, safe=True)
        return
    uses = list(out.uses())
    add = ir.node("Add", [out, term])
    graph.insert_after(node, add)
    for use in uses:
        use.node.replace_input_with(use.idx, add.outputs[0])
    if out.is_graph_output():
        _swap_output(graph, out, add.outputs[0])


def _tidy(model: ir.Model) -> None:
    from onnx_ir.passes import common as ir_common

    ir_common.RemoveUnusedNodesPass()(model)  # unused initializers too
    ir_common.TopologicalSortPass()(model)


# ---------------------------------------------------------------------------------------------- the guard


@dataclass
class _Batch:
    feed: dict[str, np.ndarray]
    mask: np.ndarray  # [batch, seq] attention mask
    focus: np.ndarray | None  # positions that count for per-token heads (fill-mask: the masked ones)
    texts: list  # the corpus entries of the rows, in order


class _Guard:
    """Runs variants of the graph on the corpus and compares them with the fp32 graph."""

    def __init__(self, model: ir.Model, task: str, encode, pool: list[_Candidate], keep_as: str = "fp32",
                 plain: str = "int8"):
        self.proto = ir.to_proto(model)  # fp32, q/k/v as MatMuls: the base every variant starts from
        self.size = sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)
        self.task, self.encode, self.pool, self.keep_as, self.plain = task, encode, pool, keep_as, plain
        self.output_names = [o.name for o in model.graph.outputs]
        self.batches = encode()
        self.reference = self._run(self.proto, self.batches)
        self.trials = 0  # graph variants measured
        self._board = None

    def rebase(self, model: ir.Model) -> None:
        """Start the variants from `model` from now on: the fp32 graph after the outlier rewrites, which compute
        the same outputs (the reference stays)."""
        self.proto = ir.to_proto(model)
        self.size = sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)
        self._board = None

    def switchboard(self):
        """One session in which every candidate runs both ways and a bool input picks (`_Candidate.apply(switch=)`):
        the guard's many variants without serializing the model and building a session for each (0.45 s each on
        MiniLM; a board run costs about two fp32 runs). Built once the weights are quantized."""
        if self._board is None:
            variant = ir.from_proto(self.proto)
            board = ir.Value(name="modelkiln_int8_switch", shape=ir.Shape([len(self.pool)]),
                             type=ir.TensorType(ir.DataType.BOOL))
            variant.graph.inputs.append(board)
            shared: dict = {}
            for i, c in enumerate(self.pool):
                index = _initializer(variant.graph, f"modelkiln_switch_{i}", np.array(i, dtype=np.int64))
                pick = ir.node("Gather", [board, index], attributes={"axis": 0})
                node = next(n for n in variant.graph if n.name == c.node_name)
                variant.graph.insert_before(node, pick)
                c.apply(variant, shared, switch=pick.outputs[0], mode=self.plain)
            self._board = _session(ir.to_proto(variant), 2 * self.size)
        return self._board

    def _run(self, proto, batches: list[_Batch], names: list[str] | None = None) -> list[list[np.ndarray]]:
        session = _session(proto, self.size)
        inputs = {i.name for i in session.get_inputs()}
        return [session.run(names or self.output_names, {k: v for k, v in b.feed.items() if k in inputs})
                for b in batches]

    def measure(self, quantized: set[str], on: tuple[list[_Batch], list] | None = None,
                exact: bool = False) -> Agreement:
        """The corpus (or `on`: other batches and their fp32 outputs) with the MatMuls labelled in `quantized`
        int8, against fp32; on the switchboard, or `exact`ly on the graph as it will be saved."""
        batches, reference = on or (self.batches, self.reference)
        self.trials += 1
        if exact:  # the graph as it will be saved
            variant = ir.from_proto(self.proto)
            _apply_all(variant, self.pool, {c.label: self.plain if c.label in quantized else self.keep_as
                                            for c in self.pool})
            outputs = self._run(ir.to_proto(variant), batches)
        else:
            board = self.switchboard()
            switch = np.array([c.label in quantized for c in self.pool])
            names = {i.name for i in board.get_inputs()}
            outputs = [board.run(self.output_names, {**{k: v for k, v in b.feed.items() if k in names},
                                                     "modelkiln_int8_switch": switch}) for b in batches]
        total = Agreement()
        for batch, expected, actual in zip(batches, reference, outputs):
            total.extend(agreement(self.task, dict(zip(self.output_names, expected)),
                                   dict(zip(self.output_names, actual)), batch.mask, batch.focus))
        return total

    def channel_absmax(self) -> dict[str, np.ndarray]:
        """Per candidate: max |x| of each input channel over the corpus's real tokens (one fp32 run)."""
        variant = ir.from_proto(self.proto)
        nodes = {n.name: n for n in variant.graph}
        inputs = {c.label: nodes[c.node_name].inputs[0] for c in self.pool}
        names: list[str] = []
        for x in inputs.values():
            if x.name not in names:
                x.dtype = x.dtype or ir.DataType.FLOAT
                if not x.is_graph_output():
                    variant.graph.outputs.append(x)
                names.append(x.name)
        amax: dict[str, np.ndarray] = {}
        for batch, values in zip(self.batches, self._run(ir.to_proto(variant), self.batches, names)):
            by_name = dict(zip(names, values))
            real = batch.mask.astype(bool)
            for label, x in inputs.items():
                value = by_name[x.name]
                rows = value[real] if value.ndim == 3 and value.shape[:2] == real.shape else value.reshape(
                    -1, value.shape[-1])
                amax[label] = np.maximum(amax.get(label, 0.0), np.abs(rows).max(axis=0))
        return amax

    def search(self, min_cosine: float, asked: float | None = None) -> tuple[list[str], Agreement, int]:
        """The smallest k such that keeping the k most damaging MatMuls in float meets the target (`min_cosine`,
        the user's `asked` one plus headroom)."""
        asked = min_cosine if asked is None else asked
        everything = {c.label for c in self.pool}
        results = {0: self.measure(everything, exact=True)}
        if results[0].passes(min_cosine, self.task):
            return [], results[0], self.trials
        order = self.rank(results[0])
        n = len(order)

        def keep_float(k: int) -> bool:
            results[k] = self.measure(set(order[k:]))
            return results[k].passes(min_cosine, self.task)

        low, high, k = 0, None, 1  # keep_float(low) fails; double k until one passes (n - 1 tried last)
        while high is None and k < n:
            if keep_float(k):
                high = k
            else:
                low = k
                k = n - 1 if k < n - 1 <= 2 * k else 2 * k
        if high is None:
            worst = results[low]
            raise ModelkilnError(
                f"int8 cannot meet min_cosine {asked} on the guard corpus: even with {low} of {n} MatMuls kept "
                f"in float the worst sentence is at cosine {worst.worst_cosine:.4f} ({worst.label_changes} label "
                "changes); lower --min-cosine or keep the model in fp32")
        while high - low > 1:
            mid = (low + high) // 2
            if keep_float(mid):
                high = mid
            else:
                low = mid
        # the board's Where nodes can change which fusions onnxruntime applies: confirm on the real graph
        while high < n:
            final = self.measure(set(order[high:]), exact=True)
            if final.passes(min_cosine, self.task):
                return order[:high], final, self.trials
            high += 1
        raise ModelkilnError(f"int8 cannot meet min_cosine {asked} on the guard corpus with fewer than all "
                             f"{n} MatMuls in float; lower --min-cosine or keep the model in fp32")

    def rank(self, everything: Agreement) -> list[str]:
        """Labels, most damaging first: label changes, then the worst-sentence cosine loss per weight with only
        that MatMul int8, one session each, on the RANKING_ROWS sentences that fared worst with everything int8
        (the ones the target is about, and a fraction of the corpus's run time); for very large graphs, each
        MatMul's own output error instead. (MiniLM: ranked by loss alone, the guard kept four 384x1536 FFN
        projections and three values, 48.4 ms at batch 32 x 20 tokens on one thread; per weight, three and four,
        45.4 ms, and a better held-out worst cosine, 0.9921 vs 0.9913.)"""
        if len(self.pool) > MEASURED_RANKING_LIMIT:
            return self._rank_local()
        rows = [text for batch in self.batches for text in batch.texts]
        worst = sorted(range(len(rows)), key=lambda i: (-(i in everything.changed_rows), everything.cosines[i]))
        batches = self.encode([rows[i] for i in worst[:RANKING_ROWS]])
        on = (batches, self._run(self.proto, batches))
        damage = {}
        for c in self.pool:
            alone = self.measure({c.label}, on)
            # per weight: keeping a MatMul out of plain int8 costs in proportion to its size (MiniLM: a 384x1536
            # FFN projection four times a 384x384 value), so the cheap damaging ones go first
            damage[c.label] = (alone.label_changes, (1.0 - alone.worst_cosine) / c.weight.size)
        return sorted(damage, key=damage.get, reverse=True)

    def _rank_local(self) -> list[str]:
        variant = ir.from_proto(self.proto)
        nodes = {n.name: n for n in variant.graph}
        names: list[str] = []
        for c in self.pool:
            x = nodes[c.node_name].inputs[0]
            if x.name not in names:
                x.dtype = x.dtype or ir.DataType.FLOAT
                if not x.is_graph_output():
                    variant.graph.outputs.append(x)
                names.append(x.name)
        errors = {c.label: [0.0, 0.0] for c in self.pool}
        for batch, values in zip(self.batches, self._run(ir.to_proto(variant), self.batches, names)):
            by_name = dict(zip(names, values))
            real = batch.mask.astype(bool)
            for c in self.pool:
                x = by_name[nodes[c.node_name].inputs[0].name]
                rows = x[real] if x.ndim == 3 and x.shape[:2] == real.shape else x.reshape(-1, x.shape[-1])
                exact = rows @ c.weight
                kept = rows.copy()
                if c.outliers is not None:
                    kept[:, c.outliers] = 0.0
                approx = _fake_quantize(kept, x if c.outliers is None else kept) @ (
                    c.quantized.astype(np.float32) * c.scale)
                if c.outliers is not None:
                    approx += rows[:, c.outliers] @ c.weight[c.outliers]
                errors[c.label][0] += float(np.sum((approx - exact) ** 2))
                errors[c.label][1] += float(np.sum(exact ** 2))
        score = {label: num / max(den, 1e-30) for label, (num, den) in errors.items()}
        return sorted(score, key=score.get, reverse=True)


def _fake_quantize(rows: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """What DynamicQuantizeMatMul does to its input: uint8 with one scale and zero point for the whole tensor
    (its range widened to include 0), then back to float."""
    low, high = min(float(whole.min()), 0.0), max(float(whole.max()), 0.0)
    scale = (high - low) / 255.0 or 1.0
    zero = np.clip(np.rint(-low / scale), 0, 255)
    return ((np.clip(np.rint(rows / scale) + zero, 0, 255) - zero) * scale).astype(np.float32)


def _session(proto, weight_bytes: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if weight_bytes < (1 << 30):  # (proto.ByteSize() would cost as much as serializing)
        return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    import onnx  # over the 2 GB protobuf limit in memory: go through external data

    with tempfile.TemporaryDirectory(prefix="modelkiln-guard-") as tmp:
        path = os.path.join(tmp, "model.onnx")
        onnx.save(proto, path, save_as_external_data=True, location="model.onnx.data")
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------------------------- corpus


def corpus_batches(artifact_dir: Path | None, task: str, input_names: list[str], manifest: dict | None = None,
                   texts: Sequence[Any] | None = None, batch_size: int = GUARD_BATCH) -> list[_Batch]:
    """The corpus through the artifact's tokenizer, length-sorted into padded batches of graph inputs."""
    from modelkiln.runtime.tokenizer import PreTrainedTokenizer

    if artifact_dir is None or not (Path(artifact_dir) / "tokenizer.json").is_file():
        raise ModelkilnError("the int8 accuracy guard runs the model on text, so it needs the artifact's tokenizer "
                             "(tokenizer.json); quantize an artifact exported with its tokenizer")
    tok = PreTrainedTokenizer.from_pretrained(artifact_dir)
    limits = [GUARD_MAX_LENGTH, ((manifest or {}).get("encoder") or {}).get("max_sequence_length"),
              tok.model_max_length]
    limit = min(n for n in limits if n)
    if texts is None:
        texts = QUESTION_CONTEXTS if task == "question-answering" else SENTENCES
    if texts and isinstance(texts[0], tuple):
        enc = tok([q for q, _ in texts], [c for _, c in texts], truncation="only_second", max_length=limit)
    else:
        enc = tok(list(texts), truncation=True, max_length=limit)
    rows = list(enc.encodings)
    mask_id = tok.mask_token_id if task == "fill-mask" else None
    if task == "fill-mask" and mask_id is None:
        raise ModelkilnError("a fill-mask artifact's tokenizer must define a mask token for the accuracy guard")
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    order = sorted(range(len(rows)), key=lambda i: len(rows[i].ids))
    batches = []
    for start in range(0, len(order), batch_size):
        chunk = [rows[i] for i in order[start:start + batch_size]]
        width = max(len(r.ids) for r in chunk)
        ids = np.full((len(chunk), width), pad, dtype=np.int64)  # [batch, width]
        mask = np.zeros((len(chunk), width), dtype=np.int64)
        types = np.zeros((len(chunk), width), dtype=np.int64)
        focus = np.zeros((len(chunk), width), dtype=bool) if mask_id is not None else None
        for row, r in enumerate(chunk):
            n = len(r.ids)
            ids[row, :n], mask[row, :n], types[row, :n] = r.ids, r.attention_mask, r.type_ids
            if focus is not None:  # mask every 5th real token (not the specials at either end)
                positions = np.arange(1, max(n - 1, 1), 5)
                ids[row, positions] = mask_id
                focus[row, positions] = True
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        batches.append(_Batch({k: v for k, v in feed.items() if k in input_names}, mask, focus,
                              [texts[i] for i in order[start:start + batch_size]]))
    return batches
