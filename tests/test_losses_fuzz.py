"""Seeded fuzz of the loss and noise entry points: malformed arguments raise a ValueError/TypeError subclass
with a message, never a raw exception, never a result (bounded to a few seconds)."""

from __future__ import annotations

import math
import random

import pytest
import torch

from robustlab import losses, noise

POOL = [float("nan"), float("inf"), -float("inf"), -1.0, 0.0, 0.5, 1.0, 2.0, 1e308, -1e308, "x", "", None, True,
        False, [1.0], (0.5,), {"a": 1}, object(), 3, -3, 10**30]


def _bad_logits(rng: random.Random):
    return rng.choice([
        torch.randn(6), torch.randn(6, 5, 2), torch.randint(0, 3, (6, 5)), torch.zeros(6, 5, dtype=torch.bool),
        [[0.0] * 5] * 6, None, "logits", torch.randn(5, 5),  # 5 rows for 6 targets
    ])


def _bad_target(rng: random.Random, k: int, *, length_matters: bool = True):
    return rng.choice([
        torch.full((6,), k), torch.full((6,), -1), torch.zeros(6), torch.zeros(6, dtype=torch.bool),
        torch.zeros(6, 1, dtype=torch.long), [0] * 6, None, torch.zeros(6, dtype=torch.complex64),
        *([torch.zeros(5, dtype=torch.long)] if length_matters else []),
    ])


def _expect_clear_error(fn, what):
    try:
        out = fn()
    except (ValueError, TypeError) as e:
        assert str(e).strip(), f"{what}: empty message"
        return
    except Exception as e:  # a raw exception
        raise AssertionError(f"{what}: raw {type(e).__name__}: {e}") from None
    raise AssertionError(f"{what}: returned a result {out!r} instead of an error")


@pytest.mark.parametrize("name", losses.available())
def test_fuzz_loss_arguments(name):
    rng = random.Random(f"fuzz-{name}")  # seeded per loss
    spec = losses.LOSSES.spec(name)
    cls = spec.factory
    cons = cls.parameter_constraints()
    base = dict(spec.example_kwargs)
    fn = cls.functional
    logits, target = torch.randn(6, 5), torch.randint(0, 5, (6,))
    idx = {"index": torch.arange(6)} if getattr(cls, "needs_index", False) else {}
    for trial in range(30):
        kind = trial % 3
        if kind == 0 and cons:  # one hyper-parameter gets a random value: valid -> a finite result, else an error
            pname = rng.choice(sorted(cons))
            value = rng.choice(POOL)
            kw = {**base, pname: value}
            if cons[pname].is_satisfied_by(value):
                continue
            _expect_clear_error(lambda kw=kw: cls(**kw), f"{name}({pname}={value!r})")
            if pname in fn.parameter_constraints:
                fkw = {k: v for k, v in kw.items() if k in fn.parameter_constraints}
                _expect_clear_error(lambda fkw=fkw: fn(logits, target, **fkw), f"functional {name}({pname}={value!r})")
        elif kind == 1:
            bad = _bad_logits(rng)
            loss = cls(**base)
            _expect_clear_error(lambda bad=bad, loss=loss: loss(bad, target, **idx), f"{name} logits={bad!r}")
        else:
            bad = _bad_target(rng, 5)
            loss = cls(**base)
            _expect_clear_error(lambda bad=bad, loss=loss: loss(logits, bad, **idx), f"{name} target={bad!r}")
        _expect_clear_error(lambda: cls(**base, reduction=rng.choice(POOL)), f"{name} reduction")


def test_fuzz_noise_inject():
    rng = random.Random("fuzz-noise")
    y = torch.randint(0, 5, (40,), generator=torch.Generator().manual_seed(0))
    for kind in noise.available():
        for _ in range(16):
            arg = rng.choice(["rate", "num_classes", "y"])
            kw = {"kind": kind, "rate": 0.2, "num_classes": 5}
            if kind == "transition":
                kw = {"kind": kind, "num_classes": 5, "transition": torch.eye(5).tolist()}
            if kind == "instance":
                kw["x"] = torch.randn(40, 3)
            target = y
            if arg == "y":
                target = _bad_target(rng, 5, length_matters=False)
            elif arg == "rate" and kind != "transition":
                kw["rate"] = rng.choice([float("nan"), float("inf"), -0.1, 1.0, 1.5, "x", None, True, [0.1]])
            else:
                kw["num_classes"] = rng.choice([0, 1, -3, 2.5, "5", None, True, float("nan"), 10**30])
                if kw["num_classes"] == 1 and kind == "uniform":
                    kw["num_classes"] = 0
            _expect_clear_error(lambda kw=kw, target=target: noise.inject(target, **kw), f"inject({kw}, y={target!r})")
    assert math.isfinite(noise.inject(y, kind="symmetric", rate=0.2, num_classes=5).realized_rate)
