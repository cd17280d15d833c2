"""Validation of an encoder artifact: eager PyTorch vs the graph, then transformers' pipeline vs ours.

    report = validate("art/ner", "ckpt/")        # dispatches here for encoder tasks

Cases (each a frozen spec, run by `run_encoder_case`):

    forward[b=1,s=8]  forward[b=2,s=16]  forward[b=3,s=11,pad]     random ids; every output elementwise
    texts[b=N,pad]    texts[pairs,b=N,pad]                          real texts through the reference tokenizer
    pipeline[...]     transformers.pipeline(task) vs modelkiln's pipeline on the same texts: labels, words, spans
                      and offsets exactly, scores within 1e-4. question-answering (gone from transformers 5) and
                      sentence-similarity run modelkiln's pipeline twice, on the graph and on eager PyTorch.

Padding positions are excluded from per-token comparisons (both runtimes compute meaningless values there).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelkiln.validate.compare import Tolerance, compare_arrays, compare_tokens
from modelkiln.validate.report import CaseResult

SCORE_TOLERANCE = Tolerance(atol=1e-4, rtol=0.0)  # pipeline scores: probabilities in [0, 1]

TEXTS = (
    "My name is Wolfgang and I live in Berlin.",
    "Café crème in Zürich, naïve résumé: São Paulo!",
    "東京は日本の首都です。北京是中国的首都。",
    "The quick brown fox jumps over the lazy dog.",
)
PAIRS = (("A man is eating food.", "Someone is eating a meal."), ("Où est la gare ?", "La gare est à gauche."))
MASKED = ("The capital of France is {mask}.", "Café crème in {mask}, naïve résumé!", "東京は日本の{mask}です。",
          "The {mask} brown fox jumps over the {mask} dog.")
QA = (("Where do I live?", "My name is Wolfgang and I live in Berlin. My friend Sarah lives in Paris."),
      ("What is full of accents?", "Café crème, naïve résumé, Zürich, São Paulo and Kraków are full of accents."))


@dataclass(frozen=True)
class ForwardCase:
    batch: int
    seq: int
    pad: tuple[int, ...] = ()  # right-padding positions per row

    @property
    def name(self) -> str:
        return f"forward[b={self.batch},s={self.seq}{',pad' if any(self.pad) else ''}]"


@dataclass(frozen=True)
class TextCase:
    texts: tuple[Any, ...]  # strings, or (text, pair) tuples

    @property
    def name(self) -> str:
        pairs = isinstance(self.texts[0], tuple)
        return f"texts[{'pairs,' if pairs else ''}b={len(self.texts)},pad]"


@dataclass(frozen=True)
class PipelineCase:
    task: str
    inputs: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"pipeline[{self.task}{',' + extra if extra else ''},n={len(self.inputs)}]"


def default_cases(task: str, tokenizer) -> list:
    cases: list = [ForwardCase(1, 8), ForwardCase(2, 16), ForwardCase(3, 11, pad=(0, 4, 9))]
    if tokenizer is None:
        return cases
    cases.append(TextCase(TEXTS))
    cases.append(TextCase(PAIRS))
    if task == "text-classification":
        cases.append(PipelineCase(task, TEXTS, {"top_k": None}))
        cases.append(PipelineCase(task, tuple({"text": a, "text_pair": b} for a, b in PAIRS)))
    elif task == "token-classification":
        cases += [PipelineCase(task, TEXTS), PipelineCase(task, TEXTS, {"aggregation_strategy": "simple"})]
        if getattr(tokenizer, "is_fast", False):
            cases.append(PipelineCase(task, TEXTS, {"aggregation_strategy": "first"}))
    elif task == "fill-mask" and tokenizer.mask_token:
        masked = tuple(t.format(mask=tokenizer.mask_token) for t in MASKED)
        cases.append(PipelineCase(task, masked, {"top_k": 5}))
    elif task == "question-answering":
        cases.append(PipelineCase(task, QA, {"top_k": 3}))
    elif task in ("feature-extraction", "sentence-similarity"):
        cases.append(PipelineCase(task, TEXTS))
    return cases


# ---------------------------------------------------------------------------------------------- running


class EagerSession:
    """Quacks like an onnxruntime session, but runs the traced torch wrapper: the same pipeline code can then
    be driven by eager PyTorch, so a pipeline-level comparison isolates the graph."""

    def __init__(self, wrapper, input_names: list[str]):
        import torch

        self.torch, self.wrapper, self.input_names = torch, wrapper, input_names

    def run(self, output_names, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        torch = self.torch
        with torch.no_grad():
            outs = self.wrapper(*(torch.from_numpy(feed[n]) for n in self.input_names))
        return [o.float().numpy() for o in outs]


class EncoderContext:
    def __init__(self, artifact, loaded, model, tolerance, seed: int = 0):
        from modelkiln.exporter.encoder import ENCODER_TASKS, EncoderWithHead
        from modelkiln.runtime.session import create_session

        self.artifact, self.loaded, self.model = artifact, loaded, model
        self.task = artifact.task
        self.session = create_session(artifact.graph_path("model"))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.wrapper = EncoderWithHead.build(model, self.input_names, ENCODER_TASKS[self.task].outputs)
        self.eager = EagerSession(self.wrapper, self.input_names)
        self.tolerance = tolerance  # callable: output name -> Tolerance
        self.rng = np.random.default_rng(seed)
        self.vocab_size = model.config.vocab_size

    def compare_outputs(self, feed: dict[str, np.ndarray]):
        compiled = self.session.run(self.output_names, feed)
        eager = self.eager.run(self.output_names, feed)
        mask = feed["attention_mask"]
        results = []
        for name, c, e in zip(self.output_names, compiled, eager):
            per_token = c.ndim >= 2 and c.shape[:2] == mask.shape
            results.append(compare_arrays(name, c, e, self.tolerance(name), mask=mask if per_token else None))
        return results


def run_forward(ctx: EncoderContext, case: ForwardCase):
    ids = ctx.rng.integers(0, ctx.vocab_size, size=(case.batch, case.seq), dtype=np.int64)
    mask = np.ones_like(ids)
    for row, n in enumerate(case.pad):
        if n:
            mask[row, -n:] = 0
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return ctx.compare_outputs({n: feed[n] for n in ctx.input_names}), []


def run_texts(ctx: EncoderContext, case: TextCase):
    tok = ctx.loaded.tokenizer
    if isinstance(case.texts[0], tuple):
        enc = tok([a for a, _ in case.texts], [b for _, b in case.texts], padding=True, return_tensors="np",
                  truncation=True)
    else:
        enc = tok(list(case.texts), padding=True, return_tensors="np", truncation=True)
    ids = enc["input_ids"].astype(np.int64)
    feed = {"input_ids": ids, "attention_mask": enc["attention_mask"].astype(np.int64),
            "token_type_ids": enc["token_type_ids"].astype(np.int64) if "token_type_ids" in enc
            else np.zeros_like(ids)}
    return ctx.compare_outputs({n: feed[n] for n in ctx.input_names}), []


def run_pipeline(ctx: EncoderContext, case: PipelineCase):
    from modelkiln.runtime.pipelines import pipeline

    ours = pipeline(case.task, model=ctx.artifact.root, verify="none")
    inputs = list(case.inputs)
    if case.task == "question-answering" or case.task == "sentence-similarity":
        eager = pipeline(case.task, model=ctx.artifact.root, verify="none")
        eager.model.session = ctx.eager  # same pipeline code, eager PyTorch underneath
        if case.task == "question-answering":
            questions, contexts = [q for q, _ in inputs], [c for _, c in inputs]
            actual = ours(question=questions, context=contexts, **case.kwargs)
            expected = eager(question=questions, context=contexts, **case.kwargs)
            return [], [], (actual, expected)
        actual, expected = ours.encode(inputs), eager.encode(inputs)
        return [compare_arrays("sentence embeddings", actual, expected, ctx.tolerance("last_hidden_state"))], []
    import transformers

    reference = transformers.pipeline(case.task, model=ctx.model, tokenizer=ctx.loaded.tokenizer, device="cpu")
    actual, expected = ours(inputs, **case.kwargs), reference(inputs, **case.kwargs)
    if case.task == "feature-extraction":
        return [compare_arrays(f"features[{i}]", np.asarray(a), np.asarray(e), ctx.tolerance("last_hidden_state"))
                for i, (a, e) in enumerate(zip(actual, expected))], []
    return [], [], (actual, expected)


def compare_answers(actual, expected, name: str = "answers"):
    """Pipeline answers: every non-score field exactly (as one token comparison), then the scores elementwise.

    Strings are numbered in order of first appearance, so the token comparison is exact on words and labels;
    on a mismatch the comparison's name says which field differs and how.
    """
    table: dict[Any, int] = {}
    a_codes, a_scores, a_fields = _flatten(actual, table)
    e_codes, e_scores, e_fields = _flatten(expected, table)
    diff = next(((i, a, e) for i, (a, e) in enumerate(zip(a_fields, e_fields)) if a != e), None)
    label = name + " (labels, words, spans, tokens)"
    if diff is not None:
        _, (path_a, value_a), (path_e, value_e) = diff
        label += f": {path_e} expected {value_e!r}, got {value_a!r}" + (f" at {path_a}" if path_a != path_e else "")
    elif len(a_fields) != len(e_fields):
        label += f": {len(e_fields)} fields expected, got {len(a_fields)}"
    tokens = [compare_tokens(label, a_codes, e_codes)]
    outputs = []
    if tokens[0].passed and e_scores:
        outputs.append(compare_arrays(f"{name} scores", np.array(a_scores, dtype=np.float64),
                                      np.array(e_scores, dtype=np.float64), SCORE_TOLERANCE))
    return outputs, tokens


def _flatten(value, table: dict, path: str = "") -> tuple[list[int], list[float], list[tuple[str, Any]]]:
    codes: list[int] = []
    scores: list[float] = []
    fields: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        codes.append(-1)  # a dict opens: structure differences surface as code mismatches
        for key in sorted(value):
            sub = f"{path}[{key!r}]"
            if key == "score":
                scores.append(float(value[key]))
                continue
            c, s, f = _flatten(value[key], table, sub)
            codes += [_code(key, table)] + c
            scores += s
            fields += f
    elif isinstance(value, (list, tuple)):
        codes.append(-2 - len(value))
        for i, item in enumerate(value):
            c, s, f = _flatten(item, table, f"{path}[{i}]")
            codes += c
            scores += s
            fields += f
    else:
        item = value.item() if hasattr(value, "item") else value
        codes.append(_code(item, table))
        fields.append((path, item))
    return codes, scores, fields


def _code(value, table: dict) -> int:
    key = (type(value).__name__, value)
    if key not in table:
        table[key] = len(table)
    return table[key]


_RUNNERS = {ForwardCase: run_forward, TextCase: run_texts, PipelineCase: run_pipeline}
_KINDS = {ForwardCase: "forward", TextCase: "texts", PipelineCase: "pipeline"}


def run_encoder_case(ctx: EncoderContext, case, debug: bool = False) -> CaseResult:
    params = {k: v for k, v in case.__dict__.items() if k not in ("inputs",)}
    start = time.perf_counter()
    try:
        result = _RUNNERS[type(case)](ctx, case)
        if len(result) == 3:  # answers to compare structurally
            outputs, tokens = compare_answers(*result[2])
        else:
            outputs, tokens = result
    except Exception as e:  # a crashing case is a reported failure, not an aborted validation
        if debug:
            traceback.print_exc()
        first = str(e).splitlines()[0] if str(e) else ""
        return CaseResult(case.name, _KINDS[type(case)], params, duration_s=time.perf_counter() - start,
                          error=f"{type(e).__name__}: {first}"[:500])
    return CaseResult(case.name, _KINDS[type(case)], params, outputs, tokens, duration_s=time.perf_counter() - start)
