"""`fuse_encoder` on tiny checkpoints of several families: the fused graph equals the unfused one (fp32 validate
passes), the I/O signature is unchanged, BERT-like attention fuses, and families that do not fuse still work."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx_ir as ir
import pytest
from encoder_fixtures import get_artifact, get_checkpoint

from modelkiln.exporter.transform import plan_quantize, transform
from modelkiln.graphs import encoder_fusions
from modelkiln.graphs.passes import PassContext
from modelkiln.runtime.errors import ModelkilnError
from modelkiln.runtime.pipelines import pipeline
from modelkiln.validate.report import ParityReport

# (family, task, attention fuses): families from tests/encoder_fixtures.MATRIX, so the artifacts are shared
CASES = [("bert", "text-classification", True), ("roberta", "token-classification", True),
         ("distilbert", "question-answering", True), ("deberta-v2", "text-classification", False)]


def _outputs(artifact, feed):
    import onnxruntime as ort

    session = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: feed[i.name] for i in session.get_inputs()})


@pytest.mark.parametrize("family,task,attention", CASES)
def test_fused_graph_equals_unfused(tmp_path, family, task, attention):
    src = get_artifact(family, task)
    out = transform(src, tmp_path / "fused", [("fuse_encoder", {})], quiet=True)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 150, size=(3, 23))
    mask = np.ones_like(ids)
    mask[1, -7:] = 0  # padding: the fused attention must mask like the unfused one
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": (rng.random(ids.shape) < 0.3).astype(np.int64)}
    for fused, plain in zip(_outputs(out, feed), _outputs(src, feed)):
        real = mask.astype(bool) if plain.ndim >= 2 and plain.shape[:2] == mask.shape else slice(None)
        np.testing.assert_allclose(fused[real], plain[real], atol=1e-5, rtol=1e-4)

    before, after = (json.loads((a / "modelkiln.json").read_text()) for a in (src, out))
    for key in ("inputs", "outputs"):  # the runtime needs no special case
        assert after["graphs"]["model"][key] == before["graphs"]["model"][key]
    result = after["graphs"]["model"]["passes"][-1]["result"]
    if attention:
        assert result["Attention"] == 2  # ONNX's Attention (opset 23) over three projections each
        assert result["unfused_attention_softmax"] == 0
    else:  # DeBERTa's disentangled attention stays as it is, the rest still fuses
        assert "Attention" not in result and result["unfused_attention_softmax"] == 2
    assert result["BiasGelu"] == 2 and result["residual_sum_layer_norm"] >= 4
    ops = {n.op_type for n in ir.load(out / "model.onnx").graph}
    assert "SkipLayerNormalization" not in ops  # slower than Add + LayerNorm on onnxruntime 1.31's CPU kernels
    assert "Sum" not in ops  # residual sums as Adds: faster than Sum
    assert not {"MultiHeadAttention", "QAttention"} & ops
    # a [CLS] head: the last layer runs for token 0 alone (the outputs above are equal)
    assert (result["first_token_only_nodes"] > 0) == (task == "text-classification")


def test_fused_artifact_passes_fp32_validate(tmp_path):
    out = transform(get_artifact("bert", "text-classification"), tmp_path / "fused", [("fuse_encoder", {})],
                    validate=True, reference=str(get_checkpoint("bert", "text-classification")), quiet=True)
    report = ParityReport.from_json((out / "parity.json").read_text())
    assert report.passed and report.precision == "fp32", "\n".join(report.lines())
    assert {c.kind for c in report.cases} == {"forward", "texts", "pipeline"}  # fp32 tolerances, not accuracy


def test_bert_fusion_counts_and_embed_layer_norm():
    model = ir.load(get_artifact("bert", "text-classification") / "model.onnx")
    result = encoder_fusions.fuse_encoder(model)
    assert result["Attention"] == 2
    attention = [n for n in model.graph if n.op_type == "Attention"]
    assert [n.domain for n in attention] == ["", ""] and model.opset_imports[""] >= 23
    assert all(n.attributes.get_int("q_num_heads") == n.attributes.get_int("kv_num_heads") == 4 for n in attention)
    # the last one for [CLS] alone: its query is token 0's, sliced before the query projection
    query = attention[1].inputs[0].producer().inputs[0].producer()  # Add(MatMul(Slice(x), W_q), b_q)
    assert query.op_type == "MatMul" and query.inputs[0].producer().op_type == "Slice"
    # keys and values without their biases (a shift softmax ignores; b_v·W_o joins the output projection's bias),
    # so they read the projections directly, from every token
    assert result["key_value_biases_folded"] == 4
    assert all(n.inputs[i].producer().op_type == "MatMul" for n in attention for i in (1, 2))
    assert attention[1].inputs[1].producer().inputs[0].producer().op_type != "Slice"
    # the int8 plan keeps the value bias in place (moved, it shifts the output projection's int8 input)
    fuse = [p for p in plan_quantize({"task": "text-classification", "graphs": {"model": {"passes": []}}}, "int8")
            if p[0] == "fuse_encoder"]
    assert fuse == [("fuse_encoder", {"fold_value_bias": False})]
    model = ir.load(get_artifact("bert", "text-classification") / "model.onnx")
    assert encoder_fusions.fuse_encoder(model, **fuse[0][1])["key_value_biases_folded"] == 2  # the keys' only
    assert result["EmbedLayerNormalization"] == 1 and result["BiasGelu"] == 2
    # keeping SkipLayerNormalization is an option
    model = ir.load(get_artifact("bert", "text-classification") / "model.onnx")
    assert encoder_fusions.fuse_encoder(model, skip_layer_norm=True)["SkipLayerNormalization"] == 4


def test_runtime_session_keeps_residual_adds_unfused(tmp_path):
    """The fused graph's residual Adds stay Add + LayerNormalization in the runtime's session: onnxruntime would
    fuse them into its slower SkipLayerNormalization, and the runtime turns that fusion off by name (an unknown
    name would be ignored silently, hence the check that without it the fusion happens)."""
    import onnxruntime as ort

    from modelkiln.runtime.encoder import DISABLED_OPTIMIZERS

    out = transform(get_artifact("bert", "text-classification"), tmp_path / "fused", [("fuse_encoder", {})],
                    quiet=True)

    def loaded_ops(disabled):
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(tmp_path / "loaded.onnx")
        ort.InferenceSession(str(out / "model.onnx"), options, providers=["CPUExecutionProvider"],
                             disabled_optimizers=list(disabled))
        return [n.op_type for n in ir.load(tmp_path / "loaded.onnx").graph]

    assert "SkipLayerNormalization" not in loaded_ops(DISABLED_OPTIMIZERS)
    assert "SkipLayerNormalization" in loaded_ops(())


@pytest.mark.parametrize("family", ["bert", "deberta-v2"])
def test_first_token_only_last_layer(family):
    """A [CLS] head: the last layer computed for token 0 alone gives the same logits (padding included); BERT's
    attention gets one query, DeBERTa's unfused one stays whole and the rewrite starts after it."""
    import onnxruntime as ort

    src = get_artifact(family, "text-classification")
    rng = np.random.default_rng(1)
    ids = rng.integers(5, 150, size=(4, 17))
    mask = np.ones_like(ids)
    mask[2, -6:] = 0
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    logits, ops, moved = [], [], []
    for first_token_only in (False, True):
        model = ir.load(src / "model.onnx")
        ir.external_data.load_to_model(model)  # (the session below is built from bytes)
        moved.append(encoder_fusions.fuse_encoder(model, first_token_only=first_token_only)["first_token_only_nodes"])
        ops.append([n.op_type for n in model.graph])
        session = ort.InferenceSession(ir.to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"])
        logits.append(session.run(None, {i.name: feed[i.name] for i in session.get_inputs()})[0])
    np.testing.assert_allclose(logits[1], logits[0], atol=1e-6, rtol=1e-5)
    assert moved[0] == 0 and moved[1] >= 6  # at least the FFN: MatMul, BiasGelu, MatMul, Add, Add, LayerNorm
    assert ops[1].count("Slice") > ops[0].count("Slice")
    if family == "bert":
        # the query projection moves to token 0 too (MatMul, Add), keys and values do not
        assert ops[1].count("Attention") == ops[0].count("Attention") and moved[1] >= 9


def test_runtime_pipelines_on_fused_artifact(tmp_path):
    src = get_artifact("roberta", "token-classification")
    out = transform(src, tmp_path / "fused", [("fuse_encoder", {})], quiet=True)
    text = ["My name is Wolfgang and I live in Berlin.", "Café crème in Zürich"]
    for strategy in ("none", "simple"):
        fused = pipeline("token-classification", model=out)(text, aggregation_strategy=strategy)
        plain = pipeline("token-classification", model=src)(text, aggregation_strategy=strategy)
        assert [[(e.get("entity", e.get("entity_group")), e["start"], e["end"]) for e in row] for row in fused] == \
               [[(e.get("entity", e.get("entity_group")), e["start"], e["end"]) for e in row] for row in plain]
        np.testing.assert_allclose([e["score"] for row in fused for e in row],
                                   [e["score"] for row in plain for e in row], atol=1e-5)


def test_refuses_fused_and_decoder_graphs():
    model = ir.load(get_artifact("bert", "text-classification") / "model.onnx")
    encoder_fusions.fuse_encoder(model)
    with pytest.raises(ModelkilnError, match="already has onnxruntime contrib ops"):
        encoder_fusions.fuse_encoder(model)
    with pytest.raises(ModelkilnError, match="for encoder artifacts"):
        encoder_fusions.fuse_encoder(model, context=PassContext(manifest={"task": "text-generation"}))


def test_graphs_never_imports_torch():
    code = ("import sys; import modelkiln.graphs.encoder_fusions, modelkiln.graphs.encoder_quantization; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
