"""`pipeline("feature-extraction")` (transformers' raw hidden states) and `pipeline("sentence-similarity")`
(sentence-transformers' pooled, normalized embeddings).

    fe = pipeline("feature-extraction", model="art/minilm")
    fe("Hello world")                          # nested lists [1][sequence][hidden], like transformers
    fe("Hello world", return_tensors=True)     # numpy array (1, sequence, hidden)

    st = pipeline("sentence-similarity", model="art/minilm")
    st.encode(["A man eats.", "Someone eats."])  # np.ndarray (2, 384), as SentenceTransformer.encode
    st({"source_sentence": "A man eats.", "sentences": ["Someone eats.", "A cat sleeps."]})   # [0.73, 0.05]

The embedding applies the pooling and normalization the export read from the checkpoint's sentence-transformers
config (`encoder.pooling` in the manifest: modes cls / max / mean / mean_sqrt_len concatenated in that order,
then L2 normalization when the checkpoint has a Normalize module) and its `max_seq_length` truncation.
"""

from __future__ import annotations

import numpy as np

from modelkiln.runtime.encoder import EncoderPipeline, check_texts, text_batch
from modelkiln.runtime.errors import ModelkilnError


class FeatureExtractionPipeline(EncoderPipeline):
    task = "feature-extraction"

    def _parameters(self, truncation=None, tokenize_kwargs: dict | None = None, return_tensors=None):
        tokenize_kwargs = dict(tokenize_kwargs or {})
        if truncation is not None:
            if "truncation" in tokenize_kwargs:
                raise ModelkilnError("truncation parameter defined twice (given as keyword argument as well as in "
                                     "tokenize_kwargs)")
            tokenize_kwargs["truncation"] = truncation
        return {"tokenize_kwargs": tokenize_kwargs, "return_tensors": bool(return_tensors)}

    def __call__(self, inputs, **kwargs):
        params, batch_size = self._merged(dict(kwargs))
        texts, batched = text_batch(inputs, "pass a string or a list of strings")
        enc = self.model.encode(texts, **params["tokenize_kwargs"])
        rows = self.model.run(self.model.features(enc), batch_size)
        first = self.model.output_names[0]  # transformers returns output [0]: last_hidden_state (or logits)
        results = [row[first][None] if params["return_tensors"] else row[first][None].tolist() for row in rows]
        return results if batched else results[0]


class SentenceSimilarityPipeline(EncoderPipeline):
    task = "sentence-similarity"

    def __init__(self, artifact, **kwargs):
        super().__init__(artifact, **kwargs)
        pooling = self.model.info.get("pooling")
        if not pooling:
            raise ModelkilnError(f"artifact {artifact.root} records no pooling; re-export it with --task "
                                 "sentence-similarity")
        self.pooling_modes: list[str] = list(pooling["modes"])
        self.normalize: bool = bool(pooling.get("normalize"))
        self.max_seq_length: int | None = pooling.get("max_seq_length")

    def _parameters(self, normalize_embeddings: bool | None = None):
        return {"normalize_embeddings": normalize_embeddings}

    def encode(self, sentences, batch_size: int | None = None, normalize_embeddings: bool | None = None) -> np.ndarray:
        """Embeddings as `SentenceTransformer.encode` returns them: (n, dim) float32, or (dim,) for one string.

        `normalize_embeddings` adds an L2 normalization to a checkpoint that has none (as sentence-transformers
        does); it never removes the checkpoint's own Normalize module.
        """
        kwargs = {} if normalize_embeddings is None else {"normalize_embeddings": normalize_embeddings}
        params, batch_size = self._merged({"batch_size": batch_size or self.batch_size or 32, **kwargs})
        single = isinstance(sentences, str)
        texts = [sentences] if single else list(sentences)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        check_texts(texts, "sentence")
        limit = self.max_seq_length or self.model.max_length
        enc = self.model.encode(texts, truncation=True, max_length=limit) if limit else self.model.encode(texts)
        features = self.model.features(enc)
        hidden = self.model.output_names.index("last_hidden_state")
        batches = [(chunk, self.pool(outputs[hidden], mask))
                   for chunk, outputs, mask in self.model.run_batches(features, batch_size)]
        embeddings = np.empty((len(features), batches[0][1].shape[1]), dtype=np.float32)  # [n, dim * modes]
        for chunk, pooled in batches:
            embeddings[chunk] = pooled  # back in input order
        if self.normalize or params["normalize_embeddings"]:
            norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
            embeddings = embeddings / np.maximum(norms, 1e-12)  # torch.nn.functional.normalize's eps
        return embeddings[0] if single else embeddings

    def pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """A padded batch's token states [rows, width, hidden] and attention mask [rows, width] -> its sentence
        vectors [rows, hidden * modes], as sentence-transformers' Pooling computes them."""
        weights = mask[..., None].astype(hidden.dtype)  # [rows, width, 1]
        counts = np.maximum(weights.sum(axis=1), 1e-9)  # [rows, 1]
        parts = []
        for mode in self.pooling_modes:
            if mode == "cls":  # the first real token (left padding puts it after the pads)
                parts.append(hidden[np.arange(len(hidden)), mask.argmax(axis=1)])
            elif mode == "max":
                parts.append(np.where(weights > 0, hidden, -1e9).max(axis=1))
            elif mode == "mean":
                parts.append((hidden * weights).sum(axis=1) / counts)
            elif mode == "mean_sqrt_len":
                parts.append((hidden * weights).sum(axis=1) / np.sqrt(counts))
            else:
                raise ModelkilnError(f"pooling mode {mode!r} in the manifest is not supported; re-export the "
                                     "artifact")
        return np.concatenate(parts, axis=1).astype(np.float32, copy=False)

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Cosine similarity matrix between two sets of embeddings ((n, d) x (m, d) -> (n, m))."""
        a, b = np.atleast_2d(a), np.atleast_2d(b)
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        return a @ b.T

    def __call__(self, inputs, **kwargs):
        """A {"source_sentence", "sentences"} dict gives the cosine similarities (the Hub's sentence-similarity
        task); a string or a list of strings gives embeddings, as `encode`."""
        if isinstance(inputs, dict):
            if set(inputs) != {"source_sentence", "sentences"}:
                raise ModelkilnError("a sentence-similarity input is {'source_sentence': str, 'sentences': [str, ...]}"
                                     f", got keys {sorted(inputs)}")
            if isinstance(inputs["sentences"], str) or not inputs["sentences"]:
                raise ModelkilnError("'sentences' must be a non-empty list of strings")
            embeddings = self.encode([inputs["source_sentence"], *inputs["sentences"]], **kwargs)
            return self.similarity(embeddings[:1], embeddings[1:])[0].tolist()
        return self.encode(inputs, **kwargs)
