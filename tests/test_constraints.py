"""The declarative constraint system (robustlab._constraints)."""

from __future__ import annotations

import math
from numbers import Integral, Real

import pytest

from robustlab._constraints import AnyOf, Boolean, Interval, Options, validate_param, validate_params
from robustlab._validation import InvalidParameterError


def test_interval_message_matches_validation_style():
    with pytest.raises(InvalidParameterError, match=r"^The 'q' parameter of gce must be a float in \(0, 1\]. Got 0 instead.$"):
        validate_params({"q": Interval(Real, 0, 1, closed="right")}, {"q": 0}, owner="gce")


@pytest.mark.parametrize("c, good, bad", [
    (Interval(Real, 0, None, closed="left"), [0, 0.0, 1e300], [-1e-9, math.inf, math.nan, True, "1", None]),
    (Interval(Real, None, 0, closed="neither"), [-9.21, -1e-300], [0, 0.0, -math.inf, 1]),
    (Interval(Real, 0, math.inf, closed="both"), [0, math.inf], [-1, math.nan]),
    (Interval(Integral, 1, None), [1, 10**9], [0, 1.0, 2.5, True]),
    (Options((None, "softplus")), [None, "softplus"], ["SOFTPLUS", 0, False]),
    (Options((1, 2)), [1, 2], [1.0, True, "1"]),
    (Boolean(), [True, False], [0, 1, "true", None]),
    (AnyOf(Options((None,)), Interval(Integral, 0, None)), [None, 0, 5], [-1, 1.5, "x"]),
])
def test_constraints_accept_and_reject(c, good, bad):
    for v in good:
        assert c.is_satisfied_by(v), (c, v)
        validate_param(c, v, "p")
    for v in bad:
        assert not c.is_satisfied_by(v), (c, v)
        with pytest.raises(InvalidParameterError, match="'p' parameter"):
            validate_param(c, v, "p")
    for v in c.invalid_examples():
        assert not c.is_satisfied_by(v), (c, v)


def test_conversion_and_order():
    out = validate_params({"a": Interval(Real, 0, 1), "n": Interval(Integral, 0, None)}, {"n": 3, "a": 1})
    assert out == {"n": 3, "a": 1.0} and type(out["a"]) is float and list(out) == ["n", "a"]


def test_unknown_name_is_an_error():
    with pytest.raises(InvalidParameterError, match=r"Unknown parameter\(s\) 'qq' of gce; accepted: q"):
        validate_params({"q": Interval(Real, 0, 1)}, {"qq": 0.5}, owner="gce")


def test_descriptions():
    assert Interval(Real, None, None).describe() == "a float in (-inf, inf)"
    assert Interval(Integral, 1, None).describe() == "an int in [1, inf)"
    assert Options((None, "a")).describe() == "a str among {None, 'a'}"
    assert AnyOf(Options((None,)), Boolean()).describe() == "a value among {None} or a bool"
    with pytest.raises(ValueError):
        Interval(Real, 1, 0)
    with pytest.raises(ValueError):
        Interval(Real, 0, 1, closed="open")
