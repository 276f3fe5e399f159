"""Seeded fuzz of the attack and evaluation entry points: malformed arguments give a ValueError/TypeError whose
message names the argument, never a raw exception and never a result. Bounded to a few seconds."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from robustlab import attacks, evaluate

_D = 12


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(_D, 4)).eval()


def _good(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, _D, generator=g), torch.arange(n) % 4


def _bad_x(rng: random.Random) -> tuple[object, str]:
    x, _ = _good()
    choices = [
        (x.clone().index_fill_(1, torch.tensor([rng.randrange(_D)]), float("nan")), "'x'"),
        (x.clone().index_fill_(1, torch.tensor([rng.randrange(_D)]), float("inf")), "'x'"),
        (x * 255, "'x'"),
        (x - 1, "'x'"),
        ((x * 255).to(torch.uint8), "'x'"),
        (x[0], "'x'"),
        (x.tolist(), "x"),
        (x.double()[:, :5], "model"),  # wrong feature count for the model
    ]
    return rng.choice(choices)


def _bad_y(rng: random.Random) -> tuple[object, str]:
    _, y = _good()
    choices = [
        (torch.full_like(y, 4 + rng.randrange(5)), "'y'"),
        (y - 1 - rng.randrange(3), "'y'"),
        (y.float() + 0.5, "'y'"),
        (y.bool(), "'y'"),
        (y[:, None], "'y'"),
        (y[:-1], "'y'"),
        (y.tolist(), "y"),
    ]
    return rng.choice(choices)


def _bad_eps(rng: random.Random) -> tuple[object, str]:
    return rng.choice([(float("nan"), "eps"), (-0.1, "eps"), ("0.1", "eps"), (float("inf"), "eps"),
                       (None, "eps"), (2.0, "eps")])


class _Tuple(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


def _bad_model(rng: random.Random) -> tuple[object, str]:
    return rng.choice([(3, "model"), (_Tuple(), "model"), (nn.Sequential(nn.Flatten(), nn.Linear(_D + 1, 4)), "model")])


def _call_attack(name: str, model, x, y, eps) -> None:
    attacks.get(name, **{"eps": eps, **_small(name)})(model, x, y)


def _small(name: str) -> dict:
    b = attacks.budget_params()[name]
    return {} if b is None else {b: 3 if b == "steps" else 30}


def _entries(model, x, y, eps):
    out = {f"attack:{n}": (lambda n=n: _call_attack(n, model, x, y, eps)) for n in attacks.available()
           if n != "cw_l2"}
    out["robust_accuracy"] = lambda: evaluate.robust_accuracy(model, (x, y), "fgsm", eps=eps)
    out["robustness_curve"] = lambda: evaluate.robustness_curve(model, (x, y), eps_grid=[eps], attack="fgsm",
                                                                bootstrap=0)
    out["sanity_checks"] = lambda: evaluate.sanity_checks(model, (x, y), eps=eps, steps=(1, 2), n_queries=2)
    out["minimal_epsilon"] = lambda: evaluate.minimal_epsilon(model, x, y, eps_hi=eps, bisection_steps=1, steps=1)
    return out


def _all_bad(rng: random.Random) -> list[tuple[str, dict, str]]:
    """Every malformation (random ones drawn from ``rng``) as ``(what, args, word the message must hold)``."""
    model = _model()
    x, y = _good()
    out = []
    for _ in range(8):
        for what, draw in (("x", _bad_x), ("y", _bad_y), ("model", _bad_model)):
            bad, word = draw(rng)
            out.append((what, {"model": model, "x": x, "y": y, "eps": 0.1, what: bad}, word))
        bad, word = _bad_eps(rng)
        out.append(("eps", {"model": model, "x": x, "y": y, "eps": bad}, word))
    return out


_NAMES = sorted(_entries(None, None, None, None))


@pytest.mark.parametrize("entry", _NAMES)
def test_malformed_arguments_give_clear_errors(entry):
    rng = random.Random(_NAMES.index(entry))
    for what, args, word in _all_bad(rng):
        call = _entries(args["model"], args["x"], args["y"], args["eps"])[entry]
        with pytest.raises((ValueError, TypeError)) as info:
            call()
        msg = str(info.value)
        assert word in msg, f"{entry} with a bad {what}: {type(info.value).__name__}: {msg}"
