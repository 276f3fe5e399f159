from robustlab.testing import parametrize_checks
from robustlab.training import OBJECTIVES


@parametrize_checks(OBJECTIVES)
def test_objective(spec, check):
    check(spec)
