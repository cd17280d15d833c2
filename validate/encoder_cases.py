"""Validation of an encoder artifact: eager PyTorch vs the graph, then transformers' pipeline vs ours.

    report = validate("art/ner", "ckpt/")        # dispatches here for encoder tasks

Cases (each a frozen spec, run by `run_encoder_case`):

    forward[b=1,s=8]  forward[b=2,s=16]  forward[b=3,s=11,pad]     random ids; every output elementwise
    texts[b=N,pad]    texts[pairs,b=N,pad]                          real texts through the reference tokenizer
    pipeline[...]     transformers.pipeline(task) vs modelkiln's pipeline on the same texts: labels, words, spans
                      and offsets exactly, scores within 1e-4. question-answering (gone from transformers 5) and
                      sentence-similarity run modelkiln's pipeline twice, on the graph and on eager PyTorch.

Padding positions are excluded from per-token comparisons (both runtimes compute meaningless values there).

A quantized artifact (a `quantization` entry in its manifest) changes the function itself, so elementwise fp32
tolerances are the wrong test; its cases are instead

    accuracy[N texts,b=32]  accuracy[N texts,b=1]     held-out texts (ACCURACY_TEXTS, none of them in the int8
                      guard's corpus), batched as the pipelines batch them and one by one: per sentence, the
                      mean-pooled embedding cosine against eager fp32 must reach the artifact's `min_cosine`
                      (0.99; embedding tasks), and every argmax label must be unchanged (heads; their logits
                      cosine is reported)
    pipeline[...]     as above, with labels, words and spans exact and scores within 0.05 (fill-mask: top 1);
                      embeddings by their cosine against eager

An fp16-converted artifact (`precision_conversion`) gets both: the elementwise cases (at the loose
`CONVERTED_TOLERANCES`, which catch breakage) and the accuracy cases, with a stricter cosine (`FP16_MIN_COSINE`),
and pipeline scores within `FP16_SCORE_TOLERANCE`.
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
# int8: a probability moves by a few 1e-3 on MiniLM-size models; 0.05 still catches a wrong head or a broken graph
QUANTIZED_SCORE_TOLERANCE = Tolerance(atol=0.05, rtol=0.0)
DEFAULT_MIN_COSINE = 0.99
# fp16-converted encoders only round. Measured on all-MiniLM-L6-v2 (CPU, fused or not): worst sentence cosine
# 0.9999993 (a loss of 7e-7), hidden states within 2.7e-3; its classifier's pipeline scores within 1.3e-5.
FP16_MIN_COSINE = 0.9999
FP16_SCORE_TOLERANCE = Tolerance(atol=1e-3, rtol=0.0)

TEXTS = (
    "My name is Wolfgang and I live in Berlin.",
    "Café crème in Zürich, naïve résumé: São Paulo!",
    "東京は日本の首都です。北京是中国的首都。",
    "The quick brown fox jumps over the lazy dog.",
)
PAIRS = (("A man is eating food.", "Someone is eating a meal."), ("Où est la gare ?", "La gare est à gauche."))
MASKED = ("The capital of France is {mask}.", "Café crème in {mask}, naïve résumé!", "東京は日本の{mask}です。",
          "The {mask} brown fox jumps over the {mask} dog.")
# Held out from the int8 guard's corpus (graphs/encoder_corpus.py): what a quantized artifact is judged on.
ACCURACY_TEXTS = TEXTS + (
    "No.", "Hi there", "What time is it?", "Thank you very much!", "I love you", "Where are my keys?",
    "A man is eating food.", "Someone is eating a meal.", "A woman is playing the violin.",
    "The new phone has a great camera but the battery life is disappointing.",
    "This restaurant was absolutely wonderful, we will definitely come back!",
    "I waited two hours and nobody called me back. Unacceptable.",
    "Python 3.12 was released in October 2023 with better error messages.",
    "Die Katze schläft auf dem Sofa.", "El tren sale a las ocho de la mañana.", "Я люблю читать книги.",
    "大阪の天気は晴れです。", "오늘 날씨가 좋네요.", "Το καλοκαίρι είναι ζεστό.", "🙂👍",
    ("The committee will publish its final report after reviewing more than three hundred public comments "
     "from residents, businesses and environmental groups across the region."),
    ("Researchers measured the effect of sleep on memory in a study of 120 volunteers. Those who slept for eight "
     "hours after learning a list of words remembered thirty percent more of them the next day than those who "
     "stayed awake, and the difference was largest for words learned late in the evening."),
)
QA = (("Where do I live?", "My name is Wolfgang and I live in Berlin. My friend Sarah lives in Paris."),
      ("What is full of accents?", "Café crème, naïve résumé, Zürich, São Paulo and Kraków are full of accents."))
ACCURACY_QA = QA + (
    ("How many volunteers were in the study?", ACCURACY_TEXTS[-1]),
    ("When was Python 3.12 released?", "Python 3.12 was released in October 2023 with better error messages."),
    ("What is disappointing?", "The new phone has a great camera but the battery life is disappointing."),
    ("Où dort le chat ?", "Le chat dort sur le canapé pendant que le chien joue dans le jardin."),
)


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
class AccuracyCase:
    """Quantized artifacts: real texts on the graph and on eager PyTorch, judged sentence by sentence."""

    texts: tuple[Any, ...]  # strings, or (question, context) pairs
    batch: int

    @property
    def name(self) -> str:
        return f"accuracy[{len(self.texts)} texts,b={self.batch}]"


@dataclass(frozen=True)
class PipelineCase:
    task: str
    inputs: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"pipeline[{self.task}{',' + extra if extra else ''},n={len(self.inputs)}]"


def default_cases(task: str, tokenizer, quantization: dict | None = None, converted: bool = False) -> list:
    if quantization:
        return quantized_cases(task, tokenizer)
    cases: list = [ForwardCase(1, 8), ForwardCase(2, 16), ForwardCase(3, 11, pad=(0, 4, 9))]
    if tokenizer is None:
        return cases
    if converted:  # fp16: judged by accuracy, like a quantized artifact, on top of the elementwise cases
        texts = ACCURACY_QA if task == "question-answering" else ACCURACY_TEXTS
        cases += [AccuracyCase(texts, 32), AccuracyCase(texts, 1)]
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


def quantized_cases(task: str, tokenizer) -> list:
    """Accuracy on held-out texts instead of elementwise forward comparisons; then the pipeline answers."""
    texts = ACCURACY_QA if task == "question-answering" else ACCURACY_TEXTS
    cases: list = [AccuracyCase(texts, 32), AccuracyCase(texts, 1)]
    for case in default_cases(task, tokenizer):
        if isinstance(case, PipelineCase):
            cases.append(PipelineCase(case.task, case.inputs, {**case.kwargs, "top_k": 1}) if task == "fill-mask"
                         else case)
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
        self.quantization = artifact.manifest.get("quantization") or None
        converted = bool(artifact.manifest.get("precision_conversion"))
        self.min_cosine = float((self.quantization or {}).get("min_cosine")
                                or (FP16_MIN_COSINE if converted else DEFAULT_MIN_COSINE))
        self.score_tolerance = (QUANTIZED_SCORE_TOLERANCE if self.quantization
                                else FP16_SCORE_TOLERANCE if converted else SCORE_TOLERANCE)

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
        if ctx.quantization:
            return [cosine_check(ctx, "sentence embeddings cosine vs eager", actual, expected, inputs)], []
        return [compare_arrays("sentence embeddings", actual, expected, ctx.tolerance("last_hidden_state"))], []
    import transformers

    reference = transformers.pipeline(case.task, model=ctx.model, tokenizer=ctx.loaded.tokenizer, device="cpu")
    actual, expected = ours(inputs, **case.kwargs), reference(inputs, **case.kwargs)
    if case.task == "feature-extraction":
        if ctx.quantization:  # one mean-pooled vector per text
            pooled = [(np.asarray(a)[0].mean(0), np.asarray(e)[0].mean(0)) for a, e in zip(actual, expected)]
            return [cosine_check(ctx, "mean-pooled features cosine vs eager", np.stack([a for a, _ in pooled]),
                                 np.stack([e for _, e in pooled]), inputs)], []
        return [compare_arrays(f"features[{i}]", np.asarray(a), np.asarray(e), ctx.tolerance("last_hidden_state"))
                for i, (a, e) in enumerate(zip(actual, expected))], []
    return [], [], (actual, expected)


def cosine_check(ctx: EncoderContext, what: str, actual: np.ndarray, expected: np.ndarray, texts) -> Any:
    """Row-wise cosine of two [n, d] arrays, passing when every row reaches ctx.min_cosine; the name carries the
    figures (worst, which text, mean)."""
    from modelkiln.graphs.encoder_accuracy import cosine

    cosines = np.array([cosine(a, e) for a, e in zip(actual, expected)])
    return _cosine_comparison(ctx, what, cosines, list(texts))


def _cosine_comparison(ctx: EncoderContext, what: str, cosines: np.ndarray, texts: list, judged: bool = True):
    worst = int(np.argmin(cosines)) if len(cosines) else 0
    text = texts[worst] if texts else ""
    text = text if isinstance(text, str) else text[0]
    digits = 7 if ctx.min_cosine >= 0.999 else 4  # fp16 losses are ~1e-6: 0.9999993, not 1.0000
    label = (f"{what}: worst {cosines.min():.{digits}f} ({text[:32]!r}), mean {cosines.mean():.{digits}f} over "
             f"{len(cosines)} rows" + (f", needs >= {ctx.min_cosine}" if judged else ""))
    # cosines against 1: the line's "max abs" is the worst sentence's loss, 1 - cosine
    allowed = round(1.0 - ctx.min_cosine, 12) if judged else 2.0
    return compare_arrays(label, cosines, np.ones_like(cosines), Tolerance(atol=allowed, rtol=0.0))


def run_accuracy(ctx: EncoderContext, case: AccuracyCase):
    """Held-out texts through the artifact's tokenizer (the int8 guard's batching: length-sorted, padded), the
    graph against eager: per-row cosine (graphs/encoder_accuracy.py) and every argmax label."""
    from modelkiln.graphs.encoder_accuracy import EMBEDDING_TASKS, TIE, Agreement, agreement
    from modelkiln.graphs.encoder_quantization import corpus_batches

    batches = corpus_batches(ctx.artifact.root, ctx.task, ctx.input_names, ctx.artifact.manifest,
                             texts=case.texts, batch_size=case.batch)
    total, texts = Agreement(), []
    for batch in batches:
        feed = {n: batch.feed[n] for n in ctx.input_names}
        compiled = dict(zip(ctx.output_names, ctx.session.run(ctx.output_names, feed)))
        eager = dict(zip(ctx.output_names, ctx.eager.run(ctx.output_names, feed)))
        total.extend(agreement(ctx.task, eager, compiled, batch.mask, batch.focus))
        texts += batch.texts
    if ctx.task in EMBEDDING_TASKS:
        outputs = [_cosine_comparison(ctx, "mean-pooled embedding cosine vs eager", np.array(total.cosines), texts)]
    else:  # heads are judged by their labels (and the pipelines' scores); the logits cosine is for the reader
        outputs = [_cosine_comparison(ctx, "logits cosine vs eager (reported, not judged)", np.array(total.cosines),
                                      texts, judged=False)]
    tokens = []
    if total.labels:
        ties = f", {total.tied_changes} more between labels eager rates within {TIE}" if total.tied_changes else ""
        tokens.append(compare_tokens(f"argmax labels vs eager ({total.label_changes} of {total.labels} changed{ties})",
                                     total.actual_labels, total.expected_labels))
    return outputs, tokens


def compare_answers(actual, expected, name: str = "answers", score_tolerance: Tolerance = SCORE_TOLERANCE):
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
                                      np.array(e_scores, dtype=np.float64), score_tolerance))
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


_RUNNERS = {ForwardCase: run_forward, TextCase: run_texts, PipelineCase: run_pipeline, AccuracyCase: run_accuracy}
_KINDS = {ForwardCase: "forward", TextCase: "texts", PipelineCase: "pipeline", AccuracyCase: "accuracy"}


def run_encoder_case(ctx: EncoderContext, case, debug: bool = False) -> CaseResult:
    skip = ("inputs", "texts") if isinstance(case, AccuracyCase) else ("inputs",)
    params = {k: v for k, v in case.__dict__.items() if k not in skip}
    start = time.perf_counter()
    try:
        result = _RUNNERS[type(case)](ctx, case)
        if len(result) == 3:  # answers to compare structurally
            outputs, tokens = compare_answers(*result[2], score_tolerance=ctx.score_tolerance)
        else:
            outputs, tokens = result
    except Exception as e:  # a crashing case is a reported failure, not an aborted validation
        if debug:
            traceback.print_exc()
        first = str(e).splitlines()[0] if str(e) else ""
        return CaseResult(case.name, _KINDS[type(case)], params, duration_s=time.perf_counter() - start,
                          error=f"{type(e).__name__}: {first}"[:500])
    return CaseResult(case.name, _KINDS[type(case)], params, outputs, tokens, duration_s=time.perf_counter() - start)
