"""Tiny, dependency-free SVG charts for the report (line, scatter, grouped bars).

Deterministic output (fixed decimals), explicit width/height so browsers lay them out at a
non-zero size, and an Okabe-Ito colour-blind-safe palette. Axes span the data's range (padded, and
kept inside [0, 1] for fractions) rather than a fixed [0, 1]; every text is escaped.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#999999", "#F0E442")
_DASH = ("", "6,3", "2,2", "8,3,2,3")
W, H = 560, 330
ML, MR, MT, MB = 56, 200, 34, 46
_MAX_LEGEND = (H - MT - 10) // 15


def _fmt(v: float) -> str:
    return f"{v:.1f}"


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.ceil(lo / step - 1e-9) * step
    out = []
    v = start
    while v <= hi + 1e-9 * step:
        out.append(round(v, 10))
        v += step
    return out


def _label(v: float) -> str:
    return f"{v:g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"


class _Frame:
    def __init__(self, title: str, xlabel: str, ylabel: str, xlim: tuple[float, float], ylim: tuple[float, float],
                 *, xcats: list[str] | None = None) -> None:
        self.x0, self.x1 = xlim
        self.y0, self.y1 = ylim
        if self.x1 <= self.x0:
            self.x1 = self.x0 + 1.0
        if self.y1 <= self.y0:
            self.y1 = self.y0 + 1.0
        self.parts: list[str] = []
        pw, ph = W - ML - MR, H - MT - MB
        self.pw, self.ph = pw, ph
        p = self.parts
        p.append(f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{W}" height="{H}" '
                 f'viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}">')
        p.append(f'<title>{escape(title)}</title>')
        p.append(f'<rect x="0" y="0" width="{W}" height="{H}" fill="#fff"/>')
        p.append(f'<text x="{ML}" y="20" font-size="13" font-weight="bold">{escape(title)}</text>')
        p.append(f'<rect x="{ML}" y="{MT}" width="{pw}" height="{ph}" fill="none" stroke="#444" stroke-width="1"/>')
        for t in _ticks(self.y0, self.y1):
            y = self.sy(t)
            p.append(f'<line x1="{ML}" x2="{ML + pw}" y1="{_fmt(y)}" y2="{_fmt(y)}" stroke="#e5e5e5"/>')
            p.append(f'<text x="{ML - 6}" y="{_fmt(y + 4)}" font-size="10" text-anchor="end">{_label(t)}</text>')
        if xcats is None:
            for t in _ticks(self.x0, self.x1):
                x = self.sx(t)
                p.append(f'<line x1="{_fmt(x)}" x2="{_fmt(x)}" y1="{MT + ph}" y2="{MT + ph + 4}" stroke="#444"/>')
                p.append(f'<text x="{_fmt(x)}" y="{MT + ph + 16}" font-size="10" text-anchor="middle">{_label(t)}</text>')
        else:
            for i, c in enumerate(xcats):
                x, y = self.sx(i), MT + ph + 12
                p.append(f'<text x="{_fmt(x)}" y="{y}" font-size="9" text-anchor="end" '
                         f'transform="rotate(-20 {_fmt(x)} {y})">{escape(c)}</text>')
        p.append(f'<text x="{ML + pw / 2:.1f}" y="{H - 8}" font-size="11" text-anchor="middle">{escape(xlabel)}</text>')
        p.append(f'<text x="14" y="{MT + ph / 2:.1f}" font-size="11" text-anchor="middle" '
                 f'transform="rotate(-90 14 {MT + ph / 2:.1f})">{escape(ylabel)}</text>')
        self.legend_y = MT + 4
        self.n_legend = 0
        self.legend_total = 0

    def sx(self, v: float) -> float:
        return ML + (v - self.x0) / (self.x1 - self.x0) * self.pw

    def sy(self, v: float) -> float:
        return MT + self.ph - (v - self.y0) / (self.y1 - self.y0) * self.ph

    def legend(self, label: str, color: str, dash: str = "", marker: bool = True, sub: str = "") -> None:
        """One legend entry; ``sub`` is a second, smaller line (e.g. a fitted exponent), never truncated away."""
        x = ML + self.pw + 10
        y = self.legend_y
        self.n_legend += 1
        if self.n_legend > _MAX_LEGEND:
            return
        if self.n_legend == _MAX_LEGEND and self.legend_total > _MAX_LEGEND:
            more = self.legend_total - _MAX_LEGEND + 1
            self.parts.append(f'<text x="{x}" y="{y + 4}" font-size="10" fill="#555">+{more} more (hover the lines)</text>')
            self.legend_y += 15
            return
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(f'<line x1="{x}" x2="{x + 18}" y1="{y}" y2="{y}" stroke="{color}" stroke-width="2"{d}/>')
        if marker:
            self.parts.append(f'<circle cx="{x + 9}" cy="{y}" r="3" fill="{color}"/>')
        text = label if len(label) <= 32 else label[:31] + "…"
        self.parts.append(f'<text x="{x + 24}" y="{y + 4}" font-size="10">{escape(text)}<title>{escape(label)}</title></text>')
        self.legend_y += 15
        if sub:
            self.parts.append(f'<text x="{x + 24}" y="{y + 15}" font-size="9" fill="#333">{escape(sub)}</text>')
            self.legend_y += 12

    def done(self) -> str:
        return "".join(self.parts) + "</svg>"


def _limits(vals: list[float], pad: float = 0.05, clamp01: bool = False) -> tuple[float, float]:
    """The data's range, padded by ``pad`` of its span; ``clamp01`` keeps the padding inside [0, 1]
    when the data are fractions (the axis is not stretched to [0, 1] when the data span less)."""
    vals = [v for v in vals if v is not None and math.isfinite(v)]
    if not vals:
        return (0.0, 1.0)
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or max(abs(hi) * 0.1, 0.05)
    lo2, hi2 = lo - pad * span, hi + pad * span
    if clamp01 and lo >= 0 and hi <= 1:
        lo2, hi2 = max(0.0, lo2), min(1.0, hi2)
    return (lo2, hi2)


def _vline(f: _Frame, x: float, text: str) -> None:
    if not f.x0 <= x <= f.x1:
        return
    sx = f.sx(x)
    f.parts.append(f'<line x1="{_fmt(sx)}" x2="{_fmt(sx)}" y1="{MT}" y2="{MT + f.ph}" stroke="#888" stroke-dasharray="4,3"/>'
                   f'<text x="{_fmt(sx - 3)}" y="{MT + 12}" font-size="9" fill="#555" text-anchor="end">{escape(text)}</text>')


def line_chart(series: list[dict[str, Any]], *, title: str, xlabel: str, ylabel: str, unit_y: bool = True,
               hline: tuple[float, str] | None = None, vline: tuple[float, str] | None = None, note: str = "") -> str:
    """``series``: dicts with ``label``, ``x``, ``y``, optional ``err`` (±, drawn as bars), ``sub`` (a
    second legend line) and ``fit`` (``(xs, ys)`` drawn dashed in the series' colour)."""
    xs = [x for s in series for x in s["x"]] + ([vline[0]] if vline else [])
    ys = [y for s in series for y in s["y"]]
    ys += [y + sg * e for s in series for y, e in zip(s["y"], s.get("err") or []) if y is not None and e == e
           for sg in (-1, 1)]
    ys += [y for s in series if s.get("fit") for y in s["fit"][1] if math.isfinite(y)]
    f = _Frame(title, xlabel, ylabel, _limits(xs, 0.03), _limits(ys, clamp01=unit_y))
    if vline is not None:
        _vline(f, *vline)
    if hline is not None:
        y = f.sy(hline[0])
        f.parts.append(f'<line x1="{ML}" x2="{ML + f.pw}" y1="{_fmt(y)}" y2="{_fmt(y)}" stroke="#888" '
                       f'stroke-dasharray="4,3"/><text x="{ML + 4}" y="{_fmt(y - 4)}" font-size="10" fill="#555">'
                       f'{escape(hline[1])}</text>')
    f.legend_total = len(series)
    for i, s in enumerate(series):
        color, dash = PALETTE[i % len(PALETTE)], _DASH[(i // len(PALETTE)) % len(_DASH)]
        pts = [(f.sx(x), f.sy(y)) for x, y in zip(s["x"], s["y"]) if y is not None and math.isfinite(y)]
        if len(pts) > 1:
            d = f' stroke-dasharray="{dash}"' if dash else ""
            f.parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2"{d} points="'
                           + " ".join(f"{_fmt(a)},{_fmt(b)}" for a, b in pts) + f'"><title>{escape(s["label"])}</title></polyline>')
        for j, (a, b) in enumerate(pts):
            e = (s.get("err") or [0.0] * len(pts))[j] if j < len(s.get("err") or []) else 0.0
            if e and e == e and e > 0:
                y = s["y"][j]
                f.parts.append(f'<line x1="{_fmt(a)}" x2="{_fmt(a)}" y1="{_fmt(f.sy(y - e))}" y2="{_fmt(f.sy(y + e))}" '
                               f'stroke="{color}" stroke-width="1"/>')
            f.parts.append(f'<circle cx="{_fmt(a)}" cy="{_fmt(b)}" r="3" fill="{color}"/>')
        fp = [(f.sx(x), f.sy(y)) for x, y in zip(*s["fit"]) if math.isfinite(y)] if s.get("fit") else []
        if len(fp) > 1:
            f.parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1" stroke-dasharray="3,2" '
                           f'opacity="0.8" points="' + " ".join(f"{_fmt(a)},{_fmt(b)}" for a, b in fp)
                           + f'"><title>{escape(s["label"])}: power-law fit</title></polyline>')
        f.legend(s["label"], color, dash, sub=s.get("sub", ""))
    if note:
        f.parts.append(f'<text x="{ML}" y="{H - 24}" font-size="9" fill="#555">{escape(note)}</text>')
    return f.done()


def scatter_chart(points: list[dict[str, Any]], *, title: str, xlabel: str, ylabel: str,
                  hline: tuple[float, str] | None = None) -> str:
    """``points``: dicts with ``label`` (legend group, the colour), ``x``, ``y``, and ``name`` (written
    beside the point, so it reads without hovering) and ``title`` (the tooltip)."""
    groups: dict[str, list[tuple[float, float, str]]] = {}
    for p in points:
        groups.setdefault(p["label"], []).append((p["x"], p["y"], p.get("title", p["label"]), p.get("name", "")))
    ys = [p["y"] for p in points] + ([hline[0]] if hline else [])
    f = _Frame(title, xlabel, ylabel, _limits([p["x"] for p in points], 0.1), _limits(ys, 0.1))
    if hline is not None:
        y = f.sy(hline[0])
        f.parts.append(f'<line x1="{ML}" x2="{ML + f.pw}" y1="{_fmt(y)}" y2="{_fmt(y)}" stroke="#888" '
                       f'stroke-dasharray="4,3"/><text x="{ML + 4}" y="{_fmt(y - 4)}" font-size="10" fill="#555">'
                       f'{escape(hline[1])}</text>')
    for i, (label, pts) in enumerate(groups.items()):
        color = PALETTE[i % len(PALETTE)]
        for x, y, t, name in pts:
            f.parts.append(f'<circle cx="{_fmt(f.sx(x))}" cy="{_fmt(f.sy(y))}" r="4" fill="{color}" fill-opacity="0.8">'
                           f'<title>{escape(t)}: {escape(ylabel)} {y:.3f}, {escape(xlabel)} {x:.2f}</title></circle>')
            if name:
                short = name if len(name) <= 28 else name[:27] + "…"
                left = f.sx(x) > ML + 0.55 * f.pw  # keep the text inside the plot: write it leftwards
                tx, anchor = (f.sx(x) - 6, "end") if left else (f.sx(x) + 6, "start")
                f.parts.append(f'<text x="{_fmt(tx)}" y="{_fmt(f.sy(y) - 5)}" font-size="9" fill="{color}" '
                               f'text-anchor="{anchor}">{escape(short)}</text>')
        f.legend(label, color, marker=True)
    return f.done()


def bar_chart(categories: list[str], series: list[dict[str, Any]], *, title: str, ylabel: str, xlabel: str = "") -> str:
    """Grouped bars: ``series`` dicts with ``label`` and ``y`` (one value per category), y in [0, 1]."""
    n = max(1, len(categories))
    top = max([v for s in series for v in s["y"] if v is not None and math.isfinite(v)], default=1.0)
    f = _Frame(title, xlabel, ylabel, (-0.5, n - 0.5), (0.0, min(1.0, max(top * 1.08, 0.05))), xcats=[c if len(c) <= 18 else c[:17] + "…"
                                                                           for c in categories])
    k = max(1, len(series))
    width = 0.8 / k
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        for j, v in enumerate(s["y"]):
            if v is None or not math.isfinite(v):
                continue
            x0 = f.sx(j - 0.4 + i * width)
            x1 = f.sx(j - 0.4 + (i + 1) * width)
            y = f.sy(max(0.0, min(1.0, v)))
            f.parts.append(f'<rect x="{_fmt(x0)}" y="{_fmt(y)}" width="{_fmt(max(0.5, x1 - x0 - 1))}" '
                           f'height="{_fmt(f.sy(0.0) - y)}" fill="{color}"><title>{escape(categories[j])}: '
                           f'{escape(s["label"])} = {v:.3f}</title></rect>')
        f.legend(s["label"], color, marker=False)
    return f.done()
