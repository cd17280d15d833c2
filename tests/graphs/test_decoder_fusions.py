"""GroupQueryAttention / RMSNorm fusions and merged projections on tiny random checkpoints of every rotary family:
the fused graph must give the unfused graph's outputs, the runtime the same tokens, and validate must pass."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from modelkiln.exporter.transform import plan_optimize, transform
from modelkiln.runtime.decoder import DecoderLM, KVBuffers
from modelkiln.runtime.errors import ModelkilnError
from modelkiln.runtime.generation import generate
from modelkiln.runtime.generation_config import GenerationConfig

ROTARY_FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "phi3"]


def _fused(tiny_artifact, family, tmp_path_factory, level="all"):
    src = tiny_artifact(family)
    out = tmp_path_factory.mktemp(f"fused-{family}") / "artifact"
    manifest = json.loads((src / "modelkiln.json").read_text())
    return src, transform(src, out, plan_optimize(manifest, level), quiet=True)


def _ops(artifact) -> set[str]:
    return {n.op_type for n in onnx.load(artifact / "model.onnx", load_external_data=False).graph.node}


def _padded_batch(vocab: int):
    rng = np.random.default_rng(7)
    ids = rng.integers(3, vocab, (3, 20))
    mask = np.ones_like(ids)
    for row, pad in enumerate((0, 4, 13)):
        ids[row, :pad], mask[row, :pad] = 0, 0
    return ids, mask


@pytest.mark.parametrize("family", ROTARY_FAMILIES)
def test_fused_graph_matches_and_generates_the_same_tokens(tiny_artifact, family, tmp_path_factory):
    src, fused = _fused(tiny_artifact, family, tmp_path_factory)
    assert {"GroupQueryAttention", "SkipSimplifiedLayerNormalization"} <= _ops(fused)
    assert "Softmax" not in _ops(fused)
    manifest = json.loads((fused / "modelkiln.json").read_text())
    assert manifest["kv_cache"]["attention"] == "group_query_attention"
    assert manifest["inputs"] if "inputs" in manifest else manifest["graphs"]["model"]["inputs"]
    plain, lm = DecoderLM.load(src), DecoderLM.load(fused)
    assert lm.in_place and not plain.in_place
    ids, mask = _padded_batch(300)
    # forward (validate's numpy path): left-padded prefill, then a decode step past the sliding window
    from modelkiln.runtime.generation import position_ids_from_mask

    pos = position_ids_from_mask(mask)
    a_logits, a_cache = plain.forward(ids, mask, pos, plain.empty_cache(3))
    b_logits, b_cache = lm.forward(ids, mask, pos, lm.empty_cache(3))
    real = mask.astype(bool)
    np.testing.assert_allclose(b_logits[real], a_logits[real], atol=2e-5)
    for x, y in zip(a_cache, b_cache):
        np.testing.assert_allclose(y.transpose(0, 2, 1, 3)[real], x.transpose(0, 2, 1, 3)[real], atol=2e-5)
    # generation: greedy batch with left padding (in-place cache), beams, and a long single row (> window)
    for config in (GenerationConfig(max_new_tokens=12, min_new_tokens=12),
                   GenerationConfig(max_new_tokens=8, num_beams=3, num_return_sequences=2)):
        np.testing.assert_array_equal(generate(lm, ids, mask, config), generate(plain, ids, mask, config))
    long = GenerationConfig(max_new_tokens=40, min_new_tokens=40)
    np.testing.assert_array_equal(generate(lm, ids[:1], mask[:1], long), generate(plain, ids[:1], mask[:1], long))


def test_dropped_rows_keep_their_lengths_in_the_in_place_cache(tiny_artifact, tmp_path_factory):
    """Rows that finish are dropped from the batch: select_rows gathers the in-place cache and the rows' mask,
    which the fused graph reads as their lengths, so the rows left decode exactly as the plain graph does on their
    whole sequences."""
    from modelkiln.runtime.generation import position_ids_from_mask, prefill

    src, fused = _fused(tiny_artifact, "llama", tmp_path_factory)
    plain, lm = DecoderLM.load(src), DecoderLM.load(fused)
    ids, mask = _padded_batch(300)  # rows with 0, 4 and 13 left-padding positions
    logits, cache = prefill(lm, ids, mask, capacity=30)
    first = logits.argmax(-1)
    second = cache.decode(lm.session, first).argmax(-1)  # every row one token longer: the mask the cache owns
    keep = np.array([0, 2])
    kept = lm.select_rows(cache, keep)
    got = kept.decode(lm.session, second[keep])  # [2, V]
    seqs = np.concatenate([ids, first[:, None], second[:, None]], axis=1)[keep]
    masks = np.concatenate([mask, np.ones((3, 2), mask.dtype)], axis=1)[keep]
    expected, _ = plain.forward(seqs, masks, position_ids_from_mask(masks), plain.empty_cache(2))
    np.testing.assert_allclose(got, expected[:, -1], atol=2e-5)


def test_in_place_cache_is_written_in_place(tiny_artifact, tmp_path_factory):
    _, fused = _fused(tiny_artifact, "llama", tmp_path_factory)
    lm = DecoderLM.load(fused)
    cache = lm.new_cache(batch=1, capacity=16)
    assert isinstance(cache, KVBuffers) and cache.values[0].shape() == [1, 2, 16, 16]
    buffer = cache.values[0]
    ids = np.array([[5, 6, 7, 8]])
    mask = np.ones_like(ids)
    _, same = lm.step(ids, mask, np.arange(4)[None], cache)
    assert same is cache and cache.values[0] is buffer  # no new cache tensors
    filled = buffer.numpy()[0, :, :, :]
    assert np.abs(filled[:, :4]).sum() > 0 and np.abs(filled[:, 4:]).sum() == 0
    lm.step(np.array([[9]]), np.ones((1, 5), np.int64), np.array([[4]]), cache)
    assert np.abs(buffer.numpy()[0, :, 4]).sum() > 0 and np.abs(buffer.numpy()[0, :, 5:]).sum() == 0


def test_fused_artifact_validates(tiny_artifact, tiny_checkpoint, tmp_path_factory):
    from modelkiln.validate import validate

    _, fused = _fused(tiny_artifact, "mistral", tmp_path_factory)
    report = validate(fused, str(tiny_checkpoint("mistral")))
    assert report.passed, "\n".join(report.lines())
    assert any("left-pad" in c.name for c in report.cases)


def test_basic_level_keeps_standard_attention(tiny_artifact, tmp_path_factory):
    src, fused = _fused(tiny_artifact, "qwen2", tmp_path_factory, level="basic")
    ops = _ops(fused)
    assert "GroupQueryAttention" not in ops and "SimplifiedLayerNormalization" in ops and "Split" in ops
    assert not DecoderLM.load(fused).in_place
    ids, mask = _padded_batch(300)
    config = GenerationConfig(max_new_tokens=6, min_new_tokens=6)
    np.testing.assert_array_equal(generate(DecoderLM.load(fused), ids, mask, config),
                                  generate(DecoderLM.load(src), ids, mask, config))


def test_refusals(tiny_artifact, tmp_path):
    with pytest.raises(ModelkilnError, match="rotary"):
        transform(tiny_artifact("gpt2"), tmp_path / "a", [("fuse_group_query_attention", {})], quiet=True)
    assert not (tmp_path / "a").exists()
    with pytest.raises(ModelkilnError, match="unknown graph pass 'fuse_everything'"):
        transform(tiny_artifact("llama"), tmp_path / "b", [("fuse_everything", {})], quiet=True)
    with pytest.raises(ModelkilnError, match="OUTPUT is the input artifact"):
        transform(tiny_artifact("llama"), tiny_artifact("llama"), [("fuse_rms_norm", {})], quiet=True)
    with pytest.raises(ModelkilnError, match="unknown optimization level"):
        plan_optimize({"task": "text-generation"}, "max")
