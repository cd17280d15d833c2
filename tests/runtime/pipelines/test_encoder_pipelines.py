"""modelkiln's encoder pipelines answer exactly as transformers' pipelines do, on the same checkpoints and inputs.

Every test builds the reference with `transformers.pipeline(task, model=CHECKPOINT_DIR)` (question-answering:
transformers 4.57's pipeline, see hf_question_answering.py) and ours with `modelkiln.runtime.pipelines.pipeline(task,
model=ARTIFACT_DIR)`, runs both on the same inputs (accents, CJK, pairs, long texts, batches) and compares labels,
words, spans, offsets and token ids exactly and scores within 1e-4 (parity.assert_same).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from encoder_fixtures import MATRIX
from modelkiln.runtime.pipelines import pipeline
from parity import assert_same

TEXTS = [
    "My name is Wolfgang and I live in Berlin.",
    "Sarah works for Microsoft in New York; the quick brown fox jumps over the lazy dog.",
    "Café crème in Zürich, naïve résumé: São Paulo and Kraków!",
    "東京は日本の首都です。北京是中国的首都。",
    "Hi",
    "The capital of France is Paris, 1234567890 times!",
]
LONG = " ".join(["Once upon a time, in a small village by the sea, there lived a fisherman named Hans."] * 6)
PAIRS = [{"text": "A man is eating food.", "text_pair": "Someone is eating a meal."},
         {"text": "Où est la gare ?", "text_pair": "東京は日本の首都です。"}]


def hf_pipeline(task, checkpoint):
    import transformers

    return transformers.pipeline(task, model=str(checkpoint), device="cpu")


def test_assert_same_catches_differences():
    """The comparator itself: each kind of difference fails, so the parity tests below can fail."""
    good = [{"label": "POS", "score": 0.5, "start": 3}]
    assert_same([{"label": "POS", "score": 0.50009, "start": 3}], good)
    for bad in ([{"label": "NEG", "score": 0.5, "start": 3}], [{"label": "POS", "score": 0.5002, "start": 3}],
                [{"label": "POS", "score": 0.5, "start": 4}], [{"label": "POS", "score": 0.5}], [], good[0]):
        with pytest.raises(AssertionError):
            assert_same(bad, good)


# ---------------------------------------------------------------------------------------------- text-classification


@pytest.mark.parametrize("family", MATRIX["text-classification"])
def test_text_classification(encoder_artifact, encoder_checkpoint, family):
    ours = pipeline("sentiment-analysis", model=encoder_artifact(family, "text-classification"))
    theirs = hf_pipeline("text-classification", encoder_checkpoint(family, "text-classification"))
    for call in (
        lambda p: p(TEXTS[0]),  # one string: a one-element list
        lambda p: p(TEXTS),
        lambda p: p(TEXTS, top_k=None),
        lambda p: p(TEXTS[2], top_k=2),
        lambda p: p(TEXTS[3], top_k=1),
        lambda p: p(TEXTS, function_to_apply="sigmoid"),
        lambda p: p(TEXTS[:2], function_to_apply="none", top_k=None),
        lambda p: p(PAIRS[0]),  # a dict: a bare dict
        lambda p: p(PAIRS, top_k=None),
        lambda p: p(TEXTS + PAIRS[1:], batch_size=3),  # padded, length-sorted batches, results in input order
    ):
        assert_same(call(ours), call(theirs))


def test_text_classification_long_text_truncates_with_warning(encoder_artifact, encoder_checkpoint):
    ours = pipeline("text-classification", model=encoder_artifact("bert", "text-classification"))
    theirs = hf_pipeline("text-classification", encoder_checkpoint("bert", "text-classification"))
    with pytest.warns(UserWarning, match="truncated"):
        got = ours([LONG, TEXTS[0]], top_k=None)
    assert_same(got, theirs([LONG, TEXTS[0]], top_k=None, truncation=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # explicit truncation: silent
        assert_same(ours(LONG, truncation=True), theirs(LONG, truncation=True))


# ---------------------------------------------------------------------------------------------- token-classification


@pytest.mark.parametrize("family", MATRIX["token-classification"])
def test_token_classification(encoder_artifact, encoder_checkpoint, family):
    ours = pipeline("ner", model=encoder_artifact(family, "token-classification"))
    theirs = hf_pipeline("ner", encoder_checkpoint(family, "token-classification"))
    for strategy in ("none", "simple", "first", "average", "max"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # both warn that word-less tokenizers use a heuristic
            expected = theirs(TEXTS, aggregation_strategy=strategy)
            assert_same(ours(TEXTS, aggregation_strategy=strategy, batch_size=4), expected, strategy)
            assert_same(ours(TEXTS[2], aggregation_strategy=strategy), expected[2], strategy)
            assert_same(ours(TEXTS[1], aggregation_strategy=strategy, ignore_labels=[]),
                        theirs(TEXTS[1], aggregation_strategy=strategy, ignore_labels=[]), strategy)
        assert any(expected), "the tiny head should predict some entities, or this test checks nothing"


def test_token_classification_long_text(encoder_artifact, encoder_checkpoint):
    art = encoder_artifact("bert", "token-classification")
    ours = pipeline("token-classification", model=art, aggregation_strategy="simple")
    theirs = hf_pipeline("token-classification", encoder_checkpoint("bert", "token-classification"))
    with pytest.warns(UserWarning, match="truncated"):
        got = ours(LONG)
    assert_same(got, theirs(LONG, aggregation_strategy="simple"))
    # stride: overlapping windows cover the whole text; overlapping entities resolved as transformers does
    strided = ours(LONG, stride=16)
    assert_same(strided, theirs(LONG, aggregation_strategy="simple", stride=16))
    assert max(e["end"] for e in strided) > max(e["end"] for e in got)


def test_token_classification_pretokenized(encoder_artifact, encoder_checkpoint):
    ours = pipeline("ner", model=encoder_artifact("bert", "token-classification"))
    theirs = hf_pipeline("ner", encoder_checkpoint("bert", "token-classification"))
    words = ["Wolfgang", "lives", "in", "Zürich", "東京"]
    for strategy in ("none", "first"):
        assert_same(ours(words, is_split_into_words=True, aggregation_strategy=strategy),
                    theirs(words, is_split_into_words=True, aggregation_strategy=strategy))


# ---------------------------------------------------------------------------------------------- fill-mask


@pytest.mark.parametrize("family", MATRIX["fill-mask"])
def test_fill_mask(encoder_artifact, encoder_checkpoint, family):
    ours = pipeline("fill-mask", model=encoder_artifact(family, "fill-mask"))
    theirs = hf_pipeline("fill-mask", encoder_checkpoint(family, "fill-mask"))
    m = ours.tokenizer.mask_token
    one = f"The capital of France is {m}."
    two = f"Café crème in {m}, naïve {m}!"
    vocab = list(ours.tokenizer.get_vocab())
    for call in (
        lambda p: p(one),
        lambda p: p(two),  # several masks: one list per mask
        lambda p: p([one, f"東京は日本の{m}です。"], top_k=3, batch_size=2),
        lambda p: p([one]),  # a one-element list returns that element's result
        lambda p: p(one, targets=vocab[10:14], top_k=2),
        lambda p: p(one, targets=vocab[20:23], top_k=10),  # fewer targets than top_k
    ):
        assert_same(call(ours), call(theirs))


# ---------------------------------------------------------------------------------------------- question-answering

QA_CONTEXT = ("My name is Wolfgang and I live in Berlin. My friend Sarah lives in Paris; café crème in Zürich "
              "costs 5 francs. 東京は日本の首都です。")


@pytest.mark.parametrize("family", MATRIX["question-answering"])
def test_question_answering(encoder_artifact, encoder_checkpoint, family):
    import transformers
    from hf_question_answering import ReferenceQuestionAnswering

    checkpoint = encoder_checkpoint(family, "question-answering")
    theirs = ReferenceQuestionAnswering(transformers.AutoModelForQuestionAnswering.from_pretrained(checkpoint),
                                        transformers.AutoTokenizer.from_pretrained(checkpoint))
    ours = pipeline("question-answering", model=encoder_artifact(family, "question-answering"))
    long_context = " ".join([QA_CONTEXT] * 5)  # several windows at max_seq_len 64
    cases = [
        dict(question="Where do I live?", context=QA_CONTEXT),
        dict(question="Where do I live?", context=QA_CONTEXT, top_k=3),
        dict(question="What costs 5 francs?", context=long_context, top_k=4),
        dict(question="Who?", context=long_context, doc_stride=8, max_seq_len=40, top_k=2),
        dict(question="Where?", context=QA_CONTEXT, max_answer_len=3, top_k=5, handle_impossible_answer=True),
        dict(question="Where?", context=QA_CONTEXT, align_to_words=False, top_k=3),
        dict(question=["Where do I live?", "Who is my friend?"], context=QA_CONTEXT),
    ]
    for kwargs in cases:
        assert_same(ours(**kwargs, batch_size=3), theirs(**kwargs))
    assert_same(ours(question=["Where do I live?", "Who?"], context=[QA_CONTEXT, long_context], top_k=2),
                [theirs(question="Where do I live?", context=QA_CONTEXT, top_k=2),
                 theirs(question="Who?", context=long_context, top_k=2)])


# ---------------------------------------------------------------------------------------------- feature-extraction


@pytest.mark.parametrize("family", MATRIX["feature-extraction"])
def test_feature_extraction(encoder_artifact, encoder_checkpoint, family):
    ours = pipeline("feature-extraction", model=encoder_artifact(family, "feature-extraction"))
    theirs = hf_pipeline("feature-extraction", encoder_checkpoint(family, "feature-extraction"))
    got = ours(TEXTS[2])
    assert isinstance(got, list) and isinstance(got[0][0][0], float)  # nested lists [1][seq][hidden], like HF
    assert_same(got, theirs(TEXTS[2]))
    assert_same(ours(TEXTS, batch_size=4), theirs(TEXTS))
    tensors = ours(TEXTS[:2], return_tensors=True)
    assert all(isinstance(t, np.ndarray) and t.ndim == 3 for t in tensors)
    assert_same(tensors, [t.numpy() for t in theirs(TEXTS[:2], return_tensors=True)])


def test_minilm_feature_extraction(minilm_artifact):
    from modelkiln.exporter.embedded import resolve_embedded
    from transformers import pipeline as hf

    ours = pipeline("feature-extraction", model=minilm_artifact("sentence-similarity"))  # the same graph serves both
    theirs = hf("feature-extraction", model=str(resolve_embedded("all-minilm-l6-v2")), device="cpu")
    assert_same(ours(TEXTS, batch_size=3), theirs(TEXTS))


def test_minilm_matches_sentence_transformers(minilm_artifact):
    from modelkiln.exporter.embedded import resolve_embedded
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(resolve_embedded("all-minilm-l6-v2")), device="cpu")
    ours = pipeline("sentence-similarity", model=minilm_artifact("sentence-similarity"))
    sentences = TEXTS + [LONG * 3, "A man is eating food.", "Someone is eating a meal."]  # LONG*3: > 256 tokens
    expected = st.encode(sentences, batch_size=4)
    for got in (ours.encode(sentences, batch_size=4), ours(sentences), ours.encode(sentences, batch_size=1)):
        assert got.shape == expected.shape == (len(sentences), 384)
        cosine = np.sum(got * expected, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
        assert cosine.min() >= 0.99999, cosine
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # Normalize module applied
    single = ours.encode(sentences[0])
    assert single.shape == (384,)
    scores = ours({"source_sentence": sentences[-2], "sentences": sentences[-1:] + sentences[:1]})
    reference = expected[-2] @ np.stack([expected[-1], expected[0]]).T
    np.testing.assert_allclose(scores, reference, atol=1e-4)
    assert scores[0] > scores[1]  # paraphrase beats an unrelated sentence


def test_pooling_modes_match_sentence_transformers(minilm_artifact):
    """Every pooling mode, on padded batches of unequal lengths (the pipeline pools a whole batch at once, its
    padding masked out), equals sentence-transformers' Pooling on the same transformer."""
    from modelkiln.exporter.embedded import resolve_embedded
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    modes = ["cls", "max", "mean", "mean_sqrt_len"]  # (sentence-transformers' order, which the manifest keeps)
    transformer = Transformer(str(resolve_embedded("all-minilm-l6-v2")), max_seq_length=256)
    pooling = Pooling(384, pooling_mode=["cls", "max", "mean", "mean_sqrt_len_tokens"])
    st = SentenceTransformer(modules=[transformer, pooling], device="cpu")
    ours = pipeline("sentence-similarity", model=minilm_artifact("sentence-similarity"))
    ours.pooling_modes, ours.normalize = modes, False
    sentences = TEXTS + ["A man is eating food.", "Hi", LONG]
    expected = st.encode(sentences, batch_size=4)
    for batch_size in (4, 1):
        got = ours.encode(sentences, batch_size=batch_size)
        assert got.shape == expected.shape == (len(sentences), 4 * 384)
        np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-4)
