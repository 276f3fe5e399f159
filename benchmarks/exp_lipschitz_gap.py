"""Is the certified-accuracy gap to deel-torchlip at ε = 1 its convolution? robustlab's side with a torchlip-style conv.

Run: ``nice .venv/bin/python benchmarks/exp_lipschitz_gap.py --seeds 0 1 4`` (one 2-epoch training per seed).

deel-torchlip's ``SpectralConv2d`` is not an orthogonal convolution: its kernel, reshaped to an ``(out, in·k²)`` matrix,
is Björck-orthonormalised and multiplied by ``1/k`` (``compute_lconv_coef`` without an input shape), zero padding —
1-Lipschitz because every pixel lies in at most ``k²`` patches (``‖conv‖ ≤ k·σ_max(W)/k``), but contracting in most
directions. ``ReshapedBjorckConv2d`` below is that layer on robustlab's :func:`~robustlab.models._orthogonal.bjorck`;
it is swapped into ``lipschitz_cnn`` for this experiment only (``conv="reshaped"``), with Björck linear layers, under
bench_lipschitz's protocol (MNIST t10k split, 4000 training images, hinge margin ``--margin``, Adam lr 3e-3 constant,
batch 128, 2 epochs, one thread). Printed: clean and certified L2 accuracy at 36/255, 0.5 and 1 (L = 1 declared, and
the sound ``certify.lipschitz_bound`` value of the trained network).
"""

from __future__ import annotations

import argparse
import os

import torch
from torch import nn

from robustlab import data, models, training
from robustlab.certify import lipschitz, lipschitz_bound
from robustlab.models import _lipschitz, _orthogonal
from robustlab.models._orthogonal import bjorck

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MNIST = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "datasets", "mnist-t10k"))
EPS = (36 / 255, 0.5, 1.0)


class ReshapedBjorckConv2d(nn.Conv2d):
    """deel-torchlip's SpectralConv2d: Björck on the ``(out, in·k²)`` reshaped kernel, times ``1/k``, zero padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        with torch.no_grad():
            nn.init.orthogonal_(self.weight.view(out_channels, -1))
            self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = bjorck(self.weight.view(self.out_channels, -1), 15).view_as(self.weight) / self.kernel_size[0]
        return nn.functional.conv2d(x, w, self.bias, padding=self.padding)

    def lipschitz_constant(self) -> float:
        """1: each pixel is in at most k² patches and the reshaped matrix has σ ≤ 1, scaled by 1/k."""
        return 1.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mnist-root", default=DEFAULT_MNIST)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--margin", type=float, default=1.0)
    p.add_argument("--conv", default="reshaped")
    p.add_argument("--linear", default="bjorck")
    p.add_argument("--prescale", default="frobenius", choices=["frobenius", "spectral"],
                   help="what every Björck iteration (conv and linear) starts from: W/‖(WᵀW)²‖^¼ (robustlab) or "
                        "W/σ_max (deel-torchlip's spectral norm)")
    p.add_argument("--tol", type=float, default=None,
                   help="BjorckLinear: stop at ‖W_k − W_k-1‖_F < tol (deel-torchlip: 1e-3)")
    p.add_argument("--start", default="frobenius", choices=["frobenius", "spectral"], help="BjorckLinear's start")
    p.add_argument("--grad-iters", type=int, default=None,
                   help="BjorckLinear: differentiate only the first N steps (deel-torchlip: 4)")
    p.add_argument("--n-iter", type=int, default=15, help="BjorckLinear: at most N steps")
    a = p.parse_args()
    torch.set_num_threads(1)
    _lipschitz.CONVS["reshaped"] = ReshapedBjorckConv2d
    if a.prescale == "spectral":
        plain_bjorck = _orthogonal.bjorck
        _orthogonal.bjorck = lambda w, n_iter=15, **kw: plain_bjorck(w, n_iter, **{**kw, "start": "spectral"})
    print(f"# exp_lipschitz_gap: conv {a.conv}, linear {a.linear}, Björck prescale {a.prescale}, hinge margin {a.margin}; "
          f"BjorckLinear n_iter {a.n_iter}, tol {a.tol}, start {a.start}, grad_iters {a.grad_iters}; "
          "bench_lipschitz's protocol")
    print("seed  clean   ε=0.141  ε=0.5    ε=1      sound L")
    for seed in a.seeds:
        d = data.load("mnist", root=a.mnist_root, use_test_split_as_train=0.8, seed=seed)
        torch.manual_seed(seed)
        model = models.create("lipschitz_cnn", input_shape=d.input_shape, num_classes=d.num_classes,
                              channels=(16, 32), hidden=(256,), conv=a.conv, linear=a.linear)
        for m in model.modules():
            if isinstance(m, _orthogonal.BjorckLinear):
                m.n_iter, m.tol, m.start, m.grad_iters = a.n_iter, a.tol, a.start, a.grad_iters
        training.fit(model, d.subset(n_train=4000), objective="lipschitz_margin",
                     objective_kw={"mode": "hinge", "margin": a.margin}, epochs=2, batch_size=128, optimizer="adam",
                     lr=3e-3, weight_decay=0.0, schedule="constant", progress=False, seed=seed, eval_every=0)
        model.eval()
        cert = lipschitz(model, d.x_test, d.y_test)
        # the sound bound of the same network with its layers as plain Conv2d/Linear (FFT / SVD), not the declared 1
        plain = nn.Sequential(*[_plain(m) for m in model])
        sound = lipschitz_bound(plain, tuple(d.input_shape)).value
        print(f"{seed:4d}  " + "  ".join(f"{v:7.3f}" for v in [cert.certified_accuracy(0.0)]
                                           + [cert.certified_accuracy(e) for e in EPS]) + f"  {sound:7.4f}", flush=True)


def _plain(m: nn.Module) -> nn.Module:
    """A layer's effective weights as a plain Conv2d/Linear (for the sound bound); other layers unchanged."""
    with torch.no_grad():
        if isinstance(m, ReshapedBjorckConv2d):
            out = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, padding=m.padding)
            out.weight.copy_(bjorck(m.weight.view(m.out_channels, -1), 15).view_as(m.weight) / m.kernel_size[0])
            out.bias.copy_(m.bias)
            return out
        if callable(getattr(m, "orthogonal_weight", None)):
            out = nn.Linear(m.in_features, m.out_features)
            out.weight.copy_(m.orthogonal_weight())
            out.bias.copy_(m.bias)
            return out
    return m


if __name__ == "__main__":
    main()
