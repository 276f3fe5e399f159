from robustlab.bench.evaluations import EVALUATIONS
from robustlab.testing import parametrize_checks


@parametrize_checks(EVALUATIONS)
def test_evaluation(spec, check):
    check(spec)
