from robustlab.data import DATASETS
from robustlab.testing import parametrize_checks


@parametrize_checks(DATASETS)
def test_data(spec, check):
    check(spec)
