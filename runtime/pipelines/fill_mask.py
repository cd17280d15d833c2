"""`pipeline("fill-mask")`, with transformers' outputs.

    fill = pipeline("fill-mask", model="art/bert-mlm")
    fill("Paris is the [MASK] of France.")
    # [{'score': 0.91, 'token': 3007, 'token_str': 'capital', 'sequence': 'paris is the capital of france.'}, ...]
    fill("Paris is the [MASK] of [MASK].")       # one list of top_k candidates per mask
    fill("Paris is the [MASK] of France.", targets=["capital", "city"], top_k=2)

As in transformers (pipelines/fill_mask.py): several masks are scored independently (one candidate list per
mask, the other masks left in `sequence`); a one-element list input returns that element's result.
"""

from __future__ import annotations

import logging

import numpy as np

from modelkiln.runtime.encoder import EncoderPipeline, softmax, text_batch
from modelkiln.runtime.errors import ModelkilnError

logger = logging.getLogger(__name__)


class FillMaskPipeline(EncoderPipeline):
    task = "fill-mask"

    def __init__(self, artifact, **kwargs):
        super().__init__(artifact, **kwargs)
        if self.tokenizer.mask_token_id is None:
            raise ModelkilnError(f"the tokenizer of artifact {artifact.root} defines no mask_token; fill-mask needs "
                                 "one")

    def _parameters(self, top_k: int | None = None, targets=None, tokenizer_kwargs: dict | None = None):
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise ModelkilnError(f"top_k must be a positive integer, got {top_k!r}")
        return {"top_k": 5 if top_k is None else top_k,
                "target_ids": None if targets is None else self.get_target_ids(targets),
                "tokenizer_kwargs": dict(tokenizer_kwargs or {})}

    def get_target_ids(self, targets) -> np.ndarray:
        """Vocabulary ids of `targets`; a word outside the vocabulary maps to its first token, with a warning."""
        if isinstance(targets, str):
            targets = [targets]
        vocab = self.tokenizer.get_vocab()
        target_ids = []
        for target in targets:
            id_ = vocab.get(target)
            if id_ is None:
                input_ids = self.tokenizer(target, add_special_tokens=False, return_attention_mask=False,
                                           return_token_type_ids=False, max_length=1, truncation=True)["input_ids"]
                if len(input_ids) == 0:
                    logger.warning(f"The specified target token `{target}` does not exist in the model vocabulary. "
                                   "We cannot replace it with anything meaningful, ignoring it")
                    continue
                id_ = input_ids[0]
                logger.warning(f"The specified target token `{target}` does not exist in the model vocabulary. "
                               f"Replacing with `{self.tokenizer.convert_ids_to_tokens(id_)}`.")
            target_ids.append(id_)
        target_ids = list(set(target_ids))
        if not target_ids:
            raise ModelkilnError("At least one target must be provided when passed.")
        return np.array(target_ids)

    def __call__(self, inputs, **kwargs):
        params, batch_size = self._merged(dict(kwargs))
        texts, batched = text_batch(inputs, "pass a string with a mask token, or a list of them")
        enc = self.model.encode(texts, **params["tokenizer_kwargs"])
        mask_id = self.tokenizer.mask_token_id
        for i, e in enumerate(enc.encodings):
            if mask_id not in e.ids:
                raise ModelkilnError(f"No mask_token ({self.tokenizer.mask_token}) found on the input"
                                     + (f" {i}" if batched else "") + (" (it was cut by truncation)"
                                                                       if self.tokenizer.mask_token in texts[i] else ""))
        rows = self.model.run(self.model.features(enc), batch_size)
        results = [self._postprocess(np.asarray(e.ids), row["logits"], params["top_k"], params["target_ids"])
                   for e, row in zip(enc.encodings, rows)]
        if batched and len(results) == 1:
            return results[0]
        return results if batched else results[0]

    def _postprocess(self, input_ids: np.ndarray, logits: np.ndarray, top_k: int, target_ids):
        if target_ids is not None and target_ids.shape[0] < top_k:
            top_k = target_ids.shape[0]
        masked_index = np.nonzero(input_ids == self.tokenizer.mask_token_id)[0]
        probs = softmax(logits[masked_index, :].astype(np.float32))  # [masks, vocab]
        if target_ids is not None:
            probs = probs[..., target_ids]
        top_k = min(top_k, probs.shape[-1])
        # torch.topk order: descending score; a stable sort keeps the lower index first on exact ties
        predictions = np.argsort(-probs, axis=-1, kind="stable")[:, :top_k]
        values = np.take_along_axis(probs, predictions, axis=-1)
        single_mask = values.shape[0] == 1
        pad_id = self.tokenizer.pad_token_id
        result = []
        for i, (_values, _predictions) in enumerate(zip(values.tolist(), predictions.tolist())):
            row = []
            for v, p in zip(_values, _predictions):
                tokens = input_ids.copy()
                if target_ids is not None:
                    p = target_ids[p].tolist()
                tokens[masked_index[i]] = p
                if pad_id is not None:
                    tokens = tokens[np.where(tokens != pad_id)]
                sequence = self.tokenizer.decode(tokens, skip_special_tokens=single_mask)
                row.append({"score": v, "token": p, "token_str": self.tokenizer.decode([p]), "sequence": sequence})
            result.append(row)
        return result[0] if single_mask else result
