"""Every registered classifier head passes the heads battery (robustlab.testing._heads)."""

from robustlab.testing import parametrize_checks
from robustlab.training import HEADS


@parametrize_checks(HEADS)
def test_head(spec, check):
    check(spec)
