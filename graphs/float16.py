"""fp16/bf16 conversion of an fp32 graph: weights and compute in half precision, float32 I/O, sensitive ops in fp32.

    convert_precision(model, precision="fp16")      # the pass `modelkiln optimize ART OUT --precision fp16` runs

Our own onnx_ir rewrite rather than onnxruntime's `float16.convert_float_to_float16`: that tool does no bf16; on
our fused graphs its output does not load (onnxruntime 1.31: "two nodes with same node name
(embedding_cast_to_fp32_node)", from the Casts it adds around a value read by two blocked norms); and it blocks
only whole op types or listed nodes, so it cannot tell the rotary/position arithmetic (which must stay fp32) from
ordinary Muls. One implementation serves both precisions, on the graph as onnx_ir holds it (weights stay external).

What becomes what (each node is decided once, in graph order):

- **kept fp32** (`KEEP_FP32_OPS`): normalizations (LayerNormalization,
  SimplifiedLayerNormalization, SkipSimplifiedLayerNormalization, SkipLayerNormalization, ...), Softmax, Cos/Sin, Log.
  Their inputs are cast to fp32 and their outputs count as half-precision values: each consumer that computes in
  half precision reads one shared Cast of them. A fused SkipSimplifiedLayerNormalization therefore carries the
  residual stream in fp32 from layer to layer, which costs one Cast per layer.
- **fp32 chains** (`FP32_CHAIN_OPS`: Pow, ReduceMean/ReduceSum/..., Exp, CumSum, Range): results that overflow fp16
  (x² of an RMSNorm input above 256, exp of anything above 11) stay fp32 *and so does everything computed only from
  them* — RMSNorm's Pow → ReduceMean → Add(eps) → Sqrt → Reciprocal runs in fp32, and the first node that mixes in
  a half-precision activation (the Mul by x) reads a Cast of the small result.
- **integer-derived values stay fp32**: a float made from integers (Cast of position_ids or the attention mask,
  ConstantOfShape) and everything computed only from such values and constants — rotary angles (position ×
  inv_freq up to thousands of radians, where fp16's step is 0.25-2) and mask arithmetic.
- **everything else computes in half precision**: MatMul/Gemm, attention (GroupQueryAttention, Attention,
  MultiHeadAttention), activations, residual adds, reshapes, embedding lookups — EmbedLayerNormalization included,
  although it ends in a LayerNorm: its tables are most of an encoder's weights, and keeping it fp32 would keep them
  fp32 (measured on all-MiniLM-L6-v2: worst sentence cosine 0.9999995 with it in fp16).
- integer and boolean tensors are untouched.

Constants follow their consumers: an initializer read only by half-precision nodes is converted in place (same
name), one read by both keeps its fp32 copy for the fp32 readers. fp16 constants are clamped to ±65504 (an fp32
mask constant of -3.4e38 becomes -65504, not -inf; the result reports how many were clamped); a value computed in
fp32 and cast at run time follows Cast's rule instead (±inf beyond the range). bf16 has fp32's range and rounds to
nearest even.

I/O (keep_io_types): float graph inputs and outputs stay float32 with a Cast at the boundary (logits,
last_hidden_state, ...). The KV cache (`past_key_values.*` / `present.*`, from the manifest's `kv_cache`) is the
exception: it is the converted dtype, because (1) it is the runtime's state, not user I/O — `runtime/decoder.py`
already feeds the cache in the manifest's `kv_cache.dtype`; (2) it halves cache memory; (3) a fused
GroupQueryAttention graph binds one buffer as both past and present and updates it in place, which a Cast on
either side would turn into a full copy of the cache per step.

onnxruntime's CPU provider: x86 has native fp16 kernels for few ops (LayerNormalization, the Skip/Simplified norms,
GroupQueryAttention, data movement); for the rest (MatMul, Add, Softmax, ...) it inserts Casts and computes in fp32
at load time. So on CPU an fp16 graph computes in fp32 over fp16 weights and fp16-stored intermediates (the KV
cache, reshaped q/k/v, norm outputs), a little slower than fp32; a transient fp16 overflow a GPU would hit stays
invisible to a CPU validate. Half precision is for GPU providers (and for size). bf16 has no CPU kernels at all:
the graph is for GPU deployments, and the runtime refuses it on CPU with one line.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import common as ir_common

from modelkiln.graphs.initializers import add_initializer, constant_array
from modelkiln.graphs.passes import PassContext, register_pass
from modelkiln.runtime.errors import ModelkilnError

FLOAT = ir.DataType.FLOAT
LOW_DTYPES = {"fp16": ir.DataType.FLOAT16, "bf16": ir.DataType.BFLOAT16}
FP16_MAX = float(np.finfo(np.float16).max)  # 65504

# Computed in fp32; the result is safe in half precision (bounded, or normalized).
KEEP_FP32_OPS = ("LayerNormalization", "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization",
                 "SkipLayerNormalization", "RMSNormalization", "GroupNormalization", "InstanceNormalization",
                 "BatchNormalization", "Softmax", "LogSoftmax", "Cos", "Sin", "Log")
# Computed in fp32, and the result may not fit fp16: it stays fp32 until it meets a half-precision activation.
FP32_CHAIN_OPS = ("Pow", "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp", "ReduceProd",
                  "Exp", "CumSum", "Range")
DEFAULT_KEEP_FP32 = KEEP_FP32_OPS + FP32_CHAIN_OPS

_QUANTIZED_OPS = {"MatMulNBits", "GatherBlockQuantized", "DynamicQuantizeMatMul", "QuantizeLinear",
                  "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "QLinearMatMul"}
_BOOL_OUTPUT_OPS = {"Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN",
                    "IsInf"}
_INT64_OUTPUT_OPS = {"Shape", "Size", "NonZero", "ArgMax", "ArgMin", "NonMaxSuppression"}
# Outputs whose type is fixed to float32 whatever the inputs are (the norms' mean / inv_std_var stash, type U)
_FLOAT_STASH_OUTPUTS = {"LayerNormalization": (1, 2), "SimplifiedLayerNormalization": (1,),
                        "SkipSimplifiedLayerNormalization": (1, 2), "SkipLayerNormalization": (1, 2)}

_LOW, _FP32 = "low", "fp32"  # a node's compute precision, and the class of a float value


def _attr_dtype(node: ir.Node) -> ir.DataType | None:
    """The output dtype of ops that name it in an attribute (Cast, Constant, ConstantOfShape)."""
    if node.op_type == "Cast":
        return ir.DataType(node.attributes["to"].value)
    if node.op_type == "ConstantOfShape":
        value = node.attributes.get("value")
        return value.value.dtype if value is not None else FLOAT
    if node.op_type == "Constant":
        for name, attr in node.attributes.items():
            if name in ("value", "sparse_value"):
                return attr.value.dtype
            if name in ("value_float", "value_floats"):
                return FLOAT
            if name in ("value_int", "value_ints"):
                return ir.DataType.INT64
            if name in ("value_string", "value_strings"):
                return ir.DataType.STRING
    return None


def infer_dtypes(graph: ir.Graph) -> dict[ir.Value, ir.DataType]:
    """The element type of every value: the recorded one where the graph has it (torch.onnx leaves ~20% of values
    untyped, our fusion passes leave contrib-op outputs untyped), else by the op's typing rule. Needs
    topological order."""
    dtypes: dict[ir.Value, ir.DataType] = {}
    for value in [*graph.inputs, *graph.initializers.values()]:
        if value.dtype is not None:
            dtypes[value] = value.dtype
    for node in graph:
        ins = [dtypes.get(v) if v is not None else None for v in node.inputs]
        for index, out in enumerate(node.outputs):
            if out.dtype is not None:
                dtypes[out] = out.dtype
                continue
            op = node.op_type
            if (fixed := _attr_dtype(node)) is not None:
                dtype = fixed
            elif op in _BOOL_OUTPUT_OPS:
                dtype = ir.DataType.BOOL
            elif op in _INT64_OUTPUT_OPS:
                dtype = ir.DataType.INT64
            elif index in _FLOAT_STASH_OUTPUTS.get(op, ()):
                dtype = FLOAT
            elif op in ("Where", "CastLike"):  # Where(cond, x, y); CastLike(x, like)
                dtype = ins[1]
            elif op == "EmbedLayerNormalization":
                dtype = ir.DataType.INT32 if index == 1 else ins[2]  # mask_index; the word table's type
            else:  # elementwise, data movement, MatMul, attention: the first input's type
                dtype = next((d for d in ins if d is not None), None)
            if dtype is not None:
                dtypes[out] = dtype
    return dtypes


def _to_low(array: np.ndarray, precision: str) -> tuple[np.ndarray, int]:
    """The converted array and how many finite values were clamped to fp16's range (±65504)."""
    array = np.asarray(array, dtype=np.float32)
    if precision == "fp16":
        big = np.isfinite(array) & (np.abs(array) > FP16_MAX)
        return np.where(big, np.sign(array) * FP16_MAX, array).astype(np.float16), int(big.sum())
    import ml_dtypes  # onnx and onnx_ir depend on it; numpy has no bfloat16

    return array.astype(ml_dtypes.bfloat16), 0


def _is_constant(value: ir.Value) -> bool:
    producer = value.producer()
    if producer is None:
        return value.const_value is not None and not value.is_graph_input()
    return producer.op_type == "Constant" and producer.domain in ("", "ai.onnx")


def kv_cache_names(manifest: dict[str, Any]) -> set[str]:
    """past_key_values.{i}.key/value and present.{i}.key/value, from the manifest's kv_cache entry."""
    kv = manifest.get("kv_cache") or {}
    names: set[str] = set()
    for i in range(int(kv.get("num_layers", 0))):
        for key in ("past_key", "past_value", "present_key", "present_value"):
            if kv.get(key):
                names.add(kv[key].format(i=i))
    return names


class _Plan:
    """Phase 1: each node's compute precision and each float value's physical dtype and class, decided in
    graph order without touching the graph (see the module docstring for the rules)."""

    def __init__(self, graph: ir.Graph, dtypes: dict, keep_ops: set[str], chain_ops: set[str],
                 exclude: list[re.Pattern], kv_names: set[str]):
        self.dtypes = dtypes
        self.node_precision: dict[ir.Node, str] = {}
        self.physical: dict[ir.Value, str] = {}  # _LOW or _FP32: what the tensor is stored as
        self.cls: dict[ir.Value, str] = {}       # _LOW or _FP32: what its consumers should compute in
        self.kept: Counter[str] = Counter()
        for value in graph.inputs:
            if self.is_float(value):
                # the KV cache is converted (see the module docstring); other float inputs arrive as float32 and
                # their half-precision readers share one Cast
                self.physical[value] = _LOW if value.name in kv_names else _FP32
                self.cls[value] = _LOW
        for node in graph:
            self._decide(node, keep_ops, chain_ops, exclude)

    def is_float(self, value: ir.Value | None) -> bool:
        return value is not None and self.dtypes.get(value) == FLOAT

    def _decide(self, node: ir.Node, keep_ops: set[str], chain_ops: set[str], exclude: list[re.Pattern]) -> None:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            return
        float_in = [v for v in node.inputs if self.is_float(v)]
        float_out = [v for v in node.outputs if self.is_float(v)]
        if not float_in and not float_out:
            return
        computed = [v for v in float_in if not _is_constant(v)]
        if not float_out:  # Shape, IsNaN, comparisons, Cast to int: read inputs as stored, fp32 when mixed
            stored = {self.physical.get(v, _FP32) for v in computed}
            self.node_precision[node] = _LOW if stored == {_LOW} else _FP32
            return
        excluded = any(p.search(node.name or "") for p in exclude)
        if node.op_type in chain_ops or (not float_in):
            precision, out_cls = _FP32, _FP32  # overflow-prone results, and floats made from integers
        elif node.op_type in keep_ops or excluded:
            precision, out_cls = _FP32, _LOW
        elif any(self.cls.get(v, _LOW) == _LOW for v in computed):
            precision, out_cls = _LOW, _LOW
        elif computed:  # everything it reads is in an fp32 region (positions, masks, an RMSNorm's statistics)
            precision, out_cls = _FP32, _FP32
        else:  # constants only: embedding lookups, weight reshapes
            precision, out_cls = _LOW, _LOW
        if precision == _FP32 and (node.op_type in keep_ops or node.op_type in chain_ops or excluded):
            self.kept[node.op_type] += 1
        self.node_precision[node] = precision
        stash = _FLOAT_STASH_OUTPUTS.get(node.op_type, ())
        for index, out in enumerate(node.outputs):
            if self.is_float(out):
                self.physical[out] = _FP32 if precision == _FP32 or index in stash else _LOW
                self.cls[out] = out_cls


def _check_convertible(model: ir.Model) -> None:
    graph = model.graph
    for node in graph.all_nodes():
        if node.op_type in _QUANTIZED_OPS:
            raise ModelkilnError(f"this graph is quantized ({node.op_type}); convert the float artifact to fp16/bf16 "
                                 "instead (fp16 activations with quantized weights are not supported)")
        if any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values()):
            raise ModelkilnError(f"node {node.name or node.op_type} has a subgraph ({node.op_type}); precision "
                                 "conversion supports graphs without If/Loop/Scan")
    low = [v.name for v in [*graph.inputs, *graph.initializers.values()]
           if v.dtype in (ir.DataType.FLOAT16, ir.DataType.BFLOAT16)]
    if low:
        raise ModelkilnError(f"this graph already has half-precision tensors ({low[0]}, ...); convert an fp32 "
                             "artifact")


@register_pass("convert_precision")
def convert_precision(model: ir.Model, *, precision: str = "fp16",
                      keep_fp32_ops: list[str] | tuple[str, ...] | None = None,
                      exclude: list[str] | tuple[str, ...] = (), context: PassContext) -> dict[str, Any]:
    """See the module docstring. `keep_fp32_ops`: op types computed in fp32 (default `DEFAULT_KEEP_FP32`; those
    in `FP32_CHAIN_OPS` keep their results fp32 too); `exclude`: regular expressions over node names (which carry
    the torch module path) for further nodes to compute in fp32."""
    if precision not in LOW_DTYPES:
        raise ModelkilnError(f"unknown precision {precision!r}; use one of {', '.join(LOW_DTYPES)}")
    current = context.manifest.get("precision", "fp32")
    if current != "fp32":
        raise ModelkilnError(f"this artifact is already {current}; convert an fp32 artifact")
    try:
        patterns = [re.compile(p) for p in exclude]
    except re.error as e:
        raise ModelkilnError(f"exclude pattern is not a valid regular expression: {e}") from None
    keep = set(DEFAULT_KEEP_FP32 if keep_fp32_ops is None else keep_fp32_ops)
    _check_convertible(model)
    low = LOW_DTYPES[precision]
    graph = model.graph
    ir_common.TopologicalSortPass()(model)
    kv_names = kv_cache_names(context.manifest)
    plan = _Plan(graph, infer_dtypes(graph), keep - set(FP32_CHAIN_OPS), keep & set(FP32_CHAIN_OPS), patterns,
                 kv_names)
    weight_bytes_before = sum(v.const_value.nbytes for v in graph.initializers.values() if v.const_value is not None)
    rewriter = _Rewriter(graph, plan, low, precision)
    casts = rewriter.apply()
    for value in graph.inputs:
        if plan.is_float(value) and plan.physical[value] == _LOW:
            value.dtype = low
    casts += _boundary_outputs(graph, plan, low, precision, kv_names)
    ir_common.RemoveUnusedNodesPass()(model)  # unused initializers too
    ir_common.TopologicalSortPass()(model)
    weight_bytes_after = sum(v.const_value.nbytes for v in graph.initializers.values() if v.const_value is not None)

    kv = bool(kv_names & {v.name for v in graph.inputs})
    updates = context.manifest_updates  # merged with what earlier passes of the same run wrote (kv_cache.attention)
    updates["precision"] = precision
    updates.setdefault("graphs", {}).setdefault("model", {})["precision"] = precision
    if kv:
        updates.setdefault("kv_cache", {})["dtype"] = precision
    updates["precision_conversion"] = {
        "precision": precision, "from": "fp32", "io": "float32", "kv_cache": precision if kv else None,
        "keep_fp32_ops": sorted(keep), "exclude": list(exclude)}
    counts = Counter(plan.node_precision.values())
    return {"precision": precision, "half_nodes": counts[_LOW], "fp32_nodes": counts[_FP32], "casts": casts,
            "weight_mb_before": round(weight_bytes_before / 2**20, 1),
            "weight_mb_after": round(weight_bytes_after / 2**20, 1), "clamped_values": rewriter.clamped,
            "kept_fp32": dict(sorted(plan.kept.items()))}


class _Rewriter:
    """Phase 2: give each node inputs of its precision (shared Casts, converted constants), retype its outputs."""

    def __init__(self, graph: ir.Graph, plan: _Plan, low: ir.DataType, precision: str):
        self.graph, self.plan, self.low, self.precision = graph, plan, low, precision
        self.casts: dict[tuple[ir.Value, ir.DataType], ir.Value] = {}
        self.clamped = 0
        self.constant_uses: dict[ir.Value, list[tuple[ir.Node, int, str]]] = {}

    def apply(self) -> int:
        plan = self.plan
        for node in list(self.graph):
            precision = plan.node_precision.get(node)
            if precision is None:
                continue
            for index, value in enumerate(node.inputs):
                if not plan.is_float(value):
                    continue
                if _is_constant(value):
                    self.constant_uses.setdefault(value, []).append((node, index, precision))
                elif plan.physical.get(value, _FP32) != precision:
                    node.replace_input_with(index, self._cast(value, precision, node))
            if precision == _LOW:
                self._retype_outputs(node)
        for value, uses in self.constant_uses.items():
            self._convert_constant(value, uses)
        return len(self.casts)

    def _cast(self, value: ir.Value, precision: str, before: ir.Node) -> ir.Value:
        dtype = self.low if precision == _LOW else FLOAT
        key = (value, dtype)
        if key not in self.casts:
            suffix = self.precision if precision == _LOW else "fp32"
            base = value.name or "value"
            cast = ir.Node("", "Cast", [value], [ir.AttrInt64("to", dtype)], name=f"{base}_to_{suffix}")
            out = cast.outputs[0]
            out.name, out.dtype, out.shape = f"{base}_{suffix}", dtype, value.shape
            self.graph.insert_before(before, cast)
            self.casts[key] = out
        return self.casts[key]

    def _retype_outputs(self, node: ir.Node) -> None:
        stash = _FLOAT_STASH_OUTPUTS.get(node.op_type, ())
        for index, out in enumerate(node.outputs):
            if self.plan.is_float(out) and index not in stash and out.dtype is not None:
                out.dtype = self.low
        if node.op_type == "Cast" and node.attributes["to"].value == FLOAT:
            node.attributes["to"] = ir.AttrInt64("to", self.low)

    def _convert_constant(self, value: ir.Value, uses: list[tuple[ir.Node, int, str]]) -> None:
        low_uses = [(n, i) for n, i, p in uses if p == _LOW]
        if not low_uses:
            return
        converted, clamped = _to_low(constant_array(value), self.precision)
        self.clamped += clamped
        if len(low_uses) == len(value.uses()) and value.producer() is None:  # only half-precision readers
            value.const_value = ir.tensor(converted, name=value.name)
            value.dtype = self.low
            return
        if len(low_uses) == len(value.uses()):  # a Constant node read only in half precision
            producer = value.producer()
            for name in list(producer.attributes):
                del producer.attributes[name]
            producer.attributes["value"] = ir.AttrTensor("value", ir.tensor(converted, name=value.name))
            value.dtype = self.low
            return
        copy = add_initializer(self.graph, f"{value.name or 'constant'}_{self.precision}", converted)
        for node, index in low_uses:
            node.replace_input_with(index, copy)


def _boundary_outputs(graph: ir.Graph, plan: _Plan, low: ir.DataType, precision: str, kv_names: set[str]) -> int:
    """float32 graph outputs (logits, hidden states) read a Cast of the half-precision value; the KV cache is
    converted. The output keeps its name; the inner value is renamed."""
    added = 0
    for index, value in enumerate(list(graph.outputs)):
        if not plan.is_float(value):
            continue
        want = _LOW if value.name in kv_names else _FP32
        have = plan.physical.get(value, _FP32)
        if have == want:
            continue
        dtype = low if want == _LOW else FLOAT
        name = value.name
        value.name = f"{name}_{precision if have == _LOW else 'fp32'}"
        cast = ir.Node("", "Cast", [value], [ir.AttrInt64("to", dtype)], name=f"{name}_cast")
        out = cast.outputs[0]
        out.name, out.dtype, out.shape = name, dtype, value.shape
        graph.append(cast)
        graph.outputs[index] = out
        added += 1
    return added
