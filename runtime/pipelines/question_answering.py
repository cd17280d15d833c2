"""`pipeline("question-answering")`: extractive QA with transformers' outputs.

    qa = pipeline("question-answering", model="art/distilbert-squad")
    qa(question="Where do I live?", context="My name is Wolfgang and I live in Berlin")
    # {'score': 0.9191, 'start': 34, 'end': 40, 'answer': 'Berlin'}
    qa(question=["Who?", "Where?"], context="...", top_k=3)      # one list of answers per question

transformers 5 removed this pipeline; the reference is transformers 4.57's QuestionAnsweringPipeline (its fast-
tokenizer path), reproduced step for step: the context is split into windows of `max_seq_len` tokens overlapping
by `doc_stride`, every window is scored, spans longer than `max_answer_len` or outside the context are masked, the
`top_k` best spans are mapped back to characters through the tokenizer's offsets (aligned to whole words unless
`align_to_words=False`), and equal answers from different windows add their scores. `max_question_len` is
accepted and, like transformers' fast path, does not truncate the question; a question too long to leave room
for any context is refused with a clear error.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelkiln.runtime.encoder import EncoderPipeline, Feature
from modelkiln.runtime.errors import ModelkilnError


class QuestionAnsweringPipeline(EncoderPipeline):
    task = "question-answering"

    def _parameters(self, top_k: int | None = None, doc_stride: int | None = None, max_answer_len: int = 15,
                    max_seq_len: int | None = None, max_question_len: int = 64,
                    handle_impossible_answer: bool = False, align_to_words: bool = True, padding=None):
        for name, value in (("top_k", top_k), ("max_answer_len", max_answer_len),
                            ("max_question_len", max_question_len), ("max_seq_len", max_seq_len),
                            ("doc_stride", doc_stride)):
            if value is not None and (not isinstance(value, int) or value < (0 if name == "doc_stride" else 1)):
                raise ModelkilnError(f"{name} parameter should be >= {0 if name == 'doc_stride' else 1} (got "
                                     f"{value!r})")
        if max_seq_len is None:
            max_seq_len = min(self.model.max_length or 384, 384)
        elif self.model.max_length is not None and max_seq_len > self.model.max_length:
            raise ModelkilnError(f"max_seq_len={max_seq_len} is longer than the model's limit of "
                                 f"{self.model.max_length} tokens")
        if doc_stride is None:
            doc_stride = min(max_seq_len // 2, 128)
        if doc_stride > max_seq_len:
            raise ModelkilnError(f"`doc_stride` ({doc_stride}) is larger than `max_seq_len` ({max_seq_len})")
        return {"top_k": 1 if top_k is None else top_k, "doc_stride": doc_stride, "max_answer_len": max_answer_len,
                "max_seq_len": max_seq_len, "max_question_len": max_question_len,
                "handle_impossible_answer": bool(handle_impossible_answer), "align_to_words": bool(align_to_words),
                "padding": padding or "do_not_pad"}

    def __call__(self, *args, question=None, context=None, **kwargs):
        examples = _examples(args, question, context)
        params, batch_size = self._merged(dict(kwargs))
        prepared = [self._preprocess(q, c, params) for q, c in examples]
        flat = [f for spans in prepared for f in spans["features"]]
        rows = iter(self.model.run(flat, batch_size))
        results = []
        for spans in prepared:
            outputs = [next(rows) for _ in spans["features"]]
            results.append(self._postprocess(spans, outputs, params))
        return results[0] if len(results) == 1 else results

    # ------------------------------------------------------------------ preprocess
    def _preprocess(self, question: str, context: str, params) -> dict[str, Any]:
        tok = self.tokenizer
        question_first = tok.padding_side == "right"
        max_seq_len = params["max_seq_len"]
        question_len = len(tok(question, add_special_tokens=False)["input_ids"])
        room = max_seq_len - question_len - tok.num_special_tokens_to_add(pair=True)
        if room < 1:
            raise ModelkilnError(f"the question has {question_len} tokens, which leaves no room for the context in "
                                 f"max_seq_len={max_seq_len} tokens; shorten the question or raise max_seq_len")
        if params["doc_stride"] >= room:
            raise ModelkilnError(f"doc_stride={params['doc_stride']} must be smaller than the {room} context tokens "
                                 f"a window of max_seq_len={max_seq_len} has room for with this question")
        try:
            enc = tok(text=question if question_first else context, text_pair=context if question_first else question,
                      padding=params["padding"], truncation="only_second" if question_first else "only_first",
                      max_length=max_seq_len, stride=params["doc_stride"], return_token_type_ids=True,
                      return_overflowing_tokens=True, return_offsets_mapping=True, return_special_tokens_mask=True)
        except ValueError as e:  # the tokenizer's own truncation errors, e.g. a sequence too short to truncate
            raise ModelkilnError(f"cannot fit question and context into max_seq_len={max_seq_len}: {e}") from None
        typed = "token_type_ids" in tok.model_input_names
        features, p_masks = [], []
        for span in enc.encodings:
            # p_mask: 1 where a token cannot be part of the answer (the question, specials), but CLS stays 0
            p_mask = np.array([[(s != 1) if question_first else 0 for s in span.sequence_ids]])
            if tok.cls_token_id is not None:
                p_mask[0, np.nonzero(np.array(span.ids) == tok.cls_token_id)[0]] = 0
            p_masks.append(p_mask)
            features.append(Feature(span.ids, span.attention_mask, span.type_ids if typed else None))
        return {"context": context, "encodings": enc.encodings, "features": features, "p_masks": p_masks}

    # ------------------------------------------------------------------ postprocess (transformers 4.57's algorithm)
    def _postprocess(self, spans, outputs: list[dict[str, np.ndarray]], params) -> dict | list[dict]:
        top_k, align = params["top_k"], params["align_to_words"]
        tok = self.tokenizer
        question_first = tok.padding_side == "right"
        min_null_score = 1000000  # large and positive
        answers: list[dict] = []
        for enc, p_mask, output in zip(spans["encodings"], spans["p_masks"], outputs):
            start_ = output["start_logits"].astype(np.float32)[None]  # [1, length]
            end_ = output["end_logits"].astype(np.float32)[None]
            attention_mask = np.array([enc.attention_mask], dtype=np.int64)
            pre_topk = top_k * 2 + 10 if align else top_k  # aligning to words may merge some candidates
            starts, ends, scores, min_null_score = select_starts_ends(
                start_, end_, p_mask, attention_mask, min_null_score, pre_topk, params["handle_impossible_answer"],
                params["max_answer_len"])
            offset = int((np.array(enc.ids) == tok.pad_token_id).sum()) if tok.padding_side == "left" else 0
            sequence_index = 1 if question_first else 0
            for s, e, score in zip(starts, ends, scores):
                start_index, end_index = get_indices(enc, int(s) - offset, int(e) - offset, sequence_index, align)
                target = spans["context"][start_index:end_index]
                existing = next((a for a in answers if a["answer"].lower() == target.lower()), None)
                if existing:
                    existing["score"] += score.item()
                else:
                    answers.append({"score": score.item(), "start": start_index, "end": end_index, "answer": target})
        if params["handle_impossible_answer"]:
            answers.append({"score": min_null_score, "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda x: x["score"], reverse=True)[:top_k]
        return answers[0] if len(answers) == 1 else answers


def _examples(args, question, context) -> list[tuple[str, str]]:
    """(question, context) pairs from transformers' accepted call forms: keywords (str or lists), one dict, a
    list of dicts, or two positional strings."""
    if args:
        if question is not None or context is not None:
            raise ModelkilnError("pass question/context either as keywords or positionally, not both")
        if len(args) == 2 and all(isinstance(a, str) for a in args):
            items = [{"question": args[0], "context": args[1]}]
        elif len(args) == 1:
            items = args[0] if isinstance(args[0], list) else [args[0]]
        else:
            items = list(args)
    elif question is not None or context is not None:
        if context is None:
            raise ModelkilnError("a question needs a context: call qa(question=..., context=...)")
        if question is None:
            raise ModelkilnError("a context needs a question: call qa(question=..., context=...)")
        if isinstance(question, list) and isinstance(context, str):
            items = [{"question": q, "context": context} for q in question]
        elif isinstance(question, list) and isinstance(context, list):
            if len(question) != len(context):
                raise ModelkilnError(f"Questions and contexts don't have the same lengths ({len(question)} vs "
                                     f"{len(context)})")
            items = [{"question": q, "context": c} for q, c in zip(question, context)]
        elif isinstance(question, str) and isinstance(context, str):
            items = [{"question": question, "context": context}]
        else:
            raise ModelkilnError("question and context must be strings or lists of strings")
    else:
        raise ModelkilnError("no input: call qa(question=..., context=...)")
    if not items:
        raise ModelkilnError("no input: the list of questions is empty")
    examples = []
    for item in items:
        if not isinstance(item, dict):
            raise ModelkilnError(f"{item!r} argument needs to be a dict with keys question and context")
        for key in ("question", "context"):
            if key not in item or item[key] is None:
                raise ModelkilnError(f"a question-answering input needs a {key!r}" + (
                    "; a question without a context cannot be answered" if key == "context" else ""))
            if not isinstance(item[key], str):
                raise ModelkilnError(f"`{key}` must be a string, got {type(item[key]).__name__}")
            if not item[key].strip():
                raise ModelkilnError(f"`{key}` cannot be empty")
        examples.append((item["question"], item["context"]))
    return examples


def decode_spans(start: np.ndarray, end: np.ndarray, topk: int, max_answer_len: int,
                 undesired_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The `topk` best (start, end) token spans by start_prob * end_prob, with end >= start and at most
    `max_answer_len` tokens, both ends inside the context. start/end: [1, length] probabilities."""
    outer = np.matmul(np.expand_dims(start, -1), np.expand_dims(end, 1))  # [1, length, length]
    candidates = np.tril(np.triu(outer), max_answer_len - 1)  # end >= start, end - start < max_answer_len
    scores_flat = candidates.flatten()
    if topk == 1:
        idx_sort = [np.argmax(scores_flat)]
    elif len(scores_flat) < topk:
        idx_sort = np.argsort(-scores_flat)
    else:
        idx = np.argpartition(-scores_flat, topk)[0:topk]
        idx_sort = idx[np.argsort(-scores_flat[idx])]
    starts, ends = np.unravel_index(idx_sort, candidates.shape)[1:]
    desired_spans = np.isin(starts, undesired_tokens.nonzero()) & np.isin(ends, undesired_tokens.nonzero())
    starts, ends = starts[desired_spans], ends[desired_spans]
    return starts, ends, candidates[0, starts, ends]


def select_starts_ends(start, end, p_mask, attention_mask, min_null_score=1000000, top_k=1,
                       handle_impossible_answer=False, max_answer_len=15):
    """Mask non-context tokens, softmax the start/end logits, and pick the best spans (transformers' order of
    operations, so the float32 probabilities are the same)."""
    undesired_tokens = np.abs(np.array(p_mask) - 1)
    if attention_mask is not None:
        undesired_tokens = undesired_tokens & attention_mask
    undesired_tokens_mask = undesired_tokens == 0.0
    start = np.where(undesired_tokens_mask, -10000.0, start)
    end = np.where(undesired_tokens_mask, -10000.0, end)
    start = np.exp(start - start.max(axis=-1, keepdims=True))
    start = start / start.sum()
    end = np.exp(end - end.max(axis=-1, keepdims=True))
    end = end / end.sum()
    if handle_impossible_answer:
        min_null_score = min(min_null_score, (start[0, 0] * end[0, 0]).item())
    start[0, 0] = end[0, 0] = 0.0  # the CLS position is the "no answer" score, never a span
    starts, ends, scores = decode_spans(start, end, top_k, max_answer_len, undesired_tokens)
    return starts, ends, scores, min_null_score


def get_indices(enc, s: int, e: int, sequence_index: int, align_to_words: bool) -> tuple[int, int]:
    """Character span of tokens s..e: whole words when they map to words, else the tokens' own offsets."""
    if align_to_words:
        start_word, end_word = enc.token_to_word(s), enc.token_to_word(e)
        if start_word is not None and end_word is not None:
            start_chars = enc.word_to_chars(start_word, sequence_index=sequence_index)
            end_chars = enc.word_to_chars(end_word, sequence_index=sequence_index)
            if start_chars is not None and end_chars is not None:
                return start_chars[0], end_chars[1]
    return enc.offsets[s][0], enc.offsets[e][1]
