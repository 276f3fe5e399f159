"""IBP over blocks of samples on the CPU (``certify.ibp.IBP_BLOCK_BYTES``): the same bounds as the whole batch, on
chains and on fx graphs, only for ``method="ibp"`` and only without autograd."""

import pytest
import torch
from torch import nn

from robustlab.certify import ibp as I
from robustlab.certify import interval_bounds, margin_bounds


class _Res(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c0, self.c1 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.c0(x))
        h = torch.relu(h + self.c1(h))
        return self.fc(torch.flatten(h, 1))


def _models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    chain = nn.Sequential(nn.Conv2d(1, 6, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 16),
                          nn.ReLU(), nn.Linear(16, 5))
    return {"chain": chain.eval(), "graph": _Res().eval()}


@pytest.fixture
def calls(monkeypatch):
    """Blocks of a few samples (a tiny byte budget), and a count of the IBP passes."""
    monkeypatch.setattr(I, "IBP_BLOCK_BYTES", 4 * 6 * 4 * 4 * 4)  # 4 samples of the chain's widest layer
    count = {"n": 0}
    real = I._ibp_forward

    def counting(*args, **kwargs):
        count["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(I, "_ibp_forward", counting)
    return count


@pytest.mark.parametrize("name", ["chain", "graph"])
@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.3)])
@torch.no_grad()
def test_blocks_give_the_whole_batch_bounds(name, norm, eps, calls, monkeypatch):
    model = _models()[name]
    from robustlab.certify import _graph_crown as G

    real, graph_calls = G.graph_interval_bounds, []
    monkeypatch.setattr(G, "graph_interval_bounds", lambda *a, **k: graph_calls.append(1) or real(*a, **k))
    x = torch.rand(23, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 5, (23,), generator=torch.Generator().manual_seed(2))
    lo, up = interval_bounds(model, x, eps=eps, norm=norm)
    mb = margin_bounds(model, x, y, eps=eps, norm=norm)
    assert (calls["n"] if name == "chain" else len(graph_calls)) > 2  # cut into blocks
    monkeypatch.setattr(I, "IBP_BLOCK_BYTES", 1 << 62)
    lo1, up1 = interval_bounds(model, x, eps=eps, norm=norm)
    torch.testing.assert_close(lo, lo1, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(up, up1, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(mb, margin_bounds(model, x, y, eps=eps, norm=norm), rtol=1e-6, atol=1e-6)


def test_training_keeps_its_batch_whole(calls):
    """With autograd on (certified training) the batch is one block, as before the blocks existed."""
    model = _models()["chain"].train()
    x = torch.rand(19, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    y = torch.randint(0, 5, (19,), generator=torch.Generator().manual_seed(4))
    (-margin_bounds(model, x, y, eps=0.05)).logsumexp(1).sum().backward()
    assert calls["n"] == 1
    with torch.no_grad():
        margin_bounds(model, x, y, eps=0.05)
    assert calls["n"] > 2


def test_crown_is_not_cut_by_the_ibp_blocks(calls):
    model = _models()["chain"]
    x = torch.rand(23, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    interval_bounds(model, x, eps=0.05, method="crown_ibp")
    assert calls["n"] == 1  # one IBP pass for the whole batch; CROWN cuts its own blocks


def test_block_size_comes_from_the_widest_layer():
    model = _models()["chain"]
    assert I._widest_activation(model, torch.rand(1, 1, 8, 8)) == 6 * 4 * 4  # the conv output, wider than 64 inputs
