"""Conformance checks run on every registered classifier head (``robustlab.training.HEADS``).

Each check fits the head built from ``spec.example_kwargs`` on small seeded Gaussian blobs
(3 classes, 4 features, 20 per class).
"""

from __future__ import annotations

from typing import Any

import torch

from .._registry import Spec
from .._validation import InvalidParameterError, NotCalibratedError
from . import check

__all__ = ["check_bad_inputs_named", "check_deterministic_and_order_free", "check_fits_separable_blobs",
           "check_unfitted_refused"]

C, F, PER = 3, 4, 20


def _blobs(seed: int = 0, sep: float = 4.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = sep * torch.randn(C, F, generator=g)
    y = torch.arange(C).repeat_interleave(PER)
    return centres[y] + torch.randn(C * PER, F, generator=g), y


def _make(spec: Spec[Any]) -> Any:
    return spec.create(**spec.example_kwargs)


@check()
def check_fits_separable_blobs(spec: Spec[Any]) -> None:
    """Scores are (N, C) float64, predictions are classes, accuracy >= 0.9 on separable blobs."""
    x, y = _blobs()
    head = _make(spec).fit(x, y, C)
    xt, yt = _blobs(seed=0)
    s = head.predict_logits(xt)
    assert s.shape == (C * PER, C) and s.dtype == torch.float64, f"scores {tuple(s.shape)} {s.dtype}"
    assert torch.isfinite(s).all()
    assert torch.equal(head.predict(xt), s.argmax(1))
    assert head.score(xt, yt) >= 0.9, f"{spec.name}: accuracy {head.score(xt, yt)} on separable blobs"


@check()
def check_deterministic_and_order_free(spec: Spec[Any]) -> None:
    """Refitting gives the same scores; shuffling the training rows gives the same predictions."""
    x, y = _blobs(seed=1, sep=2.0)
    a = _make(spec).fit(x, y, C).predict_logits(x)
    b = _make(spec).fit(x, y, C).predict_logits(x)
    assert torch.equal(a, b), "refitting changed the scores"
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    c = _make(spec).fit(x[perm], y[perm], C).predict_logits(x)
    assert torch.allclose(a, c, rtol=1e-5, atol=1e-5), "the row order of the training set changed the scores"


@check()
def check_unfitted_refused(spec: Spec[Any]) -> None:
    """Predicting before fit raises NotCalibratedError naming fit."""
    try:
        _make(spec).predict(torch.zeros(2, F))
    except NotCalibratedError as e:
        assert "fit" in str(e)
    else:
        raise AssertionError("an unfitted head predicted")


@check()
def check_bad_inputs_named(spec: Spec[Any]) -> None:
    """NaN features, row/label mismatch, out-of-range labels and a wrong width are refused by name."""
    x, y = _blobs()
    nan = x.clone()
    nan[0, 0] = float("nan")
    cases = [((nan, y, C), "NaN"), ((x, y[:-1], C), "labels"), ((x, y + 5, C), "labels"),
             ((x[:, 0], y, C), "features")]
    for args, msg in cases:
        try:
            _make(spec).fit(*args)
        except InvalidParameterError as e:
            assert msg in str(e), f"{e} does not say {msg!r}"
        else:
            raise AssertionError(f"fit accepted bad input ({msg})")
    head = _make(spec).fit(x, y, C)
    try:
        head.predict(x[:, :2])
    except InvalidParameterError as e:
        assert "features" in str(e)
    else:
        raise AssertionError("predict accepted features of the wrong width")
