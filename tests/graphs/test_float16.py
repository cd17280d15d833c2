"""fp16/bf16 conversion (graphs/float16.py) on tiny random checkpoints: float32 I/O with the KV cache converted,
logits close to fp32, the same greedy tokens, the runtime and validate working on the result, overflow-prone
chains kept fp32 (checked in onnx's reference evaluator, which computes fp16 faithfully where onnxruntime's CPU
provider upcasts), bf16 correct in the reference evaluator and refused on CPU with one line, and validate failing
a conversion whose activations overflow fp16."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from modelkiln.exporter.cli import cli
from modelkiln.exporter.transform import plan_convert, plan_optimize, transform
from modelkiln.runtime.decoder import DecoderLM
from modelkiln.runtime.errors import ModelkilnError
from modelkiln.runtime.generation import generate, position_ids_from_mask
from modelkiln.runtime.generation_config import GenerationConfig


def _manifest(artifact) -> dict:
    return json.loads((artifact / "modelkiln.json").read_text())


def _convert(src, out, precision="fp16", fuse=False):
    manifest = _manifest(src)
    passes = (plan_optimize(manifest, "all") if fuse else []) + plan_convert(manifest, precision)
    return transform(src, out, passes, quiet=True)


@pytest.fixture(scope="module")
def llama(tiny_artifact, tmp_path_factory):
    """fp32 source, fp16 unfused, fp16 fused (GroupQueryAttention + SkipSimplifiedLayerNormalization)."""
    src = tiny_artifact("llama")
    root = tmp_path_factory.mktemp("float16")
    return {"fp32": src, "unfused": _convert(src, root / "unfused"), "fused": _convert(src, root / "fused", fuse=True)}


def _padded_batch():
    rng = np.random.default_rng(3)
    ids = rng.integers(3, 300, (3, 20))
    mask = np.ones_like(ids)
    for row, pad in enumerate((0, 4, 13)):
        ids[row, :pad], mask[row, :pad] = 0, 0
    return ids, mask


@pytest.mark.parametrize("variant", ["unfused", "fused"])
def test_fp16_decoder_keeps_float_io_matches_fp32_and_generates_the_same_tokens(llama, variant):
    art = llama[variant]
    manifest = _manifest(art)
    assert manifest["precision"] == manifest["graphs"]["model"]["precision"] == "fp16"
    assert manifest["kv_cache"]["dtype"] == "fp16"
    conversion = manifest["precision_conversion"]
    assert conversion["io"] == "float32" and conversion["kv_cache"] == "fp16"
    record = manifest["graphs"]["model"]["passes"][-1]
    assert record["name"] == "convert_precision" and record["result"]["weight_mb_after"] < record["result"][
        "weight_mb_before"] * 0.55
    signature = {v["name"]: v["dtype"] for v in manifest["graphs"]["model"]["inputs"] + manifest["graphs"]["model"][
        "outputs"]}
    assert signature["input_ids"] == "int64" and signature["logits"] == "float"
    assert signature["past_key_values.0.key"] == signature["present.1.value"] == "float16"

    plain, lm = DecoderLM.load(llama["fp32"]), DecoderLM.load(art)
    assert lm.kv.dtype is np.float16 and lm.in_place == (variant == "fused")
    ids, mask = _padded_batch()
    pos = position_ids_from_mask(mask)
    a_logits, a_cache = plain.forward(ids, mask, pos, plain.empty_cache(3))
    b_logits, b_cache = lm.forward(ids, mask, pos, lm.empty_cache(3))
    real = mask.astype(bool)
    assert b_logits.dtype == np.float32 and np.isfinite(b_logits).all()
    np.testing.assert_allclose(b_logits[real], a_logits[real], atol=3e-3)  # measured 6e-4 on |logits| <= 1.3
    for x, y in zip(a_cache, b_cache):
        assert y.dtype == np.float16
        np.testing.assert_allclose(y.transpose(0, 2, 1, 3)[real], x.transpose(0, 2, 1, 3)[real], atol=3e-3)
    # greedy on a left-padded batch: the numpy cache (unfused) or the in-place fp16 buffers (fused)
    config = GenerationConfig(max_new_tokens=12, min_new_tokens=12)
    np.testing.assert_array_equal(generate(lm, ids, mask, config), generate(plain, ids, mask, config))


def test_fp16_pipeline_answers_like_fp32(llama):
    from modelkiln.runtime import pipeline

    prompt = [{"role": "user", "content": "What is the capital of France?"}]
    expected = pipeline("text-generation", model=llama["fp32"])(prompt, max_new_tokens=10, do_sample=False)
    actual = pipeline("text-generation", model=llama["fused"])(prompt, max_new_tokens=10, do_sample=False)
    assert actual == expected


def test_fp16_graph_structure(llama):
    """Casts at the boundaries, sensitive ops fed fp32, weights fp16, and the unfused graph passes onnx's checker
    (the fused one cannot: onnxruntime registers SimplifiedLayerNormalization in the onnx domain)."""
    for variant in ("unfused", "fused"):
        model = onnx.load(llama[variant] / "model.onnx")
        if variant == "unfused":
            onnx.checker.check_model(model, full_check=True)
        types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output,
                                                                 *model.graph.value_info]}
        types.update({t.name: t.data_type for t in model.graph.initializer})
        producers = {o: n for n in model.graph.node for o in n.output}
        assert producers["logits"].op_type == "Cast" and types["logits"] == TensorProto.FLOAT
        big = [t for t in model.graph.initializer if np.prod(t.dims) >= 64 * 64]
        assert big and all(t.data_type == TensorProto.FLOAT16 for t in big)
        sensitive = {"Softmax", "Pow", "ReduceMean", "Cos", "Sin", "SimplifiedLayerNormalization",
                     "SkipSimplifiedLayerNormalization"}
        fed = [(n.op_type, types.get(n.input[0])) for n in model.graph.node if n.op_type in sensitive]
        assert fed and all(t == TensorProto.FLOAT for _, t in fed if t is not None), fed
        ops = {n.op_type for n in model.graph.node}
        assert ("GroupQueryAttention" in ops) == (variant == "fused")
        gqa = [n for n in model.graph.node if n.op_type == "GroupQueryAttention"]
        assert all(types.get(n.input[0]) == TensorProto.FLOAT16 for n in gqa)  # attention computes in fp16


def _rmsnorm_rotary_graph():
    """y = RMSNorm(x) (Pow → ReduceMean → Add → Sqrt → Reciprocal → Mul) and c = Cos(Cast(pos) · inv_freq)."""
    nodes = [
        helper.make_node("Pow", ["x", "two"], ["x2"]),
        helper.make_node("ReduceMean", ["x2", "axes"], ["ms"], keepdims=1),
        helper.make_node("Add", ["ms", "eps"], ["ms_eps"]),
        helper.make_node("Sqrt", ["ms_eps"], ["rms"]),
        helper.make_node("Reciprocal", ["rms"], ["inv_rms"]),
        helper.make_node("Mul", ["x", "inv_rms"], ["normed"]),
        helper.make_node("Mul", ["normed", "w"], ["y"]),
        helper.make_node("Cast", ["pos"], ["pos_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["pos_f", "inv_freq"], ["angle"]),
        helper.make_node("Cos", ["angle"], ["c"]),
    ]
    inits = [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
             helper.make_tensor("axes", TensorProto.INT64, [1], [-1]),
             helper.make_tensor("eps", TensorProto.FLOAT, [], [1e-6]),
             helper.make_tensor("w", TensorProto.FLOAT, [8], np.linspace(0.5, 1.5, 8).tolist()),
             helper.make_tensor("inv_freq", TensorProto.FLOAT, [4], [0.9, 0.31, 0.07, 0.013])]
    graph = helper.make_graph(nodes, "rmsnorm_rotary",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8]),
                               helper.make_tensor_value_info("pos", TensorProto.INT64, [2, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8]),
                               helper.make_tensor_value_info("c", TensorProto.FLOAT, [2, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def _convert_in_memory(model: onnx.ModelProto, precision="fp16", **params) -> onnx.ModelProto:
    import onnx_ir as ir

    from modelkiln.graphs.float16 import convert_precision
    from modelkiln.graphs.passes import PassContext

    converted = ir.serde.deserialize_model(model)
    convert_precision(converted, precision=precision, context=PassContext(), **params)
    return ir.serde.serialize_model(converted)


def test_overflow_prone_chains_and_positions_stay_fp32():
    """x around 300 squares to 9e4, past fp16's 65504; positions around 1000 times a frequency need more than
    fp16's step of 0.5 there. The reference evaluator computes each fp16 op in fp16 (as a GPU does)."""
    from onnx.reference import ReferenceEvaluator

    model = _rmsnorm_rotary_graph()
    x = np.random.default_rng(0).normal(300.0, 20.0, (2, 8)).astype(np.float32)
    feeds = {"x": x, "pos": np.array([[1000], [2047]], np.int64)}
    y32, c32 = ReferenceEvaluator(model).run(None, feeds)
    converted = _convert_in_memory(model)
    onnx.checker.check_model(converted, full_check=True)
    assert {o.name: o.type.tensor_type.elem_type for o in converted.graph.output} == {
        "y": TensorProto.FLOAT, "c": TensorProto.FLOAT}
    y16, c16 = ReferenceEvaluator(converted).run(None, feeds)
    np.testing.assert_allclose(y16, y32, rtol=2e-3)
    np.testing.assert_allclose(c16, c32, atol=1e-3)  # fp16 rounding of cos itself, not of the angle
    # without the fp32 chain the square overflows to inf and the norm collapses to 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        broken, _ = ReferenceEvaluator(_convert_in_memory(model, keep_fp32_ops=[])).run(None, feeds)
    assert not np.allclose(broken, y32, rtol=0.1)


def test_bf16_graph_is_correct_in_the_reference_evaluator_and_refused_on_cpu(llama, tiny_checkpoint, tmp_path):
    from onnx.reference import ReferenceEvaluator

    art = _convert(llama["fp32"], tmp_path / "bf16", precision="bf16")
    manifest = _manifest(art)
    assert manifest["precision"] == "bf16" and manifest["kv_cache"]["dtype"] == "bf16"
    model = onnx.load(art / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    weights = [t for t in model.graph.initializer if np.prod(t.dims) >= 64 * 64]
    assert weights and all(t.data_type == TensorProto.BFLOAT16 for t in weights)
    kinds = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}
    assert kinds["logits"] == TensorProto.FLOAT and kinds["past_key_values.0.key"] == TensorProto.BFLOAT16

    import ml_dtypes

    ids, mask = _padded_batch()
    ids, mask = ids[:, :9], np.ones((3, 9), np.int64)
    feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids_from_mask(mask)}
    reference = DecoderLM.load(llama["fp32"]).forward(ids, mask, feeds["position_ids"],
                                                      DecoderLM.load(llama["fp32"]).empty_cache(3))[0]
    for i in range(2):
        for k in ("key", "value"):
            feeds[f"past_key_values.{i}.{k}"] = np.zeros((3, 2, 0, 16), ml_dtypes.bfloat16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # -inf - -inf in fully masked softmax rows, as in fp32
        logits = ReferenceEvaluator(model).run(["logits"], feeds)[0]
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits, reference, atol=3e-2)  # 8 significant bits; measured 5e-3

    with pytest.raises(ModelkilnError, match="bf16"):
        DecoderLM.load(art)
    runner = CliRunner()
    for args in (["run", str(art), "hi", "--max-new-tokens", "2"],
                 ["validate", str(art), "--reference", str(tiny_checkpoint("llama"))]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, result.output
        assert "bf16" in result.output and "GPU" in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_validate_passes_a_good_fp16_conversion_with_accuracy_bounds(llama, tiny_checkpoint):
    from modelkiln.validate import validate

    report = validate(llama["fused"], str(tiny_checkpoint("llama")))
    assert report.passed, "\n".join(report.lines())
    assert report.precision == "fp16" and report.cases[0].kind == "accuracy"
    assert "generation" not in {c.kind for c in report.cases} and len(report.cases) > 5
    lines = "\n".join(report.lines(verbose=False))
    assert ">= 0.98" in lines and "<= 1.01" in lines  # the bounds are in the report
    assert report.tolerances["logits"].atol == 0.25


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # validate casts the eager cache to fp16
def test_validate_fails_a_conversion_whose_activations_overflow_fp16(tiny_checkpoint, tmp_path):
    """A layer whose value projection produces ~1e5 (fine in fp32, past fp16's 65504): the converted graph gets
    inf in that layer's value cache and NaN logits, and validate says so — the conversion is not hidden."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    from modelkiln.exporter import ExportOptions, export
    from modelkiln.validate import validate

    ckpt = tmp_path / "loud"
    shutil.copytree(tiny_checkpoint("llama"), ckpt)
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    with torch.no_grad():
        model.model.layers[1].self_attn.v_proj.weight.mul_(2e5)
    model.save_pretrained(ckpt)
    src = export(str(ckpt), tmp_path / "fp32", ExportOptions(quiet=True))
    art = _convert(src, tmp_path / "fp16")
    report = validate(art, str(ckpt))
    assert not report.passed
    accuracy = report.cases[0]
    assert accuracy.kind == "accuracy" and not accuracy.passed
    assert any(m.name.startswith("top-1") and not m.passed for m in accuracy.metrics)
    overflowed = [o for c in report.cases for o in c.outputs if o.name == "present.1.value" and o.actual_inf]
    assert overflowed, "\n".join(report.lines())


def test_cli_precision_flags_and_errors(llama, tiny_checkpoint, tmp_path):
    runner = CliRunner()
    src = str(llama["fp32"])
    ok = runner.invoke(cli, ["optimize", src, str(tmp_path / "none"), "--level", "none", "--precision", "fp16", "-q"])
    assert ok.exit_code == 0, ok.output
    passes = [p["name"] for p in _manifest(tmp_path / "none")["graphs"]["model"]["passes"]]
    assert passes[-1] == "convert_precision" and "fuse_rms_norm" not in passes
    # export traces fp32 and converts (no fusion unless --optimize)
    ok = runner.invoke(cli, ["export", str(tiny_checkpoint("llama")), str(tmp_path / "exported"), "--precision",
                             "fp16", "-q"])
    assert ok.exit_code == 0, ok.output
    manifest = _manifest(tmp_path / "exported")
    assert manifest["precision"] == "fp16" and manifest["graphs"]["model"]["passes"][-1]["name"] == "convert_precision"
    assert "fuse_rms_norm" not in [p["name"] for p in manifest["graphs"]["model"]["passes"]]
    quantized = tmp_path / "q8"
    assert runner.invoke(cli, ["quantize", src, str(quantized), "--weights", "int8", "-q"]).exit_code == 0
    cases = [
        (["optimize", str(llama["fused"]), str(tmp_path / "a"), "--precision", "fp16"], "already fp16"),
        (["optimize", str(quantized), str(tmp_path / "b"), "--precision", "fp16"], "quantized"),
        (["optimize", src, str(tmp_path / "c"), "--level", "none"], "add --precision"),
        (["optimize", src, str(tmp_path / "d"), "--precision", "bf16", "--validate"], "no bf16 kernels"),
        (["optimize", src, str(tmp_path / "e"), "--precision", "fp8"], "'fp8' is not one of"),
        (["optimize", str(llama["unfused"]), str(tmp_path / "f")], "fuse and convert the fp32 artifact"),
        (["quantize", str(llama["unfused"]), str(tmp_path / "g")], "quantize the fp32 artifact"),
        (["export", "unused-source", str(tmp_path / "h"), "--dtype", "fp16", "--precision", "fp16"],
         "use one of them"),
        (["export", "unused-source", str(tmp_path / "i"), "--weights", "int4", "--precision", "fp16"],
         "do not combine"),
    ]
    for args, message in cases:
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output, (args, result.output)
        assert not (tmp_path / args[2].rsplit("/", 1)[-1]).exists()


def test_fp16_encoder_fused_and_unfused_close_to_fp32_and_validated(tmp_path):
    from encoder_fixtures import get_artifact, get_checkpoint

    from modelkiln.runtime.pipelines import pipeline
    from modelkiln.validate import validate

    src = get_artifact("bert", "text-classification")
    unfused = _convert(src, tmp_path / "unfused")
    fused = _convert(src, tmp_path / "fused", fuse=True)
    ops = {n.op_type for n in onnx.load(fused / "model.onnx", load_external_data=False).graph.node}
    assert {"Attention", "EmbedLayerNormalization"} <= ops
    texts = ["My name is Wolfgang and I live in Berlin.", "Café crème in Zürich!", "Hi"]
    expected = pipeline("text-classification", model=src)(texts, top_k=None)
    for art in (unfused, fused):
        actual = pipeline("text-classification", model=art)(texts, top_k=None)
        assert [[r["label"] for r in row] for row in actual] == [[r["label"] for r in row] for row in expected]
        np.testing.assert_allclose([[r["score"] for r in row] for row in actual],
                                   [[r["score"] for r in row] for row in expected], atol=1e-3)
    report = validate(fused, str(get_checkpoint("bert", "text-classification")))
    assert report.passed, "\n".join(report.lines())
    assert {"accuracy", "forward", "pipeline"} <= {c.kind for c in report.cases}

    bf16 = _convert(src, tmp_path / "bf16", precision="bf16")
    with pytest.raises(ModelkilnError, match="GPU provider"):
        pipeline("text-classification", model=bf16)
