"""Trace a decoder-only LM into one ONNX graph with explicit KV-cache inputs and outputs.

Graph signature (names as ONNX Runtime GenAI and optimum use them):

    input_ids                 int64 [batch_size, sequence_length]
    attention_mask            int64 [batch_size, total_sequence_length]     1 = real token, 0 = left padding
    position_ids              int64 [batch_size, sequence_length]
    past_key_values.{i}.key   float [batch_size, num_kv_heads, past_sequence_length, head_dim]  (and .value)
 -> logits                    float [batch_size, sequence_length, vocab_size]
    present.{i}.key           float [batch_size, num_kv_heads, total_sequence_length, head_dim] (and .value)

Past length 0 is the prefill, so one graph serves both phases and has no `If` node (TensorRT-friendly).
Tracing uses transformers' own modeling code through `torch.onnx.export(dynamo=True)`; nothing is patched.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass

import torch

from modelkiln.runtime.errors import ModelkilnError

BATCH, SEQ, PAST, TOTAL = "batch_size", "sequence_length", "past_sequence_length", "total_sequence_length"


@dataclass(frozen=True)
class KVLayout:
    num_layers: int
    num_kv_heads: int
    head_dim: int
    key_head_dim: int  # some families (e.g. MLA) differ between key and value head dims

    def input_names(self) -> list[str]:
        return [f"past_key_values.{i}.{kind}" for i in range(self.num_layers) for kind in ("key", "value")]

    def output_names(self) -> list[str]:
        return [f"present.{i}.{kind}" for i in range(self.num_layers) for kind in ("key", "value")]


class DecoderWithCache(torch.nn.Module):
    """Flat tensors in, flat tensors out: what an ONNX graph can express.

    The per-layer past tensors are loaded into a fresh DynamicCache (full-length layers: a sliding-window
    family keeps its window in the attention mask, not by cropping the cache, so present = past + new).
    """

    def __init__(self, model: torch.nn.Module, num_layers: int):
        super().__init__()
        self.model = model
        self.num_layers = num_layers

    def forward(self, input_ids, attention_mask, position_ids, past):
        from transformers import DynamicCache

        cache = DynamicCache()
        for i in range(self.num_layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=cache, use_cache=True, return_dict=True)
        present = []
        for layer in out.past_key_values.layers[: self.num_layers]:
            present += [layer.keys, layer.values]
        return (out.logits, *present)


def probe_kv_layout(model: torch.nn.Module) -> KVLayout:
    """Run a 2-token prefill and read the layout off the cache the model builds (works for any family)."""
    from transformers import DynamicCache

    config = model.config
    ids = torch.zeros((1, 2), dtype=torch.long)
    try:
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids), past_key_values=DynamicCache(),
                        use_cache=True, return_dict=True)
    except TypeError as e:
        raise ModelkilnError(
            f"model family {config.model_type!r} cannot be exported for text-generation: its forward does not "
            f"take a standard key/value cache ({str(e).splitlines()[0]})") from None
    cache = getattr(out, "past_key_values", None)
    layers = getattr(cache, "layers", None)
    if not layers or any(getattr(layer, "keys", None) is None for layer in layers):
        raise ModelkilnError(
            f"model family {config.model_type!r} cannot be exported for text-generation: it does not fill a "
            "standard per-layer key/value cache")
    k, v = layers[0].keys, layers[0].values
    for layer in layers:
        if layer.keys.shape[1] != k.shape[1] or layer.values.shape[-1] != v.shape[-1]:
            raise ModelkilnError(
                f"model family {config.model_type!r} cannot be exported for text-generation: its layers use "
                "different key/value shapes")
    return KVLayout(num_layers=len(layers), num_kv_heads=int(k.shape[1]), head_dim=int(v.shape[-1]),
                    key_head_dim=int(k.shape[-1]))


def example_inputs(layout: KVLayout, dtype: torch.dtype, vocab_size: int, batch=2, seq=3, past=5):
    # Sizes > 1 and distinct, so torch.export does not specialize any dynamic dim to a constant.
    ids = torch.randint(0, vocab_size, (batch, seq))
    mask = torch.ones((batch, past + seq), dtype=torch.long)
    pos = torch.arange(past, past + seq).expand(batch, seq).contiguous()
    kv = []
    for _ in range(layout.num_layers):
        kv.append(torch.zeros((batch, layout.num_kv_heads, past, layout.key_head_dim), dtype=dtype))
        kv.append(torch.zeros((batch, layout.num_kv_heads, past, layout.head_dim), dtype=dtype))
    return ids, mask, pos, tuple(kv)


def trace_decoder(model: torch.nn.Module, layout: KVLayout, opset: int = 18, verbose: bool = False):
    """Return the exported graph as an `onnx_ir.Model` (weights in memory, not yet saved)."""
    dtype = next(model.parameters()).dtype
    wrapper = DecoderWithCache(model, layout.num_layers).eval()
    args = example_inputs(layout, dtype, model.config.vocab_size)
    batch, seq, past, total = (torch.export.Dim(n) for n in (BATCH, SEQ, PAST, TOTAL))
    dynamic_shapes = ({0: batch, 1: seq}, {0: batch, 1: total}, {0: batch, 1: seq},
                      tuple({0: batch, 2: past} for _ in range(2 * layout.num_layers)))
    input_names = ["input_ids", "attention_mask", "position_ids", *layout.input_names()]
    output_names = ["logits", *layout.output_names()]
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    if not verbose:  # "torchvision is not installed" warnings from the ONNX op registry are noise here
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    try:
        with sink, warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapper, args, None, input_names=input_names, output_names=output_names,
                dynamic_shapes=dynamic_shapes, dynamo=True, opset_version=opset,
                # subtle: torch.onnx's optimize=True runs onnxscript's pattern rewriter, which took 4/5 of a
                # 30-layer export (325 s of 545 s under load); constant folding alone gives the same stored weights
                # (transposes folded) and ORT fuses the rest at load time.
                optimize=False, verbose=verbose, report=False)
    except Exception as e:  # torch.export's errors are pages long: keep the first line, name the family
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise ModelkilnError(
            f"model family {model.config.model_type!r} could not be traced to ONNX: {first[:300]} "
            "(re-run with --debug for the full trace)") from e
    model = program.model
    fold_constants(model)
    return model


def fold_constants(model) -> None:
    """Fold constant subgraphs, weight transposes included (no size limit: those are the big ones)."""
    import onnxscript.optimizer as onnxscript_optimizer

    onnxscript_optimizer.fold_constants(model, input_size_limit=1 << 62, output_size_limit=1 << 62)
    onnxscript_optimizer.remove_unused_nodes(model)
