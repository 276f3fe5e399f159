from robustlab.conformal import SCORES
from robustlab.testing import parametrize_checks


@parametrize_checks(SCORES)
def test_score(spec, check):
    check(spec)
