import pytest

from robustlab._registry import Registry, UnknownNameError
from robustlab._validation import InvalidParameterError, check_in_range, check_option


def test_registry_register_get_and_errors():
    r: Registry[int] = Registry("widget")

    @r.register("alpha", tags={"x"}, reference="ref")
    def make(v: int = 1) -> int:
        """Make one."""
        return v

    assert r.get("alpha", v=3) == 3
    assert r.available() == ["alpha"]
    assert r.available(tags=("x",)) == ["alpha"]
    assert r.available(tags=("y",)) == []
    assert r.spec("alpha").doc == "Make one."
    with pytest.raises(UnknownNameError, match="Did you mean 'alpha'\\? Available: alpha"):
        r.get("alpah")
    with pytest.raises(ValueError, match="already registered"):
        r.register("alpha")(make)


def test_validation_message_style():
    with pytest.raises(InvalidParameterError) as e:
        check_in_range(1.5, "rate", 0, 1, closed="left", owner="inject")
    assert str(e.value) == "The 'rate' parameter of inject must be a float in [0, 1). Got 1.5 instead."
    with pytest.raises(InvalidParameterError, match="must be a str among"):
        check_option("meen", "reduction", ("none", "mean", "sum"))
    assert check_in_range(0, "rate", 0, 1, closed="left") == 0
