"""Collaborative training with f Byzantine workers: one process (simulation) or one rank per worker.

Both modes run the same round (:func:`_local_step`, :func:`_byzantine_vectors`, :func:`_mix`); the
simulation computes every worker's gradient in one batched call (``torch.func.vmap``), the distributed mode
computes its own and exchanges vectors with ``all_gather``. Workers ``0 .. n-f-1`` are honest, the last f
Byzantine.

One round (MoNNA, Farhadkhani et al., ICML 2023, Algorithm 1; robust D-SGD with worker momentum otherwise):

    g_i = ∇ℓ(θ_i; batch_i) + λ θ_i,      m_i ← β m_i + (1 − β) g_i          (Polyak momentum at the workers)
    exchange="params":   θ_i^½ = θ_i − γ m_i sent;   θ_i ← F(θ_1^½ .. θ_n^½; pivot i)   (peer-to-peer mixing)
    exchange="momentum": m_i sent;                   θ ← θ − γ F(m_1 .. m_n)               (server aggregation)

Byzantine workers send ``behaviour(honest vectors of the round, f, generator)``; ``label_flip`` workers instead
run the honest algorithm on flipped labels.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._validation import InvalidParameterError, check_in_range, check_int, check_option
from . import aggregators as _agg
from . import byzantine as _byz
from ._resume import Resumable, check_options
from ._split import heterogeneity_label, parse_heterogeneity, split

__all__ = ["EXCHANGES", "CollabSetup", "fit"]

EXCHANGES = ("params", "momentum")


@dataclass(frozen=True)
class CollabSetup:
    """The collaborative part of a run, validated: who aggregates how, who attacks how, how data is split."""

    workers: int = 10
    f: int = 0
    aggregator: str = "monna"
    aggregator_kw: dict[str, Any] = field(default_factory=dict)
    byzantine: str = "sign_flip"
    byzantine_kw: dict[str, Any] = field(default_factory=dict)
    heterogeneity: str = "iid"
    exchange: str | None = None

    def __post_init__(self) -> None:
        n = check_int(self.workers, "workers", 1, None, owner="collab")
        f = check_int(self.f, "f", 0, None, owner="collab")
        if f >= n:
            raise InvalidParameterError(f"The 'f' parameter of collab must be < workers = {n} (at least one honest "
                                        f"worker). Got {f} instead.")
        _agg.get(self.aggregator, **self.aggregator_kw)
        if self.aggregator != "mean" and 2 * f >= n:
            raise InvalidParameterError(f"The 'f' parameter of collab must be < workers / 2 = {n / 2:g} for aggregator "
                                        f"'{self.aggregator}' (an honest majority). Got {f} instead.")
        if "needs_2f+3" in _agg.AGGREGATORS.spec(self.aggregator).tags and n < 2 * f + 3:
            raise InvalidParameterError(f"Aggregator '{self.aggregator}' needs workers >= 2f + 3 = {2 * f + 3}. "
                                        f"Got workers = {n}.")
        if self.byzantine == "none":  # no attacker: only with f = 0
            if f > 0:
                raise InvalidParameterError(f"The 'byzantine' parameter of collab is 'none' but f = {f}; name a "
                                            f"behaviour among {', '.join(_byz.available())}.")
        else:
            _byz.get(self.byzantine, **self.byzantine_kw)
        object.__setattr__(self, "heterogeneity", heterogeneity_label(parse_heterogeneity(self.heterogeneity)))
        if self.exchange is not None:
            check_option(self.exchange, "exchange", EXCHANGES, owner="collab")

    @property
    def mode(self) -> str:
        """The exchange used: ``params`` for pivoted rules (MoNNA), ``momentum`` otherwise, unless set."""
        if self.exchange is not None:
            return self.exchange
        return "params" if _agg.AGGREGATORS.spec(self.aggregator).tags & {"pivoted"} else "momentum"

    @property
    def honest(self) -> int:
        return self.workers - self.f

    def to_dict(self) -> dict[str, Any]:
        return {"workers": self.workers, "f": self.f, "aggregator": self.aggregator,
                "aggregator_kw": dict(self.aggregator_kw), "byzantine": self.byzantine,
                "byzantine_kw": dict(self.byzantine_kw), "heterogeneity": self.heterogeneity, "exchange": self.mode}


# -- parameters as flat vectors -------------------------------------------------------------------
class _Flat:
    """Maps a model's parameters to one flat vector and back (buffers are not supported)."""

    def __init__(self, model: nn.Module) -> None:
        if any(True for _ in model.buffers()):
            raise InvalidParameterError("collab.fit needs a model without buffers (no batch norm): every worker's "
                                        "state must be its parameters. Use e.g. 'mlp' or 'lenet'.")
        self.names = [n for n, _ in model.named_parameters()]
        self.shapes = [p.shape for _, p in model.named_parameters()]
        self.sizes = [p.numel() for _, p in model.named_parameters()]

    def flat(self, model: nn.Module) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def unflat(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        """``v`` of shape (..., P) -> {name: (..., *shape)}."""
        lead = v.shape[:-1]
        return {n: t.reshape(*lead, *s) for n, s, t in zip(self.names, self.shapes, v.split(self.sizes, -1))}


def _grad_fn(model: nn.Module, flat: _Flat, loss_fn: Callable[..., torch.Tensor]) -> Callable[..., Any]:
    """``(θ (P,), x, y) -> (gradient (P,), loss)`` for one worker (what a distributed rank computes)."""
    from torch.func import functional_call

    def one(v: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = v.detach().requires_grad_(True)
        with torch.enable_grad():
            lv = loss_fn(functional_call(model, flat.unflat(v), (x,)), y)
            (g,) = torch.autograd.grad(lv, v)
        return g, lv.detach()

    return one


def _batched_grad_fn(model: nn.Module, flat: _Flat, loss_fn: Callable[..., torch.Tensor]) -> Callable[..., Any]:
    """All workers at once: one vmapped forward of the ``(a, P)`` parameter stack on ``(a, b, ...)`` batches, then
    one backward of Σ_w loss_w (worker w's loss depends on θ_w only, so row w of the gradient is ∇loss_w).
    The loss must be a per-sample mean (every registry loss with its default reduction)."""
    from torch.func import functional_call, vmap

    fwd = vmap(lambda v, x: functional_call(model, flat.unflat(v), (x,)))

    def many(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        theta = theta.detach().requires_grad_(True)
        a, b = y.shape
        with torch.enable_grad():
            logits = fwd(theta, x)
            per = torch.stack([loss_fn(logits[w], y[w]) for w in range(a)])
            (g,) = torch.autograd.grad(per.sum(), theta)
        return g, per.detach()

    return many


# -- one round, shared by both modes ----------------------------------------------------------------
def _local_step(g: torch.Tensor, theta: torch.Tensor, m: torch.Tensor, beta: float, wd: float) -> torch.Tensor:
    """New momentum: m ← β m + (1 − β)(g + λ θ)."""
    return beta * m + (1 - beta) * (g + wd * theta)


def _byzantine_vectors(behaviour: _byz.Behaviour | None, honest: torch.Tensor, f: int, gen: torch.Generator) -> torch.Tensor:
    assert behaviour is not None  # f > 0 has a behaviour
    return behaviour(honest, f, gen)


def _mix(setup: CollabSetup, agg: _agg.Aggregator, sent: torch.Tensor, theta: torch.Tensor, lr: float) -> torch.Tensor:
    """The workers' new parameters ``(a, P)`` from the ``(n, P)`` stack of sent vectors (worker i is row i)."""
    a = theta.shape[0]
    if setup.mode == "params":
        return agg.for_workers(sent, setup.f, a).clone()
    return theta - lr * agg(sent, setup.f)


SCHEDULES = ("constant", "cosine", "step")


def _lr_at(t: int, total: int, lr: float, schedule: str) -> float:
    """Learning rate of round ``t`` of ``total``: constant, cosine to 0, or /10 at 50% and 75% (``fit``'s rules)."""
    if schedule == "cosine":
        return lr * 0.5 * (1 + math.cos(math.pi * t / total))
    if schedule == "step":
        return lr * (0.1 if t >= 0.5 * total else 1.0) * (0.1 if t >= 0.75 * total else 1.0)
    return lr


def _batch_generators(seed: int, n: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed * 1_000_003 + 7919 * (w + 1)) for w in range(n)]


def _draw(idx: torch.Tensor, b: int, gen: torch.Generator) -> torch.Tensor:
    return idx[torch.randint(int(idx.shape[0]), (b,), generator=gen)]


@dataclass
class _Plan:
    setup: CollabSetup
    agg: _agg.Aggregator
    behaviour: _byz.Behaviour | None
    parts: list[torch.Tensor]
    steps_per_epoch: int
    active: int  # workers that compute gradients: the honest ones, plus label_flip Byzantine ones


def _plan(setup: CollabSetup, data: Any, batch_size: int, seed: int) -> _Plan:
    parts = split(data.y_train, setup.workers, alpha=parse_heterogeneity(setup.heterogeneity), seed=seed)
    behaviour = _byz.get(setup.byzantine, **setup.byzantine_kw) if setup.byzantine != "none" else None
    active = setup.workers if (behaviour is not None and behaviour.kind == "data" and setup.f > 0) else setup.honest
    mean_size = sum(int(p.shape[0]) for p in parts) / setup.workers
    return _Plan(setup, _agg.get(setup.aggregator, **setup.aggregator_kw), behaviour, parts,
                 max(1, math.ceil(mean_size / batch_size)), active)


def _labels(plan: _Plan, data: Any, w: int, idx: torch.Tensor) -> torch.Tensor:
    y = data.y_train[idx]
    if w < plan.setup.honest or plan.behaviour is None:
        return y
    return plan.behaviour.transform_labels(y, data.num_classes)


def _check_common(model: Any, data: Any, epochs: Any, batch_size: Any, lr: Any, momentum: Any, weight_decay: Any,
                  seed: Any, schedule: Any = "constant", eval_every: Any = 1) -> None:
    if not isinstance(model, nn.Module):
        raise InvalidParameterError(f"The 'model' parameter of collab.fit must be a torch.nn.Module. Got {type(model).__name__}.")
    for attr in ("x_train", "y_train", "x_test", "y_test", "num_classes"):
        if not hasattr(data, attr):
            raise InvalidParameterError(f"The 'data' parameter of collab.fit must be a ClassificationData (no '{attr}').")
    check_int(epochs, "epochs", 1, None, owner="collab.fit")
    check_int(batch_size, "batch_size", 1, None, owner="collab.fit")
    check_in_range(lr, "lr", 0.0, None, closed="neither", owner="collab.fit")
    check_in_range(momentum, "momentum", 0.0, 1.0, closed="left", owner="collab.fit")
    check_in_range(weight_decay, "weight_decay", 0.0, None, closed="left", owner="collab.fit")
    check_int(seed, "seed", 0, None, owner="collab.fit")
    check_option(schedule, "schedule", SCHEDULES, owner="collab.fit")
    check_int(eval_every, "eval_every", 0, None, owner="collab.fit")


def _evaluate_now(ep: int, epochs: int, eval_every: int) -> bool:
    """Evaluate after epoch ``ep`` (0-based) every ``eval_every`` epochs and after the last (0: only the last)."""
    return ep + 1 == epochs or (eval_every > 0 and (ep + 1) % eval_every == 0)


@torch.no_grad()
def _accuracy(model: nn.Module, flat: _Flat, theta: torch.Tensor, data: Any) -> float:
    from torch.func import functional_call

    pred = torch.cat([functional_call(model, flat.unflat(theta), (xb,)).argmax(1) for xb in data.x_test.split(1024)])
    return float((pred == data.y_test).float().mean())


def _setup(setup: CollabSetup | None, kw: dict[str, Any]) -> CollabSetup:
    if setup is not None and kw:
        raise InvalidParameterError("Give either 'setup' or the collaborative keywords, not both.")
    return setup if setup is not None else CollabSetup(**kw)


def fit(model: nn.Module, data: Any, *, setup: CollabSetup | None = None, epochs: int = 10, batch_size: int = 32,
        lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 0.0, schedule: str = "constant",
        eval_every: int = 1, loss: Any = "ce", loss_kw: dict[str, Any] | None = None, seed: int = 0,
        batched: bool = True, progress: bool | None = False, checkpoint_dir: str | os.PathLike[str] | None = None,
        checkpoint_every: int = 1, resume: bool = False, **collab: Any) -> Any:
    """Train ``model`` collaboratively in one process; returns ``FitResult(model, history)``.

    ``collab`` keywords (or ``setup=CollabSetup(...)``): ``workers``, ``f``, ``aggregator`` (+ ``aggregator_kw``),
    ``byzantine`` (+ ``byzantine_kw``), ``heterogeneity`` (``"iid"``/``"dirichlet:α"``), ``exchange``.
    ``schedule`` (``constant``, ``cosine``, ``step``) sets each round's learning rate as ``fit`` does; the test
    accuracy is measured every ``eval_every`` epochs and after the last. ``batched``: all workers' gradients in one ``vmap`` call (else a loop, the computation each distributed rank
    does). The returned model holds honest worker 0's parameters; ``history`` has per-epoch ``train_loss``
    (honest mean), ``test_acc`` (worker 0), ``honest_acc_min`` and ``honest_spread`` (max ‖θ_i − θ_0‖).
    When the honest vectors stop being finite (a non-robust rule under attack), training stops there and
    ``history["diverged_step"]`` holds the round; the accuracies are those of the diverged parameters.
    ``checkpoint_dir``: every ``checkpoint_every`` epochs (and after the last) the run's state (workers'
    parameters and momenta, generators, history) is written atomically to ``<dir>/last.pt``; ``resume=True``
    continues from it (none there: from the start), bit-identical to an uninterrupted run on the CPU.

    Example::

        res = collab.fit(models.create("mlp", input_shape=(1, 8, 8), num_classes=10), data.load("digits"),
                         workers=10, f=2, aggregator="monna", byzantine="alie", epochs=5)
    """
    from ..training import FitResult, resolve_loss

    s = _setup(setup, collab)
    _check_common(model, data, epochs, batch_size, lr, momentum, weight_decay, seed, schedule, eval_every)
    check_options(checkpoint_dir, checkpoint_every, resume)
    plan = _plan(s, data, batch_size, seed)
    flat = _Flat(model)
    loss_fn = resolve_loss(loss, loss_kw)
    gfn = _grad_fn(model, flat, loss_fn)
    vgfn = _batched_grad_fn(model, flat, loss_fn)
    theta0 = flat.flat(model).float()
    a, h = plan.active, s.honest
    theta = theta0.expand(a, -1).clone()
    mom = torch.zeros_like(theta)
    gens = _batch_generators(seed, s.workers)
    byz_gen = torch.Generator().manual_seed(seed * 7_368_787 + 17)
    history: dict[str, list[float]] = {k: [] for k in ("epoch", "train_loss", "test_acc", "honest_acc_min",
                                                       "honest_spread")}
    model.eval()  # dropout off: every worker's step is a deterministic function of its batch
    from .._progress import progress_bar

    state = Resumable(checkpoint_dir, checkpoint_every, setup=s.to_dict(), epochs=epochs, batch_size=batch_size,
                      lr=lr, momentum=momentum, weight_decay=weight_decay, schedule=schedule, eval_every=eval_every,
                      loss=loss, loss_kw=loss_kw, seed=seed, batched=batched, n_train=int(data.y_train.shape[0]),
                      params=[[n, k] for n, k in zip(flat.names, flat.sizes)])
    diverged, ep_loss, start = False, list[float](), 0
    saved = state.load() if resume else None
    if saved is not None:
        start, diverged = Resumable.restore(saved, theta=theta, mom=mom, gens=gens, byz_gen=byz_gen, history=history)
    with progress_bar(total=epochs, desc="collab", enabled=progress, initial=start) as bar:
        for ep in range(start, epochs):
            if not diverged:
                lrs = [_lr_at(ep * plan.steps_per_epoch + k, epochs * plan.steps_per_epoch, lr, schedule)
                       for k in range(plan.steps_per_epoch)]
                theta, mom, ep_loss, diverged = _epoch(plan, data, gfn, vgfn if batched else None, theta, mom, gens,
                                                      byz_gen, batch_size, lrs, momentum, weight_decay)
                if diverged:
                    history["diverged_step"] = [ep * plan.steps_per_epoch + len(ep_loss)]
            bar.update(1)
            if _evaluate_now(ep, epochs, eval_every):
                accs = [_accuracy(model, flat, theta[i], data) for i in range(h)]
                history["epoch"].append(ep + 1)
                history["train_loss"].append(sum(ep_loss) / max(len(ep_loss), 1) if not diverged else float("nan"))
                history["test_acc"].append(accs[0])
                history["honest_acc_min"].append(min(accs))
                history["honest_spread"].append(float((theta[:h] - theta[0]).norm(dim=1).max()))
            if state.due(ep + 1, epochs):
                state.save(epoch=ep + 1, theta=theta, mom=mom, gens=gens, byz_gen=byz_gen, history=history,
                           diverged=diverged)
    with torch.no_grad():
        for p, v in zip(model.parameters(), flat.unflat(theta[0]).values()):
            p.copy_(v)
    return FitResult(model, history)


def _epoch(plan: _Plan, data: Any, gfn: Any, vgfn: Any, theta: torch.Tensor, mom: torch.Tensor,
           gens: list[torch.Generator], byz_gen: torch.Generator, batch_size: int, lrs: list[float], momentum: float,
           weight_decay: float) -> tuple[torch.Tensor, torch.Tensor, list[float], bool]:
    """One epoch of rounds of the simulation; stops early (``diverged``) when honest vectors are not finite."""
    s, a, h, f = plan.setup, plan.active, plan.setup.honest, plan.setup.f
    losses: list[float] = []
    for lr in lrs:
        idx = [_draw(plan.parts[w], batch_size, gens[w]) for w in range(a)]
        xb = torch.stack([data.x_train[i] for i in idx])
        yb = torch.stack([_labels(plan, data, w, i) for w, i in enumerate(idx)])
        if vgfn is not None:
            g, lv = vgfn(theta, xb, yb)
        else:
            out = [gfn(theta[w], xb[w], yb[w]) for w in range(a)]
            g, lv = torch.stack([o[0] for o in out]), torch.stack([o[1] for o in out])
        losses.append(float(lv[:h].mean()))
        mom = _local_step(g.detach(), theta, mom, momentum, weight_decay)
        vec = theta - lr * mom if s.mode == "params" else mom
        if not bool(torch.isfinite(vec).all()):
            return theta, mom, losses, True
        sent = vec if a == s.workers else torch.cat([vec, _byzantine_vectors(plan.behaviour, vec[:h], f, byz_gen)])
        theta = _mix(s, plan.agg, sent, theta, lr)
    return theta, mom, losses, False
