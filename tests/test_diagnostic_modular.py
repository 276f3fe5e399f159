"""The ``modular`` data set and memorization_report."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab import data, shift


def _operands(x: torch.Tensor, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    return x[:, :p].argmax(1), x[:, p:].argmax(1)


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_labels_are_modular_arithmetic(op):
    p = 7
    d = data.load("modular", p=p, op=op, train_fraction=0.6, seed=1)
    x = torch.cat([d.x_train, d.x_test])
    y = torch.cat([torch.tensor(d.meta["y_train_clean"]), d.y_test])
    a, b = _operands(x, p)
    assert bool((x.sum(1) == 2).all())
    for ai, bi, yi in zip(a.tolist(), b.tolist(), y.tolist()):
        if op == "add":
            assert (ai + bi) % p == yi
        elif op == "sub":
            assert (ai - bi) % p == yi
        elif op == "mul":
            assert (ai * bi) % p == yi
        else:
            assert bi != 0 and (yi * bi) % p == ai
    n_pairs = p * p if op != "div" else p * (p - 1)
    assert x.shape[0] == n_pairs and len({tuple(r) for r in torch.stack([a, b], 1).tolist()}) == n_pairs
    assert d.x_train.shape[0] == round(0.6 * n_pairs)


def test_corrupted_labels():
    d = data.load("modular", p=13, corrupt_fraction=0.25, seed=0)
    corrupted = torch.tensor(d.meta["corrupted"])
    clean = torch.tensor(d.meta["y_train_clean"])
    assert int(corrupted.sum()) == round(0.25 * d.y_train.shape[0])
    assert bool((d.y_train[corrupted] != clean[corrupted]).all())
    assert torch.equal(d.y_train[~corrupted], clean[~corrupted])
    with pytest.raises(ValueError, match="prime"):
        data.load("modular", p=12, op="div")
    with pytest.raises(ValueError, match="op"):
        data.load("modular", op="pow")


class Oracle(nn.Module):
    """Predicts (a + b) mod p exactly: a perfectly generalizing, non-memorizing model."""

    def __init__(self, p: int) -> None:
        super().__init__()
        self.p = p

    def forward(self, x):
        a, b = _operands(x, self.p)
        return nn.functional.one_hot((a + b) % self.p, self.p).float()


class Memorizer(nn.Module):
    """Looks up the (possibly corrupted) training label; guesses class 0 elsewhere."""

    def __init__(self, d) -> None:
        super().__init__()
        self.keys = d.x_train
        self.labels = d.y_train
        self.p = d.num_classes

    def forward(self, x):
        match = (x[:, None, :] == self.keys[None]).all(-1)
        found = match.any(1)
        lab = torch.where(found, self.labels[match.float().argmax(1)], torch.zeros_like(found, dtype=torch.long))
        return nn.functional.one_hot(lab, self.p).float()


def test_memorization_report():
    d = data.load("modular", p=11, corrupt_fraction=0.2, seed=2)
    r = shift.memorization_report(Oracle(11), d)
    assert r == {"train_clean": 1.0, "train_corrupted_memorized": 0.0, "train_corrupted_true": 1.0, "test": 1.0}
    m = shift.memorization_report(Memorizer(d), d)
    assert m["train_clean"] == 1.0 and m["train_corrupted_memorized"] == 1.0 and m["train_corrupted_true"] == 0.0
    assert m["test"] == pytest.approx(float((d.y_test == 0).float().mean()))
    clean = data.load("modular", p=5)
    r = shift.memorization_report(Oracle(5), clean)
    assert r["train_corrupted_memorized"] != r["train_corrupted_memorized"]  # NaN: no corrupted rows
