"""The reference for question-answering parity: transformers 4.57.6's QuestionAnsweringPipeline (fast path).

transformers 5 removed the question-answering pipeline, so there is no `transformers.pipeline("question-answering")`
to compare against. This module is the 4.57.6 code (src/transformers/pipelines/question_answering.py, Apache-2.0),
copied function for function -- `decode_spans`, `select_starts_ends`, `preprocess` (fast-tokenizer branch),
`postprocess`, `get_indices`, `get_answer` -- with only the framework plumbing replaced: the model is called on one
window at a time with batch 1, exactly what the 4.57 pipeline does with its default batch_size=1, and the tokenizer
is transformers 5's fast tokenizer (backed by the `tokenizers` library, never by modelkiln).
"""

from __future__ import annotations

import numpy as np
import torch


def decode_spans(start, end, topk, max_answer_len, undesired_tokens):
    if start.ndim == 1:
        start = start[None]
    if end.ndim == 1:
        end = end[None]
    outer = np.matmul(np.expand_dims(start, -1), np.expand_dims(end, 1))
    candidates = np.tril(np.triu(outer), max_answer_len - 1)
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
    starts = starts[desired_spans]
    ends = ends[desired_spans]
    scores = candidates[0, starts, ends]
    return starts, ends, scores


def select_starts_ends(start, end, p_mask, attention_mask, min_null_score=1000000, top_k=1,
                       handle_impossible_answer=False, max_answer_len=15):
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
    start[0, 0] = end[0, 0] = 0.0
    starts, ends, scores = decode_spans(start, end, top_k, max_answer_len, undesired_tokens)
    return starts, ends, scores, min_null_score


class ReferenceQuestionAnswering:
    """`ReferenceQuestionAnswering(model, tokenizer)(question=..., context=..., **kwargs)` as 4.57's pipeline."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model.eval(), tokenizer

    def __call__(self, question, context, top_k=1, doc_stride=None, max_answer_len=15, max_seq_len=None,
                 handle_impossible_answer=False, align_to_words=True):
        if isinstance(question, list):
            contexts = context if isinstance(context, list) else [context] * len(question)
            out = [self._one(q, c, top_k, doc_stride, max_answer_len, max_seq_len, handle_impossible_answer,
                             align_to_words) for q, c in zip(question, contexts)]
            return out[0] if len(out) == 1 else out
        return self._one(question, context, top_k, doc_stride, max_answer_len, max_seq_len, handle_impossible_answer,
                         align_to_words)

    def _one(self, question, context, top_k, doc_stride, max_answer_len, max_seq_len, handle_impossible_answer,
             align_to_words):
        tok = self.tokenizer
        # ---- preprocess (fast tokenizer branch)
        if max_seq_len is None:
            max_seq_len = min(tok.model_max_length, 384)
        if doc_stride is None:
            doc_stride = min(max_seq_len // 2, 128)
        question_first = tok.padding_side == "right"
        encoded_inputs = tok(
            text=question if question_first else context, text_pair=context if question_first else question,
            padding="do_not_pad", truncation="only_second" if question_first else "only_first",
            max_length=max_seq_len, stride=doc_stride, return_token_type_ids=True, return_overflowing_tokens=True,
            return_offsets_mapping=True, return_special_tokens_mask=True)
        num_spans = len(encoded_inputs["input_ids"])
        p_mask = [[tok_ != 1 if question_first else 0 for tok_ in encoded_inputs.sequence_ids(span_id)]
                  for span_id in range(num_spans)]
        outputs = []
        for span_idx in range(num_spans):
            input_ids = encoded_inputs["input_ids"][span_idx]
            if tok.cls_token_id is not None:
                for cls_index in np.nonzero(np.array(input_ids) == tok.cls_token_id)[0]:
                    p_mask[span_idx][cls_index] = 0
            model_inputs = {k: torch.tensor(encoded_inputs[k][span_idx]).unsqueeze(0)
                            for k in tok.model_input_names}
            with torch.no_grad():
                out = self.model(**model_inputs)
            outputs.append({"start": out["start_logits"], "end": out["end_logits"],
                            "p_mask": torch.tensor(p_mask[span_idx]).unsqueeze(0),
                            "attention_mask": model_inputs["attention_mask"],
                            "input_ids": model_inputs["input_ids"], "encoding": encoded_inputs[span_idx]})
        # ---- postprocess
        min_null_score = 1000000
        answers = []
        for output in outputs:
            attention_mask = output["attention_mask"].numpy()
            pre_topk = top_k * 2 + 10 if align_to_words else top_k
            starts, ends, scores, min_null_score = select_starts_ends(
                output["start"], output["end"], output["p_mask"], attention_mask, min_null_score, pre_topk,
                handle_impossible_answer, max_answer_len)
            enc = output["encoding"]
            offset = (output["input_ids"] == tok.pad_token_id).numpy().sum() if tok.padding_side == "left" else 0
            sequence_index = 1 if question_first else 0
            for s, e, score in zip(starts, ends, scores):
                s, e = s - offset, e - offset
                start_index, end_index = self.get_indices(enc, s, e, sequence_index, align_to_words)
                target_answer = context[start_index:end_index]
                answer = self.get_answer(answers, target_answer)
                if answer:
                    answer["score"] += score.item()
                else:
                    answers.append({"score": score.item(), "start": start_index, "end": end_index,
                                    "answer": context[start_index:end_index]})
        if handle_impossible_answer:
            answers.append({"score": min_null_score, "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda x: x["score"], reverse=True)[:top_k]
        if len(answers) == 1:
            return answers[0]
        return answers

    @staticmethod
    def get_answer(answers, target):
        for answer in answers:
            if answer["answer"].lower() == target.lower():
                return answer
        return None

    @staticmethod
    def get_indices(enc, s, e, sequence_index, align_to_words):
        if align_to_words:
            try:
                start_word = enc.token_to_word(s)
                end_word = enc.token_to_word(e)
                start_index = enc.word_to_chars(start_word, sequence_index=sequence_index)[0]
                end_index = enc.word_to_chars(end_word, sequence_index=sequence_index)[1]
            except Exception:
                start_index = enc.offsets[s][0]
                end_index = enc.offsets[e][1]
        else:
            start_index = enc.offsets[s][0]
            end_index = enc.offsets[e][1]
        return start_index, end_index
