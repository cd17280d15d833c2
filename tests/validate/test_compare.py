"""modelkiln.validate.compare: the pass rule at its exact boundary, minimum tolerances, masks, NaN/Inf, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modelkiln.runtime.errors import ModelkilnError
from modelkiln.validate.compare import (
    DEFAULT_TOLERANCES,
    OUTPUT_KINDS,
    PRECISIONS,
    OutputComparison,
    TokenComparison,
    Tolerance,
    compare_arrays,
    compare_tokens,
    output_kind,
    resolve_tolerance,
    resolve_tolerances,
)

FP32 = Tolerance(atol=1e-4, rtol=1e-4)


def _logits(seed: int = 0, shape=(2, 5, 11), noise: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    expected = (rng.standard_normal(shape) * 20).astype(np.float32)
    actual = (expected + rng.standard_normal(shape) * noise).astype(np.float32)
    return actual, expected


# ---------------------------------------------------------------------------------------------- pass rule


# atol 2^-14, rtol 2^-13, e = 16: the allowance 2^-14 + 2^-9 and 16 ± it are exact in float32 and float64,
# so "exactly at the boundary" means exactly.
ATOL, RTOL, E = 2.0**-14, 2.0**-13, 16.0
BOUND = ATOL + RTOL * E


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_error_exactly_at_the_allowance_passes_and_one_ulp_more_fails(dtype, sign):
    tol = Tolerance(ATOL, RTOL)
    expected = np.array([E, -E, 1.0], dtype=dtype)
    at = np.array([E + sign * BOUND, -E, 1.0], dtype=dtype)
    assert float(at[0]) - E == sign * BOUND  # the construction is exact
    c = compare_arrays("x", at, expected, tol)
    assert c.passed and c.mismatched_elements == 0
    assert c.max_abs == BOUND

    beyond = at.copy()
    beyond[0] = np.nextafter(at[0], dtype(sign * np.inf))
    c = compare_arrays("x", beyond, expected, tol)
    assert not c.passed and c.mismatched_elements == 1
    assert c.worst_index == (0,)
    assert c.line().startswith("FAIL | x | ")


def test_pass_rule_agrees_with_numpy_allclose():
    rng = np.random.default_rng(7)
    for _ in range(300):
        expected = rng.standard_normal(4) * 10.0 ** rng.integers(-3, 3)
        # errors scattered around the allowance so both outcomes occur
        actual = expected + (FP32.atol + FP32.rtol * np.abs(expected)) * rng.uniform(-1.3, 1.3, 4)
        c = compare_arrays("x", actual, expected, FP32)
        assert c.passed == np.allclose(actual, expected, atol=FP32.atol, rtol=FP32.rtol)


def test_relative_error_uses_a_tiny_floor_for_zero_reference():
    c = compare_arrays("x", np.array([1e-6, 1.0]), np.array([0.0, 1.0]), FP32)
    assert c.passed  # 1e-6 <= atol
    assert np.isfinite(c.max_rel) and c.max_rel > 1e30  # huge but finite: 1e-6 / float32 tiny


def test_statistics():
    expected = np.zeros(100)
    actual = np.arange(100) * 1e-7  # abs errors 0, 1e-7, ..., 9.9e-6
    c = compare_arrays("x", actual, expected, FP32)
    assert c.compared_elements == 100
    assert c.max_abs == pytest.approx(9.9e-6)
    assert c.mean_abs == pytest.approx(4.95e-6)
    assert c.median_abs == pytest.approx(4.95e-6)
    assert c.p99_abs == pytest.approx(np.percentile(actual, 99))
    assert c.tolerance_used == pytest.approx(9.9e-6 / 1e-4)
    assert c.worst_index == (99,)
    assert c.worst_actual == pytest.approx(9.9e-6) and c.worst_expected == 0.0


# ---------------------------------------------------------------------------------------------- minimum tolerances


def _check_min_atol(actual, expected, rtol):
    c = compare_arrays("x", actual, expected, Tolerance(1e-4, rtol))
    m = c.min_atol_to_pass
    d, e = np.abs(actual - expected), np.abs(expected)
    assert m == pytest.approx(max(float(np.max(d - rtol * e)), 0.0), rel=1e-12, abs=0)
    assert compare_arrays("x", actual, expected, Tolerance(m, rtol)).passed
    if m > 0:
        assert not compare_arrays("x", actual, expected, Tolerance(m * (1 - 1e-12), rtol)).passed


def _check_min_rtol(actual, expected, atol):
    c = compare_arrays("x", actual, expected, Tolerance(atol, 1e-4))
    m = c.min_rtol_to_pass
    assert compare_arrays("x", actual, expected, Tolerance(atol, m)).passed
    if m > 0:
        assert not compare_arrays("x", actual, expected, Tolerance(atol, m * (1 - 1e-12))).passed


def test_min_tolerances_survive_the_rounding_trap():
    # subtle: for these pairs the naive inverse of the pass rule rounds below what passes,
    # fl(fl(d - r*e) + r*e) < d, so reporting it as is would print a "minimum" that fails when fed back.
    a, e = np.array([-0.06711958577983168]), np.array([10.520065621606998])
    d, naive = np.abs(a - e), np.abs(a - e) - 0.1 * np.abs(e)
    assert not np.all(d <= naive + 0.1 * np.abs(e))
    _check_min_atol(a, e, rtol=0.1)

    a, e = np.array([-5.250953325659252]), np.array([-5.243162761654858])
    d = np.abs(a - e)
    naive = (d - 1e-4) / np.abs(e)
    assert not np.all(d <= 1e-4 + naive * np.abs(e))
    _check_min_rtol(a, e, atol=1e-4)


@pytest.mark.parametrize("rtol", [1e-4, 0.1])
def test_min_atol_passes_when_fed_back_and_slightly_less_fails(rtol):
    rng = np.random.default_rng(1)
    for _ in range(100):
        expected = rng.standard_normal(6) * 30
        _check_min_atol(expected + rng.standard_normal(6) * 10.0 ** rng.integers(-4, 2), expected, rtol)


@pytest.mark.parametrize("atol", [1e-4, 0.0])
def test_min_rtol_passes_when_fed_back_and_slightly_less_fails(atol):
    rng = np.random.default_rng(2)
    for _ in range(100):
        expected = rng.standard_normal(6) * 30
        _check_min_rtol(expected + rng.standard_normal(6) * 10.0 ** rng.integers(-4, 2), expected, atol)


def test_min_tolerances_of_a_passing_comparison_are_within_the_configured_ones():
    actual, expected = _logits()
    c = compare_arrays("logits", actual, expected, FP32)
    assert c.passed
    assert 0.0 <= c.min_atol_to_pass <= FP32.atol
    assert 0.0 <= c.min_rtol_to_pass <= FP32.rtol


def test_min_rtol_is_inf_when_a_zero_reference_is_off_by_more_than_atol():
    c = compare_arrays("x", np.array([1e-3, 1.0]), np.array([0.0, 1.0]), FP32)
    assert not c.passed
    assert c.min_rtol_to_pass == np.inf
    assert c.min_atol_to_pass == pytest.approx(1e-3)
    assert compare_arrays("x", np.array([1e-3, 1.0]), np.array([0.0, 1.0]), Tolerance(c.min_atol_to_pass, 1e-4)).passed


def test_min_rtol_is_zero_when_atol_alone_suffices():
    c = compare_arrays("x", np.array([1.00005]), np.array([1.0]), FP32)
    assert c.min_rtol_to_pass == 0.0


# ---------------------------------------------------------------------------------------------- masks


def test_mask_over_leading_dims_excludes_padding():
    actual, expected = _logits(shape=(2, 5, 11))
    actual[0, :2] = 1e6  # left padding of row 0: garbage in both runtimes, never compared
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=np.int64)  # an attention_mask as the runner has it
    assert not compare_arrays("logits", actual, expected, FP32).passed
    c = compare_arrays("logits", actual, expected, FP32, mask=mask)
    assert c.passed
    assert c.compared_elements == 8 * 11
    assert c.max_abs < 1e-4


def test_worst_index_is_in_full_array_coordinates_under_a_mask():
    actual, expected = _logits(shape=(2, 5, 11))
    actual[1, 3, 7] += 1.0
    mask = np.array([[False, False, True, True, True], [False, True, True, True, True]])
    c = compare_arrays("logits", actual, expected, FP32, mask=mask)
    assert not c.passed
    assert c.worst_index == (1, 3, 7)
    assert c.worst_actual == pytest.approx(float(actual[1, 3, 7]))
    assert "[1, 3, 7]" in c.line()


def test_kv_shaped_mask():
    rng = np.random.default_rng(3)
    expected = rng.standard_normal((2, 3, 6, 4)).astype(np.float32)  # (batch, kv_heads, total, head_dim)
    actual = expected.copy()
    actual[0, :, 0] = np.nan  # a padded KV slot
    mask = np.ones((2, 1, 6, 1), dtype=bool)
    mask[0, 0, 0, 0] = False
    c = compare_arrays("present.0.key", actual, expected, FP32, mask=mask)
    assert c.passed and c.compared_elements == 2 * 3 * 6 * 4 - 3 * 4
    assert c.actual_nan == 0  # counts are over compared elements


def test_mask_that_does_not_fit_raises():
    actual, expected = _logits(shape=(2, 5, 11))
    with pytest.raises(ModelkilnError, match="does not broadcast"):
        compare_arrays("logits", actual, expected, FP32, mask=np.ones((2, 4), dtype=bool))
    with pytest.raises(ModelkilnError, match="boolean"):
        compare_arrays("logits", actual, expected, FP32, mask=np.ones((2, 5), dtype=np.float32))


def test_everything_masked_out():
    actual, expected = _logits()
    c = compare_arrays("logits", actual, expected, FP32, mask=np.zeros((2, 5), dtype=bool))
    assert c.passed and c.compared_elements == 0 and c.worst_index is None
    assert "no elements compared" in c.line()


# ---------------------------------------------------------------------------------------------- NaN / Inf


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_actual_where_expected_is_finite_fails(bad):
    actual, expected = _logits()
    actual[1, 2, 3] = bad
    c = compare_arrays("logits", actual, expected, FP32)
    assert not c.passed and c.mismatched_elements == 1
    assert c.worst_index == (1, 2, 3)
    assert c.min_atol_to_pass == np.inf and c.min_rtol_to_pass == np.inf
    assert (c.actual_nan, c.actual_inf) == ((1, 0) if np.isnan(bad) else (0, 1))
    assert np.isfinite(c.max_abs)  # statistics are over finite pairs; the counts say what else happened
    assert "NaN/Inf in actual" in c.line()


def test_identical_non_finite_values_match_and_are_reported():
    expected = np.array([np.nan, np.inf, -np.inf, 1.0])
    c = compare_arrays("x", expected.copy(), expected, FP32)
    assert c.passed
    assert (c.actual_nan, c.actual_inf, c.expected_nan, c.expected_inf) == (1, 2, 1, 2)
    assert c.line().startswith("PASS | ") and "NaN/Inf" in c.line()


def test_opposite_infinities_and_finite_for_nan_fail():
    c = compare_arrays("x", np.array([-np.inf, 1.0]), np.array([np.inf, 1.0]), FP32)
    assert not c.passed
    c = compare_arrays("x", np.array([1.0, 1.0]), np.array([np.nan, 1.0]), FP32)
    assert not c.passed and c.expected_nan == 1


def test_all_nan_has_no_statistics():
    c = compare_arrays("x", np.full(3, np.nan), np.ones(3), FP32)
    assert not c.passed and np.isnan(c.max_abs)
    assert "no finite element pair" in c.line()


# ---------------------------------------------------------------------------------------------- errors, dtypes


def test_shape_mismatch_is_a_failed_comparison_not_an_exception():
    actual, expected = _logits()
    c = compare_arrays("logits", actual[:, :3], expected, FP32)
    assert not c.passed
    assert c.error == "shape mismatch: actual (2, 3, 11) vs expected (2, 5, 11)"
    assert c.line() == "FAIL | logits | shape mismatch: actual (2, 3, 11) vs expected (2, 5, 11)"


def test_dtype_kind_mismatch_and_missing_output():
    c = compare_arrays("ids", np.arange(3, dtype=np.float32), np.arange(3), FP32)
    assert not c.passed and "dtype mismatch" in c.error
    c = compare_arrays("present.0.key", None, np.zeros(3), FP32)
    assert not c.passed and c.error == "output missing from actual (compiled graph)"


def test_mixed_float_widths_and_integers_compare():
    actual, expected = _logits(noise=0)
    assert compare_arrays("logits", actual.astype(np.float16), expected, Tolerance(5e-2, 5e-2)).passed
    assert compare_arrays("ids", np.array([1, 2, 3], np.int32), np.array([1, 2, 3], np.int64), FP32).passed
    assert not compare_arrays("ids", np.array([1, 2, 4]), np.array([1, 2, 3]), FP32).passed


def test_bfloat16_from_ml_dtypes():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    expected = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    actual = expected.astype(ml_dtypes.bfloat16)
    c = compare_arrays("logits", actual, expected, DEFAULT_TOLERANCES["bf16"]["logits"])
    assert c.passed and c.dtype == "bfloat16"


# ---------------------------------------------------------------------------------------------- tolerances


def test_default_table_is_complete_and_fp32_is_tight():
    assert set(DEFAULT_TOLERANCES) == set(PRECISIONS)
    for table in DEFAULT_TOLERANCES.values():
        assert set(table) == set(OUTPUT_KINDS)
    assert DEFAULT_TOLERANCES["fp32"]["logits"] == Tolerance(5e-4, 1e-4)
    assert all(DEFAULT_TOLERANCES["fp32"][k] == Tolerance(1e-4, 1e-4) for k in ("present", "hidden_states", "default"))
    assert DEFAULT_TOLERANCES["fp16"]["logits"] == Tolerance(5e-2, 5e-2)
    assert DEFAULT_TOLERANCES["fp16"]["present"] == Tolerance(2e-2, 2e-2)
    assert DEFAULT_TOLERANCES["bf16"]["logits"] == Tolerance(1e-1, 5e-2)
    assert DEFAULT_TOLERANCES["int4"]["logits"] == Tolerance(1.0, 0.1)


@pytest.mark.parametrize(
    ("name", "kind"),
    [("logits", "logits"), ("present.0.key", "present"), ("present.29.value", "present"),
     ("last_hidden_state", "hidden_states"), ("encoder_hidden_states", "hidden_states"), ("pooler_output", "default")],
)  # fmt: skip
def test_output_kind(name, kind):
    assert output_kind(name) == kind


def test_override_precedence_exact_then_most_specific_glob_then_kind_default():
    overrides = {
        "*": Tolerance(9.0, 9.0),
        "present.*": Tolerance(1e-3, 0.0),
        "present.0.*": Tolerance(2e-3, 0.0),
        "present.0.value": Tolerance(3e-3, 0.0),
    }
    assert resolve_tolerance("present.0.value", "fp32", overrides) == Tolerance(3e-3, 0.0)
    assert resolve_tolerance("present.0.key", "fp32", overrides) == Tolerance(2e-3, 0.0)
    assert resolve_tolerance("present.5.key", "fp32", overrides) == Tolerance(1e-3, 0.0)
    assert resolve_tolerance("logits", "fp32", overrides) == Tolerance(9.0, 9.0)
    assert resolve_tolerance("logits", "fp16", {"present.*": Tolerance(1, 1)}) == Tolerance(5e-2, 5e-2)
    table = resolve_tolerances(["logits", "present.0.key"], "fp32", {"present.*": Tolerance(1e-3, 0.0)})
    assert table == {"logits": Tolerance(5e-4, 1e-4), "present.0.key": Tolerance(1e-3, 0.0)}


def test_bad_tolerance_input_names_the_value():
    with pytest.raises(ModelkilnError, match="'fp64'"):
        resolve_tolerance("logits", "fp64")
    with pytest.raises(ModelkilnError, match="atol"):
        Tolerance(-1e-4, 1e-4)
    with pytest.raises(ModelkilnError, match="rtol"):
        Tolerance(1e-4, float("nan"))
    with pytest.raises(ModelkilnError, match="must be a Tolerance"):
        resolve_tolerance("logits", "fp32", {"logits": 1e-3})


# ---------------------------------------------------------------------------------------------- lines, JSON


def _example(passed: bool, **changes) -> OutputComparison:
    fields = {
        "name": "logits", "shape": (1, 4, 8), "dtype": "float32", "tolerance": FP32, "passed": passed,
        "compared_elements": 32, "max_abs": 3.1e-06, "mean_abs": 2.0e-07, "median_abs": 1.2e-07, "p99_abs": 1.5e-06,
        "max_rel": 4.2e-05, "mean_rel": 1e-6, "median_rel": 1e-7, "p99_rel": 2e-5,
        "min_atol_to_pass": 3.1e-06, "min_rtol_to_pass": 0.0, "tolerance_used": 0.031, "mismatched_elements": 0,
        "actual_nan": 0, "actual_inf": 0, "expected_nan": 0, "expected_inf": 0,
        "worst_index": (0, 3, 7), "worst_actual": 0.5000031, "worst_expected": 0.5, "error": None,
    }  # fmt: skip
    return OutputComparison(**{**fields, **changes})


def test_pass_line_format():
    assert _example(True).line() == (
        "PASS | logits | max abs 3.1e-06 mean 2.0e-07 median 1.2e-07 p99 1.5e-06 | max rel 4.2e-05 | "
        "atol 1e-04 rtol 1e-04 (min atol to pass 3.1e-06)"
    )
    assert _example(True).line("prefill[b=1,s=4]").startswith("PASS | prefill[b=1,s=4] | logits | max abs")


def test_fail_line_names_worst_element_and_min_tolerances():
    line = _example(False, max_abs=0.25, min_atol_to_pass=0.25, min_rtol_to_pass=0.5, mismatched_elements=2,
                    worst_actual=0.75, worst_expected=0.5).line()  # fmt: skip
    assert line.startswith("FAIL | logits | max abs 2.5e-01")
    assert "(min atol to pass 2.5e-01, min rtol to pass 5.0e-01)" in line
    assert line.endswith("2 of 32 elements over tolerance, worst at [0, 3, 7]: expected 0.5, got 0.75")


def test_to_dict_is_json_safe_and_round_trips():
    actual, expected = _logits()
    actual[0, 0, 0] = np.nan
    for c in (
        compare_arrays("logits", actual, expected, FP32),  # inf min tolerances
        compare_arrays("logits", actual[:1], expected, FP32),  # NaN statistics (error)
        compare_arrays("x", np.array([1e-3]), np.array([0.0]), FP32),  # inf min rtol
    ):
        d = c.to_dict()
        text = json.dumps(d, allow_nan=False)  # no NaN/Infinity literals
        assert OutputComparison.from_dict(json.loads(text)).to_dict() == d
    d = compare_arrays("logits", actual, expected, FP32).to_dict()
    assert d["min_atol_to_pass"] == "inf" and d["worst_actual"] is None and d["worst_index"] == [0, 0, 0]
    ok = compare_arrays("logits", *_logits(), FP32)
    assert OutputComparison.from_dict(json.loads(json.dumps(ok.to_dict()))) == ok


# ---------------------------------------------------------------------------------------------- tokens


def test_tokens_match():
    t = compare_tokens("greedy tokens", np.array([5, 9, 281]), [5, 9, 281])
    assert t.passed and t.first_mismatch is None
    assert t.line() == "PASS | greedy tokens | 3 of 3 tokens match"


def test_tokens_first_mismatch():
    expected = list(range(100, 132))
    actual = expected[:12] + [314] + expected[13:]
    expected[12] = 281
    t = compare_tokens("greedy tokens", actual, expected)
    assert not t.passed and t.first_mismatch == 12
    assert t.line() == "FAIL | greedy tokens | first mismatch at step 12: expected 281, got 314"
    assert TokenComparison.from_dict(json.loads(json.dumps(t.to_dict()))) == t


def test_tokens_length_mismatch():
    t = compare_tokens("greedy tokens", [1, 2], [1, 2, 3])
    assert not t.passed and t.first_mismatch == 2
    assert t.line() == (
        "FAIL | greedy tokens | first mismatch at step 2: expected 3, got end of sequence (lengths: expected 3, got 2)"
    )


def test_tokens_must_be_one_dimensional_ints():
    with pytest.raises(ModelkilnError, match="1-D"):
        compare_tokens("greedy tokens", np.zeros((2, 3), dtype=np.int64), [1, 2, 3])
