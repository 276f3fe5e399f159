"""Every registered contrastive loss passes the contrastive battery (robustlab.testing._contrastive)."""

from robustlab.losses import CONTRASTIVE_LOSSES
from robustlab.testing import parametrize_checks


@parametrize_checks(CONTRASTIVE_LOSSES)
def test_contrastive_loss(spec, check):
    check(spec)
