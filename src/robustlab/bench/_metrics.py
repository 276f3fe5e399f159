"""Metric declarations: what each evaluation writes, declared once next to its code.

An evaluation lists its metrics as :class:`Metric` objects (``Evaluation.metrics``). A pattern names
placeholders in braces, e.g. ``robust_acc/{attack}/eps={eps}``; a placeholder matches one path
segment (no ``/``). The report's leaderboard columns, headers, ranking direction and plots, and the
evaluations battery (``robustlab.testing._evaluations``), are all read from these declarations, so a
metric renamed in one place fails a test instead of silently vanishing from the report.

Example::

    Metric("acc/top{k}", "top-{k} acc", leaderboard=True, hide=("acc/top1",))
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

__all__ = ["PLOTS", "Metric", "MetricMatch", "match_metric"]

# plot -> roles a metric can play in it (the report draws one renderer per plot)
PLOTS: dict[str, tuple[str, ...]] = {
    "noise_rate": ("y",),  # y vs the label-noise rate of the run, one line per method
    "robust_eps": ("origin", "y", "k", "k_lo", "k_hi", "a"),  # robust acc vs ε (+ power law)
    "cert_ibp": ("y",),  # certified accuracy vs the pattern's numeric placeholder
    "cert_rs": ("y", "limit"),  # "limit": the largest radius the settings can certify
    "conformal": ("x", "y", "target"),  # one point per (configuration, score)
    "disparity": ("bar", "bar_first"),  # grouped bars; bar_first: the smallest placeholder value only
    "corruptions": ("y",),  # mean over the first placeholder vs the second (severity)
}

_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


@dataclass(frozen=True)
class Metric:
    """One metric (or family of metrics, when ``pattern`` has placeholders) an evaluation writes.

    Attributes:
        pattern: name with ``{placeholder}`` segments, e.g. ``cert_acc/rs/r={r}``.
        label: human header; may use the placeholders, e.g. ``RS cert r={r}``.
        unit: unit of the value ("" for a fraction or a plain number).
        higher_is_better: ranking direction in the leaderboard (None: not ranked).
        value_range: closed interval every value lies in (``None`` ends are unbounded).
        integer: values are whole numbers (counts).
        leaderboard: shown as leaderboard column(s).
        hide: exact names kept out of the leaderboard (duplicates of another column).
        plots: ``(plot, role)`` pairs, plots and roles from :data:`PLOTS`.
        limit: ``(placeholder, metric name)``: a column whose placeholder value exceeds that metric's
            value of the same run is not a result (e.g. a radius the settings cannot certify).
    """

    pattern: str
    label: str
    unit: str = ""
    higher_is_better: bool | None = True
    value_range: tuple[float | None, float | None] = (0.0, 1.0)
    integer: bool = False
    leaderboard: bool = False
    hide: tuple[str, ...] = ()
    plots: tuple[tuple[str, str], ...] = ()
    limit: tuple[str, str] | None = None
    doc: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for plot, role in self.plots:
            if plot not in PLOTS or role not in PLOTS[plot]:
                raise ValueError(f"Metric '{self.pattern}': unknown plot role ({plot!r}, {role!r}). "
                                 f"Accepted: {', '.join(f'{p}:{r}' for p in PLOTS for r in PLOTS[p])}.")
        lo, hi = self.value_range
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"Metric '{self.pattern}': value_range {self.value_range} is empty.")
        missing = set(_PLACEHOLDER.findall(self.label)) - set(self.placeholders)
        if missing:
            raise ValueError(f"Metric '{self.pattern}': label {self.label!r} uses unknown placeholders {sorted(missing)}.")
        if self.limit is not None and self.limit[0] not in self.placeholders:
            raise ValueError(f"Metric '{self.pattern}': limit placeholder {self.limit[0]!r} is not in the pattern.")

    @cached_property
    def placeholders(self) -> tuple[str, ...]:
        """Placeholder names in pattern order."""
        return tuple(_PLACEHOLDER.findall(self.pattern))

    @cached_property
    def regex(self) -> re.Pattern[str]:
        parts = _PLACEHOLDER.split(self.pattern)  # literal, name, literal, name, ...
        rx = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts))
        return re.compile(rx + r"\Z")

    @property
    def specificity(self) -> int:
        """Literal characters in the pattern: the most specific declaration wins a name both match."""
        return len(_PLACEHOLDER.sub("", self.pattern))

    def match(self, name: str) -> dict[str, str] | None:
        """The placeholder values if ``name`` is an instance of this pattern, else None."""
        m = self.regex.match(name)
        return None if m is None else m.groupdict()

    def name(self, **values: Any) -> str:
        """The metric name for these placeholder values (numbers formatted with ``%g``)."""
        return self.pattern.format(**{k: _fmt(v) for k, v in values.items()})

    def header(self, values: dict[str, str]) -> str:
        return self.label.format(**values)

    def in_range(self, value: float) -> bool:
        """Finite, inside ``value_range``, and whole if ``integer``."""
        if not isinstance(value, float) or not math.isfinite(value):
            return False
        lo, hi = self.value_range
        if (lo is not None and value < lo - 1e-9) or (hi is not None and value > hi + 1e-9):
            return False
        return not self.integer or value.is_integer()

    def roles(self, plot: str) -> list[str]:
        return [r for p, r in self.plots if p == plot]

    def describe_range(self) -> str:
        lo, hi = self.value_range
        kind = "an integer" if self.integer else "a finite float"
        return f"{kind} in [{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}]"


@dataclass(frozen=True)
class MetricMatch:
    """A concrete metric name resolved to its declaration (and the evaluation declaring it)."""

    name: str
    metric: Metric
    evaluation: str
    values: dict[str, str]

    @property
    def header(self) -> str:
        return self.metric.header(self.values)

    def number(self, placeholder: str) -> float:
        """A placeholder's value as a number (NaN when it is not one)."""
        try:
            return float(self.values[placeholder])
        except (KeyError, ValueError):
            return math.nan

    def sort_key(self) -> tuple[Any, ...]:
        return tuple((0, self.number(p), "") if math.isfinite(self.number(p)) else (1, 0.0, self.values[p])
                     for p in self.metric.placeholders)


def match_metric(name: str, declared: Iterable[tuple[str, Metric]]) -> MetricMatch | None:
    """Resolve ``name`` against ``(evaluation, Metric)`` declarations: the most specific match wins."""
    best: MetricMatch | None = None
    for ev, m in declared:
        vals = m.match(name)
        if vals is not None and (best is None or m.specificity > best.metric.specificity):
            best = MetricMatch(name, m, ev, vals)
    return best


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)
