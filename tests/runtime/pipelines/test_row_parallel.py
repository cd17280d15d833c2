"""`row_parallel` (runtime/encoder.py): a batch run as one slice of rows per core on a single-threaded session gives
the rows' outputs in input order, the same as one run for fp32 graphs; it is the default for int8 artifacts only,
and takes only batches of at least one row per slice."""

from __future__ import annotations

import numpy as np
import pytest
from encoder_fixtures import get_artifact

from modelkiln.exporter.transform import transform
from modelkiln.graphs import encoder_fusions, encoder_quantization  # noqa: F401  (registers the passes)
from modelkiln.runtime.pipelines import pipeline

TEXTS = ["a short one", "Héllo wörld, a slightly longer sentence with accents", "x", "日本語のテキスト",
         "the fifth text of this batch, long enough to be the widest of them all by a margin", "six", "seven!"]


@pytest.fixture(scope="module")
def int8_artifact(tmp_path_factory):
    src = get_artifact("bert", "feature-extraction")
    out = tmp_path_factory.mktemp("int8") / "bert-int8"
    return transform(src, out, [("fuse_encoder", {}), ("quantize_dynamic_int8", {"min_cosine": None})], quiet=True)


@pytest.mark.parametrize("slices", [2, 3])
def test_fp32_rows_come_back_the_same_and_in_order(slices):
    art = get_artifact("bert", "feature-extraction")
    whole = pipeline("feature-extraction", model=art, intra_op_threads=slices, row_parallel=False)
    split = pipeline("feature-extraction", model=art, intra_op_threads=slices, row_parallel=True)
    assert split.model.row_parallel and not whole.model.row_parallel
    expected = whole(TEXTS, batch_size=7, return_tensors=True)
    got = split(TEXTS, batch_size=7, return_tensors=True)  # 7 rows in 2 or 3 uneven slices
    assert split.model._row_session is not None
    for e, g in zip(expected, got):
        assert e.shape == g.shape
        np.testing.assert_allclose(g, e, atol=1e-6, rtol=1e-6)
    # each slice is cut to its own longest row: the shorter slices run narrower than the batch
    session, widths = split.model._row_session, []

    class Recording:
        def run(self, names, feed):
            widths.append(feed["input_ids"].shape[1])
            return session.run(names, feed)

    split.model._row_session = Recording()
    again = split(TEXTS, batch_size=7, return_tensors=True)
    assert len(widths) == slices and min(widths) < max(widths) == max(e.shape[1] for e in expected)
    for e, g in zip(expected, again):
        np.testing.assert_allclose(g, e, atol=1e-6, rtol=1e-6)
    embedder = [pipeline("sentence-similarity", model=get_artifact("minilm", "sentence-similarity"),
                         intra_op_threads=slices, row_parallel=on) for on in (False, True)]
    np.testing.assert_allclose(embedder[1].encode(TEXTS), embedder[0].encode(TEXTS), atol=1e-6)
    clf_art = get_artifact("bert", "text-classification")
    clf = [pipeline("text-classification", model=clf_art, intra_op_threads=slices, row_parallel=on)
           for on in (False, True)]
    for e, g in zip(*(c(TEXTS, batch_size=4, top_k=None) for c in clf)):
        assert [r["label"] for r in g] == [r["label"] for r in e]
        assert [r["score"] for r in g] == pytest.approx([r["score"] for r in e], abs=1e-6)


def test_int8_artifacts_default_to_it(int8_artifact):
    int8 = pipeline("feature-extraction", model=int8_artifact, intra_op_threads=2)
    assert int8.model.row_parallel
    fp32 = pipeline("feature-extraction", model=get_artifact("bert", "feature-extraction"), intra_op_threads=2)
    assert not fp32.model.row_parallel
    int8("one text")  # one row: fewer than the slices, the multi-threaded session runs it
    assert int8.model._row_session is None
    whole = pipeline("feature-extraction", model=int8_artifact, intra_op_threads=2, row_parallel=False)
    got, expected = int8(TEXTS, batch_size=8, return_tensors=True), whole(TEXTS, batch_size=8, return_tensors=True)
    assert int8.model._row_session is not None
    for e, g in zip(expected, got):  # int8: each slice has its own activation scale, so close, not equal
        assert e.shape == g.shape
        cosine = (e * g).sum() / (np.linalg.norm(e) * np.linalg.norm(g))
        assert cosine > 0.99
    # one thread asked for: nothing to split across
    assert not pipeline("feature-extraction", model=int8_artifact, intra_op_threads=1).model.row_parallel


def test_slices_default_to_the_physical_cores():
    import os

    from modelkiln.runtime.encoder import available_cores

    cores = available_cores()
    assert 1 <= cores <= len(os.sched_getaffinity(0))
    art = get_artifact("bert", "feature-extraction")
    assert pipeline("feature-extraction", model=art).model._slices == cores
