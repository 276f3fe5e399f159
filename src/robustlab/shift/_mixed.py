"""Mixed-precision search: per-layer weight bit-widths of an elastic-quantization supernet under a bit budget.

After EQ-Net (Xu et al., ICCV 2023): a genetic algorithm over per-layer bit-widths, as in the authors'
``search/search_algorithm/evolution.py`` (population, the best ``parent_ratio`` kept as parents, children by
per-layer mutation and by uniform crossover, only assignments within the budget), with the budget the average
weight bit-width weighted by each layer's number of weights (their ``BW_Estimator``). EQ-Net scores candidates
with a trained accuracy predictor (CQAP) because an ImageNet evaluation is expensive; here each candidate is scored
directly by its accuracy on a held-out split (one quantized forward pass, weights rounded once per layer and
width), which is exact and cheap at this scale. The search is seeded and its initial population contains the best
uniform assignment within the budget, so the result is never below it (selection is elitist).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn
from torch.func import functional_call

from .._progress import check_progress, progress_bar
from .._validation import InvalidParameterError, check_in_range, check_int
from ._quantize import (
    BITS_RANGE,
    check_bits,
    check_scheme,
    check_symmetry,
    fake_quantize,
    layer_bits,
    quantizable_layers,
)

__all__ = ["MixedPrecisionResult", "average_bits", "mixed_precision_search"]


def average_bits(model: nn.Module, bits: Any) -> float:
    """Average weight bit-width of ``model`` under ``bits`` (as :func:`quantize` takes it), weighted by the
    number of weights of each Conv/Linear layer: the model's weight bit-size divided by its number of weights."""
    widths = layer_bits(model, bits, "average_bits")
    mods = dict(model.named_modules())
    sizes = {n: cast(torch.Tensor, mods[n].weight).numel() for n in widths}
    return sum(widths[n] * sizes[n] for n in widths) / sum(sizes.values())


@dataclass
class MixedPrecisionResult:
    """The best per-layer assignment found by :func:`mixed_precision_search`.

    Attributes:
        bits: ``{layer_name: bit-width}`` (give it to ``shift.quantize(model, bits=...)``).
        accuracy: its held-out accuracy. average_bits: its weighted average width (≤ ``budget``).
        uniform: ``{b: held-out accuracy}`` of every uniform assignment of the search's widths;
        uniform_at_budget: the widest uniform width within the budget.
        history: best held-out accuracy after the initial population and after each generation.
        evaluations: distinct assignments scored. meta: the settings.
    """

    bits: dict[str, int]
    accuracy: float
    average_bits: float
    budget: float
    uniform: dict[int, float]
    uniform_at_budget: int
    history: list[float]
    evaluations: int
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return {"bits": self.bits, "accuracy": self.accuracy, "average_bits": self.average_bits,
                "budget": self.budget, "uniform": {str(b): a for b, a in self.uniform.items()},
                "uniform_at_budget": self.uniform_at_budget, "history": self.history,
                "evaluations": self.evaluations, "meta": self.meta}

    def table(self) -> str:
        """The assignment per layer, and its accuracy next to the uniform one at the budget."""
        lines = [f"{'layer':>12} {'bits':>4}", "-" * 17]
        lines += [f"{name:>12} {b:>4}" for name, b in self.bits.items()]
        ub = self.uniform_at_budget
        lines.append(f"mixed: {100 * self.accuracy:.1f} % held-out accuracy at {self.average_bits:.2f} average bits "
                     f"(budget {self.budget:g}); uniform {ub}-bit: {100 * self.uniform[ub]:.1f} %; "
                     f"{self.evaluations} assignments scored")
        return "\n".join(lines)


def _holdout(data: Any, n_holdout: int | None, owner: str) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    elif hasattr(data, "x_train") and hasattr(data, "y_train"):
        n = 1000 if n_holdout is None else n_holdout
        x, y = data.x_train[-n:], data.y_train[-n:]
    else:
        raise InvalidParameterError(f"The 'data' parameter of {owner} must be a data set (its last n_holdout training "
                                    f"examples are scored) or an (x, y) pair of held-out examples. Got "
                                    f"{type(data).__name__}.")
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor) or x.shape[0] != y.shape[0] or not len(y):
        raise InvalidParameterError(f"The held-out examples of {owner} must be tensors x (N, ...) and y (N,) with "
                                    f"N > 0. Got {getattr(x, 'shape', x)!r} and {getattr(y, 'shape', y)!r}.")
    return x, y


class _Scorer:
    """Held-out accuracy of per-layer assignments: weights rounded once per (layer, width), results memoised."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, names: list[str], widths: Sequence[int],
                 scheme: str, symmetry: str, batch_size: int) -> None:
        self.model, self.names, self.batch_size = model, names, batch_size
        dev = next((p.device for p in model.parameters()), x.device)
        self.x, self.y = x.to(dev), y.to(dev)
        mods = dict(model.named_modules())
        with torch.no_grad():
            self.q = {n: {b: fake_quantize(cast(torch.Tensor, mods[n].weight), b, scheme=scheme, symmetry=symmetry,
                                           ste=False) for b in widths} for n in names}
        self.cache: dict[tuple[int, ...], float] = {}

    def __call__(self, genome: tuple[int, ...]) -> float:
        if genome not in self.cache:
            params = {f"{n}.weight" if n else "weight": self.q[n][b] for n, b in zip(self.names, genome)}
            was = self.model.training
            self.model.eval()
            try:
                with torch.no_grad():
                    correct = sum(int((functional_call(self.model, params, (self.x[i:i + self.batch_size],),
                                                       strict=False).argmax(1) == self.y[i:i + self.batch_size]).sum())
                                  for i in range(0, self.x.shape[0], self.batch_size))
            finally:
                self.model.train(was)
            self.cache[genome] = correct / self.y.shape[0]
        return self.cache[genome]


def mixed_precision_search(
    model: nn.Module, data: Any, *, budget: float, bits: Sequence[int] = (8, 6, 4, 3, 2), scheme: str = "per_channel",
    symmetry: str = "symmetric", population: int = 32, generations: int = 20, parent_ratio: float = 0.25,
    mutation_ratio: float = 0.5, mutate_prob: float = 0.2, n_holdout: int | None = None, batch_size: int = 1024,
    seed: int = 0, progress: bool | None = None,
) -> MixedPrecisionResult:
    """Per-layer weight bit-widths from ``bits`` maximising held-out accuracy with :func:`average_bits` ≤ ``budget``.

    ``model``: typically trained with ``elastic_quant`` (ideally ``layerwise=True``, so that every mix of widths
    was trained). ``data``: an ``(x, y)`` pair of held-out examples, or a data set whose last ``n_holdout``
    (default 1000) training examples are used (held out only if the model was not trained on them). Genetic
    search (EQ-Net's, scored directly instead of by a predictor): ``population`` assignments (random ones
    repaired to the budget by lowering random layers one width at a time, plus the widest uniform one within
    the budget), then ``generations`` rounds keeping the best ``parent_ratio`` and breeding
    ``mutation_ratio·population`` children by per-layer mutation (probability ``mutate_prob``) and the rest by
    uniform crossover. Same model, data and ``seed`` -> same result.

    Example::

        res = shift.mixed_precision_search(model, (x_val, y_val), budget=3.0, bits=[8, 4, 3, 2])
        qmodel = shift.quantize(model, bits=res.bits)
    """
    owner = "mixed_precision_search"
    if not isinstance(model, nn.Module):
        raise TypeError(f"The 'model' parameter of {owner} must be an nn.Module. Got {type(model).__name__} instead.")
    if isinstance(bits, (int, str, Mapping)) or not isinstance(bits, Sequence) or not bits:
        raise InvalidParameterError(f"The 'bits' parameter of {owner} must be a non-empty list of ints in "
                                    f"[{BITS_RANGE[0]}, {BITS_RANGE[1]}]. Got {bits!r} instead.")
    widths = sorted({check_bits(b, owner) for b in bits})
    budget = float(check_in_range(budget, "budget", widths[0], None, owner=owner))
    scheme, symmetry = check_scheme(scheme, owner), check_symmetry(symmetry, owner)
    population = check_int(population, "population", 2, None, owner=owner)
    generations = check_int(generations, "generations", 0, None, owner=owner)
    parent_ratio = float(check_in_range(parent_ratio, "parent_ratio", 0.0, 1.0, closed="right", owner=owner))
    mutation_ratio = float(check_in_range(mutation_ratio, "mutation_ratio", 0.0, 1.0, owner=owner))
    mutate_prob = float(check_in_range(mutate_prob, "mutate_prob", 0.0, 1.0, owner=owner))
    if n_holdout is not None:
        check_int(n_holdout, "n_holdout", 1, None, owner=owner)
    check_int(batch_size, "batch_size", 1, None, owner=owner)
    check_int(seed, "seed", 0, None, owner=owner)
    check_progress(progress, owner=owner)
    names = quantizable_layers(model)
    if not names:
        raise InvalidParameterError(f"The model given to {owner} has no Linear or Conv layer to quantize "
                                    f"({type(model).__name__}).")
    x, y = _holdout(data, n_holdout, owner)
    mods = dict(model.named_modules())
    sizes = [cast(torch.Tensor, mods[n].weight).numel() for n in names]
    total = sum(sizes)

    def avg(genome: Sequence[int]) -> float:
        return sum(b * s for b, s in zip(genome, sizes)) / total

    rng = random.Random(seed)
    eps = 1e-9

    def repair(genome: list[int]) -> tuple[int, ...]:
        while avg(genome) > budget + eps:
            i = rng.choice([j for j, b in enumerate(genome) if b > widths[0]])
            genome[i] = widths[widths.index(genome[i]) - 1]
        return tuple(genome)

    score = _Scorer(model, x, y, names, widths, scheme, symmetry, batch_size)
    uniform = {b: score(tuple([b] * len(names))) for b in widths[::-1]}
    at_budget = max(b for b in widths if b <= budget + eps)
    pool = [tuple([at_budget] * len(names))]
    while len(pool) < population:
        pool.append(repair([rng.choice(widths) for _ in names]))
    ranked = sorted(((score(g), g) for g in pool), key=lambda t: -t[0])  # stable: ties keep their order
    n_parents = max(1, round(parent_ratio * population))
    n_mutants = round(mutation_ratio * population)
    history = [ranked[0][0]]
    for _ in progress_bar(range(generations), "mixed-precision search", progress, total=generations,
                          unit="generation"):
        parents = [g for _, g in ranked[:n_parents]]
        children = []
        for k in range(population):
            if k < n_mutants:
                child = [rng.choice(widths) if rng.random() < mutate_prob else b for b in rng.choice(parents)]
            else:
                a, b = rng.choice(parents), rng.choice(parents)
                child = [u if rng.random() < 0.5 else v for u, v in zip(a, b)]
            children.append(repair(child))
        ranked = sorted([(s, g) for s, g in ranked[:n_parents]] + [(score(g), g) for g in children],
                        key=lambda t: -t[0])
        history.append(ranked[0][0])
    best_acc, best = ranked[0]
    return MixedPrecisionResult(
        bits=dict(zip(names, best)), accuracy=best_acc, average_bits=avg(best), budget=budget, uniform=uniform,
        uniform_at_budget=at_budget, history=history, evaluations=len(score.cache),
        meta={"widths": widths, "scheme": scheme, "symmetry": symmetry, "population": population,
              "generations": generations, "parent_ratio": parent_ratio, "mutation_ratio": mutation_ratio,
              "mutate_prob": mutate_prob, "num_holdout": int(y.shape[0]), "seed": seed,
              "layer_sizes": dict(zip(names, sizes))})

