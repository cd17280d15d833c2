"""`assert_same(ours, theirs)`: pipeline outputs equal, field for field; scores within 1e-4."""

from __future__ import annotations

import numbers

import numpy as np

SCORE_ATOL = 1e-4


def assert_same(actual, expected, path: str = "result", atol: float = SCORE_ATOL) -> None:
    """Labels, words, spans, offsets, indices and token ids exactly; floats (scores, features) within `atol`.

    Containers must match in type family (dict / list) and length; a dict's keys must be the same set.
    """
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected a dict, got {type(actual).__name__}: {actual!r}"
        assert set(actual) == set(expected), f"{path}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            assert_same(actual[key], expected[key], f"{path}[{key!r}]", atol)
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)), f"{path}: expected a list, got {type(actual).__name__}: {actual!r}"
        assert len(actual) == len(expected), f"{path}: {len(actual)} items != {len(expected)}:\n{actual}\n{expected}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, f"{path}[{i}]", atol)
    elif isinstance(expected, (bool, str)) or expected is None:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"
    elif isinstance(expected, numbers.Integral) or (isinstance(expected, np.generic)
                                                    and np.issubdtype(type(expected), np.integer)):
        assert isinstance(actual, (numbers.Integral, np.integer)) and int(actual) == int(expected), \
            f"{path}: {actual!r} != {expected!r}"
    elif isinstance(expected, (numbers.Real, np.floating)):
        assert isinstance(actual, (numbers.Real, np.floating)), f"{path}: {actual!r} is not a number"
        assert abs(float(actual) - float(expected)) <= atol, f"{path}: {float(actual)!r} != {float(expected)!r}"
    elif hasattr(expected, "numpy") or isinstance(expected, np.ndarray):  # torch tensor / numpy array
        e = expected.numpy() if hasattr(expected, "numpy") else expected
        a = np.asarray(actual)
        assert a.shape == e.shape, f"{path}: shape {a.shape} != {e.shape}"
        np.testing.assert_allclose(a, e, atol=atol, rtol=0, err_msg=path)
    else:
        raise AssertionError(f"{path}: cannot compare {type(expected).__name__}")

