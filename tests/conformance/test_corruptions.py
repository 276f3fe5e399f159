from robustlab.shift import CORRUPTIONS
from robustlab.testing import parametrize_checks


@parametrize_checks(CORRUPTIONS)
def test_corruption(spec, check):
    check(spec)
