"""A decoder-only artifact graph as a callable: one forward step over explicit KV-cache tensors.

    lm = DecoderLM.load("smollm2/")
    logits, cache = lm.forward(input_ids, attention_mask, position_ids, lm.empty_cache(batch=1))   # numpy cache
    logits, cache = lm.step(input_ids, attention_mask, position_ids, None)                          # OrtValue cache

`forward` exchanges numpy arrays (what validation wants). `step` is the serving path: each step's `present.*`
outputs stay onnxruntime OrtValues and are fed back as the next step's `past_key_values.*` inputs, so the cache
never round-trips through numpy (no per-step copies of it in Python); only the logits come back.

Graphs fused to GroupQueryAttention (manifest `kv_cache.attention`, see graphs/decoder_fusions.py) keep the same
calls: callers still pass left-padded rows and masks. Inside, rows are right-aligned for the op (its rows start
at position 0) and results are aligned back, so the caller never sees the difference. With `step(...,
capacity=N)` the cache is preallocated once per request as [b, kv_heads, N, head_dim] buffers that are bound as
both `past_key_values.*` and `present.*`: the op writes each new entry in place, and a decode step binds only
its three small inputs and the logits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from modelkiln.runtime.artifact import Artifact
from modelkiln.runtime.errors import ArtifactError, ModelkilnError
from modelkiln.runtime.session import create_session

BF16_DECODER = ("this artifact is bf16: onnxruntime's CPU provider has no bf16 kernels, and this runtime keeps the KV "
                "cache in numpy, which has no bf16; serve it with a GPU runtime that binds device buffers, or use an "
                "fp16 artifact (`modelkiln optimize FP32_ARTIFACT OUT --precision fp16`)")
_NP_DTYPES = {"fp32": np.float32, "fp16": np.float16, "float": np.float32, "float16": np.float16}


@dataclass(frozen=True)
class KVCacheSpec:
    num_layers: int
    num_kv_heads: int
    head_dim: int
    key_head_dim: int
    dtype: type

    @classmethod
    def from_manifest(cls, kv: dict) -> KVCacheSpec:
        dtype = kv.get("dtype", "fp32")
        if dtype == "bf16":
            raise ArtifactError(BF16_DECODER)
        if dtype not in _NP_DTYPES:
            raise ArtifactError(f"KV-cache dtype {dtype!r} cannot be fed from numpy; re-export with --dtype fp32|fp16")
        return cls(kv["num_layers"], kv["num_kv_heads"], kv["head_dim"], kv.get("key_head_dim", kv["head_dim"]),
                   _NP_DTYPES[dtype])


class KVBuffers:
    """A preallocated in-place cache: one [b, kv_heads, capacity, head_dim] OrtValue per past/present pair, and
    the IOBinding that binds each as both input and output (bound once, reused by every decode step). It also
    holds the rows' attention mask at the full capacity width (zeros past `width`): a fused graph reads the mask
    only as each row's length (`sum - 1`, GroupQueryAttention's seqlens_k) and its width (the op's
    total_sequence_length, which sizes the present buffer: the capacity it already has), so one buffer bound once
    serves every step, and `select_rows` carries the lengths along with the rows."""

    def __init__(self, lm: DecoderLM, values: list[ort.OrtValue], step_logits: np.ndarray | None = None,
                 mask: np.ndarray | None = None):
        self.values = values
        self.binding = lm.session.io_binding()
        self.binding.bind_output("logits")  # first: outputs come back in binding order
        for name, out, value in zip(lm.past_names, lm.output_names[1:], values):
            self.binding.bind_ortvalue_input(name, value)
            self.binding.bind_ortvalue_output(out, value)
        rows, _, capacity, _ = values[0].shape()
        self.mask = np.zeros((rows, capacity), np.int64)
        self.width = 0
        if mask is not None:
            self._set_mask(mask)
        self.step_logits = None  # [b, 1, V], bound as the output of every one-token step
        self._step_ids = np.empty((rows, 1), np.int64)
        self._step_values: list[ort.OrtValue] = []  # OrtValues over the step buffers while they are bound
        if step_logits is not None:
            self._bind_step_logits(step_logits)

    def _set_mask(self, mask: np.ndarray) -> None:
        """The rows' mask [b, t] into the capacity-wide buffer, zeros after it."""
        width = mask.shape[1]
        if width < self.width:
            self.mask[:, width:self.width] = 0
        self.mask[:, :width] = mask
        self.width = width

    def _bind_step_logits(self, buffer: np.ndarray) -> None:
        self.step_logits = buffer
        self.next_logits = buffer[:, 0, :]  # [b, V] view: what `decode` returns
        self.binding.bind_ortvalue_output("logits", ort.OrtValue.ortvalue_from_numpy(buffer))

    def decode(self, session: ort.InferenceSession, tokens: np.ndarray,
               attention_mask: np.ndarray | None = None) -> np.ndarray:
        """One more token per row (tokens [b]) → logits [b, V]. `attention_mask` [b, past + 1], or None: every
        row one token longer than at the last step (the generation loop's case: one column set, nothing copied).

        After the first one-token step nothing is bound per step: the ids, the positions and the mask are
        buffers bound once, the logits go into the [b, 1, V] buffer bound once (reading ORT's outputs back would
        wrap all 61 bound values). The returned [b, V] view of it is valid until the next step on this cache:
        callers consume each step's logits first. position_ids stays bound as zeros: a fused graph counts
        positions from the mask.

        subtle: each numpy call here costs 10-40 µs, not 1 µs, because the step has just streamed the weights
        through the caches; binding a new mask per step alone cost ~0.1 ms."""
        if attention_mask is None:
            if self.width >= self.mask.shape[1]:
                raise ModelkilnError(f"the KV cache holds {self.mask.shape[1]} positions and is full")
            self.mask[:, self.width] = 1
            self.width += 1
        else:
            self._set_mask(attention_mask)
        if self.step_logits is None:  # rows changed (select_rows): one step with logits ORT allocates
            return self.run(session, {"input_ids": tokens[:, None], "attention_mask": self.mask[:, :self.width],
                                      "position_ids": np.zeros((len(tokens), 1), np.int64)})[:, -1, :]
        if not self._step_values:
            arrays = {"input_ids": self._step_ids, "position_ids": np.zeros_like(self._step_ids),
                      "attention_mask": self.mask}
            self._step_values = [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays.values()]
            for name, value in zip(arrays, self._step_values):
                self.binding.bind_ortvalue_input(name, value)
        self._step_ids[:, 0] = tokens
        session.run_with_iobinding(self.binding)
        return self.next_logits

    def run(self, session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Any step over this cache (the prefill, several tokens, the first step after `select_rows` changed the
        batch): binds every input and lets ORT allocate the logits, then binds a [b, 1, V] buffer for the
        one-token steps that follow (`decode`)."""
        binding = self.binding
        self._set_mask(feeds["attention_mask"])
        self._step_values = []
        for name, value in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        binding.bind_output("logits")  # ORT allocates it for this step's shape
        session.run_with_iobinding(binding)
        logits = binding.get_outputs()[0].numpy()
        self._bind_step_logits(np.empty((logits.shape[0], 1, logits.shape[2]), logits.dtype))
        return logits


class DecoderLM:
    def __init__(self, artifact: Artifact, providers: list[str] | None = None, intra_op_threads: int | None = None):
        if artifact.task != "text-generation":
            raise ArtifactError(f"artifact {artifact.root} is for task {artifact.task!r}, not text-generation")
        self.artifact = artifact
        self.kv = KVCacheSpec.from_manifest(artifact.manifest["kv_cache"])
        # GroupQueryAttention graphs: rows right-aligned inside, cache updated in place when preallocated
        self.in_place = artifact.manifest["kv_cache"].get("attention") == "group_query_attention"
        self.session = create_session(artifact.graph_path("model"), providers, intra_op_threads, artifact.precision)
        self.past_names = [f"past_key_values.{i}.{k}" for i in range(self.kv.num_layers) for k in ("key", "value")]
        self.output_names = ["logits"] + [f"present.{i}.{k}" for i in range(self.kv.num_layers)
                                          for k in ("key", "value")]

    @classmethod
    def load(cls, path: str | os.PathLike, verify: str = "full", **kwargs) -> DecoderLM:
        return cls(Artifact.load(path, verify=verify), **kwargs)

    def empty_cache(self, batch: int) -> list[np.ndarray]:
        """Past length 0: the graph's prefill."""
        cache = []
        for _ in range(self.kv.num_layers):
            cache.append(np.zeros((batch, self.kv.num_kv_heads, 0, self.kv.key_head_dim), self.kv.dtype))
            cache.append(np.zeros((batch, self.kv.num_kv_heads, 0, self.kv.head_dim), self.kv.dtype))
        return cache

    def empty_ort_cache(self, batch: int) -> list[ort.OrtValue]:
        return [ort.OrtValue.ortvalue_from_numpy(c) for c in self.empty_cache(batch)]

    def new_cache(self, batch: int, capacity: int) -> KVBuffers | None:
        """A preallocated in-place cache for `capacity` positions (GroupQueryAttention graphs), else None: the
        standard graph grows its cache by concatenation inside the graph."""
        if not self.in_place:
            return None
        values = []
        for _ in range(self.kv.num_layers):
            for dim in (self.kv.key_head_dim, self.kv.head_dim):
                values.append(ort.OrtValue.ortvalue_from_numpy(
                    np.zeros((batch, self.kv.num_kv_heads, capacity, dim), self.kv.dtype)))
        return KVBuffers(self, values)

    def step(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
             cache: list[ort.OrtValue] | KVBuffers | None) -> tuple[np.ndarray, list[ort.OrtValue] | KVBuffers]:
        """Like `forward`, with the cache as OrtValues (None = empty: the prefill) or a `new_cache` buffer.
        Thread-safe: onnxruntime sessions accept concurrent runs and nothing here is shared between calls.

        subtle: `run_with_ort_values` rather than an IOBinding for the growing cache: binding 61 outputs one by
        one cost ~1.4 ms per step on a 30-layer model in Python calls alone; this returns them in one call. The
        in-place cache binds its buffers once per request instead.
        """
        if isinstance(cache, KVBuffers) and cache.step_logits is not None and input_ids.shape[1] == 1:
            return cache.decode(self.session, input_ids[:, 0], attention_mask)[:, None, :], cache
        shift = self._right_align_shift(attention_mask, input_ids.shape[1])
        if shift is not None:
            input_ids = _roll_rows(input_ids, -shift, axis=1)
        feeds = {"input_ids": np.ascontiguousarray(input_ids, dtype=np.int64),
                 "attention_mask": np.ascontiguousarray(attention_mask, dtype=np.int64),
                 "position_ids": np.ascontiguousarray(position_ids, dtype=np.int64)}
        if isinstance(cache, KVBuffers):
            logits, present = cache.run(self.session, feeds), cache
        else:
            if cache is None:
                cache = self.empty_ort_cache(input_ids.shape[0])
            from_numpy = ort.OrtValue.ortvalue_from_numpy
            ort_feeds = {name: from_numpy(value) for name, value in feeds.items()}
            ort_feeds.update(zip(self.past_names, cache))
            logits, *present = self.session.run_with_ort_values(self.output_names, ort_feeds)
            logits = logits.numpy()
        if shift is not None:
            logits = _roll_rows(logits, shift, axis=1)
        return logits, present

    def _right_align_shift(self, attention_mask: np.ndarray, seq: int) -> np.ndarray | None:
        """Left-padding per row when this is a fused graph's padded prefill (None otherwise): GroupQueryAttention
        reads each row's tokens from position 0, so padded prompts are rolled left on the way in and back out."""
        if not self.in_place or seq == 1:
            return None
        pad = attention_mask.shape[1] - attention_mask.sum(axis=1)
        if not pad.any():
            return None
        if attention_mask.shape[1] != seq:
            raise ArtifactError("a padded multi-token step after a non-empty cache is not supported by a "
                                "GroupQueryAttention graph; run the prompt as one prefill")
        return pad

    def select_rows(self, cache: list[ort.OrtValue] | KVBuffers, rows: np.ndarray) -> list[ort.OrtValue] | KVBuffers:
        """Gather cache rows (beam reordering, dropping finished rows): one copy, only when rows change."""
        values = cache.values if isinstance(cache, KVBuffers) else cache
        gathered = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value.numpy()[rows])) for value in values]
        if not isinstance(cache, KVBuffers):
            return gathered
        same_rows = cache.step_logits is not None and len(rows) == len(cache.step_logits)
        return KVBuffers(self, gathered, cache.step_logits if same_rows else None,  # beams keep their logits buffer
                         mask=cache.mask[rows, :cache.width])

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
                cache: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """input_ids [b, s], attention_mask [b, past + s] (left padding), position_ids [b, s] → logits [b, s, V],
        new cache [b, kv_heads, past + s, head_dim], all in the caller's left-padded layout."""
        past = cache[0].shape[2] if cache else 0
        pad = attention_mask.shape[1] - attention_mask.sum(axis=1)
        aligned = self.in_place and pad.any()
        if aligned:  # GroupQueryAttention: each row's tokens from position 0 (see the module docstring)
            if past and (pad > past).any():
                raise ArtifactError("left padding that reaches into the new tokens needs an empty cache with a "
                                    "GroupQueryAttention graph")
            if past:
                cache = [_roll_rows(c, -pad, axis=2) for c in cache]
            else:
                input_ids = _roll_rows(input_ids, -pad, axis=1)
        feeds = {"input_ids": input_ids.astype(np.int64, copy=False),
                 "attention_mask": attention_mask.astype(np.int64, copy=False),
                 "position_ids": position_ids.astype(np.int64, copy=False)}
        feeds.update(zip(self.past_names, cache))
        logits, *present = self.session.run(self.output_names, feeds)
        if aligned:
            if not past:
                logits = _roll_rows(logits, pad, axis=1)
            present = [_roll_rows(p, pad, axis=2) for p in present]
        return logits, present


def _roll_rows(array: np.ndarray, shifts: np.ndarray, axis: int) -> np.ndarray:
    """Roll each row (axis 0) of `array` by its own shift along `axis`."""
    out = np.empty_like(array)
    for row, shift in enumerate(shifts):
        out[row] = np.roll(array[row], int(shift), axis=axis - 1)
    return out
