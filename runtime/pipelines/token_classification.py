"""`pipeline("token-classification")` (alias "ner"), with transformers' outputs.

    ner = pipeline("ner", model="art/conll03")
    ner("My name is Wolfgang and I live in Berlin")
    # [{'entity': 'B-PER', 'score': 0.99, 'index': 4, 'word': 'wolfgang', 'start': 11, 'end': 19}, ...]
    ner("My name is Wolfgang and I live in Berlin", aggregation_strategy="simple")
    # [{'entity_group': 'PER', 'score': 0.99, 'word': 'wolfgang', 'start': 11, 'end': 19}, ...]

The algorithm is transformers' (pipelines/token_classification.py) step for step -- gather per-token scores,
fuse subwords into words (first / average / max), group B-/I- runs -- in numpy over the same float32 scores,
so labels, words, offsets and indices come out identical and scores agree to float rounding. Scores are numpy
float32 scalars, as transformers returns them. Long texts are truncated to the model's limit (with `stride`, they
are split in overlapping windows instead and overlapping entities resolved as transformers does).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from modelkiln.runtime.encoder import EncoderPipeline, check_texts, softmax
from modelkiln.runtime.errors import ModelkilnError

STRATEGIES = ("none", "simple", "first", "average", "max")
_WORD_STRATEGIES = ("first", "average", "max")


class TokenClassificationPipeline(EncoderPipeline):
    task = "token-classification"

    needs_labels = True

    def _parameters(self, aggregation_strategy: str | None = None, ignore_labels: list[str] | None = None,
                    stride: int | None = None, is_split_into_words: bool = False, delimiter: str | None = None):
        strategy = "none" if aggregation_strategy is None else str(getattr(aggregation_strategy, "value",
                                                                           aggregation_strategy)).lower()
        if strategy not in STRATEGIES:
            raise ModelkilnError(f"aggregation_strategy={aggregation_strategy!r}; use one of {', '.join(STRATEGIES)}")
        if stride is not None:
            limit = self.model.max_length
            if not isinstance(stride, int) or stride < 0 or (limit is not None and stride >= limit):
                raise ModelkilnError(f"stride={stride!r} must be a non-negative integer below the model's "
                                     f"limit of {limit} tokens")
            if strategy == "none":
                raise ModelkilnError('stride splits long texts into windows, which needs aggregation_strategy '
                                     '"simple", "first", "average" or "max", not "none"')
            if limit is None:
                raise ModelkilnError("stride needs a model_max_length in the tokenizer config to size the windows")
        return {"strategy": strategy, "ignore_labels": ["O"] if ignore_labels is None else list(ignore_labels),
                "stride": stride, "is_split_into_words": bool(is_split_into_words),
                "delimiter": " " if delimiter is None else delimiter}

    def __call__(self, inputs, **kwargs):
        params, batch_size = self._merged(dict(kwargs))
        split = params["is_split_into_words"]
        if isinstance(inputs, str):
            items, batched = [inputs], False
        elif isinstance(inputs, (list, tuple)) and inputs:
            # transformers wraps one list of words in a batch of one, and returns a batch of one
            batched = True
            items = list(inputs) if not split or all(isinstance(x, list) for x in inputs) else [list(inputs)]
        else:
            raise ModelkilnError("At least one input is required: pass a string or a list of strings")
        prepared = [self._preprocess(item, params) for item in items]
        flat = [f for chunks in prepared for f in chunks["features"]]
        rows = iter(self.model.run(flat, batch_size))
        results = []
        for chunks in prepared:
            outputs = [next(rows)["logits"] for _ in chunks["features"]]
            results.append(self._postprocess(chunks, outputs, params))
        return results if batched else results[0]

    # ------------------------------------------------------------------ preprocess
    def _preprocess(self, sentence, params) -> dict[str, Any]:
        word_to_chars_map = None
        kwargs: dict[str, Any] = {"return_special_tokens_mask": True, "return_offsets_mapping": True}
        if params["is_split_into_words"]:
            if not isinstance(sentence, list) or not sentence:
                raise ModelkilnError("with is_split_into_words=True, each input must be a non-empty list of words")
            check_texts(sentence, "word")
            words, delimiter = sentence, params["delimiter"]
            sentence = delimiter.join(words)  # the text the character offsets refer to
            word_to_chars_map, offset = [], 0
            for word in words:
                word_to_chars_map.append((offset, offset + len(word)))
                offset += len(word) + len(delimiter)
            text, kwargs["is_split_into_words"] = words, True
        else:
            if not isinstance(sentence, str):
                raise ModelkilnError(f"each input must be a string, got {type(sentence).__name__} (for lists of words "
                                     "pass is_split_into_words=True)")
            check_texts([sentence], "text")
            text = sentence
        limit = self.model.max_length
        if params["stride"] is not None:
            kwargs.update(truncation=True, max_length=limit, stride=params["stride"], return_overflowing_tokens=True)
            enc = self.tokenizer(text, **kwargs)
        elif limit is not None:
            # transformers always truncates here (truncation=model_max_length); say so when it happens
            enc = self.tokenizer(text, **kwargs)
            if len(enc.encodings[0].ids) > limit:
                warnings.warn(f"a text of {len(enc.encodings[0].ids)} tokens is longer than the model's limit of "
                              f"{limit}; it is truncated (pass stride=N to cover all of it in windows)", UserWarning,
                              stacklevel=3)
                enc = self.tokenizer(text, truncation=True, max_length=limit, **kwargs)
        else:
            enc = self.tokenizer(text, **kwargs)
        return {"sentence": sentence, "encodings": enc.encodings, "features": self.model.features(enc),
                "word_to_chars_map": word_to_chars_map}

    # ------------------------------------------------------------------ postprocess (transformers' algorithm)
    def _postprocess(self, chunks, all_logits: list[np.ndarray], params) -> list[dict]:
        strategy, ignore_labels = params["strategy"], params["ignore_labels"]
        all_entities = []
        for enc, logits in zip(chunks["encodings"], all_logits):
            scores = softmax(logits.astype(np.float32))
            word_ids = enc.word_ids if chunks["word_to_chars_map"] is not None else None
            pre_entities = self.gather_pre_entities(chunks["sentence"], enc.ids, scores, enc.offsets,
                                                    enc.special_tokens_mask, strategy, word_ids,
                                                    chunks["word_to_chars_map"])
            grouped = self.aggregate(pre_entities, strategy)
            all_entities += [e for e in grouped if e.get("entity", None) not in ignore_labels
                             and e.get("entity_group", None) not in ignore_labels]
        if len(all_logits) > 1:
            all_entities = aggregate_overlapping_entities(all_entities)
        return all_entities

    def gather_pre_entities(self, sentence, input_ids, scores, offset_mapping, special_tokens_mask, strategy,
                            word_ids=None, word_to_chars_map=None) -> list[dict]:
        model = self.tokenizer.backend_tokenizer.model
        has_prefix = getattr(model, "continuing_subword_prefix", None)
        unk_id = self.tokenizer.unk_token_id
        pre_entities = []
        for idx, token_scores in enumerate(scores):
            if special_tokens_mask[idx]:
                continue
            word = self.tokenizer.convert_ids_to_tokens(int(input_ids[idx]))
            start_ind, end_ind = offset_mapping[idx]
            if word_ids is not None and word_to_chars_map is not None and word_ids[idx] is not None:
                start_char, _ = word_to_chars_map[word_ids[idx]]
                start_ind += start_char
                end_ind += start_char
            word_ref = sentence[start_ind:end_ind]
            if has_prefix:
                # subtle: a token whose text differs in length from its span carries the "##" prefix
                is_subword = len(word) != len(word_ref)
            else:
                if strategy in _WORD_STRATEGIES:
                    warnings.warn("Tokenizer does not support real words, using fallback heuristic", UserWarning)
                is_subword = start_ind > 0 and " " not in sentence[start_ind - 1:start_ind + 1]
            if int(input_ids[idx]) == unk_id:
                word = word_ref
                is_subword = False
            pre_entities.append({"word": word, "scores": token_scores, "start": start_ind, "end": end_ind,
                                 "index": idx, "is_subword": is_subword})
        return pre_entities

    def aggregate(self, pre_entities: list[dict], strategy: str) -> list[dict]:
        labels = self.model.labels
        if strategy in ("none", "simple"):
            entities = []
            for pre in pre_entities:
                entity_idx = pre["scores"].argmax()
                entities.append({"entity": labels[int(entity_idx)], "score": pre["scores"][entity_idx],
                                 "index": pre["index"], "word": pre["word"], "start": pre["start"],
                                 "end": pre["end"]})
        else:
            entities = self.aggregate_words(pre_entities, strategy)
        if strategy == "none":
            return entities
        return self.group_entities(entities)

    def aggregate_word(self, entities: list[dict], strategy: str) -> dict:
        labels = self.model.labels
        word = self.convert_tokens_to_string([e["word"] for e in entities])
        if strategy == "first":
            scores = entities[0]["scores"]
            idx = scores.argmax()
            score, entity = scores[idx], labels[int(idx)]
        elif strategy == "max":
            max_entity = max(entities, key=lambda e: e["scores"].max())
            scores = max_entity["scores"]
            idx = scores.argmax()
            score, entity = scores[idx], labels[int(idx)]
        else:  # average
            average_scores = np.nanmean(np.stack([e["scores"] for e in entities]), axis=0)
            idx = average_scores.argmax()
            score, entity = average_scores[idx], labels[int(idx)]
        return {"entity": entity, "score": score, "word": word, "start": entities[0]["start"],
                "end": entities[-1]["end"]}

    def aggregate_words(self, entities: list[dict], strategy: str) -> list[dict]:
        """Tokens of one word that disagree are forced to agree: micro|soft| com|pany| -> microsoft| company|."""
        word_entities, word_group = [], None
        for entity in entities:
            if word_group is None:
                word_group = [entity]
            elif entity["is_subword"]:
                word_group.append(entity)
            else:
                word_entities.append(self.aggregate_word(word_group, strategy))
                word_group = [entity]
        if word_group is not None:
            word_entities.append(self.aggregate_word(word_group, strategy))
        return word_entities

    def group_sub_entities(self, entities: list[dict]) -> dict:
        entity = entities[0]["entity"].split("-", 1)[-1]
        scores = np.nanmean([e["score"] for e in entities])
        return {"entity_group": entity, "score": np.mean(scores),
                "word": self.convert_tokens_to_string([e["word"] for e in entities]),
                "start": entities[0]["start"], "end": entities[-1]["end"]}

    def group_entities(self, entities: list[dict]) -> list[dict]:
        """Adjacent tokens with the same tag join one group; a B- tag always starts a new one."""
        entity_groups, disagg = [], []
        for entity in entities:
            if not disagg:
                disagg.append(entity)
                continue
            bi, tag = get_tag(entity["entity"])
            _, last_tag = get_tag(disagg[-1]["entity"])
            if tag == last_tag and bi != "B":
                disagg.append(entity)
            else:
                entity_groups.append(self.group_sub_entities(disagg))
                disagg = [entity]
        if disagg:
            entity_groups.append(self.group_sub_entities(disagg))
        return entity_groups

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        decoder = self.tokenizer.backend_tokenizer.decoder
        return decoder.decode(tokens) if decoder is not None else " ".join(tokens)


def get_tag(entity_name: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'I-PER' -> ('I', 'PER'); 'PER' -> ('I', 'PER') (a bare tag continues)."""
    if entity_name.startswith("B-"):
        return "B", entity_name[2:]
    if entity_name.startswith("I-"):
        return "I", entity_name[2:]
    return "I", entity_name


def aggregate_overlapping_entities(entities: list[dict]) -> list[dict]:
    """Entities from overlapping windows: of two that overlap keep the longer, then the higher score."""
    if not entities:
        return entities
    entities = sorted(entities, key=lambda x: x["start"])
    aggregated, previous = [], entities[0]
    for entity in entities:
        if previous["start"] <= entity["start"] < previous["end"]:
            current_length = entity["end"] - entity["start"]
            previous_length = previous["end"] - previous["start"]
            if current_length > previous_length or (current_length == previous_length
                                                    and entity["score"] > previous["score"]):
                previous = entity
        else:
            aggregated.append(previous)
            previous = entity
    aggregated.append(previous)
    return aggregated
