from robustlab.noise import NOISES
from robustlab.testing import parametrize_checks


@parametrize_checks(NOISES)
def test_noise(spec, check):
    check(spec)
