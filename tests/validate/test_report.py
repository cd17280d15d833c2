"""modelkiln.validate.report: JSON round trip, JUnit XML, Markdown, console lines, atomic writes."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from modelkiln.runtime.errors import ModelkilnError
from modelkiln.validate.compare import Tolerance, compare_arrays, compare_tokens
from modelkiln.validate.report import CaseResult, ParityReport

FP32 = Tolerance(1e-4, 1e-4)


def _pair(seed: int, shape=(2, 4, 8), noise: float = 1e-6):
    rng = np.random.default_rng(seed)
    expected = (rng.standard_normal(shape) * 20).astype(np.float32)
    return (expected + rng.standard_normal(shape) * noise).astype(np.float32), expected


def _report() -> ParityReport:
    ok = CaseResult(
        "prefill[b=2,s=4,left-pad]",
        "prefill",
        params={"batch": 2, "seq": np.int64(4), "left_pad": True, "shape": (2, 4)},
        outputs=[compare_arrays("logits", *_pair(0), FP32), compare_arrays("present.0.key", *_pair(1), FP32)],
        duration_s=0.125,
    )
    bad_actual, bad_expected = _pair(2)
    bad_actual[1, 3, 5] += 0.5
    bad_actual[0, 0, 0] = np.nan
    bad = CaseResult(
        "decode[b=1,past=17]",
        "decode",
        params={"batch": 1, "past": 17},
        outputs=[
            compare_arrays("logits", bad_actual, bad_expected, FP32),
            compare_arrays("present.0.key", *_pair(3), FP32),
        ],
        duration_s=0.5,
    )
    crashed = CaseResult(
        "prompt[chat-1]",
        "prompt",
        error="RuntimeError: [ONNXRuntimeError] Got invalid dimensions for input: attention_mask \x01",
        duration_s=0.01,
    )
    generation = CaseResult(
        "generation[greedy,32]",
        "generation",
        tokens=[compare_tokens("greedy tokens", list(range(32)), list(range(32)))],
        duration_s=1.5,
    )
    return ParityReport(
        artifact="out/smollm2",
        reference="SmolLM2-135M-Instruct.Q4_1.gguf",
        task="text-generation",
        precision="fp32",
        tolerances={"logits": FP32, "present.*": FP32},
        cases=[ok, bad, crashed, generation],
        versions={"modelkiln": "0.1.0", "onnxruntime": "1.23.2", "torch": "2.13.0"},
        created="2026-05-09T07:35:25Z",
    )


def test_case_status_and_summary():
    report = _report()
    assert [c.status for c in report.cases] == ["passed", "failed", "error", "passed"]
    assert not report.passed
    assert report.summary() == {
        "cases": 4, "passed": 2, "failed": 1, "errors": 1,
        "outputs": 4, "outputs_failed": 1, "token_checks": 1, "token_checks_failed": 0,
    }  # fmt: skip


def test_nothing_compared_is_not_a_pass():
    assert not CaseResult("prefill[b=1,s=1]", "prefill").passed
    assert CaseResult("prefill[b=1,s=1]", "prefill").lines() == ["FAIL | prefill[b=1,s=1] | nothing was compared"]
    empty = ParityReport(artifact="a", reference="r", task="text-generation", precision="fp32")
    assert not empty.passed
    assert empty.lines()[-1] == "FAIL | parity | 0 of 0 cases passed (no cases ran)"
    passing = _report()
    passing.cases = [passing.cases[0], passing.cases[3]]
    assert passing.passed


def test_console_lines():
    lines = _report().lines()
    assert lines[0].startswith("PASS | prefill[b=2,s=4,left-pad] | logits | max abs ")
    assert any(line.startswith("FAIL | decode[b=1,past=17] | logits | ") for line in lines)
    assert any(line.startswith("FAIL | prompt[chat-1] | error: RuntimeError") for line in lines)
    assert lines[-1] == "FAIL | parity | 2 of 4 cases passed (1 failed, 1 crashed)"
    short = _report().lines(verbose=False)
    assert short[0].startswith("PASS | prefill[b=2,s=4,left-pad] | 2 outputs, worst ")
    assert len(short) < len(lines)
    assert all(line.startswith(("PASS | ", "FAIL | ")) for line in lines + short)


def test_json_is_strict_stable_and_round_trips():
    report = _report()
    text = report.to_json()

    def no_constants(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    data = json.loads(text, parse_constant=no_constants)  # no NaN / Infinity literals
    assert list(data)[:3] == ["schema_version", "passed", "summary"]
    assert data["schema_version"] == 1 and data["passed"] is False
    bad_logits = data["cases"][1]["outputs"][0]
    assert bad_logits["min_atol_to_pass"] == "inf" and bad_logits["worst_actual"] is None
    assert data["cases"][0]["params"] == {"batch": 2, "seq": 4, "left_pad": True, "shape": [2, 4]}
    assert data["tolerances"]["present.*"] == {"atol": 1e-4, "rtol": 1e-4}

    again = ParityReport.from_json(text)
    assert again.to_json() == text
    assert [c.status for c in again.cases] == ["passed", "failed", "error", "passed"]
    assert again.cases[0].outputs == report.cases[0].outputs  # finite fields compare equal after the trip


def test_unknown_schema_version_is_refused():
    data = _report().to_dict()
    data["schema_version"] = 2
    with pytest.raises(ModelkilnError, match="schema_version 2"):
        ParityReport.from_dict(data)


def test_junit_xml_parses_with_the_right_counts():
    root = ET.fromstring(_report().to_junit_xml())
    assert root.tag == "testsuite" and root.get("name") == "modelkiln.parity"
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == ("4", "1", "1", "0")
    assert float(root.get("time")) == pytest.approx(0.125 + 0.5 + 0.01 + 1.5, abs=1e-3)
    cases = root.findall("testcase")
    assert [c.get("classname") for c in cases] == [
        "modelkiln.parity.prefill", "modelkiln.parity.decode", "modelkiln.parity.prompt", "modelkiln.parity.generation",
    ]  # fmt: skip
    assert cases[0].get("name") == "prefill[b=2,s=4,left-pad]" and cases[0].get("time") == "0.125"
    assert cases[0].find("failure") is None and cases[0].find("error") is None

    failure = cases[1].find("failure")
    assert failure is not None and failure.get("message").startswith("FAIL | decode[b=1,past=17] | logits | ")
    assert "worst at [0, 0, 0]" in failure.text
    assert "present.0.key" not in failure.text  # only the failing outputs explain the failure

    error = cases[2].find("error")
    assert error is not None and error.get("message").startswith("RuntimeError: [ONNXRuntimeError]")
    assert "\x01" not in error.get("message")  # control characters are not valid XML 1.0
    props = {p.get("name"): p.get("value") for p in root.find("properties")}
    assert props["precision"] == "fp32" and props["version.onnxruntime"] == "1.23.2"


def test_markdown_names_the_failures():
    md = _report().to_markdown()
    assert md.startswith("## ❌ modelkiln parity: 2 of 4 cases passed (1 failed, 1 crashed)")
    rows = [line for line in md.splitlines() if line.startswith(("| ✅ |", "| ❌ |", "| 💥 |"))]
    assert len(rows) == 4
    assert "| ✅ | prefill[b=2,s=4,left-pad] | prefill | " in md
    assert "| ❌ | decode[b=1,past=17] | decode | logits | " in md
    assert "#### ❌ decode[b=1,past=17]" in md and "#### 💥 prompt[chat-1]" in md
    assert "FAIL | decode[b=1,past=17] | logits | " in md
    assert "1 of 2 outputs passed." in md
    assert "greedy tokens: 32 of 32 tokens match" in md


def test_markdown_of_a_passing_report():
    report = _report()
    report.cases = [report.cases[0]]
    md = report.to_markdown()
    assert md.startswith("## ✅ modelkiln parity: 1 of 1 cases passed")
    assert "### Failures" not in md


def test_write_is_atomic_and_creates_parents(tmp_path):
    report = _report()
    out = tmp_path / "reports"
    written = report.write(json=out / "parity.json", markdown=out / "parity.md", junit=str(out / "parity.xml"))
    assert [p.name for p in written] == ["parity.json", "parity.md", "parity.xml"]
    assert (out / "parity.json").read_text(encoding="utf-8") == report.to_json()
    assert (out / "parity.md").read_text(encoding="utf-8") == report.to_markdown()
    ET.parse(out / "parity.xml")
    assert sorted(p.name for p in out.iterdir()) == ["parity.json", "parity.md", "parity.xml"]  # no temp files left

    # Overwriting replaces the whole file (os.replace), never appends or truncates half-way.
    report.cases = report.cases[:1]
    report.write(json=out / "parity.json")
    assert ParityReport.from_json((out / "parity.json").read_text(encoding="utf-8")).passed


def test_failed_write_leaves_no_temp_file(tmp_path):
    target = tmp_path / "parity.json"
    target.mkdir()  # os.replace onto a directory fails
    with pytest.raises(OSError):
        _report().write(json=target)
    assert list(tmp_path.iterdir()) == [target]
