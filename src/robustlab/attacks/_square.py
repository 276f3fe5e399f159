"""Square Attack: score-based black-box random search (L∞ and L2).

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box adversarial
attack via random search", ECCV 2020, arXiv:1912.00049.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .._validation import check_bool, check_in_range, check_int
from ._base import Attack, _view_b, l2_norm, margin, rand, randint, register_attack

__all__ = ["Square", "p_selection"]


def p_selection(p_init: float, it: int, n_queries: int) -> float:
    """Fraction of coordinates changed at iteration ``it``, halved at 10, 50, 200, 500, 1k, 2k, 4k, 6k, 8k (per 10k)."""
    it = int(it / n_queries * 10000)
    for bound, div in ((8000, 512), (6000, 256), (4000, 128), (2000, 64), (1000, 32), (500, 16), (200, 8),
                       (50, 4), (10, 2)):
        if it > bound:
            return p_init / div
    return p_init


def _as_image(x: torch.Tensor) -> torch.Tensor:
    """View a batch as (N, C, H, W): (N, d) -> (N, 1, 1, d); (N, H, W) -> (N, 1, H, W)."""
    if x.dim() == 2:
        return x.view(x.shape[0], 1, 1, x.shape[1])
    if x.dim() == 3:
        return x.view(x.shape[0], 1, *x.shape[1:])
    return x.view(x.shape[0], x.shape[1], x.shape[2], -1)


def _window_mask(b: int, h: int, w: int, sh: int, sw: int, generator: torch.Generator | None,
                 like: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) boolean masks of one random ``sh × sw`` window per example."""
    vh = randint(h - sh + 1, (b, 1, 1, 1), generator, like)
    vw = randint(w - sw + 1, (b, 1, 1, 1), generator, like)
    rows = torch.arange(h, device=like.device).view(1, 1, h, 1)
    cols = torch.arange(w, device=like.device).view(1, 1, 1, w)
    return (rows >= vh) & (rows < vh + sh) & (cols >= vw) & (cols < vw + sw)


def _side(p: float, h: int, w: int, c: int) -> tuple[int, int]:
    """Window sides for a fraction ``p`` of the features (1-D windows for (1, d) inputs)."""
    if h == 1:
        return 1, max(1, min(w, int(round(p * w))))
    s = max(int(round(math.sqrt(p * h * w))), 1)
    return min(s, h), min(s, w)


@register_attack("square", tags={"linf", "l2", "black_box", "targeted"},
                 reference="Andriushchenko et al. 2020, arXiv:1912.00049",
                 example_kwargs={"eps": 0.1, "n_queries": 100})
class Square(Attack):
    """Square Attack: random search over square windows on the margin ``z_y − max_{j≠y} z_j``.

    L∞: start from vertical stripes of ±ε, then each query resets a random window (side ``√(p·HW)``) to
    ±ε per channel and keeps it if the margin decreases. L2 (simplified): the mass of a second window and
    the unused budget move into a random-sign window. ``p`` starts at ``p_init`` and is halved on the
    schedule of :func:`p_selection`. Stops per example once it is misclassified (or hits ``targets``).
    ``n_queries`` counts model queries per example (one for the start). Uses only model outputs.

    ``skip_noop`` (default True, L∞): a proposal that changes nothing after projection (its window already
    holds the drawn ±ε signs, or the [0, 1] clip maps both onto the current values, as on black pixels) is
    not spent as a query: its signs are flipped, which always changes every pixel of the window. No extra
    random numbers are drawn, so results stay reproducible from the generator; only queries that were
    wasted before differ. ``skip_noop=False`` reproduces the earlier outputs exactly (on digits with an
    adversarially trained model about half of the queries were such no-ops).
    Andriushchenko et al., ECCV 2020, arXiv:1912.00049.
    """

    name = "square"
    uses_gradients = False
    budget_param = "n_queries"

    def __init__(self, *, eps: float = 8 / 255, norm: str = "linf", n_queries: int = 5000, p_init: float = 0.8,
                 skip_noop: bool = True, generator: torch.Generator | None = None) -> None:
        super().__init__(eps=eps, norm=norm, generator=generator)
        self.n_queries = check_int(n_queries, "n_queries", 1, None, owner=self.name)
        self.p_init = float(check_in_range(p_init, "p_init", 0.0, 1.0, closed="right", owner=self.name))
        self.skip_noop = check_bool(skip_noop, "skip_noop", owner=self.name)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             targets: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
        with torch.no_grad():
            return self._search(model, x, y, targets, generator)

    def _score(self, model: nn.Module, xs: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        logits = model(xs)
        return margin(logits, y) if t is None else -margin(logits, t)  # < 0 means success

    def _search(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                targets: torch.Tensor | None, gen: torch.Generator | None) -> torch.Tensor:
        shape = x.shape
        xi = _as_image(x)
        b, c, h, w = xi.shape
        eps = self.eps
        if self.norm == "linf":
            stripes = (randint(2, (b, c, 1, w), gen, xi) * 2 - 1).to(xi.dtype)
            best = (xi + eps * stripes).clamp(0.0, 1.0)
        else:
            best = self._l2_init(xi, gen)
        score = self._score(model, best.view(shape), y, targets)
        with self._progress(self.n_queries - 1, "queries") as bar:
            best = self._iterate(model, xi, best, score, y, targets, gen, shape, bar)
        return best.view(shape)

    def _iterate(self, model: nn.Module, xi: torch.Tensor, best: torch.Tensor, score: torch.Tensor, y: torch.Tensor,
                 targets: torch.Tensor | None, gen: torch.Generator | None, shape: torch.Size, bar: Any) -> torch.Tensor:
        """The random-search loop (one query per example still alive per iteration)."""
        _, c, h, w = xi.shape
        for it in range(self.n_queries - 1):
            alive = (score > 0).nonzero().squeeze(1)
            if alive.numel() == 0:
                break
            bar.update(1)
            xa, ba = xi[alive], best[alive]
            sh, sw = _side(p_selection(self.p_init, it, self.n_queries), h, w, c)
            mask = _window_mask(alive.numel(), h, w, sh, sw, gen, xa)
            if self.norm == "linf":
                signs = (randint(2, (alive.numel(), c, 1, 1), gen, xa) * 2 - 1).to(xa.dtype)
                cand = self._linf_candidate(xa, ba, mask, signs)
                if self.skip_noop:  # a no-op proposal gets the opposite signs (no sync, no extra draw)
                    same = (cand == ba).flatten(1).all(1)
                    cand = torch.where(_view_b(same, cand), self._linf_candidate(xa, ba, mask, -signs), cand)
            else:
                cand = self._l2_candidate(xa, ba, mask, sh, sw, gen)
            ta = None if targets is None else targets[alive]
            s_new = self._score(model, cand.view(-1, *shape[1:]), y[alive], ta)
            better = s_new < score[alive]
            best[alive] = torch.where(_view_b(better, cand), cand, ba)
            score[alive] = torch.where(better, s_new, score[alive])
        return best

    def _linf_candidate(self, xa: torch.Tensor, ba: torch.Tensor, mask: torch.Tensor,
                        signs: torch.Tensor) -> torch.Tensor:
        """``ba`` with its window reset to ``xa ± ε`` per channel, projected onto the box ∩ [0, 1]."""
        eps = self.eps
        cand = torch.where(mask, xa + eps * signs, ba)
        return torch.min(torch.max(cand, xa - eps), xa + eps).clamp_(0.0, 1.0)

    def _l2_init(self, xi: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        g = rand(xi.shape, gen, xi, normal=True)
        return (xi + g * _view_b(self.eps / (l2_norm(g) + 1e-12), xi)).clamp_(0.0, 1.0)

    def _l2_candidate(self, xa: torch.Tensor, ba: torch.Tensor, mask: torch.Tensor, sh: int, sw: int,
                      gen: torch.Generator | None) -> torch.Tensor:
        b, c, h, w = xa.shape
        delta = ba - xa
        mask2 = _window_mask(b, h, w, sh, sw, gen, xa) & ~mask
        m1, m2 = mask.to(xa.dtype), mask2.to(xa.dtype)
        e1 = l2_norm(delta * m1).square()
        e2 = l2_norm(delta * m2).square()
        spare = (self.eps ** 2 - l2_norm(delta).square()).clamp_(min=0.0)
        budget = (e1 + e2 + spare).sqrt()
        signs = (randint(2, (b, c, 1, 1), gen, xa) * 2 - 1).to(xa.dtype)
        direction = (delta + signs * _view_b(budget / math.sqrt(max(sh * sw, 1)), xa)) * m1
        direction = direction * _view_b(budget / (l2_norm(direction) + 1e-12), xa)
        new = delta * (1 - m1 - m2) + direction
        return (xa + new).clamp_(0.0, 1.0)
