from robustlab.losses import LOSSES
from robustlab.testing import parametrize_checks


@parametrize_checks(LOSSES)
def test_loss(spec, check):
    check(spec)
