"""Plain-torch models shared by ``bench_certify.py`` and its auto_LiRPA peer process (no robustlab import).

``mlp``: 784-256-256-10; ``cnn``: the 4-layer CNN of the CROWN-IBP paper (two stride-2 4x4 convolutions,
a 100-unit dense layer); ``rescnn``: a small residual CNN written as a module with its own ``forward``
(not an ``nn.Sequential``), so robustlab bounds it through the torch.fx graph interpreter.
"""

from __future__ import annotations

import torch
from torch import nn


class ResCNN(nn.Module):
    """conv 3x3 (8) - ReLU - [x + conv(ReLU(conv(x)))] - ReLU - conv 4x4 stride 2 (16) - ReLU - dense 100 - dense 10."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 16, 4, stride=2, padding=1)
        self.fc1 = nn.Linear(16 * 14 * 14, 100)
        self.fc2 = nn.Linear(100, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv0(x))
        h = torch.relu(h + self.conv2(torch.relu(self.conv1(h))))
        h = torch.relu(self.down(h))
        h = torch.relu(self.fc1(torch.flatten(h, 1)))
        return self.fc2(h)


def build(name: str) -> nn.Module:
    """One of ``mlp``, ``cnn``, ``rescnn`` for 1x28x28 inputs and 10 classes (seeded init)."""
    torch.manual_seed(0)
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                             nn.Linear(256, 10))
    if name == "cnn":
        return nn.Sequential(nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 4, stride=2, padding=1),
                             nn.ReLU(), nn.Flatten(), nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10))
    if name == "rescnn":
        return ResCNN()
    raise ValueError(f"unknown benchmark model {name!r}")


def count_ops(fn) -> int:
    """Number of aten ops one call of ``fn`` dispatches from Python (torch.profiler, CPU; ops called inside
    another aten op, such as a convolution's per-sample loop, are not counted)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()

    def top(e) -> bool:
        p = e.cpu_parent
        return p is None or not p.name.startswith("aten::")

    return sum(1 for e in prof.events() if e.name.startswith("aten::") and top(e))
