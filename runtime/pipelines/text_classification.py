"""`pipeline("text-classification")` (alias "sentiment-analysis"), with transformers' outputs.

    clf = pipeline("sentiment-analysis", model="art/sst2")
    clf("This movie is disgustingly good !")            # [{'label': 'POSITIVE', 'score': 0.9998}]
    clf(["good", "bad"])                                 # [{'label': 'POSITIVE', ...}, {'label': 'NEGATIVE', ...}]
    clf("good", top_k=None)                              # every label, best first
    clf({"text": "A man eats.", "text_pair": "Someone eats."})   # a text pair: {'label': ..., 'score': ...}

The quirks are transformers' (pipelines/text_classification.py), kept on purpose so a service can switch:
one string without `top_k` gives a one-element list, a dict gives a bare dict; passing `top_k` (even 1 or None)
gives lists sorted by score. `function_to_apply` defaults from the head: regression -> none, multi-label or a
single label -> sigmoid, several labels -> softmax.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelkiln.runtime.encoder import EncoderPipeline, check_texts, sigmoid, softmax
from modelkiln.runtime.errors import ModelkilnError

FUNCTIONS = ("softmax", "sigmoid", "none")
_UNSET = ""  # transformers' sentinel: top_k=None means "all labels", so "not given" needs another value


class TextClassificationPipeline(EncoderPipeline):
    task = "text-classification"

    needs_labels = True

    def _parameters(self, top_k: Any = _UNSET, function_to_apply: str | None = None, **tokenizer_kwargs):
        if top_k is not _UNSET and top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise ModelkilnError(f"top_k must be a positive integer or None, got {top_k!r}")
        if function_to_apply is not None:
            if not isinstance(function_to_apply, str) or function_to_apply.lower() not in FUNCTIONS:
                raise ModelkilnError(f"function_to_apply={function_to_apply!r}; use one of {', '.join(FUNCTIONS)}")
            function_to_apply = function_to_apply.lower()
        return {"top_k": top_k, "function_to_apply": function_to_apply, "tokenizer_kwargs": tokenizer_kwargs}

    def default_function(self) -> str:
        info = self.model.info
        problem, num_labels = info.get("problem_type"), info.get("num_labels") or len(self.model.labels)
        if problem == "regression":
            return "none"
        if problem == "multi_label_classification" or num_labels == 1:
            return "sigmoid"
        if problem == "single_label_classification" or num_labels > 1:
            return "softmax"
        return info.get("function_to_apply") or "none"

    def __call__(self, inputs, **kwargs):
        legacy = "top_k" not in kwargs and "top_k" not in self._defaults
        params, batch_size = self._merged(dict(kwargs))
        batched = isinstance(inputs, list)
        items = inputs if batched else [inputs]
        if batched and not items:
            raise ModelkilnError("no inputs: pass a string, a {'text', 'text_pair'} dict, or a list of them")
        texts, pairs = _split_inputs(items)
        check_texts(texts, "text")
        if any(p is not None for p in pairs):
            check_texts([p for p in pairs if p is not None], "text_pair")
        tokenizer_kwargs = params["tokenizer_kwargs"]
        if all(p is None for p in pairs):
            features = self.model.features(self.model.encode(texts, **tokenizer_kwargs))
        else:  # one call per row: a pair and a single text get different special tokens
            features = [f for text, pair in zip(texts, pairs)
                        for f in self.model.features(self.model.encode(text, pair, **tokenizer_kwargs))]
        rows = self.model.run(features, batch_size)
        results = [self._postprocess(row["logits"], params["function_to_apply"], params["top_k"], legacy)
                   for row in rows]
        if not batched:
            result = results[0]
            # transformers wraps a lone string's answer in a list unless this call itself passed top_k
            return [result] if isinstance(inputs, str) and "top_k" not in kwargs else result
        return results

    def _postprocess(self, logits: np.ndarray, function_to_apply: str | None, top_k, legacy: bool):
        labels = self.model.labels
        if logits.shape[-1] != len(labels):
            raise ModelkilnError(f"the model returns {logits.shape[-1]} scores but the manifest has {len(labels)} "
                                 "labels; re-export the artifact")
        fn = function_to_apply or self.default_function()
        outputs = logits.astype(np.float32)
        scores = softmax(outputs) if fn == "softmax" else sigmoid(outputs) if fn == "sigmoid" else outputs
        if legacy and top_k in (1, _UNSET):
            return {"label": labels[int(scores.argmax())], "score": scores.max().item()}
        dict_scores = [{"label": labels[i], "score": score.item()} for i, score in enumerate(scores)]
        if not legacy:
            dict_scores.sort(key=lambda x: x["score"], reverse=True)
            if top_k is not None:
                dict_scores = dict_scores[:top_k]
        return dict_scores


def _split_inputs(items: list) -> tuple[list, list]:
    texts, pairs = [], []
    for item in items:
        if isinstance(item, dict):
            if "text" not in item:
                raise ModelkilnError(f"a text-pair input needs the keys 'text' and 'text_pair', got {sorted(item)}")
            unknown = set(item) - {"text", "text_pair"}
            if unknown:
                raise ModelkilnError(f"unknown keys {sorted(unknown)} in a text-pair input; use 'text' and "
                                     "'text_pair'")
            texts.append(item["text"])
            pairs.append(item.get("text_pair"))
        elif isinstance(item, (list, tuple)):
            raise ModelkilnError("the pipeline received a list inside the inputs; to classify a text pair, pass "
                                 '{"text": "My text", "text_pair": "My pair"}')
        else:
            texts.append(item)
            pairs.append(None)
    return texts, pairs
