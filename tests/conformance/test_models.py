from robustlab.models import MODELS
from robustlab.testing import parametrize_checks


@parametrize_checks(MODELS)
def test_models(spec, check):
    check(spec)
