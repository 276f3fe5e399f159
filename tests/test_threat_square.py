"""Square (L∞) spends no query on a proposal that changes nothing after projection (skip_noop)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab import attacks
from robustlab._validation import InvalidParameterError


class _Unbreakable(nn.Module):
    """Constant logits (class 0 by a wide margin): the search never improves, so its best stays the start point.

    Records every queried batch, so a query equal to the start point is a wasted (no-op) proposal.
    """

    def __init__(self) -> None:
        super().__init__()
        self.queries: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.queries.append(x.detach().clone())
        logits = torch.zeros(x.shape[0], 3, dtype=x.dtype)
        logits[:, 0] = 10.0
        return logits + 0 * x.flatten(1).sum(1, keepdim=True)


def _noop_queries(skip_noop: bool, c: int) -> tuple[int, int]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, c, 5, 5, generator=g)
    x[:, :, :2] = 0.0  # black rows: +ε and −ε both clip back onto the start's values there sometimes
    model = _Unbreakable()
    atk = attacks.get("square", eps=0.1, n_queries=200, skip_noop=skip_noop)
    atk(model, x, torch.zeros(6, dtype=torch.long), generator=torch.Generator().manual_seed(1))
    qs = [q for q in model.queries if q.shape[0] == 6]  # the probe queries one example
    start, proposals = qs[0], qs[1:]
    wasted = sum(int((q == start).flatten(1).all(1).sum()) for q in proposals)
    return wasted, sum(q.shape[0] for q in proposals)


@pytest.mark.parametrize("c", [1, 3])
def test_square_spends_no_query_on_noop_proposals(c):
    wasted_before, total = _noop_queries(False, c)
    assert total == 6 * 199
    assert wasted_before > 0.1 * total  # the old search wasted a good share of its budget here
    wasted_now, total_now = _noop_queries(True, c)
    assert total_now == total and wasted_now == 0


def test_square_skip_noop_is_reproducible_and_off_restores_the_old_search():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 1, 4, 4, generator=g)
    x[:, :, 0] = 0.0
    y = model(x).argmax(1)

    def run(**kw):
        return attacks.get("square", eps=0.1, n_queries=60, **kw)(model, x, y, generator=torch.Generator().manual_seed(4))

    assert torch.equal(run(), run())
    assert not torch.equal(run(), run(skip_noop=False))
    with pytest.raises((InvalidParameterError, TypeError), match="skip_noop"):
        attacks.get("square", eps=0.1, skip_noop="yes")
