from robustlab.attacks import ATTACKS
from robustlab.testing import parametrize_checks


@parametrize_checks(ATTACKS)
def test_attack(spec, check):
    check(spec)
