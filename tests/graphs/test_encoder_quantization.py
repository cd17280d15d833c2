"""`quantize_dynamic_int8` on encoders: the accuracy guard keeps MatMuls in float when the target demands it (and
only then), the result validates with accuracy checks, pipelines serve it, clear errors; and the real
all-MiniLM-L6-v2 reaches cosine >= 0.99 against sentence-transformers on held-out sentences."""

from __future__ import annotations

import json

import numpy as np
import onnx_ir as ir
import pytest
from encoder_fixtures import get_artifact, get_checkpoint

from modelkiln.exporter.transform import transform
from modelkiln.graphs import encoder_fusions, encoder_quantization  # noqa: F401  (registers the passes)
from modelkiln.graphs.encoder_accuracy import Agreement, agreement
from modelkiln.graphs.encoder_quantization import corpus_batches, quantize_dynamic_int8
from modelkiln.graphs.passes import PassContext
from modelkiln.runtime.artifact import Artifact
from modelkiln.runtime.errors import ModelkilnError
from modelkiln.runtime.pipelines import pipeline
from modelkiln.validate.report import ParityReport

PASSES = [("fuse_encoder", {}), ("quantize_dynamic_int8", {"per_channel": True, "min_cosine": 0.99, "exclude": []})]


def _quantize(src, out, **params):
    passes = [("fuse_encoder", {}), ("quantize_dynamic_int8", {"per_channel": True, **params})]
    out = transform(src, out, passes, quiet=True)
    return out, json.loads((out / "modelkiln.json").read_text())


def _worst_cosine(fp32, int8) -> Agreement:
    """The int8 artifact against the fp32 one on the guard corpus, measured here independently of the pass."""
    import onnxruntime as ort

    art = Artifact.load(fp32)
    sessions = [ort.InferenceSession(str(a / "model.onnx"), providers=["CPUExecutionProvider"]) for a in (fp32, int8)]
    names = [o.name for o in sessions[0].get_outputs()]
    total = Agreement()
    for batch in corpus_batches(art.root, art.task, [i.name for i in sessions[0].get_inputs()], art.manifest,
                                batch_size=32):
        expected, actual = (dict(zip(names, s.run(names, batch.feed))) for s in sessions)
        total.extend(agreement(art.task, expected, actual, batch.mask, batch.focus))
    return total


def test_guard_keeps_matmuls_float_when_the_target_demands_it(tmp_path):
    src = get_artifact("mpnet", "feature-extraction")
    plain, plain_manifest = _quantize(src, tmp_path / "plain", min_cosine=None)  # no guard: everything int8
    unguarded = _worst_cosine(src, plain)
    assert plain_manifest["quantization"]["kept"] == []
    assert unguarded.worst_cosine < 0.9999  # int8 everywhere does cost accuracy on this checkpoint
    # a quarter of plain int8's loss, so the guard has to act: the loss itself moves between machines (0.9989 to
    # 0.9995 measured), a fixed target near it made this test flaky
    target = 1 - (1 - unguarded.worst_cosine) / 4

    guarded, manifest = _quantize(src, tmp_path / "guarded", min_cosine=target)
    kept = manifest["quantization"]["kept"]
    assert kept and manifest["quantization"]["min_cosine"] == target
    measured = _worst_cosine(src, guarded)
    assert measured.worst_cosine >= target, (measured.worst_cosine, kept)
    assert manifest["quantization"]["measured_worst_cosine"] == pytest.approx(measured.worst_cosine, abs=2e-4)
    ops = [n.op_type for n in ir.load(guarded / "model.onnx").graph]
    quantized = manifest["graphs"]["model"]["passes"][-1]["result"]["quantized"]
    assert manifest["quantization"]["kept_as"] == "w8a16"  # kept: two int8 passes (16-bit activations), no float
    # one int8 product per plain MatMul, two per kept one (MatMulIntegerToFloat where an input's quantization is
    # shared, as q, k and v share theirs, and for a kept one's first pass; its second is a DynamicQuantizeMatMul)
    assert quantized > 0 and ops.count("DequantizeLinear") == len(kept)
    assert ops.count("DynamicQuantizeMatMul") + ops.count("MatMulIntegerToFloat") == quantized + 2 * len(kept)
    # the manifest's I/O signature is the float one: the runtime needs no special case
    for key in ("inputs", "outputs"):
        assert manifest["graphs"]["model"][key] == json.loads((src / "modelkiln.json").read_text())["graphs"][
            "model"][key]
    # --exclude keeps what it names in float on top
    _, excluded = _quantize(src, tmp_path / "excluded", min_cosine=None, exclude=["*.layer.0.*"])
    assert excluded["quantization"]["excluded"] and all(".layer.0." in e for e in
                                                         excluded["quantization"]["excluded"])


def test_quantized_classifier_validates_with_accuracy_checks(tmp_path):
    src = get_artifact("bert", "text-classification")
    out = transform(src, tmp_path / "int8", PASSES, validate=True,
                    reference=str(get_checkpoint("bert", "text-classification")), quiet=True)
    report = ParityReport.from_json((out / "parity.json").read_text())
    assert report.passed, "\n".join(report.lines())
    assert {c.kind for c in report.cases} == {"accuracy", "pipeline"}  # not fp32 elementwise tolerances
    accuracy = [c for c in report.cases if c.kind == "accuracy"]
    assert all("logits cosine vs eager (reported, not judged): worst" in c.outputs[0].name for c in accuracy)
    assert all(c.tokens and "0 of" in c.tokens[0].name and c.tokens[0].passed for c in accuracy)  # labels unchanged
    manifest = json.loads((out / "modelkiln.json").read_text())
    assert manifest["quantization"]["weights"] == "int8" and manifest["quantization"]["per_channel"]

    texts = ["I absolutely loved it", "Terrible, never again.", "Café crème in Zürich"]
    ours = pipeline("text-classification", model=out)(texts, top_k=None)
    reference = pipeline("text-classification", model=src)(texts, top_k=None)
    assert [[r["label"] for r in row] for row in ours] == [[r["label"] for r in row] for row in reference]


def test_quantized_artifact_failing_the_target_fails_validate(tmp_path):
    """A quantized artifact that does not reach its recorded min_cosine is reported, never hidden (exit 1)."""
    from click.testing import CliRunner

    from modelkiln.exporter.artifact_writer import file_table
    from modelkiln.exporter.cli import cli

    out, manifest = _quantize(get_artifact("mpnet", "feature-extraction"), tmp_path / "int8", min_cosine=None)
    manifest["quantization"]["min_cosine"] = 0.9999999  # stricter than int8 can be
    (out / "modelkiln.json").write_text(json.dumps({**manifest, "files": file_table(out)}))
    result = CliRunner().invoke(cli, ["validate", str(out), "--reference",
                                      str(get_checkpoint("mpnet", "feature-extraction")), "--no-save"])
    assert result.exit_code == 1, result.output
    assert "FAIL | accuracy[" in result.output and "needs >= 0.9999999" in result.output


def test_errors(tmp_path):
    src = get_artifact("bert", "text-classification")
    art = Artifact.load(src)
    context = PassContext(manifest=art.manifest, artifact_dir=art.root)
    fused = ir.load(src / "model.onnx")
    encoder_fusions.fuse_encoder(fused)
    with pytest.raises(ModelkilnError, match="matches every quantizable MatMul"):
        quantize_dynamic_int8(fused, exclude=["*"], context=context)
    with pytest.raises(ModelkilnError, match="min_cosine must be between 0 and 1"):
        quantize_dynamic_int8(fused, min_cosine=1.5, context=context)
    embedder = Artifact.load(get_artifact("mpnet", "feature-extraction"))
    with pytest.raises(ModelkilnError, match="int8 cannot meet min_cosine 1.0"):  # only all-float is exact
        quantize_dynamic_int8(ir.load(embedder.graph_path("model")), min_cosine=1.0,
                              context=PassContext(manifest=embedder.manifest, artifact_dir=embedder.root))
    with pytest.raises(ModelkilnError, match="needs the artifact's tokenizer"):
        quantize_dynamic_int8(ir.load(src / "model.onnx"), context=PassContext(manifest=art.manifest))
    with pytest.raises(ModelkilnError, match="is for encoder artifacts"):
        quantize_dynamic_int8(ir.load(src / "model.onnx"), context=PassContext(manifest={"task": "text-generation"}))
    # a graph without MatMul weights
    x = ir.Value(name="input_ids", shape=ir.Shape([1, 4]), type=ir.TensorType(ir.DataType.FLOAT))
    y = ir.node("Relu", [x]).outputs[0]
    y.name, y.shape, y.type = "last_hidden_state", ir.Shape([1, 4]), ir.TensorType(ir.DataType.FLOAT)
    graph = ir.Graph([x], [y], nodes=[y.producer()], opset_imports={"": 18})
    with pytest.raises(ModelkilnError, match="has none; nothing to quantize"):
        quantize_dynamic_int8(ir.Model(graph, ir_version=10), context=context)
    # already quantized
    quantized = ir.load(_quantize(src, tmp_path / "q", min_cosine=None)[0] / "model.onnx")
    with pytest.raises(ModelkilnError, match="already quantized"):
        quantize_dynamic_int8(quantized, context=context)


@pytest.mark.slow
def test_minilm_int8_against_sentence_transformers(tmp_path):
    """Issue 6's accuracy target on the real checkpoint: worst held-out sentence >= 0.99 against
    sentence-transformers (optimum-onnx's avx512_vnni int8 reaches 0.944 on its corpus)."""
    from sentence_transformers import SentenceTransformer

    from modelkiln.exporter.embedded import resolve_embedded
    from modelkiln.validate.encoder_cases import ACCURACY_TEXTS

    out, manifest = _quantize(get_artifact("minilm", "sentence-similarity"), tmp_path / "int8", min_cosine=0.99)
    result = manifest["graphs"]["model"]["passes"][-1]["result"]
    assert result["quantized"] > 2 * len(result["kept"])  # mostly plain int8
    assert all(label.startswith("model.encoder.layer.") for label in result["kept"])  # named by layer
    assert result["gelu_routed"] and result["smoothed"]
    st = SentenceTransformer(str(resolve_embedded("all-minilm-l6-v2")), device="cpu")
    texts = list(ACCURACY_TEXTS)
    expected = st.encode(texts, convert_to_numpy=True)
    ours = pipeline("sentence-similarity", model=out)
    for batch_size in (1, 32):
        actual = ours.encode(texts, batch_size=batch_size)
        cosines = (actual * expected).sum(1) / np.linalg.norm(actual, axis=1) / np.linalg.norm(expected, axis=1)
        assert cosines.min() >= 0.99, (batch_size, cosines.min(), texts[int(cosines.argmin())])


@pytest.mark.slow
def test_minilm_per_token_int8_needs_no_kept_matmul(tmp_path):
    """activations="per_token": every MatMul plain int8 (none kept) meets 0.99 against sentence-transformers on the
    held-out texts, and a text's embedding no longer depends on the batch it shares (one scale per token)."""
    from sentence_transformers import SentenceTransformer

    from modelkiln.exporter.embedded import resolve_embedded
    from modelkiln.validate.encoder_cases import ACCURACY_TEXTS

    out, manifest = _quantize(get_artifact("minilm", "sentence-similarity"), tmp_path / "int8", min_cosine=0.99,
                              activations="per_token")
    assert manifest["quantization"]["kept"] == [] and manifest["quantization"]["activations"].endswith("per token")
    st = SentenceTransformer(str(resolve_embedded("all-minilm-l6-v2")), device="cpu")
    texts = list(ACCURACY_TEXTS)
    expected = st.encode(texts, convert_to_numpy=True)
    ours = pipeline("sentence-similarity", model=out)
    got = {b: ours.encode(texts, batch_size=b) for b in (1, 32)}
    for actual in got.values():
        cosines = (actual * expected).sum(1) / np.linalg.norm(actual, axis=1) / np.linalg.norm(expected, axis=1)
        assert cosines.min() >= 0.99, (cosines.min(), texts[int(cosines.argmin())])
    np.testing.assert_allclose(got[1], got[32], atol=2e-3)


def _run(model: ir.Model, feed: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(ir.to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: feed[i.name] for i in session.get_inputs()})


def _fused(family: str, task: str) -> ir.Model:
    """The fused fp32 graph with weights in memory (attention over three MatMuls), as the int8 pass sees it."""
    model = ir.load(get_artifact(family, task) / "model.onnx")
    encoder_fusions.fuse_encoder(model)
    ir.external_data.load_to_model(model)
    return model


def _feed(rng, shape=(3, 17)):
    ids = rng.integers(5, 150, size=shape)
    mask = np.ones_like(ids)
    mask[1, -5:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def test_outlier_rewrites_keep_the_fp32_outputs():
    """GELU routing and smoothing rewrite the fp32 graph without changing what it computes, whichever channels they
    take (forced here with spikes in the calibration maxima), and leave the int8 inputs without those channels."""
    from modelkiln.graphs.encoder_quantization import _candidates, _route_gelu_outliers, _smooth_inputs

    model = _fused("bert", "text-classification")
    feed = _feed(np.random.default_rng(0))
    before = _run(model, feed)
    pool = _candidates(model)
    amax = {c.label: np.ones(c.weight.shape[0], dtype=np.float32) for c in pool}
    for peak in amax.values():
        peak[[1, 5]] = 50.0, 40.0
    routed = _route_gelu_outliers(model, pool, amax, 2, 1.01)  # (a 64-channel tensor's p99 is its 2nd largest)
    nodes = {n.name: n for n in model.graph}
    downs = [c.label for c in pool if nodes[c.node_name].inputs[0].producer().op_type == "BiasGelu"]
    assert len(downs) == 2 and sorted(routed) == sorted(downs) and all(idx == [1, 5] for idx in routed.values())
    assert all(amax[label][[1, 5]].max() == 0.0 for label in routed)  # the down projections' inputs: no spike left
    smoothed = _smooth_inputs(model, pool, amax, 90.0)
    assert smoothed and not set(smoothed) & set(routed)  # GELU outputs are routed, never smoothed
    assert all(peak == pytest.approx(50.0) for peak in smoothed.values())
    for label in smoothed:
        assert amax[label].max() == pytest.approx(1.0)  # the smoothed inputs' channels are level now
    ops = [n.op_type for n in model.graph]
    assert ops.count("BiasGelu") == 2 * len(routed)  # the FFN's own + the routed channels'
    # one Mul per smoothed input, shared by the MatMuls that read it (q, k and v read one)
    readers = {next(n for n in model.graph if n.name == c.node_name).inputs[0].name for c in pool
               if c.label in smoothed}
    assert ops.count("Mul") == len(readers) < len(smoothed)
    for after, plain in zip(_run(model, feed), before):
        np.testing.assert_allclose(after, plain, atol=2e-5, rtol=1e-4)


def test_smoothing_folds_into_a_layer_norm_read_only_by_the_matmuls():
    """Pre-LN layout (the LayerNorm output feeds only the projections): the scales go into gamma and beta, no Mul."""
    from modelkiln.graphs.encoder_quantization import _candidates, _smooth_inputs

    rng = np.random.default_rng(0)
    x = ir.Value(name="x", shape=ir.Shape([2, 5, 8]), type=ir.TensorType(ir.DataType.FLOAT))
    graph = ir.Graph([x], [], nodes=[], opset_imports={"": 18}, name="g")
    gamma, beta = (_init(graph, name, rng.normal(size=8)) for name in ("gamma", "beta"))
    norm = ir.node("LayerNormalization", [x, gamma, beta], attributes={"axis": -1}, name="norm")
    graph.append(norm)
    for i in range(2):
        mm = ir.node("MatMul", [norm.outputs[0], _init(graph, f"w{i}", rng.normal(size=(8, 6)))], name=f"mm{i}")
        graph.append(mm)
        mm.outputs[0].name, mm.outputs[0].dtype = f"y{i}", ir.DataType.FLOAT
        graph.outputs.append(mm.outputs[0])
    model = ir.Model(graph, ir_version=10)
    feed = {"x": rng.normal(size=(2, 5, 8)).astype(np.float32)}
    before = _run(model, feed)
    pool = _candidates(model)
    amax = {c.label: np.ones(8, dtype=np.float32) for c in pool}
    for peak in amax.values():
        peak[3] = 20.0
    assert len(_smooth_inputs(model, pool, amax, 90.0)) == 2
    assert "Mul" not in [n.op_type for n in model.graph]
    for after, plain in zip(_run(model, feed), before):
        np.testing.assert_allclose(after, plain, atol=1e-5, rtol=1e-5)


def _init(graph: ir.Graph, name: str, array) -> ir.Value:
    from modelkiln.graphs.initializers import add_initializer

    return add_initializer(graph, name, np.asarray(array, dtype=np.float32))


def test_w8a16_is_as_accurate_as_the_weights_allow():
    """A MatMul kept out of plain int8 runs in two int8 passes (16-bit activations): its error is the weights'
    rounding only, far below plain int8's on an input with a wide range; the bias goes into the first pass."""
    from modelkiln.graphs.encoder_quantization import _candidates

    rng = np.random.default_rng(0)
    x = ir.Value(name="x", shape=ir.Shape([64, 32]), type=ir.TensorType(ir.DataType.FLOAT))
    graph = ir.Graph([x], [], nodes=[], opset_imports={"": 18}, name="g")
    mm = ir.node("MatMul", [x, _init(graph, "w", rng.normal(size=(32, 16)))], name="mm")
    add = ir.node("Add", [mm.outputs[0], _init(graph, "dense.bias", rng.normal(size=16))])
    graph.extend([mm, add])
    add.outputs[0].name, add.outputs[0].dtype = "y", ir.DataType.FLOAT
    graph.outputs.append(add.outputs[0])
    feed = {"x": rng.normal(size=(64, 32)).astype(np.float32)}
    feed["x"][3, 7] = 60.0  # one massive activation: plain int8's one scale leaves the rest a few levels
    exact = _run(ir.Model(graph, ir_version=10), feed)[0]
    errors = {}
    for precise in (False, True):
        model = ir.from_proto(ir.to_proto(ir.Model(graph, ir_version=10)))
        (c,) = _candidates(model)
        c.quantize_weight(per_channel=True, reduce_range=False)
        weights_only = feed["x"] @ (c.quantized.astype(np.float32) * c.scale) + add.inputs[1].const_value.numpy()
        c.apply(model, mode="w8a16" if precise else "int8")
        ops = [n.op_type for n in model.graph]
        assert "MatMul" not in ops and "Add" not in ops[:1]
        errors[precise] = np.abs(_run(model, feed)[0] - exact).max()
    assert ops.count("MatMulIntegerToFloat") == 1 and ops.count("DynamicQuantizeMatMul") == 1
    weight_error = np.abs(weights_only - exact).max()
    assert errors[True] == pytest.approx(weight_error, rel=0.02)  # the activations' rounding is gone
    assert errors[False] > 2 * weight_error


def test_int8_residual_sums_take_the_bias_into_the_matmul():
    """Add(Add(y, bias), residual) of the fused graph -> DynamicQuantizeMatMul(.., bias) + Add(y, residual): one
    pass over [tokens, hidden] fewer per residual sum (written as Adds again: faster than Sum, see fuse_encoder)."""
    src = get_artifact("bert", "text-classification")
    art = Artifact.load(src)
    model = ir.load(src / "model.onnx")
    encoder_fusions.fuse_encoder(model)
    quantize_dynamic_int8(model, min_cosine=None, context=PassContext(manifest=art.manifest, artifact_dir=art.root))
    assert not [n for n in model.graph if n.op_type == "Sum"]
    norms = [n for n in model.graph if n.op_type == "LayerNormalization"]
    assert norms
    for norm in norms:
        terms = encoder_fusions._sum_terms(norm.inputs[0])
        assert terms is not None and len(terms) >= 2
        assert all(v.const_value is None for v in terms)  # no bias vector left in a residual sum
        producers = {v.producer().op_type for v in terms if v.producer() is not None}
        assert "DynamicQuantizeMatMul" in producers


def test_projections_reading_one_input_share_its_quantization():
    """q, k and v read one input: one DynamicQuantizeLinear feeds three MatMulIntegerToFloat (the value projection's
    W8A16 first digit too), and the outputs are what three DynamicQuantizeMatMul nodes give (same quantization)."""
    from modelkiln.graphs.encoder_quantization import _apply_all, _candidates

    feed = _feed(np.random.default_rng(0))
    outputs = {}
    for shared in (True, False):
        model = _fused("bert", "text-classification")
        pool = _candidates(model)
        for c in pool:
            c.quantize_weight(per_channel=True, reduce_range=False)
        modes = {c.label: "w8a16" if c.label.endswith("value") else "int8" for c in pool}
        if shared:
            _apply_all(model, pool, modes)
        else:  # each MatMul on its own
            for c in pool:
                c.apply(model, {}, mode=modes[c.label])
        ops = [n.op_type for n in model.graph]
        attention = ops.count("Attention")
        assert attention == 2
        if shared:
            digits = [n for n in model.graph if n.op_type == "DynamicQuantizeLinear"]
            assert len(digits) == attention  # one per attention input, none for the single-reader MatMuls
            readers = [[u.node.op_type for u in node.outputs[0].uses()] for node in digits]
            assert all("DequantizeLinear" in r for r in readers)  # the value's W8A16 rest
            # q, k, v; in the classifier's last layer the query reads the [CLS] token alone: k and v
            assert sorted(r.count("MatMulIntegerToFloat") for r in readers) == [2, 3]
        else:
            assert ops.count("DynamicQuantizeLinear") == 2  # the W8A16 values' own
        outputs[shared] = _run(model, feed)
    for a, b in zip(outputs[True], outputs[False]):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_per_token_activations_keep_each_rows_resolution():
    """activations="per_token": one symmetric int8 scale per row (token), so a massive activation in one row costs
    the other rows nothing; the graph computes exactly numpy's per-row quantization, the bias stays in float."""
    from modelkiln.graphs.encoder_quantization import _candidates

    rng = np.random.default_rng(0)
    x = ir.Value(name="x", shape=ir.Shape([4, 16, 32]), type=ir.TensorType(ir.DataType.FLOAT))
    graph = ir.Graph([x], [], nodes=[], opset_imports={"": 18}, name="g")
    outs = []
    for i in range(2):  # two readers of x: one quantization
        mm = ir.node("MatMul", [x, _init(graph, f"w{i}", rng.normal(size=(32, 24)))], name=f"mm{i}")
        add = ir.node("Add", [mm.outputs[0], _init(graph, f"dense{i}.bias", rng.normal(size=24))])
        graph.extend([mm, add])
        add.outputs[0].name, add.outputs[0].dtype = f"y{i}", ir.DataType.FLOAT
        graph.outputs.append(add.outputs[0])
        outs.append((mm.inputs[1].const_value.numpy(), add.inputs[1].const_value.numpy()))
    feed = {"x": rng.normal(size=(4, 16, 32)).astype(np.float32)}
    feed["x"][0, 0, 7] = 60.0  # a massive activation at one token
    errors = {}
    for mode in ("int8", "per_token"):
        model = ir.from_proto(ir.to_proto(ir.Model(graph, ir_version=10)))
        pool = _candidates(model)
        shared: dict = {}
        for c in pool:
            c.quantize_weight(per_channel=True, reduce_range=False)
            c.apply(model, shared, mode=mode)
        got = _run(model, feed)
        if mode == "per_token":
            ops = [n.op_type for n in model.graph]
            assert ops.count("QuantizeLinear") == 1 and ops.count("MatMulIntegerToFloat") == 2
            rows = feed["x"].reshape(-1, 32)
            scale = np.abs(rows).max(axis=1, keepdims=True) / 127
            dequantized = (np.clip(np.rint(rows / scale), -127, 127) * scale).reshape(feed["x"].shape)
            for y, c, (_, bias) in zip(got, pool, outs):
                expected = dequantized @ (c.quantized.astype(np.float32) * c.scale) + bias
                np.testing.assert_allclose(y, expected, atol=1e-4, rtol=1e-4)
        exact = [feed["x"] @ w + b for w, b in outs]
        # the error on every token but the one with the massive activation
        errors[mode] = max(np.abs(y - e)[:, 1:].max() for y, e in zip(got, exact))
    assert errors["per_token"] < errors["int8"] / 4
