"""An encoder artifact at run time: its tokenizer and its graph, run on length-sorted, dynamically padded batches.

    model = EncoderModel(Artifact.load("art/ner"))
    enc = model.tokenizer(["Hello Berlin", "Hi"], return_offsets_mapping=True)   # lists, no padding
    rows = model.run(model.features(enc), batch_size=8)
    rows[1]["logits"].shape                                       # (4, num_labels): trimmed to the row's length

Rows are sorted by length before batching, so each batch pads only to its own longest row (a batch of 32
short texts with one long one costs one long batch, not 32 long rows); results come back in input order. int8
artifacts run a batch as one slice of rows per core (`row_parallel`, see `EncoderModel`).
numpy + onnxruntime only.
"""

from __future__ import annotations

import abc
import functools
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelkiln.runtime.artifact import Artifact
from modelkiln.runtime.errors import ModelkilnError
from modelkiln.runtime.session import create_session
from modelkiln.runtime.tokenizer.hf import LARGE_INTEGER, PreTrainedTokenizer

ENCODER_TASKS = ("feature-extraction", "sentence-similarity", "text-classification", "token-classification",
                 "question-answering", "fill-mask")
# onnxruntime fuses a residual Add + LayerNormalization into SkipLayerNormalization at load, and its CPU kernel
# (1.31) is slower than the pair: all-MiniLM-L6-v2 at batch 32 x 20 tokens, 12 of them, fused fp32 graph 64.9 vs
# 58.5 ms, int8 32.2 vs 25.4 ms. `modelkiln optimize` writes the residual sums as Adds for this (graphs/
# encoder_fusions.py `residual_adds`); older artifacts' `Sum`s are not matched by the fusion either way.
DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


@functools.cache
def available_cores() -> int:
    """Physical cores this process may run on (onnxruntime's default thread count is the physical cores): on Linux
    the distinct (package, core) pairs of the CPUs in its affinity mask, so SMT siblings count once; elsewhere, or
    without the topology files, the CPU count. Read once per process, not at every model load."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        topology = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
        try:
            with open(topology + "physical_package_id") as package, open(topology + "core_id") as core:
                cores.add((package.read().strip(), core.read().strip()))
        except OSError:
            return len(cpus)
    return len(cores) or len(cpus)


@dataclass(frozen=True)
class Feature:
    """One sequence to run: the graph inputs as lists (unpadded)."""

    input_ids: list[int]
    attention_mask: list[int]
    token_type_ids: list[int] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


class EncoderModel:
    """`row_parallel`: run a batch as one slice of rows per core, each slice on one thread of a second,
    single-threaded session, instead of the whole batch on a session whose every op is split across the cores. The
    int8 graphs are mostly small ops (their MatMuls run on VNNI/AMX in a fraction of the time), and each op's
    split-and-wait costs more than the op: all-MiniLM-L6-v2 int8 on 2 cores, graph only, 20 tokens a row, batch 2 /
    4 / 8 / 16 / 32: 2.20 -> 1.62, 3.57 -> 2.44, 6.03 -> 3.92, 10.66 -> 7.13, 16.36 -> 14.92 ms; 128 tokens at batch
    32: 169 -> 160 ms. The fused fp32 graph gains nothing (0.97-1.02x: its GEMMs dominate and split well), so None
    (the default) means on for int8 artifacts, off for the others; CPU provider only. It takes batches of at least
    one row per core, and the second session (its own copy of the weights) is created at the first such batch.
    With right padding each slice is cut to its own longest row (rows come sorted by length), so a batch of mixed
    lengths pads less. An int8 row's dynamic activation scale is then its slice's rather than its batch's, as it is
    with a smaller `batch_size`."""

    def __init__(self, artifact: Artifact, providers: list[str] | None = None, intra_op_threads: int | None = None,
                 row_parallel: bool | None = None):
        if artifact.task not in ENCODER_TASKS:
            raise ModelkilnError(f"artifact {artifact.root} was exported for {artifact.task!r}, not an encoder task "
                                 f"({', '.join(ENCODER_TASKS)})")
        self.artifact = artifact
        self.info: dict[str, Any] = artifact.manifest.get("encoder") or {}
        if artifact.file("tokenizer.json") is None:
            raise ModelkilnError(f"artifact {artifact.root} has no tokenizer.json; re-export it from a checkpoint "
                                 "that ships its tokenizer")
        try:
            self.tokenizer = PreTrainedTokenizer.from_pretrained(artifact.root)
        except (OSError, ValueError) as e:
            raise ModelkilnError(f"cannot load the tokenizer of artifact {artifact.root}: {e}") from None
        self.session = create_session(artifact.graph_path("model"), providers, intra_op_threads, artifact.precision,
                                      DISABLED_OPTIMIZERS)
        self._providers = providers
        self._slices = intra_op_threads or available_cores()
        if row_parallel is None:
            row_parallel = (artifact.manifest.get("quantization") or {}).get("weights") == "int8"
        on_cpu = set(providers or ["CPUExecutionProvider"]) <= {"CPUExecutionProvider"}
        self.row_parallel = bool(row_parallel) and on_cpu and self._slices > 1
        self._row_session = None
        self._row_pool: ThreadPoolExecutor | None = None
        self._row_lock = threading.Lock()
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        # Outputs whose second axis is the sequence (trimmed per row); the others are per-sequence ([batch, labels]).
        graph = artifact.graph("model")
        self._per_token = {o["name"] for o in graph.get("outputs", []) if len(o["dims"]) >= 2
                           and o["dims"][1] == "sequence_length"}
        self.labels: dict[int, str] | None = None
        if artifact.manifest.get("labels"):
            self.labels = {int(k): v for k, v in artifact.manifest["labels"].items()}
        self.pad_id = self.tokenizer.pad_token_id
        self._warned_truncation = False

    # ------------------------------------------------------------------ limits and tokenization
    @property
    def max_length(self) -> int | None:
        """The longest sequence the model takes: the tokenizer's model_max_length, capped by the positions."""
        limits = [n for n in (self.tokenizer.model_max_length, self.info.get("max_sequence_length"))
                  if n and n < LARGE_INTEGER]
        return min(limits) if limits else None

    def encode(self, text, text_pair=None, *, warn_truncation: bool = True, **kwargs):
        """tokenizer(text, text_pair, **kwargs); a row longer than `max_length` without an explicit `truncation`
        is truncated to it with a warning (the graph cannot take it: its position table ends there)."""
        enc = self.tokenizer(text, text_pair, **kwargs)
        limit = self.max_length
        if limit is None or kwargs.get("truncation") not in (None, False) or kwargs.get("max_length"):
            return enc
        lengths = [len(e.ids) for e in enc.encodings]
        if max(lengths, default=0) <= limit:
            return enc
        if warn_truncation and not self._warned_truncation:
            warnings.warn(f"an input has {max(lengths)} tokens, more than this model's limit of {limit}; it is "
                          "truncated (pass truncation=True to do so silently)", UserWarning, stacklevel=3)
            self._warned_truncation = True
        return self.tokenizer(text, text_pair, **{**kwargs, "truncation": True, "max_length": limit})

    def features(self, enc) -> list[Feature]:
        """The graph inputs of each row of a tokenizer output (a BatchEncoding over a list of texts)."""
        # transformers passes token_type_ids only when the tokenizer lists them; the graph then gets zeros
        typed = "token_type_ids" in self.tokenizer.model_input_names
        return [Feature(e.ids, e.attention_mask, e.type_ids if typed else None) for e in enc.encodings]

    # ------------------------------------------------------------------ running
    def run(self, features: list[Feature], batch_size: int | None = None) -> list[dict[str, np.ndarray]]:
        """Every feature's outputs, batch by batch, each trimmed to the feature's own length."""
        results: list[dict[str, np.ndarray] | None] = [None] * len(features)
        left = self.tokenizer.padding_side == "left"
        for chunk, outputs, mask in self.run_batches(features, batch_size):
            width = mask.shape[1]
            for row, i in enumerate(chunk):
                n = len(features[i])
                keep = slice(width - n, width) if left else slice(0, n)
                results[i] = {name: (out[row, keep] if name in self._per_token else out[row])
                              for name, out in zip(self.output_names, outputs)}
        return results  # type: ignore[return-value]

    def run_batches(self, features: list[Feature], batch_size: int | None = None):
        """(row indices, the graph's outputs for those rows padded to the batch's width, their attention mask
        [rows, width]) for each length-sorted batch: for callers that reduce over the tokens (pooling) in one numpy
        call per batch instead of one per row."""
        if not features:
            return
        if self.pad_id is None and (batch_size or 1) > 1 and len({len(f) for f in features}) > 1:
            raise ModelkilnError("this tokenizer has no pad_token, so inputs of different lengths cannot be batched; "
                                 "use batch_size=1")
        batch_size = max(1, int(batch_size or 1))
        order = sorted(range(len(features)), key=lambda i: len(features[i]))
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            outputs, mask = self._run_padded([features[i] for i in chunk])
            yield chunk, outputs, mask

    def _run_padded(self, batch: list[Feature]) -> tuple[list[np.ndarray], np.ndarray]:
        width = max(len(f) for f in batch)
        left = self.tokenizer.padding_side == "left"

        def padded(rows: list[list[int]], value: int) -> np.ndarray:  # [batch, width], one conversion
            fill = [[value] * (width - len(r)) for r in rows]
            return np.array([f + r if left else r + f for r, f in zip(rows, fill)], dtype=np.int64)

        feed = {"input_ids": padded([f.input_ids for f in batch], self.pad_id or 0),
                "attention_mask": padded([f.attention_mask for f in batch], 0)}
        if "token_type_ids" in self.input_names:
            feed["token_type_ids"] = padded([f.token_type_ids or [0] * len(f) for f in batch],
                                            self.tokenizer.pad_token_type_id)
        try:
            outputs = self._run_graph({name: feed[name] for name in self.input_names})
        except Exception as e:  # onnxruntime's own exception types; a bad id or length is the usual cause
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ModelkilnError(f"the model could not run on this input ({width} tokens): {first}") from e
        return outputs, feed["attention_mask"]

    def _run_graph(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The graph's outputs for a padded batch: in one run, or with `row_parallel` one slice of rows per core,
        the calling thread running the last slice."""
        rows = len(next(iter(feed.values())))
        if not self.row_parallel or rows < self._slices:
            return self.session.run(self.output_names, feed)
        with self._row_lock:
            if self._row_session is None:
                self._row_session = create_session(self.artifact.graph_path("model"), self._providers, 1,
                                                   self.artifact.precision, DISABLED_OPTIMIZERS)
                self._row_pool = ThreadPoolExecutor(self._slices - 1, thread_name_prefix="modelkiln-rows")
        bounds = np.linspace(0, rows, self._slices + 1).astype(int)
        slices = list(zip(bounds[:-1], bounds[1:]))
        lengths = feed["attention_mask"].sum(axis=1)
        width = feed["attention_mask"].shape[1]
        trim = self.tokenizer.padding_side != "left"  # (left pads come first: trimming them would move positions)
        # rows come sorted by length: a slice pads only to its own longest row
        feeds = [{k: v[a:b, :int(lengths[a:b].max()) if trim else width] for k, v in feed.items()} for a, b in slices]
        futures = [self._row_pool.submit(self._row_session.run, self.output_names, f) for f in feeds[:-1]]
        last = self._row_session.run(self.output_names, feeds[-1])
        parts = [f.result() for f in futures] + [last]
        outputs = []
        for i, name in enumerate(self.output_names):
            pieces = [part[i] for part in parts]
            if name in self._per_token and any(p.shape[1] < width for p in pieces):
                # positions past a slice's own width are padding, which no caller reads (`run` trims each row
                # to its length, `run_batches` callers reduce under the mask): zeros there
                full = np.zeros((rows, width, *pieces[0].shape[2:]), dtype=pieces[0].dtype)
                for (a, b), p in zip(slices, pieces):
                    full[a:b, :p.shape[1]] = p
                outputs.append(full)
            else:
                outputs.append(np.concatenate(pieces))
        return outputs


class EncoderPipeline(abc.ABC):
    """What every encoder pipeline shares: the model, the tokenizer, `batch_size`, and call defaults.

    Keyword arguments given to `pipeline(task, model=..., **kwargs)` become defaults for every call, and a call's own
    keywords override them, as in transformers: `pipeline("ner", model=art, aggregation_strategy="simple")`.
    """

    task = ""
    needs_labels = False  # classification heads: refuse an artifact without id2label at load

    def __init__(self, artifact: Artifact, providers: list[str] | None = None, batch_size: int | None = None,
                 intra_op_threads: int | None = None, row_parallel: bool | None = None, **defaults: Any):
        self.model = EncoderModel(artifact, providers, intra_op_threads, row_parallel)
        if self.needs_labels and not self.model.labels:
            raise ModelkilnError(f"artifact {artifact.root} has no labels (id2label) in its manifest; re-export it "
                                 f"with --task {self.task}")
        self.tokenizer = self.model.tokenizer
        self.batch_size = batch_size
        self._defaults = defaults
        if defaults:
            self._parameters(**defaults)  # refuse unknown or bad defaults now, not at the first call

    @abc.abstractmethod
    def _parameters(self, **kwargs: Any) -> dict[str, Any]:
        """Validate and complete this call's parameters; unknown keywords raise TypeError (-> ModelkilnError)."""

    def _merged(self, kwargs: dict[str, Any]) -> tuple[dict[str, Any], int]:
        batch_size = kwargs.pop("batch_size", None)
        if batch_size is None:
            batch_size = self.batch_size or 1
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ModelkilnError(f"batch_size must be a positive integer, got {batch_size!r}")
        try:
            return self._parameters(**{**self._defaults, **kwargs}), batch_size
        except TypeError as e:
            raise ModelkilnError(f"{self.task} pipeline: {e}") from None


def text_batch(inputs: Any, empty_hint: str) -> tuple[list, bool]:
    """(texts, batched) for a pipeline call taking a string or a list of strings; checks each text."""
    batched = isinstance(inputs, list)
    texts = inputs if batched else [inputs]
    if not texts:
        raise ModelkilnError(f"no inputs: {empty_hint}")
    check_texts(texts, "text")
    return texts, batched


def check_texts(texts: list, what: str = "input") -> None:
    """Refuse empty strings and non-strings: the model would return an answer for them, a meaningless one."""
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ModelkilnError(f"{what} {i} is a {type(text).__name__}, not a string")
        if not text.strip():
            raise ModelkilnError(f"{what} {i} is an empty string; pass text to run the model on")


def softmax(x: np.ndarray) -> np.ndarray:
    """transformers' numpy softmax over the last axis (same operation order, so the same float32 rounding)."""
    maxes = np.max(x, axis=-1, keepdims=True)
    shifted_exp = np.exp(x - maxes)
    return shifted_exp / shifted_exp.sum(axis=-1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
