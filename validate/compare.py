"""Compare one output of the compiled graph with the eager reference, Polygraphy-style (numpy only).

    tol = resolve_tolerance("logits", "fp32")                    # Tolerance(atol=5e-4, rtol=1e-4)
    c = compare_arrays("logits", ort_logits, torch_logits, tol, mask=attention_mask)
    c.line()  # 'PASS | logits | max abs 3.1e-06 mean 2.0e-07 median 1.2e-07 p99 1.5e-06 | max rel 4.2e-05 |
              #  atol 1e-04 rtol 1e-04 (min atol to pass 3.1e-06)'
    compare_tokens("greedy tokens", ort_ids, torch_ids).line()
              # 'FAIL | greedy tokens | first mismatch at step 12: expected 281, got 314'

Running the two runtimes lives in `runner.py`, turning results into reports in `report.py`; this module only
compares arrays it is handed (Polygraphy keeps run, compare and report apart for the same reason: each is
testable on its own, and the comparison is the part that must be exactly right).

The pass rule, per element, is numpy's `allclose` rule, ``|actual - expected| <= atol + rtol * |expected|``,
evaluated in float64 so that the boundary is the stated one and not blurred by fp32/fp16 rounding of the
difference itself. Non-finite values: NaN or ±Inf in `actual` where `expected` is finite fails; where both are
non-finite the element passes only if they are the same (NaN and NaN, +Inf and +Inf) -- the graph reproduces the
reference, and the NaN/Inf counts on the line still tell a reader that the reference itself is not finite.

Why the default tolerances are what they are (`DEFAULT_TOLERANCES`):

* fp32 -- logits 5e-4 atol + 1e-4 rtol; KV-cache and hidden states 1e-4/1e-4. A correct graph differs from eager
  only by floating-point reassociation: ORT's GEMM blocking, its softmax and a different reduction order. float32's
  unit roundoff is 6e-8; one length-K dot product accumulates ~sqrt(K)*6e-8 relative error. Measured on this
  project's graphs (CPU, `modelkiln validate`): tiny 2-layer models 1e-7..4e-7 everywhere; SmolLM2-135M (30 layers)
  present tensors up to 1.3e-5 and logits up to 1.4e-4 absolute (logits are the end of the longest chain and their
  error is absolute-like: it scales with the hidden-state norm, not with each logit's own value, hence the atol).
  5e-4 leaves ~3.5x headroom over that worst case for other CPUs' kernels. Do not loosen these to make a graph
  pass: a failure at fp32 is a bug until proven otherwise (tests/validate/test_broken_graph.py shows RMSNorm
  weights off by 1% failing).
* fp16 -- 2e-2/2e-2 (logits 5e-2/5e-2). fp16 has a unit roundoff of 4.9e-4 and both runtimes round every
  intermediate to it, in different places; after a deep stack relative differences of 1e-3..1e-2 are normal.
  Logits get more room: they come out of the longest chain (every layer plus the LM head's K=hidden dot product)
  and a logit of 20 has an fp16 ulp of 1.6e-2 on its own.
* bf16 -- 1e-1/5e-2. bfloat16 keeps 8 significant bits (unit roundoff 3.9e-3, 8x fp16's), so a single rounding
  of a value near 1 is already ~4e-3 and accumulated differences of a few percent are expected.
* int8/int4 -- 1.0/0.1, deliberately loose. Weight quantization changes the function itself, not just its
  rounding, so elementwise closeness to the fp32 reference is not the right test; quantized graphs are judged by
  top-1 agreement and perplexity against the reference (a later issue). The loose values still catch a graph
  that is broken outright (NaN, wrong shape, garbage logits).

* fp16-converted graphs (graphs/float16.py, manifest `precision_conversion`) -- `CONVERTED_TOLERANCES`: logits
  0.25/0.05, everything else 0.1/0.05, deliberately loose like int8/int4. Accuracy is judged by top-1 agreement
  and perplexity (validate/accuracy.py) and, for encoders, per-sentence cosine; the elementwise cases only have to
  catch breakage (NaN/Inf, a padding or decode path gone wrong). Measured on SmolLM2-135M's 30 layers (CPU): logits
  worst 8.3e-2 absolute at a logit near 0 (p99 3.3e-2), KV worst 3.0e-2 -- the fp16 defaults above fail 2 of 4M
  logits there, so they are a budget for short stacks, not for a converted 30-layer model.

The defaults assume the reference runs at the artifact's precision or higher; override per output (exact name or
fnmatch glob) with `resolve_tolerance(..., overrides={"present.*": Tolerance(1e-3, 1e-3)})`.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelkiln.runtime.errors import ModelkilnError

__all__ = [
    "CONVERTED_TOLERANCES",
    "DEFAULT_TOLERANCES",
    "OUTPUT_KINDS",
    "PRECISIONS",
    "OutputComparison",
    "TokenComparison",
    "Tolerance",
    "compare_arrays",
    "compare_tokens",
    "output_kind",
    "resolve_tolerance",
    "resolve_tolerances",
]

# subtle: the floor for |expected| in the relative error is float32's smallest normal, not float64's. With
# float64's (2.2e-308) a zero reference and a difference above ~4 overflows to inf; with this one a zero reference
# gives a huge but finite relative error, which is what "relative error against zero" honestly is.
_TINY = float(np.finfo(np.float32).tiny)


# ---------------------------------------------------------------------------------------------- tolerances


@dataclass(frozen=True)
class Tolerance:
    """Per-element pass rule ``|actual - expected| <= atol + rtol * |expected|`` (numpy allclose semantics).

    >>> Tolerance(atol=1e-4, rtol=1e-4)          # passes |a - e| <= 1e-4 + 1e-4 * |e|, e.g. e=20, a=20.0021
    Tolerance(atol=0.0001, rtol=0.0001)

    Both must be finite and >= 0 (an infinite rtol would make ``rtol * 0`` NaN and fail exact zeros; to skip an
    output in practice, give it a large atol).
    """

    atol: float
    rtol: float

    def __post_init__(self) -> None:
        for field_name in ("atol", "rtol"):
            value = getattr(self, field_name)
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ModelkilnError(f"tolerance {field_name} must be a number, got {value!r}") from None
            if not math.isfinite(number) or number < 0:
                raise ModelkilnError(f"tolerance {field_name} must be a finite number >= 0, got {value!r}")
            # Normalise numpy scalars/ints to float so reports serialise the same whatever the caller passed.
            object.__setattr__(self, field_name, number)

    def __str__(self) -> str:
        return f"atol {_fmt_tol(self.atol)} rtol {_fmt_tol(self.rtol)}"

    def to_dict(self) -> dict[str, Any]:
        return {"atol": self.atol, "rtol": self.rtol}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tolerance:
        return cls(atol=data["atol"], rtol=data["rtol"])


PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int4")
OUTPUT_KINDS = ("logits", "present", "hidden_states", "default")


def _same_for_all_kinds(atol: float, rtol: float, **by_kind: Tolerance) -> dict[str, Tolerance]:
    return {kind: by_kind.get(kind, Tolerance(atol, rtol)) for kind in OUTPUT_KINDS}


# Why each number is what it is: see the module docstring.
DEFAULT_TOLERANCES: dict[str, dict[str, Tolerance]] = {
    "fp32": _same_for_all_kinds(1e-4, 1e-4, logits=Tolerance(5e-4, 1e-4)),
    "fp16": _same_for_all_kinds(2e-2, 2e-2, logits=Tolerance(5e-2, 5e-2)),
    "bf16": _same_for_all_kinds(1e-1, 5e-2),
    # Quantized graphs are judged by top-1 agreement / perplexity (later issue); these only catch outright breakage.
    "int8": _same_for_all_kinds(1.0, 0.1),
    "int4": _same_for_all_kinds(1.0, 0.1),
}


# Why: see the module docstring. Name globs, so they merge with (and lose to) the user's `--tolerance` overrides.
CONVERTED_TOLERANCES: dict[str, Tolerance] = {
    "logits": Tolerance(0.25, 0.05), "*_logits": Tolerance(0.25, 0.05), "*": Tolerance(0.1, 0.05)}


def output_kind(output_name: str) -> str:
    """The tolerance kind of a graph output, from its name.

    >>> [output_kind(n) for n in ("logits", "present.3.key", "last_hidden_state", "pooler_output")]
    ['logits', 'present', 'hidden_states', 'default']
    """
    if output_name == "logits" or output_name.endswith("_logits"):  # start_logits/end_logits of QA heads too
        return "logits"
    if fnmatch.fnmatchcase(output_name, "present.*"):
        return "present"
    if output_name == "last_hidden_state" or "hidden" in output_name:
        return "hidden_states"
    return "default"


def _specificity(pattern: str) -> int:
    # The number of literal characters: "present.0.*" (10) is more specific than "present.*" (8) and "*" (0).
    return sum(ch not in "*?[]" for ch in pattern)


def resolve_tolerance(output_name: str, precision: str, overrides: Mapping[str, Tolerance] | None = None) -> Tolerance:
    """The tolerance for one output: exact-name override, else glob override, else the precision's kind default.

    >>> resolve_tolerance("present.0.key", "fp32", {"present.*": Tolerance(1e-3, 0.0)})
    Tolerance(atol=0.001, rtol=0.0)

    When several globs match, the most specific (most literal characters) wins, ties going to the first given.
    """
    if precision not in DEFAULT_TOLERANCES:
        raise ModelkilnError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    overrides = overrides or {}
    for pattern, tol in overrides.items():
        if not isinstance(tol, Tolerance):
            raise ModelkilnError(f"tolerance override {pattern!r} must be a Tolerance, got {tol!r}")
    if output_name in overrides:
        return overrides[output_name]
    matches = [p for p in overrides if fnmatch.fnmatchcase(output_name, p)]
    if matches:
        # max() keeps the first of equally specific patterns, i.e. insertion order breaks ties.
        return overrides[max(matches, key=_specificity)]
    return DEFAULT_TOLERANCES[precision][output_kind(output_name)]


def resolve_tolerances(
    output_names: Sequence[str], precision: str, overrides: Mapping[str, Tolerance] | None = None
) -> dict[str, Tolerance]:
    """`resolve_tolerance` for every output: the table a `ParityReport` records as `tolerances`."""
    return {name: resolve_tolerance(name, precision, overrides) for name in output_names}


# ---------------------------------------------------------------------------------------------- arrays


@dataclass(frozen=True)
class OutputComparison:
    """The comparison of one output. Statistics are over masked-in elements where both values are finite.

    Example (a correct fp32 graph):
        OutputComparison(name="logits", shape=(2, 7, 49152), dtype="float32", passed=True, max_abs=3.1e-06, ...)
        .line() == "PASS | logits | max abs 3.1e-06 mean 2.0e-07 median 1.2e-07 p99 1.5e-06 | max rel 4.2e-05 | "
                   "atol 1e-04 rtol 1e-04 (min atol to pass 3.1e-06)"

    - relative error is ``|a - e| / max(|e|, tiny)`` (tiny = float32's smallest normal).
    - `min_atol_to_pass` is the smallest atol that passes at the configured rtol (``max(|a-e| - rtol*|e|)``, >= 0),
      `min_rtol_to_pass` the smallest rtol at the configured atol (inf when some e == 0 has |a-e| > atol); both
      are inf when a non-finite mismatch means no tolerance passes. Re-comparing at either passes.
    - `tolerance_used` is ``max(|a-e| / (atol + rtol*|e|))``: 0.03 = 3% of the allowance, > 1 fails.
    - `worst_*` is the element with the largest `tolerance_used` (or the first non-finite mismatch), indexed in
      the full, unmasked array.
    - statistics with no finite element to compare are NaN; a comparison that could not run (shape, dtype,
      missing output) has `passed=False`, `error` set and NaN statistics.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    tolerance: Tolerance
    passed: bool
    compared_elements: int
    max_abs: float
    mean_abs: float
    median_abs: float
    p99_abs: float
    max_rel: float
    mean_rel: float
    median_rel: float
    p99_rel: float
    min_atol_to_pass: float
    min_rtol_to_pass: float
    tolerance_used: float
    mismatched_elements: int
    actual_nan: int
    actual_inf: int
    expected_nan: int
    expected_inf: int
    worst_index: tuple[int, ...] | None
    worst_actual: float
    worst_expected: float
    error: str | None = None

    def line(self, case: str | None = None) -> str:
        """One console line, ``PASS | ...`` or ``FAIL | ...``; `case` is inserted after the status if given."""
        head = f"{'PASS' if self.passed else 'FAIL'} | " + (f"{case} | " if case else "") + self.name
        if self.error is not None:
            return f"{head} | {self.error}"
        if self.compared_elements == 0:
            return f"{head} | no elements compared (all masked out) | {self.tolerance}"
        parts = [head]
        if math.isnan(self.max_abs):
            parts.append("no finite element pair to compare")
        else:
            parts.append(
                f"max abs {_fmt_stat(self.max_abs)} mean {_fmt_stat(self.mean_abs)} "
                f"median {_fmt_stat(self.median_abs)} p99 {_fmt_stat(self.p99_abs)}"
            )
            parts.append(f"max rel {_fmt_stat(self.max_rel)}")
        if self.passed:
            parts.append(f"{self.tolerance} (min atol to pass {_fmt_stat(self.min_atol_to_pass)})")
        else:
            parts.append(
                f"{self.tolerance} (min atol to pass {_fmt_stat(self.min_atol_to_pass)}, "
                f"min rtol to pass {_fmt_stat(self.min_rtol_to_pass)})"
            )
            where = ", ".join(str(i) for i in self.worst_index or ())
            parts.append(
                f"{self.mismatched_elements} of {self.compared_elements} elements over tolerance, worst at "
                f"[{where}]: expected {_fmt_value(self.worst_expected)}, got {_fmt_value(self.worst_actual)}"
            )
        if self.actual_nan or self.actual_inf or self.expected_nan or self.expected_inf:
            parts.append(
                f"NaN/Inf in actual {self.actual_nan}/{self.actual_inf}, "
                f"in expected {self.expected_nan}/{self.expected_inf}"
            )
        return " | ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: NaN -> None, ±inf -> "inf"/"-inf", tuples -> lists; key order is the field order."""
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "tolerance": self.tolerance.to_dict(),
            "passed": self.passed,
            "compared_elements": self.compared_elements,
            **{key: _json_float(getattr(self, key)) for key in _FLOAT_FIELDS},
            "mismatched_elements": self.mismatched_elements,
            "actual_nan": self.actual_nan,
            "actual_inf": self.actual_inf,
            "expected_nan": self.expected_nan,
            "expected_inf": self.expected_inf,
            "worst_index": None if self.worst_index is None else list(self.worst_index),
            "worst_actual": _json_float(self.worst_actual),
            "worst_expected": _json_float(self.worst_expected),
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OutputComparison:
        return cls(
            name=data["name"],
            shape=tuple(int(s) for s in data["shape"]),
            dtype=data["dtype"],
            tolerance=Tolerance.from_dict(data["tolerance"]),
            passed=bool(data["passed"]),
            compared_elements=int(data["compared_elements"]),
            **{key: _float_from_json(data[key]) for key in _FLOAT_FIELDS},
            mismatched_elements=int(data["mismatched_elements"]),
            actual_nan=int(data["actual_nan"]),
            actual_inf=int(data["actual_inf"]),
            expected_nan=int(data["expected_nan"]),
            expected_inf=int(data["expected_inf"]),
            worst_index=None if data["worst_index"] is None else tuple(int(i) for i in data["worst_index"]),
            worst_actual=_float_from_json(data["worst_actual"]),
            worst_expected=_float_from_json(data["worst_expected"]),
            error=data["error"],
        )


_FLOAT_FIELDS = (
    "max_abs", "mean_abs", "median_abs", "p99_abs",
    "max_rel", "mean_rel", "median_rel", "p99_rel",
    "min_atol_to_pass", "min_rtol_to_pass", "tolerance_used",
)  # fmt: skip


def _value_kind(dtype: np.dtype) -> str | None:
    """'floating' | 'integer' | 'bool', or None for what we do not compare (complex, strings, objects)."""
    if dtype == np.bool_:
        return "bool"
    if np.issubdtype(dtype, np.integer):
        return "integer"
    if np.issubdtype(dtype, np.floating):
        return "floating"
    # bfloat16/float8/int4 from ml_dtypes (what onnx and ORT hand back) are numpy "void" kinds, not np.floating.
    if dtype.type.__module__.startswith("ml_dtypes"):
        return "floating" if "float" in dtype.name else "integer"
    return None


def _failed(name: str, shape: tuple[int, ...], dtype: str, tol: Tolerance, error: str) -> OutputComparison:
    nan = float("nan")
    return OutputComparison(
        name=name, shape=shape, dtype=dtype, tolerance=tol, passed=False, compared_elements=0,
        **{key: nan for key in _FLOAT_FIELDS},
        mismatched_elements=0, actual_nan=0, actual_inf=0, expected_nan=0, expected_inf=0,
        worst_index=None, worst_actual=nan, worst_expected=nan, error=error,
    )  # fmt: skip


def _full_mask(mask: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    """A boolean mask over the leading dims -> a boolean array of the full output shape.

    subtle: the mask aligns with the *leading* dims (numpy broadcasting aligns trailing ones): an attention mask
    (batch, seq) selects rows of logits (batch, seq, vocab); a KV mask is given as (batch, 1, total, 1).
    """
    m = np.asarray(mask)
    if m.dtype != np.bool_:
        if not np.issubdtype(m.dtype, np.integer):
            raise ModelkilnError(f"mask for {name} must be boolean or 0/1 integers, got dtype {m.dtype}")
        m = m != 0  # an attention_mask (int64 0/1) is accepted as is
    if m.ndim > len(shape):
        raise ModelkilnError(f"mask of shape {m.shape} has more dims than {name} of shape {shape}")
    m = m.reshape(m.shape + (1,) * (len(shape) - m.ndim))
    try:
        return np.broadcast_to(m, shape)
    except ValueError:
        raise ModelkilnError(
            f"mask of shape {tuple(np.asarray(mask).shape)} does not broadcast to the leading dims of {name} "
            f"of shape {shape}"
        ) from None


def _smallest_passing(start: float, passes: Callable[[float], bool]) -> float:
    """`start`, nudged up until `passes` agrees.

    subtle: `start` comes from the inverse of the pass rule (e.g. d - rtol*e), and (d - r) + r can round to just
    below d; the reported minimum must pass when fed back in, so step up from 1 ulp, doubling, until it does.
    """
    value = float(start)
    for i in range(80):
        if passes(value):
            return value
        value += max(abs(value), _TINY) * 2.0 ** (i - 52)
    raise AssertionError(f"no passing tolerance found near {start!r}")


def compare_arrays(
    name: str,
    actual: Any,
    expected: Any,
    tol: Tolerance,
    mask: Any = None,
) -> OutputComparison:
    """Compare `actual` (the compiled graph's output) with `expected` (eager), elementwise, under `tol`.

    >>> tol = Tolerance(atol=1e-4, rtol=1e-4)
    >>> compare_arrays("x", np.array([1.0, 2.00015]), np.array([1.0, 2.0]), tol).passed  # 1.5e-4 <= 1e-4 + 2e-4
    True

    `mask` (bool, or 0/1 ints like an attention mask) selects the elements to compare and broadcasts over the
    leading dims: (batch, seq) for logits (batch, seq, vocab), (batch, 1, total, 1) for KV (batch, heads, total,
    head_dim). Padding positions are excluded because both runtimes produce meaningless values there.

    A missing output (None), a shape mismatch or a dtype-kind mismatch (float vs int) is a failed comparison
    with `error` set, not an exception: the graph being wrong is the result, not a crash. A mask that does not
    fit raises ModelkilnError -- that is the caller's bug.
    """
    if actual is None or expected is None:
        present = expected if actual is None else actual
        arr = np.asarray(present)
        which = "actual (compiled graph)" if actual is None else "expected (reference)"
        return _failed(name, tuple(arr.shape), str(arr.dtype), tol, f"output missing from {which}")

    a_arr, e_arr = np.asarray(actual), np.asarray(expected)
    shape, dtype = tuple(int(s) for s in a_arr.shape), str(a_arr.dtype)
    a_kind, e_kind = _value_kind(a_arr.dtype), _value_kind(e_arr.dtype)
    if a_kind is None or e_kind is None:
        bad = a_arr.dtype if a_kind is None else e_arr.dtype
        return _failed(name, shape, dtype, tol, f"unsupported dtype {bad} (compare float, int or bool outputs)")
    if a_kind != e_kind:
        return _failed(
            name, shape, dtype, tol,
            f"dtype mismatch: actual {a_arr.dtype} ({a_kind}) vs expected {e_arr.dtype} ({e_kind})",
        )  # fmt: skip
    if a_arr.shape != e_arr.shape:
        return _failed(name, shape, dtype, tol, f"shape mismatch: actual {shape} vs expected {tuple(e_arr.shape)}")

    keep = None if mask is None else _full_mask(mask, shape, name)
    # Select first, then widen: float64 copies are the memory peak of validation (a (4, 64, 49152) logits
    # tensor is 100 MB per float64 array), so the arithmetic below also reuses buffers in place where it can.
    a = (a_arr.reshape(-1) if keep is None else a_arr[keep]).astype(np.float64)
    e = (e_arr.reshape(-1) if keep is None else e_arr[keep]).astype(np.float64)
    n = int(a.size)

    a_fin, e_fin = np.isfinite(a), np.isfinite(e)
    all_finite = bool(a_fin.all() and e_fin.all())
    counts = dict.fromkeys(("actual_nan", "actual_inf", "expected_nan", "expected_inf"), 0)
    bad_nonfinite = np.zeros(0, dtype=np.intp)
    both: np.ndarray | None = None
    if not all_finite:
        a_nan, e_nan = np.isnan(a), np.isnan(e)
        counts = {
            "actual_nan": int(a_nan.sum()),
            "actual_inf": int((~a_fin & ~a_nan).sum()),
            "expected_nan": int(e_nan.sum()),
            "expected_inf": int((~e_fin & ~e_nan).sum()),
        }
        both = a_fin & e_fin
        # Non-finite pairs pass only when identical (NaN/NaN, +Inf/+Inf); anything else no tolerance fixes.
        same = (a_nan & e_nan) | (~a_fin & ~a_nan & (a == e))
        bad_nonfinite = np.flatnonzero(~both & ~same)
        a, e = a[both], e[both]  # finite pairs only from here on
        del a_nan, e_nan, same
    del a_fin, e_fin

    d = np.subtract(a, e, out=a)  # |a - e|, exact in float64 for fp32/fp16/bf16 inputs of similar magnitude
    np.abs(d, out=d)
    abs_e = np.abs(e, out=e)
    del a, e
    atol, rtol = tol.atol, tol.rtol
    allowance = np.multiply(abs_e, rtol)
    allowance += atol  # == atol + rtol * |e|, the pass rule's right-hand side, in the same rounding as allclose
    mismatched = int(np.count_nonzero(~(d <= allowance))) + int(bad_nonfinite.size)

    nan = float("nan")
    stats = dict.fromkeys(_FLOAT_FIELDS, nan)
    worst_finite: int | None = None
    if d.size:
        median_abs, p99_abs = np.percentile(d, [50, 99])
        rel = np.maximum(abs_e, _TINY)
        np.divide(d, rel, out=rel)
        stats.update(
            max_abs=float(d.max()), mean_abs=float(d.mean()), median_abs=float(median_abs), p99_abs=float(p99_abs),
            max_rel=float(rel.max()), mean_rel=float(rel.mean()),
        )  # fmt: skip
        stats["median_rel"], stats["p99_rel"] = (float(x) for x in np.percentile(rel, [50, 99], overwrite_input=True))
        del rel
        zero = allowance == 0
        with np.errstate(divide="ignore", invalid="ignore"):
            used = np.divide(d, allowance, out=allowance)
        # allowance 0 (atol 0 and e == 0): an exact match uses nothing, any difference is infinitely over.
        if zero.any():
            used[zero] = np.where(d[zero] > 0, np.inf, 0.0)
        worst_finite = int(np.argmax(used))
        stats["tolerance_used"] = float(used[worst_finite])
        del used, zero
    else:
        stats["tolerance_used"] = 0.0
    del allowance

    if bad_nonfinite.size:
        stats.update(min_atol_to_pass=math.inf, min_rtol_to_pass=math.inf, tolerance_used=math.inf)
    elif d.size:

        def passes_atol(t: float) -> bool:
            return bool(np.all(d <= t + rtol * abs_e))

        def passes_rtol(t: float) -> bool:
            return bool(np.all(d <= atol + t * abs_e))

        stats["min_atol_to_pass"] = _smallest_passing(max(0.0, float(np.max(d - rtol * abs_e))), passes_atol)
        over = d > atol
        if not over.any():
            stats["min_rtol_to_pass"] = 0.0
        elif np.any(abs_e[over] == 0):
            stats["min_rtol_to_pass"] = math.inf  # no rtol scales a zero reference up to the difference
        else:
            start = float(np.max((d[over] - atol) / abs_e[over]))
            stats["min_rtol_to_pass"] = _smallest_passing(start, passes_rtol)
    else:
        stats.update(min_atol_to_pass=0.0, min_rtol_to_pass=0.0)

    # The worst element: an index into the selected 1-D arrays, then into the full array.
    if bad_nonfinite.size:
        k: int | None = int(bad_nonfinite[0])
    elif worst_finite is not None:
        k = worst_finite if both is None else int(np.flatnonzero(both)[worst_finite])
    else:
        k = None
    if k is None:
        worst_index, worst_actual, worst_expected = None, nan, nan
    else:
        flat = k if keep is None else int(np.flatnonzero(keep)[k])
        worst_index = tuple(int(i) for i in np.unravel_index(flat, shape))
        worst_actual, worst_expected = float(a_arr[worst_index]), float(e_arr[worst_index])

    return OutputComparison(
        name=name, shape=shape, dtype=dtype, tolerance=tol, passed=mismatched == 0, compared_elements=n,
        **stats, mismatched_elements=mismatched, **counts,
        worst_index=worst_index, worst_actual=worst_actual, worst_expected=worst_expected, error=None,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class TokenComparison:
    """Two token sequences (e.g. greedy generations), compared exactly; steps count from 0.

    >>> compare_tokens("greedy tokens", [5, 9, 314], [5, 9, 281]).line()
    'FAIL | greedy tokens | first mismatch at step 2: expected 281, got 314'
    """

    name: str
    passed: bool
    first_mismatch: int | None
    actual_length: int
    expected_length: int
    actual_ids: tuple[int, ...]
    expected_ids: tuple[int, ...]

    def line(self, case: str | None = None) -> str:
        head = f"{'PASS' if self.passed else 'FAIL'} | " + (f"{case} | " if case else "") + self.name
        if self.passed:
            return f"{head} | {self.expected_length} of {self.expected_length} tokens match"
        i = self.first_mismatch
        assert i is not None
        want = self.expected_ids[i] if i < self.expected_length else "end of sequence"
        got = self.actual_ids[i] if i < self.actual_length else "end of sequence"
        text = f"{head} | first mismatch at step {i}: expected {want}, got {got}"
        if self.actual_length != self.expected_length:
            text += f" (lengths: expected {self.expected_length}, got {self.actual_length})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "first_mismatch": self.first_mismatch,
            "actual_length": self.actual_length,
            "expected_length": self.expected_length,
            "actual_ids": list(self.actual_ids),
            "expected_ids": list(self.expected_ids),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TokenComparison:
        return cls(
            name=data["name"],
            passed=bool(data["passed"]),
            first_mismatch=None if data["first_mismatch"] is None else int(data["first_mismatch"]),
            actual_length=int(data["actual_length"]),
            expected_length=int(data["expected_length"]),
            actual_ids=tuple(int(t) for t in data["actual_ids"]),
            expected_ids=tuple(int(t) for t in data["expected_ids"]),
        )


def _token_ids(ids: Any, which: str) -> tuple[int, ...]:
    arr = np.asarray(ids)
    if arr.size == 0:
        return ()
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ModelkilnError(f"{which} token ids must be a 1-D sequence of ints, got shape {arr.shape} {arr.dtype}")
    return tuple(int(t) for t in arr)


def compare_tokens(
    name: str, actual_ids: Sequence[int] | np.ndarray, expected_ids: Sequence[int] | np.ndarray
) -> TokenComparison:
    """Exact comparison of two 1-D token sequences; a length difference is a mismatch at the shorter length.

    >>> compare_tokens("greedy tokens", [1, 2, 3], [1, 2, 3]).passed
    True
    """
    got, want = _token_ids(actual_ids, "actual"), _token_ids(expected_ids, "expected")
    first = next((i for i, (g, w) in enumerate(zip(got, want)) if g != w), None)
    if first is None and len(got) != len(want):
        first = min(len(got), len(want))
    return TokenComparison(
        name=name,
        passed=first is None,
        first_mismatch=first,
        actual_length=len(got),
        expected_length=len(want),
        actual_ids=got,
        expected_ids=want,
    )


# ---------------------------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class MetricComparison:
    """A task-level accuracy figure checked against a bound (quantized artifacts: top-1 agreement, perplexity
    ratio, embedding cosine), where elementwise tolerances would say nothing useful.

    >>> MetricComparison("top-1 agreement", 0.97, ">=", 0.9, "over 600 positions").line()
    'PASS | top-1 agreement | 0.97 >= 0.9 (over 600 positions)'
    """

    name: str
    value: float
    op: str  # ">=" or "<="
    bound: float
    detail: str = ""

    @property
    def passed(self) -> bool:
        if math.isnan(self.value):
            return False
        return self.value >= self.bound if self.op == ">=" else self.value <= self.bound

    def line(self, case: str | None = None) -> str:
        head = f"{'PASS' if self.passed else 'FAIL'} | " + (f"{case} | " if case else "") + self.name
        tail = f" ({self.detail})" if self.detail else ""
        return f"{head} | {self.value:.4g} {self.op} {self.bound:g}{tail}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "value": _json_float(self.value), "op": self.op,
                "bound": self.bound, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricComparison:
        return cls(data["name"], _float_from_json(data["value"]), data["op"], float(data["bound"]),
                   data.get("detail", ""))


# ---------------------------------------------------------------------------------------------- formatting


def _json_float(x: float) -> float | str | None:
    """NaN -> None, ±inf -> "inf"/"-inf" (JSON has neither), else the float itself."""
    x = float(x)
    if math.isnan(x):
        return None
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def _float_from_json(v: float | str | None) -> float:
    if v is None:
        return float("nan")
    return float(v)  # float("inf") / float("-inf") parse the strings _json_float writes


def _fmt_stat(x: float) -> str:
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.1e}"


def _fmt_tol(x: float) -> str:
    """The shortest exponent form that reads back as the same float: 1e-04, 2.5e-03, 1.2345e-05."""
    for digits in range(17):
        text = f"{x:.{digits}e}"
        if float(text) == x:
            return text
    return repr(x)


def _fmt_value(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.7g}"
