"""Accuracy under corruptions, mean corruption error (mCE) and relative mCE."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._progress import check_progress, progress_bar
from .._validation import InvalidParameterError, check_int
from ._base import CORRUPTIONS, suite

__all__ = ["CorruptionResult", "corruption_error", "mnist_c_accuracy"]


@dataclass
class CorruptionResult:
    """Accuracy of a model per (corruption, severity), with mCE figures.

    Attributes:
        accuracy: ``{corruption: {severity: accuracy}}``.
        clean_accuracy: accuracy on the uncorrupted test inputs.
        num_examples: test examples used.
        baseline: the same grid for the baseline model (``None`` when no baseline was named).
        ce / relative_ce: per-corruption (relative) corruption error vs the baseline, in % (100 = baseline).
        mce / relative_mce: their means over the corruptions (``None`` without a baseline).
        mean_error: unnormalised mean error over all (corruption, severity ≥ 1) cells, in [0, 1].

    Severity 0 is the unchanged input (the one rule of ``shift.corrupt``, the CLI and specs): its cells are
    shown but left out of every mean, CE and relative CE, which are defined over severities 1..5.
    """

    accuracy: dict[str, dict[int, float]]
    clean_accuracy: float
    num_examples: int
    baseline: CorruptionResult | None = None
    ce: dict[str, float] | None = None
    relative_ce: dict[str, float] | None = None
    mce: float | None = None
    relative_mce: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def mean_error(self) -> float:
        cells = [a for row in self.accuracy.values() for a in _graded(row).values()]
        return 1.0 - sum(cells) / len(cells) if cells else float("nan")

    @property
    def mean_accuracy(self) -> float:
        return 1.0 - self.mean_error

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (severity keys become strings)."""
        out: dict[str, Any] = {
            "clean_accuracy": self.clean_accuracy,
            "num_examples": self.num_examples,
            "accuracy": {c: {str(s): a for s, a in row.items()} for c, row in self.accuracy.items()},
            "mean_error": self.mean_error,
            "ce": self.ce, "relative_ce": self.relative_ce, "mce": self.mce, "relative_mce": self.relative_mce,
            "meta": self.meta,
        }
        if self.baseline is not None:
            out["baseline"] = self.baseline.to_dict()
        return out

    def table(self) -> str:
        """A plain-text table: one row per corruption, accuracy (%) per severity, mean, and CE if known."""
        sevs = sorted({s for row in self.accuracy.values() for s in row})
        width = max([len(c) for c in self.accuracy] + [10])
        head = f"{'corruption':<{width}} " + " ".join(f"{'s' + str(s):>6}" for s in sevs) + f" {'mean':>6}"
        if self.ce is not None:
            head += f" {'CE':>7} {'relCE':>7}"
        lines = [head, "-" * len(head)]
        for c, row in self.accuracy.items():
            vals = [row[s] for s in sevs]
            graded = list(_graded(row).values())
            line = f"{c:<{width}} " + " ".join(f"{100 * v:6.1f}" for v in vals) + f" {100 * sum(graded) / len(graded):6.1f}"
            if self.ce is not None and self.relative_ce is not None:
                line += f" {self.ce[c]:7.1f} {self.relative_ce[c]:7.1f}"
            lines.append(line)
        lines.append(f"clean accuracy {100 * self.clean_accuracy:.1f}%, mean corruption accuracy "
                     f"{100 * self.mean_accuracy:.1f}% over {self.num_examples} test examples")
        if self.mce is not None:
            lines.append(f"mCE {self.mce:.1f}%, relative mCE {self.relative_mce:.1f}% (baseline = 100)")
        return "\n".join(lines)


def _graded(row: dict[int, float]) -> dict[int, float]:
    """The cells of a row that count in means and CE: severities 1..5 (0 is the unchanged input)."""
    return {s: a for s, a in row.items() if s > 0}


@torch.no_grad()
def _acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    from ..training import predict_logits

    pred = predict_logits(model, x, batch_size=batch_size).argmax(1).cpu()
    return float((pred == y.cpu()).float().mean()) if y.numel() else float("nan")


def _resolve_corruptions(corruptions: str | Sequence[str]) -> list[str]:
    names = suite(corruptions) if isinstance(corruptions, str) else list(corruptions)
    if not names:
        raise InvalidParameterError("The 'corruptions' parameter of corruption_error must name at least one corruption.")
    for n in names:
        CORRUPTIONS.spec(n)  # unknown names raise with "Did you mean"
    return names


def corruption_error(
    model: nn.Module,
    data: Any,
    *,
    corruptions: str | Sequence[str] = "common",
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    baseline: nn.Module | CorruptionResult | None = None,
    n_test: int | None = None,
    batch_size: int = 512,
    generator: torch.Generator | None = None,
    progress: bool | None = None,
) -> CorruptionResult:
    r"""Accuracy of ``model`` on ``data.x_test`` under each corruption and severity, plus mCE.

    ``corruptions`` is a suite name (``common``, ``common_extra``, ``mnist_c``, ``all``) or a list of
    names. With ``baseline`` (a model evaluated on the *same* corrupted images, or an earlier result),
    per corruption c (Hendrycks & Dietterich 2019, with the baseline in AlexNet's role)

    .. math:: CE_c = 100 \frac{\sum_s E_{s,c}}{\sum_s E^{base}_{s,c}}, \quad
              relCE_c = 100 \frac{\sum_s (E_{s,c} - E_{clean})}{\sum_s (E^{base}_{s,c} - E^{base}_{clean})}

    and mCE / relative mCE are their means. Corrupted inputs are drawn once per (corruption, severity)
    from ``generator``, so the model and a baseline model see identical images. ``progress``: a bar
    over the (corruption, severity) cells (``None``: shown when stderr is a TTY).

    ``data`` may also be a torch Dataset / DataLoader / :class:`~robustlab.data.StreamingData` (its test split):
    it is then read ``batch_size`` images at a time for every cell and each batch is corrupted on its own with
    the same ``generator`` in sequence. Deterministic corruptions give the in-memory numbers for any batch
    size; random ones (tag ``random``) give them when the test split fits in one batch (``n ≤ batch_size``),
    and otherwise draw the same distribution batch by batch (different samples).
    """
    from ..data._stream import is_streaming

    if is_streaming(data):
        return _corruption_error_stream(model, data, corruptions=corruptions, severities=severities,
                                        baseline=baseline, n_test=n_test, batch_size=batch_size,
                                        generator=generator, progress=progress)
    x, y = data.x_test, data.y_test
    if x.dim() != 4:
        raise ValueError(
            f"corruption_error needs image data (N, C, H, W); data set '{getattr(data, 'name', '?')}' has "
            f"input shape {tuple(x.shape[1:])}. Use the tabular shifts for feature vectors."
        )
    if n_test is not None:
        check_int(n_test, "n_test", 1, None, owner="corruption_error")
        x, y = x[:n_test], y[:n_test]
    names, sevs, base_model = _check_args(corruptions, severities, baseline, batch_size, progress)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)

    acc: dict[str, dict[int, float]] = {}
    base_acc: dict[str, dict[int, float]] = {}
    with progress_bar(total=len(names) * len(sevs), desc="corruptions", enabled=progress, unit="cell") as bar:
        for name in names:
            acc[name], base_acc[name] = {}, {}
            for s in sevs:
                bar.set_postfix_str(f"{name} s{s}", refresh=False)
                xc = CORRUPTIONS.get(name, severity=s)(x, generator=gen)
                acc[name][s] = _acc(model, xc, y, batch_size)
                if base_model is not None:
                    base_acc[name][s] = _acc(base_model, xc, y, batch_size)
                bar.update(1)
    clean = _acc(model, x, y, batch_size)
    base_clean = _acc(base_model, x, y, batch_size) if base_model is not None else None
    return _result(acc, clean, int(y.shape[0]), names, sevs, baseline, base_acc, base_clean)


def _result(acc: dict[str, dict[int, float]], clean: float, n: int, names: list[str], sevs: list[int],
            baseline: Any, base_acc: dict[str, dict[int, float]], base_clean: float | None) -> CorruptionResult:
    result = CorruptionResult(acc, clean, n,
                              meta={"corruptions": names, "severities": sevs,
                                    "faithful": {n: "faithful" in CORRUPTIONS.spec(n).tags for n in names}})
    base: CorruptionResult | None = None
    if base_clean is not None:
        base = CorruptionResult(base_acc, base_clean, n)
    elif isinstance(baseline, CorruptionResult):
        base = baseline
    if base is not None:
        _normalise(result, base)
    return result


def _check_args(corruptions: Any, severities: Sequence[int], baseline: Any, batch_size: int,
                progress: bool | None) -> tuple[list[str], list[int], nn.Module | None]:
    """Validated ``(names, severities, baseline model or None)`` of :func:`corruption_error`."""
    check_int(batch_size, "batch_size", 1, None, owner="corruption_error")
    names = _resolve_corruptions(corruptions)
    sevs = [check_int(s, "severities", 0, 5, owner="corruption_error") for s in severities]
    if not any(s > 0 for s in sevs):
        raise InvalidParameterError(
            "The 'severities' parameter of corruption_error must include at least one severity in 1..5 "
            f"(0 is the unchanged input, left out of the means). Got {list(severities)!r} instead.")
    base_model = baseline if isinstance(baseline, nn.Module) else None
    if baseline is not None and base_model is None and not isinstance(baseline, CorruptionResult):
        raise TypeError(f"The 'baseline' parameter of corruption_error must be a model or a CorruptionResult. "
                        f"Got {type(baseline).__name__}.")
    check_progress(progress, owner="corruption_error")
    return names, sevs, base_model


@torch.no_grad()
def _stream_correct(models: list[nn.Module], src: Any, batch_size: int, fn: Any = None,
                    gen: torch.Generator | None = None) -> list[float]:
    """Accuracy of each model on the batches of ``src`` (corrupted by ``fn`` with ``gen``): ``_acc``'s values."""
    from ..training import predict_logits

    hits: list[list[torch.Tensor]] = [[] for _ in models]
    for xb, yb, _ in src.batches(batch_size):
        if xb.dim() != 4:
            raise ValueError(f"corruption_error needs image data (N, C, H, W); the data have input shape "
                             f"{tuple(xb.shape[1:])}. Use the tabular shifts for feature vectors.")
        xc = fn(xb, generator=gen) if fn is not None else xb
        for k, m in enumerate(models):
            hits[k].append(predict_logits(m, xc, batch_size=batch_size).argmax(1).cpu() == yb.cpu())
    return [float(torch.cat(h).float().mean()) if h else float("nan") for h in hits]


def _corruption_error_stream(model: nn.Module, data: Any, *, corruptions: Any, severities: Sequence[int],
                             baseline: Any, n_test: int | None, batch_size: int, generator: torch.Generator | None,
                             progress: bool | None) -> CorruptionResult:
    """:func:`corruption_error` on a torch Dataset / DataLoader / StreamingData, ``batch_size`` images at a time."""
    from ..data._stream import BatchSource, num_examples

    if n_test is not None:
        check_int(n_test, "n_test", 1, None, owner="corruption_error")
    names, sevs, base_model = _check_args(corruptions, severities, baseline, batch_size, progress)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    total = num_examples(data, owner="corruption_error")
    src = BatchSource(data=data, n=min(total, n_test) if n_test is not None else total, owner="corruption_error",
                      limit=n_test)
    models = [model] + ([base_model] if base_model is not None else [])
    acc: dict[str, dict[int, float]] = {}
    base_acc: dict[str, dict[int, float]] = {}
    with progress_bar(total=len(names) * len(sevs), desc="corruptions", enabled=progress, unit="cell") as bar:
        for name in names:
            acc[name], base_acc[name] = {}, {}
            for s in sevs:
                bar.set_postfix_str(f"{name} s{s}", refresh=False)
                fn = CORRUPTIONS.get(name, severity=s)
                res = _stream_correct(models, src, batch_size, fn, gen)
                acc[name][s] = res[0]
                if base_model is not None:
                    base_acc[name][s] = res[1]
                bar.update(1)
    clean = _stream_correct(models, src, batch_size)
    return _result(acc, clean[0], src.n, names, sevs, baseline, base_acc,
                   clean[1] if base_model is not None else None)


def _normalise(result: CorruptionResult, base: CorruptionResult) -> None:
    ce: dict[str, float] = {}
    rel: dict[str, float] = {}
    for c, row in result.accuracy.items():
        brow = base.accuracy.get(c)
        if brow is None or any(s not in brow for s in row):
            raise ValueError(f"The baseline result lacks corruption '{c}' at severities {sorted(row)}.")
        row = _graded(row)
        err = sum(1 - row[s] for s in row)
        berr = sum(1 - brow[s] for s in row)
        ce[c] = 100.0 * err / berr if berr > 0 else float("inf") if err > 0 else 100.0
        d = sum((1 - row[s]) - (1 - result.clean_accuracy) for s in row)
        bd = sum((1 - brow[s]) - (1 - base.clean_accuracy) for s in row)
        rel[c] = 100.0 * d / bd if bd != 0 else float("nan")
    result.baseline = base
    result.ce, result.relative_ce = ce, rel
    result.mce = sum(ce.values()) / len(ce)
    result.relative_mce = sum(rel.values()) / len(rel)


def mnist_c_accuracy(model: nn.Module, data: Any, *, n_test: int | None = None, batch_size: int = 512,
                     generator: torch.Generator | None = None, progress: bool | None = None) -> dict[str, float]:
    """Accuracy under each MNIST-C corruption at MNIST-C's own fixed parameters (``MNIST_C_PARAMS``).

    Returns ``{corruption: accuracy}`` plus ``clean`` and ``mean`` (over the 15 corruptions). Meant for
    28x28 grayscale digits (Mu & Gilmer 2019); computed in memory, so not the released MNIST-C files.
    ``progress``: a bar over the corruptions (``None``: shown when stderr is a TTY).
    """
    check_progress(progress, owner="mnist_c_accuracy")
    from ._mnist_c import MNIST_C_PARAMS

    x, y = data.x_test, data.y_test
    if n_test is not None:
        check_int(n_test, "n_test", 1, None, owner="mnist_c_accuracy")
        x, y = x[:n_test], y[:n_test]
    if x.dim() != 4:
        raise ValueError(f"mnist_c_accuracy needs image data (N, C, H, W). Got input shape {tuple(x.shape[1:])}.")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    out = {name: _acc(model, CORRUPTIONS.get(name, params=p)(x, generator=gen), y, batch_size)
           for name, p in progress_bar(MNIST_C_PARAMS.items(), "MNIST-C corruptions", progress,
                                       total=len(MNIST_C_PARAMS), unit="corruption")}
    out["mean"] = sum(out.values()) / len(MNIST_C_PARAMS)
    out["clean"] = _acc(model, x, y, batch_size)
    return out
