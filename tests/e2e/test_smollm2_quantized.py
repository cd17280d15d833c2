"""SmolLM2-135M-Instruct, fused and int4: the accuracy gate on the real checkpoint, and the pipeline on it."""

from __future__ import annotations

import json

import pytest

from modelkiln.exporter.transform import plan_optimize, plan_quantize, transform

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2_int4(smollm2_artifact, tmp_path_factory):
    manifest = json.loads((smollm2_artifact / "modelkiln.json").read_text())
    out = tmp_path_factory.mktemp("smollm2-int4") / "artifact"
    return transform(smollm2_artifact, out, plan_quantize(manifest, "int4"), validate=True, quiet=True)


def test_int4_passes_the_accuracy_gate(smollm2_int4):
    from modelkiln.validate.report import ParityReport

    report = ParityReport.from_json((smollm2_int4 / "parity.json").read_text())
    assert report.passed, "\n".join(report.lines())
    top1, ratio, _ = report.cases[0].metrics
    assert top1.value >= 0.90 and "positions" in top1.detail and int(top1.detail.split()[0]) >= 512
    assert ratio.value <= 1.05
    manifest = json.loads((smollm2_int4 / "modelkiln.json").read_text())
    assert manifest["kv_cache"]["attention"] == "group_query_attention"
    assert manifest["quantization"] | {"weights": "int4", "scheme": "minmax"} == manifest["quantization"]
    assert sum(f["size"] for f in manifest["files"].values()) < 100e6  # the whole artifact; 542 MB in fp32


def test_int4_pipeline_answers(smollm2_int4):
    from modelkiln.runtime import pipeline

    pipe = pipeline("text-generation", model=smollm2_int4)
    # not the bare "What is the capital of France?": there fp32's first token is a near-tie ("The" 25.33 vs "L"
    # 25.24), which int8 activations may flip, and the answer then wanders off
    questions = {"What is the capital of France? Answer in one sentence.": "Paris",
                 "What is the capital of Japan?": "Tokyo", "What is the chemical symbol for gold?": "Au"}
    out = pipe([[{"role": "user", "content": q}] for q in questions], max_new_tokens=16, do_sample=False)
    for answer, fact in zip(out, questions.values()):
        assert fact in answer[0]["generated_text"][-1]["content"], answer


def test_fused_fp32_pipeline_equals_unfused(smollm2_artifact, tmp_path_factory):
    from modelkiln.runtime import pipeline

    manifest = json.loads((smollm2_artifact / "modelkiln.json").read_text())
    fused = transform(smollm2_artifact, tmp_path_factory.mktemp("smollm2-fused") / "a",
                      plan_optimize(manifest, "all"), quiet=True)
    chats = [[{"role": "user", "content": "Write a haiku about compilers."}],
             [{"role": "user", "content": "Name three colours."}]]
    kwargs = {"max_new_tokens": 24, "do_sample": False, "batch_size": 2}
    assert pipeline("text-generation", model=fused)(chats, **kwargs) == \
        pipeline("text-generation", model=smollm2_artifact)(chats, **kwargs)
