"""Parity reports: the results of every validation case, as console lines, JSON, Markdown and JUnit XML.

    report = ParityReport(artifact="out/smollm2", reference="SmolLM2.Q4_1.gguf", task="text-generation",
                          precision="fp32", tolerances={"logits": Tolerance(1e-4, 1e-4)},
                          cases=[CaseResult("prefill[b=2,s=7,left-pad]", "prefill", outputs=[...])])
    print("\\n".join(report.lines()))      # PASS | prefill[b=2,s=7,left-pad] | logits | max abs 3.1e-06 ...
    report.write(json="parity.json", markdown="parity.md", junit="parity.xml")

The JSON form is the contract CI and later tooling read: `schema_version` 1, keys in a fixed order, numbers as
JSON numbers, NaN as null and infinities as the strings "inf"/"-inf" (JSON has neither), and
`ParityReport.from_dict(json.load(f))` gives the report back. A report with no cases, or a case that compared
nothing, does not pass: a validator that passes because it checked nothing is the failure it exists to prevent.
"""

from __future__ import annotations

import json as _json
import math
import os
import re
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from modelkiln.runtime.errors import ModelkilnError
from modelkiln.validate.compare import (
    MetricComparison,
    OutputComparison,
    TokenComparison,
    Tolerance,
    _fmt_stat,
    _json_float,
)

__all__ = ["SCHEMA_VERSION", "CaseResult", "ParityReport"]

SCHEMA_VERSION = 1


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _jsonable(value: Any) -> Any:
    """Case params as JSON: tuples -> lists, numpy scalars -> Python numbers, non-finite floats as in compare."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, str)) or value is None:
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy scalar (bool_, int64, float32, ...)
        return _jsonable(value.item())
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return _json_float(value)
    return str(value)


# ---------------------------------------------------------------------------------------------- cases


@dataclass
class CaseResult:
    """One validation case: the comparisons it made, or the one-line error it crashed with.

        CaseResult("decode[b=1,past=17]", "decode", params={"batch": 1, "past": 17},
                   outputs=[compare_arrays("logits", ...), compare_arrays("present.0.key", ...)], duration_s=0.04)
        CaseResult("prompt[chat-1]", "prompt", error="RuntimeError: ... Got invalid dimensions for input: ...")

    `kind`: "prefill" | "decode" | "prompt" | "generation" | ... (the JUnit classname suffix). `passed` needs no
    error, at least one comparison, and every comparison passing.
    """

    name: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    outputs: list[OutputComparison] = field(default_factory=list)
    tokens: list[TokenComparison] = field(default_factory=list)
    duration_s: float = 0.0
    error: str | None = None
    metrics: list[MetricComparison] = field(default_factory=list)

    @property
    def compared_nothing(self) -> bool:
        return not self.outputs and not self.tokens and not self.metrics

    @property
    def passed(self) -> bool:
        return (
            self.error is None
            and not self.compared_nothing
            and all(c.passed for c in self.outputs)
            and all(t.passed for t in self.tokens)
            and all(m.passed for m in self.metrics)
        )

    @property
    def status(self) -> str:
        """One of "passed", "failed" (a comparison failed) or "error" (the case crashed)."""
        if self.error is not None:
            return "error"
        return "passed" if self.passed else "failed"

    @property
    def worst_output(self) -> OutputComparison | None:
        """The output closest to (or furthest over) its tolerance; one that could not be compared counts as worst."""
        if not self.outputs:
            return None

        def badness(c: OutputComparison) -> tuple[bool, float]:
            used = math.inf if c.error is not None or math.isnan(c.tolerance_used) else c.tolerance_used
            return (not c.passed, used)

        return max(self.outputs, key=badness)

    def lines(self, verbose: bool = True) -> list[str]:
        """PASS/FAIL lines with the case name in them. verbose=False folds a passing case into one line."""
        if not verbose and self.passed:
            return [self._summary_line()]
        out = [c.line(self.name) for c in self.outputs] + [t.line(self.name) for t in self.tokens]
        out += [m.line(self.name) for m in self.metrics]
        if self.error is not None:
            out.append(f"FAIL | {self.name} | error: {self.error}")
        elif self.compared_nothing:
            out.append(f"FAIL | {self.name} | nothing was compared")
        return out

    def failure_lines(self) -> list[str]:
        """Only the lines that explain why the case did not pass."""
        return [line for line in self.lines() if line.startswith("FAIL | ")]

    def _summary_line(self) -> str:
        parts = [f"{'PASS' if self.passed else 'FAIL'} | {self.name}"]
        if self.outputs:
            worst = self.worst_output
            assert worst is not None
            parts.append(
                f"{len(self.outputs)} outputs, worst {worst.name} max abs {_fmt_stat(worst.max_abs)} "
                f"({_fmt_percent(worst.tolerance_used)} of {worst.tolerance})"
            )
        for t in self.tokens:
            parts.append(f"{t.name}: {t.expected_length} of {t.expected_length} tokens match")
        for m in self.metrics:
            parts.append(f"{m.name} {m.value:.4g} {m.op} {m.bound:g}")
        return " | ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "passed": self.passed,
            "error": self.error,
            "duration_s": _json_float(self.duration_s),
            "params": _jsonable(self.params),
            "outputs": [c.to_dict() for c in self.outputs],
            "tokens": [t.to_dict() for t in self.tokens],
            "metrics": [m.to_dict() for m in self.metrics],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CaseResult:
        # "status" and "passed" are derived; they are written for readers of the JSON and recomputed here.
        duration = data.get("duration_s")
        return cls(
            name=data["name"],
            kind=data["kind"],
            params=dict(data.get("params") or {}),
            outputs=[OutputComparison.from_dict(c) for c in data.get("outputs", [])],
            tokens=[TokenComparison.from_dict(t) for t in data.get("tokens", [])],
            duration_s=float("nan") if duration is None else float(duration),
            error=data.get("error"),
            metrics=[MetricComparison.from_dict(m) for m in data.get("metrics", [])],
        )


# ---------------------------------------------------------------------------------------------- report


@dataclass(kw_only=True)
class ParityReport:
    """Everything one `modelkiln validate` run found, and its renderings.

    `tolerances` is the resolved table that was used (output name or pattern -> Tolerance), `versions` the tool
    versions ({"modelkiln": "0.1.0", "torch": "2.13.0", "onnxruntime": "1.23.2", ...}), `created` an ISO 8601
    UTC timestamp.
    """

    artifact: str
    reference: str
    task: str
    precision: str
    tolerances: dict[str, Tolerance] = field(default_factory=dict)
    cases: list[CaseResult] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    created: str = field(default_factory=_utc_now)
    schema_version: int = SCHEMA_VERSION

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(case.passed for case in self.cases)

    def summary(self) -> dict[str, int]:
        """Counts, e.g. {"cases": 9, "passed": 8, "failed": 1, "errors": 0, "outputs": 305, "outputs_failed": 2,
        "token_checks": 1, "token_checks_failed": 0}."""
        return {
            "cases": len(self.cases),
            "passed": sum(c.status == "passed" for c in self.cases),
            "failed": sum(c.status == "failed" for c in self.cases),
            "errors": sum(c.status == "error" for c in self.cases),
            "outputs": sum(len(c.outputs) for c in self.cases),
            "outputs_failed": sum(not o.passed for c in self.cases for o in c.outputs),
            "token_checks": sum(len(c.tokens) for c in self.cases),
            "token_checks_failed": sum(not t.passed for c in self.cases for t in c.tokens),
        }

    # ------------------------------------------------------------------------------------------ console

    def lines(self, verbose: bool = True) -> list[str]:
        """Console lines: every case's PASS/FAIL lines, then one overall line.

        ['PASS | prefill[b=1,s=8] | logits | max abs 3.1e-06 ...', ..., 'PASS | parity | 9 of 9 cases passed']
        """
        out = [line for case in self.cases for line in case.lines(verbose)]
        out.append(f"{'PASS' if self.passed else 'FAIL'} | parity | {self._headline()}")
        return out

    def _headline(self) -> str:
        s = self.summary()
        text = f"{s['passed']} of {s['cases']} cases passed"
        if s["failed"] or s["errors"]:
            text += f" ({s['failed']} failed, {s['errors']} crashed)"
        if not self.cases:
            text += " (no cases ran)"
        return text

    # ------------------------------------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "passed": self.passed,
            "summary": self.summary(),
            "artifact": self.artifact,
            "reference": self.reference,
            "task": self.task,
            "precision": self.precision,
            "created": self.created,
            "versions": {str(k): str(v) for k, v in self.versions.items()},
            "tolerances": {name: tol.to_dict() for name, tol in self.tolerances.items()},
            "cases": [case.to_dict() for case in self.cases],
        }

    def to_json(self, indent: int | None = 2) -> str:
        # allow_nan=False: a NaN that slipped past the encoders is a bug here, not a `NaN` literal in CI's JSON.
        return _json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ParityReport:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ModelkilnError(
                f"parity report schema_version {version!r} is not supported (this modelkiln reads "
                f"{SCHEMA_VERSION}); re-run `modelkiln validate` to regenerate it"
            )
        return cls(
            schema_version=version,
            artifact=data["artifact"],
            reference=data["reference"],
            task=data["task"],
            precision=data["precision"],
            created=data["created"],
            versions=dict(data.get("versions") or {}),
            tolerances={name: Tolerance.from_dict(t) for name, t in (data.get("tolerances") or {}).items()},
            cases=[CaseResult.from_dict(c) for c in data.get("cases", [])],
        )

    @classmethod
    def from_json(cls, text: str) -> ParityReport:
        return cls.from_dict(_json.loads(text))

    # ------------------------------------------------------------------------------------------ Markdown

    def to_markdown(self) -> str:
        """GitHub-flavoured Markdown for a CI job summary: verdict, case table, then failure details."""
        icon = "✅" if self.passed else "❌"
        s = self.summary()
        md = [
            f"## {icon} modelkiln parity: {self._headline()}",
            "",
            (
                f"**artifact** `{_md_code(self.artifact)}` · **reference** `{_md_code(self.reference)}` · "
                f"**task** {_md_cell(self.task)} · **precision** {_md_cell(self.precision)} · "
                f"{_plural(s['outputs'], 'output')} and {_plural(s['token_checks'], 'token sequence')} compared · "
                f"{self.created}"
            ),
            "",
        ]
        if self.cases:
            md += [
                "| | case | kind | worst output | max abs err | min atol to pass | tolerance | time |",
                "|---|---|---|---|---|---|---|---|",
            ]
            md += [_md_case_row(case) for case in self.cases]
            md.append("")

        bad = [case for case in self.cases if not case.passed]
        if bad:
            md += ["### Failures", ""]
            for case in bad:
                md.append(f"#### {_STATUS_ICON[case.status]} {_md_cell(case.name)}")
                md.append("")
                if case.params:
                    params = _json.dumps(_jsonable(case.params), ensure_ascii=False)
                    md += [f"params: `{_md_code(params)}`", ""]
                lines = case.failure_lines()
                md += _md_fence(lines)
                ok = sum(c.passed for c in case.outputs)
                if ok:
                    md += [f"{ok} of {len(case.outputs)} outputs passed.", ""]

        if self.tolerances:
            md += ["<details><summary>Tolerances</summary>", "", "| output | atol | rtol |", "|---|---|---|"]
            md += [f"| {_md_cell(name)} | {t.atol:g} | {t.rtol:g} |" for name, t in self.tolerances.items()]
            md += ["", "</details>", ""]
        if self.versions:
            md.append("<sub>" + " · ".join(f"{_md_cell(k)} {_md_cell(v)}" for k, v in self.versions.items()) + "</sub>")
            md.append("")
        return "\n".join(md)

    # ------------------------------------------------------------------------------------------ JUnit

    def to_junit_xml(self) -> str:
        """JUnit XML: one <testsuite name="modelkiln.parity">, a <testcase> per case, <failure>/<error> on failure."""
        s = self.summary()
        suite = ET.Element(
            "testsuite",
            {
                "name": "modelkiln.parity",
                "tests": str(s["cases"]),
                "failures": str(s["failed"]),
                "errors": str(s["errors"]),
                "skipped": "0",
                "time": _junit_time(sum(c.duration_s for c in self.cases if math.isfinite(c.duration_s))),
                "timestamp": self.created,
            },
        )
        props = ET.SubElement(suite, "properties")
        meta = {"artifact": self.artifact, "reference": self.reference, "task": self.task,
                "precision": self.precision}  # fmt: skip
        meta.update({f"version.{k}": v for k, v in self.versions.items()})
        for key, value in meta.items():
            ET.SubElement(props, "property", {"name": key, "value": _xml_text(str(value))})
        for case in self.cases:
            tc = ET.SubElement(
                suite,
                "testcase",
                {
                    "classname": f"modelkiln.parity.{case.kind}",
                    "name": _xml_text(case.name),
                    "time": _junit_time(case.duration_s),
                },
            )
            if case.status == "error":
                node = ET.SubElement(tc, "error", {"message": _xml_text(case.error or ""), "type": "error"})
                node.text = _xml_text("\n".join(case.lines()))
            elif case.status == "failed":
                fails = case.failure_lines()
                node = ET.SubElement(tc, "failure", {"message": _xml_text(fails[0]), "type": "parity"})
                node.text = _xml_text("\n".join(fails))
            out = ET.SubElement(tc, "system-out")
            out.text = _xml_text("\n".join(case.lines()))
        ET.indent(suite)
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"

    # ------------------------------------------------------------------------------------------ files

    def write(
        self,
        json: str | os.PathLike[str] | None = None,
        markdown: str | os.PathLike[str] | None = None,
        junit: str | os.PathLike[str] | None = None,
    ) -> list[Path]:
        """Write the requested forms, each atomically (a temporary sibling, then os.replace): a reader or a
        crash never sees half a report. Parent folders are created. Returns the paths written."""
        written = []
        for path, render in ((json, self.to_json), (markdown, self.to_markdown), (junit, self.to_junit_xml)):
            if path is not None:
                written.append(_write_atomic(Path(path), render()))
        return written


# ---------------------------------------------------------------------------------------------- helpers

_STATUS_ICON = {"passed": "✅", "failed": "❌", "error": "💥"}
# XML 1.0 forbids most control characters even escaped; an exception message can carry them (e.g. from ORT).
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _xml_text(text: str) -> str:
    return _XML_INVALID.sub("\ufffd", text)


def _junit_time(seconds: float) -> str:
    return f"{seconds:.3f}" if math.isfinite(seconds) else "0.000"


def _fmt_percent(used: float) -> str:
    if math.isnan(used):
        return "n/a"
    if math.isinf(used):
        return "inf"
    return f"{used * 100:.2g}%"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _md_cell(text: str) -> str:
    # A '|' ends a table cell and a newline ends the row; neither may come through from a name or an error.
    return _CONTROL.sub(" ", str(text)).replace("|", "\\|")


def _md_code(text: str) -> str:
    return _CONTROL.sub(" ", str(text)).replace("`", "'")


def _md_fence(lines: list[str]) -> list[str]:
    body = "\n".join(lines)
    fence = "```"
    while fence in body:  # an error message quoting Markdown must not close our block
        fence += "`"
    return [fence + "text", body, fence, ""]


def _md_case_row(case: CaseResult) -> str:
    icon = _STATUS_ICON[case.status]
    name, kind, time = _md_cell(case.name), _md_cell(case.kind), f"{case.duration_s:.2f} s"
    if case.error is not None:
        error = case.error if len(case.error) <= 100 else case.error[:97] + "..."
        return f"| {icon} | {name} | {kind} | {_md_cell(error)} | | | | {time} |"
    worst = case.worst_output
    if worst is not None and worst.error is not None:
        return f"| {icon} | {name} | {kind} | {_md_cell(worst.name)}: {_md_cell(worst.error)} | | | | {time} |"
    if worst is not None:
        cells = [
            _md_cell(worst.name),
            _fmt_stat(worst.max_abs),
            _fmt_stat(worst.min_atol_to_pass),
            f"{worst.tolerance} ({_fmt_percent(worst.tolerance_used)} used)",
        ]
    else:
        cells = ["nothing compared", "", "", ""]
    bad_tokens = [t for t in case.tokens if not t.passed]
    if bad_tokens:
        t = bad_tokens[0]
        cells[0] = f"{_md_cell(t.name)}: first mismatch at step {t.first_mismatch}"
    elif worst is None and case.tokens:
        t = case.tokens[0]
        cells[0] = f"{_md_cell(t.name)}: {t.expected_length} of {t.expected_length} tokens match"
    if worst is None and case.metrics:
        cells[0] = "; ".join(_md_cell(f"{m.name} {m.value:.4g} {m.op} {m.bound:g}") for m in case.metrics)
    return f"| {icon} | {name} | {kind} | " + " | ".join(cells) + f" | {time} |"


def _write_atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 lets the umask decide the final mode (tempfile would leave CI artifacts at 0600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
