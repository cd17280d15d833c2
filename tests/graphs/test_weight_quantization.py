"""Weight-only int4/int8 (MatMulNBits) on tiny checkpoints: structure, the tied embedding stored once and quantized,
precision-aware validation, CLI and clear errors. The real accuracy figure is in tests/e2e (SmolLM2)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from modelkiln.exporter.cli import cli
from modelkiln.exporter.transform import plan_quantize, transform
from modelkiln.runtime.decoder import DecoderLM
from modelkiln.runtime.errors import ModelkilnError
from modelkiln.runtime.generation import position_ids_from_mask


def _graph(artifact):
    return onnx.load(artifact / "model.onnx", load_external_data=False).graph


def _quantized(tiny_artifact, tmp_path, family="llama", **options):
    src = tiny_artifact(family)
    manifest = json.loads((src / "modelkiln.json").read_text())
    return src, transform(src, tmp_path / "q", plan_quantize(manifest, **options), quiet=True)


@pytest.mark.parametrize("weights,scheme", [("int4", "minmax"), ("int4", "symmetric"), ("int8", "minmax")])
def test_quantized_graph_runs_close_to_float(tiny_artifact, tmp_path, weights, scheme):
    src, out = _quantized(tiny_artifact, tmp_path, weights=weights, scheme=scheme)
    ops = [n.op_type for n in _graph(out).node]
    assert "MatMulNBits" in ops and "GatherBlockQuantized" in ops  # tied table: quantized lookup + head
    assert not any(i.name == "model.lm_head.weight" for i in _graph(out).initializer)  # no float copy left
    manifest = json.loads((out / "modelkiln.json").read_text())
    assert manifest["quantization"]["weights"] == weights and manifest["quantization"]["scheme"] == scheme
    assert manifest["files"]["model.onnx.data"]["size"] < 0.5 * (src / "model.onnx.data").stat().st_size
    ids = np.random.default_rng(0).integers(3, 300, (2, 24))
    mask = np.ones_like(ids)
    plain, q = DecoderLM.load(src), DecoderLM.load(out)
    a, _ = plain.forward(ids, mask, position_ids_from_mask(mask), plain.empty_cache(2))
    b, _ = q.forward(ids, mask, position_ids_from_mask(mask), q.empty_cache(2))
    relative = np.abs(a - b).max() / np.abs(a).max()
    assert relative < (0.02 if weights == "int8" else 0.25), relative


def test_minmax_blocks_reproduce_weights_already_on_a_4bit_grid():
    from modelkiln.graphs.passes import PassContext
    from modelkiln.graphs.weight_quantization import quantize_matmul_nbits

    rng = np.random.default_rng(1)
    k, n, block = 64, 48, 32
    q = rng.integers(0, 16, (n, k // block, block))
    q[..., 0], q[..., 1] = 0, 15  # llama.cpp's Q4_1: each block's min and max are on the grid ends
    # llama.cpp stores each block's scale and min as float16 and dequantizes in float32
    scale = rng.uniform(0.01, 0.05, (n, k // block, 1)).astype(np.float16).astype(np.float32)
    low = rng.normal(0, 0.2, (n, k // block, 1)).astype(np.float16).astype(np.float32)
    weight = (low + scale * q.astype(np.float32)).reshape(n, k).T.astype(np.float32)  # [K, N]
    model = _single_matmul_model(weight)
    quantize_matmul_nbits(model, bits=4, block_size=block, accuracy_level=0, context=PassContext())
    inputs = rng.standard_normal((3, k)).astype(np.float32)
    np.testing.assert_allclose(_run(model, {"x": inputs})[0], inputs @ weight, rtol=1e-4, atol=1e-4)


def _single_matmul_model(weight: np.ndarray):
    import onnx_ir as ir

    k = weight.shape[0]
    x = ir.Value(name="x", shape=ir.Shape(["b", k]), type=ir.TensorType(ir.DataType.FLOAT))
    w = ir.Value(name="w", const_value=ir.tensor(weight, name="w"), shape=ir.Shape(weight.shape),
                 type=ir.TensorType(ir.DataType.FLOAT))
    node = ir.Node("", "MatMul", [x, w], name="proj/MatMul")
    node.outputs[0].name = "y"
    graph = ir.Graph([x], [node.outputs[0]], nodes=[node], initializers=[w], opset_imports={"": 18})
    return ir.Model(graph, ir_version=10)


def _run(model, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnx_ir as ir
    import onnxruntime as ort

    return ort.InferenceSession(ir.to_proto(model).SerializeToString()).run(None, inputs)


def test_tied_int8_table_reproduces_a_q8_0_grid_exactly():
    """minmax's int8 tied table is symmetric absmax/127: llama.cpp's Q8_0 (SmolLM2's embedding) round-trips
    exactly through both the GatherBlockQuantized lookup and the MatMulNBits head, with no offsets stored."""
    import onnx_ir as ir

    from modelkiln.graphs.passes import PassContext
    from modelkiln.graphs.weight_quantization import quantize_matmul_nbits

    rng = np.random.default_rng(2)
    vocab, hidden, block = 40, 64, 32
    q = rng.integers(-127, 128, (vocab, hidden // block, block))
    q[..., 0] = 127  # Q8_0: each block's largest magnitude maps to ±127
    scale = rng.uniform(1e-3, 1e-2, (vocab, hidden // block, 1)).astype(np.float16).astype(np.float32)
    table = (scale * q.astype(np.float32)).reshape(vocab, hidden)
    ids = ir.Value(name="ids", shape=ir.Shape(["b"]), type=ir.TensorType(ir.DataType.INT64))
    t = ir.Value(name="table", const_value=ir.tensor(table, name="table"), shape=ir.Shape(table.shape),
                 type=ir.TensorType(ir.DataType.FLOAT))
    gather = ir.Node("", "Gather", [t, ids], [ir.AttrInt64("axis", 0)], name="embed_tokens/Gather")
    head = ir.Node("", "Gemm", [gather.outputs[0], t], [ir.AttrInt64("transB", 1)], name="lm_head/Gemm")
    gather.outputs[0].name, head.outputs[0].name = "rows", "logits"
    graph = ir.Graph([ids], [gather.outputs[0], head.outputs[0]], nodes=[gather, head], initializers=[t],
                     opset_imports={"": 18})
    model = ir.Model(graph, ir_version=10)
    result = quantize_matmul_nbits(model, bits=4, block_size=block, accuracy_level=0, context=PassContext())
    assert result["quantized"] == 1
    ops = [n.op_type for n in model.graph]
    assert "GatherBlockQuantized" in ops and "MatMulNBits" in ops and "ReduceSum" not in ops  # no offset term
    assert not [n for n in model.graph.initializers if n.endswith(("_zero_points", "_minima_fp16"))]
    which = np.array([0, 7, 39])
    rows, logits = _run(model, {"ids": which})
    np.testing.assert_array_equal(rows, table[which])
    np.testing.assert_allclose(logits, table[which] @ table.T, rtol=1e-5, atol=1e-5)


def test_scales_stored_as_float16_only_where_they_fit():
    """Scales and block minima are stored as float16 (cast at load); a scale below float16's normal range keeps
    float32 rather than losing its significant bits, and the result stays exact on a 4-bit grid."""
    from modelkiln.graphs.passes import PassContext
    from modelkiln.graphs.weight_quantization import quantize_matmul_nbits

    rng = np.random.default_rng(3)
    k, n, block = 64, 16, 32
    q = rng.integers(0, 16, (n, k // block, block))
    q[..., 0], q[..., 1] = 0, 15
    for tiny, stored in ((False, "float16"), (True, "float32")):
        scale = rng.uniform(0.01, 0.05, (n, k // block, 1)).astype(np.float16).astype(np.float32)
        if tiny:
            scale[0, 0, 0] = 2.0 ** -20  # a subnormal in float16
        low = rng.normal(0, 0.2, (n, k // block, 1)).astype(np.float16).astype(np.float32)
        weight = (low + scale * q.astype(np.float32)).reshape(n, k).T.astype(np.float32)
        model = _single_matmul_model(weight)
        quantize_matmul_nbits(model, bits=4, block_size=block, accuracy_level=0, context=PassContext())
        scales = [v for name, v in model.graph.initializers.items() if "_scales" in name]
        assert [v.const_value.numpy().dtype.name for v in scales] == [stored]
        inputs = rng.standard_normal((3, k)).astype(np.float32)
        np.testing.assert_allclose(_run(model, {"x": inputs})[0], inputs @ weight, rtol=1e-4, atol=1e-4)


def test_quantized_artifact_validates_with_accuracy_checks(tiny_artifact, tiny_checkpoint, tmp_path):
    from modelkiln.validate import validate

    _, out = _quantized(tiny_artifact, tmp_path, weights="int8")
    report = validate(out, str(tiny_checkpoint("llama")))
    assert [c.kind for c in report.cases] == ["accuracy"]
    names = [m.name for m in report.cases[0].metrics]
    assert names[0].startswith("top-1 agreement") and any("perplexity" in n for n in names)
    assert report.passed, "\n".join(report.lines())
    again = type(report).from_json(report.to_json())  # metrics survive the JSON report
    assert again.cases[0].metrics == report.cases[0].metrics


def test_accuracy_check_fails_a_damaged_quantization(tiny_artifact, tiny_checkpoint, tmp_path):
    """A 16-level grid over whole 64-wide rows with float activations would still pass on a random tiny
    model; what must fail is a graph whose weights were quantized wrongly: scales scaled by 3."""
    import onnx_ir as ir

    from modelkiln.exporter.artifact_writer import write_manifest
    from modelkiln.validate import validate

    _, out = _quantized(tiny_artifact, tmp_path, weights="int8")
    model = ir.load(out / "model.onnx")
    for name, value in model.graph.initializers.items():
        if name.endswith(("_scales", "_scales_fp16")):
            value.const_value = ir.tensor(value.const_value.numpy() * 3, name=name)
    ir.save(model, out / "model.onnx", external_data="model.onnx.data")
    manifest = json.loads((out / "modelkiln.json").read_text())
    write_manifest(out, {k: v for k, v in manifest.items() if k not in ("files", "schema_version")})
    report = validate(out, str(tiny_checkpoint("llama")))
    assert not report.passed
    assert any(not m.passed for m in report.cases[0].metrics)


def test_cli_quantize_and_errors(tiny_artifact, tmp_path):
    runner = CliRunner()
    src = str(tiny_artifact("llama"))
    ok = runner.invoke(cli, ["quantize", src, str(tmp_path / "q8"), "--weights", "int8", "-q",
                             "--exclude", r"layers\.1\.mlp"])
    assert ok.exit_code == 0, ok.output
    manifest = json.loads((tmp_path / "q8" / "modelkiln.json").read_text())
    assert sorted(manifest["quantization"]["kept_float"]) == ["model.layers.1.mlp.down_proj/MatMul",
                                                              "model.layers.1.mlp.gate_proj/MatMul_merged"]
    cases = [
        (["quantize", src, str(tmp_path / "a"), "--block-size", "48"], "--block-size 48 is not supported"),
        (["quantize", src, str(tmp_path / "b"), "--block-size", "128"], "does not divide"),
        (["quantize", str(tmp_path / "q8"), str(tmp_path / "c")], "already quantized"),
        (["quantize", src, str(tmp_path / "d"), "--exclude", "("], "not a valid regular expression"),
        (["quantize", src, str(tmp_path / "e"), "--exclude", "."], "nothing left to quantize"),
        (["optimize", str(tmp_path / "q8"), str(tmp_path / "f")], "nothing to do"),
    ]
    for args, message in cases:
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
        assert not (tmp_path / args[2].rsplit("/", 1)[-1]).exists() or args[2].endswith("q8")


def test_plan_quantize_refuses_int4_encoders():
    with pytest.raises(ModelkilnError, match="encoder artifacts quantize to --weights int8"):
        plan_quantize({"task": "feature-extraction", "graphs": {"model": {"passes": []}}}, "int4")
