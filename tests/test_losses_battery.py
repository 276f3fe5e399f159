"""The loss battery can fail: broken losses (each with one defect) are caught by the matching check."""

import pytest
import torch

from robustlab._registry import Spec
from robustlab._validation import check_in_range
from robustlab.losses import Loss
from robustlab.losses import functional as LF
from robustlab.testing import _losses as B


def naive_ce(logits, target, *, scale=1.0, reduction="mean"):
    p = torch.softmax(logits, 1)  # log of softmax underflows at +-1e4
    v = -scale * torch.log(p.gather(1, target[:, None]).squeeze(1))
    return {"none": v, "mean": v.mean(), "sum": v.sum()}[reduction]


class NaiveCE(Loss):
    functional = staticmethod(naive_ce)

    def __init__(self, scale=1.0, *, reduction="mean"):
        super().__init__(reduction)
        self.scale = scale  # not validated

    def hparams(self):
        return {"scale": self.scale}


class TemperedCE(Loss):
    """Validates its temperature against NaN and <= 0 but lets +inf through (NaN losses)."""

    functional = staticmethod(lambda logits, target, *, temp=1.0, reduction="mean": LF.ce(
        logits / check_in_range(temp, "temp", 0.0, None, closed="neither"), target, reduction=reduction))

    def __init__(self, temp=1.0, *, reduction="mean"):
        super().__init__(reduction)
        self.temp = check_in_range(temp, "temp", 0.0, None, closed="neither")

    def hparams(self):
        return {"temp": self.temp}


class TwiceCE(Loss):
    functional = staticmethod(LF.ce)

    def per_sample(self, logits, target, index=None):
        return 2 * LF.ce(logits, target, reduction="none")


class CenteredCE(Loss):
    """Couples the rows of a batch (centres logits over the batch)."""

    def per_sample(self, logits, target, index=None):
        return LF.ce(logits - logits.mean(0, keepdim=True), target, reduction="none")


class HalfMAE(Loss):
    """MAE computed in the logits' own precision: the gradient rounds away in bf16/fp16."""

    functional = staticmethod(LF.mae.__wrapped__)


class UndeclaredScale(Loss):
    """A declared functional whose module takes a hyper-parameter nobody declared."""

    functional = staticmethod(LF.ce)

    def __init__(self, scale=1.0, *, reduction="mean"):
        super().__init__(reduction)
        self.scale = scale


class OpenCE(Loss):
    """Takes **kwargs: signature-reading tools (CLI, specs) cannot tell its hyper-parameters."""

    functional = staticmethod(LF.ce)

    def __init__(self, reduction="mean", **kwargs):
        super().__init__(reduction)
        self._init_hparams(**kwargs)


def _spec(factory, tags=(), **kw):
    return Spec(name=factory.__name__.lower(), factory=factory, tags=frozenset(tags), example_kwargs=kw)


@pytest.mark.parametrize("spec, check", [
    (_spec(NaiveCE), B.check_finite_extreme_logits),
    (_spec(NaiveCE), B.check_bad_hyperparameters),
    (_spec(TemperedCE), B.check_bad_hyperparameters),
    (_spec(TwiceCE), B.check_module_equals_functional),
    (_spec(CenteredCE), B.check_per_sample_independence),
    (_spec(NaiveCE, tags={"bounded"}), B.check_bounded),
    (_spec(TwiceCE, tags={"symmetric"}), B.check_symmetric),
    (_spec(TwiceCE, tags={"stateful"}), B.check_stateful_needs_index),
    (_spec(HalfMAE), B.check_low_precision_gradient),
    (_spec(NaiveCE), B.check_declared_constraints),
    (_spec(UndeclaredScale), B.check_declared_constraints),
    (_spec(OpenCE), B.check_declared_constraints),
    (_spec(HalfMAE), B.check_integer_target_dtypes),
], ids=["finite", "hparams", "hparams-inf", "module-functional", "independence", "bounded", "symmetric", "stateful",
        "low-precision", "undeclared-functional", "undeclared-hparam", "var-keyword",
        "int32-target"])
def test_check_catches_the_defect(spec, check):
    with pytest.raises((AssertionError, RuntimeError)):
        check(spec)


def test_checks_pass_on_a_correct_loss():
    spec = Spec(name="ce", factory=lambda **kw: __import__("robustlab").losses.get("ce", **kw), example_kwargs={})
    for check in (B.check_finite_extreme_logits, B.check_module_equals_functional, B.check_per_sample_independence,
                  B.check_gradcheck, B.check_reductions_agree, B.check_bad_target, B.check_low_precision_gradient,
                  B.check_declared_constraints, B.check_integer_target_dtypes):
        check(spec)
