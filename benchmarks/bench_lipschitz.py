"""Lipschitz networks benchmark: robustlab's Cayley networks vs deel-torchlip on MNIST.

Run: ``nice .venv/bin/python benchmarks/bench_lipschitz.py`` (about 2 minutes on 2 shared CPU cores).

Both sides train the same architecture (``lipschitz_cnn``: [3x3 orthogonal conv - MaxMin - PixelUnshuffle(2)] x 2,
then a 256-unit orthogonal/spectral MLP head; or ``--arch mlp``) on the MNIST t10k file split 8000/2000 (the
first ``--n-train`` training points), with the same multiclass hinge loss (margin ``--margin``), Adam at a constant
learning rate without weight decay (the peer's loop; ``--weight-decay``/``--schedule`` change robustlab's side only:
``fit``'s defaults 5e-4 and "cosine" cost 0.03 certified accuracy at 36/255), batch size and epochs, one torch
thread each, one after the other. robustlab: ``fit(objective="lipschitz_margin", mode="hinge")`` on Cayley layers
(exactly orthogonal; ``--conv soc``/``--conv bcop``/``--linear bjorck`` for the SOC or BCOP convolution / Björck
linear layers — ``--conv bcop --linear bjorck`` is the parametrisation closest to the peer's: Björck-orthonormalised
matrices from an orthogonal initialisation); deel-torchlip: SpectralConv2d/SpectralLinear (spectral
normalisation + Björck) with ``HingeMulticlassLoss``. Printed: wall and CPU (process) seconds per epoch (ratios
ours/peer; on a shared machine the CPU figure is the one to read), clean and
certified L2 accuracy at ε = 36/255, 0.5, 1.0 with radius margin/(√2·L): for robustlab L = 1 by construction
(×(1+1e-3) for float rounding); for torchlip L = 1 as the library declares it, and L from robustlab's sound
per-layer bound (``certify.lipschitz_bound``, exact SVD / FFT) on torchlip's exported weights.

The peer runs in its own environment (``--peer-python``, default ``/tmp/torchlip/bin/python``; install with
``python -m venv /tmp/torchlip && /tmp/torchlip/bin/pip install -c constraints.txt deel-torchlip``); when it
is absent (or ``--peer-python none``) the script runs robustlab alone and says so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import tempfile
import time

import torch
from torch import nn

from robustlab import data, models, training
from robustlab.certify import lipschitz, lipschitz_bound
from robustlab.models import _lipschitz
from robustlab.models._lipschitz import MaxMin

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MNIST = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "datasets", "mnist-t10k"))
EPS = (36 / 255, 0.5, 1.0)


def _cert(logits: torch.Tensor, y: torch.Tensor, lip: float) -> list[float]:
    z = logits.double()
    margin = z.gather(1, y[:, None]).squeeze(1) - z.scatter(1, y[:, None], -math.inf).amax(1)
    radius = margin / (math.sqrt(2) * lip)
    return [float((radius > 0).double().mean())] + [float((radius > e).double().mean()) for e in EPS]


def plain_layout(arch: str, input_shape, num_classes: int, channels, hidden) -> nn.Sequential:
    """``lipschitz_cnn`` / ``lipschitz_mlp``'s layout with plain Conv2d / Linear layers (torch's initialisation):
    conv 3x3 - MaxMin - PixelUnshuffle(2) per channel width (``arch="cnn"``), then Linear - MaxMin, then the head."""
    c, h, w = input_shape
    layers: list[nn.Module] = []
    if arch == "cnn":
        for ch in channels:
            layers += [nn.Conv2d(c, ch, 3, padding=1), MaxMin(), nn.PixelUnshuffle(2)]
            c, h, w = 4 * ch, h // 2, w // 2
    layers.append(nn.Flatten())
    d = c * h * w
    for units in hidden:
        layers += [nn.Linear(d, units), MaxMin()]
        d = units
    layers.append(nn.Linear(d, num_classes))
    return nn.Sequential(*layers)


def _rebuild(state: dict, arch: str, input_shape, num_classes: int, channels, hidden) -> nn.Module:
    """torchlip's exported model as plain layers (same GroupSort2 = MaxMin pairing, same PixelUnshuffle)."""
    model = plain_layout(arch, input_shape, num_classes, channels, hidden)
    model.load_state_dict(state)
    return model.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mnist-root", default=DEFAULT_MNIST)
    p.add_argument("--arch", default="cnn", choices=["cnn", "mlp"])
    p.add_argument("--n-train", type=int, default=4000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--margin", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="several seeds, one after the other, then the mean per column and the paired difference "
                        "ours − peer (mean ± standard error over the seeds where both train)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="robustlab only (the peer has none)")
    p.add_argument("--schedule", default="constant", choices=["constant", "cosine", "step"], help="robustlab only")
    p.add_argument("--conv", default="cayley", choices=sorted(_lipschitz.CONVS))
    p.add_argument("--linear", default="cayley", choices=sorted(_lipschitz.LINEARS))
    p.add_argument("--peer-python", default="/tmp/torchlip/bin/python")
    p.add_argument("--peer-eps-bjorck", type=float, default=1e-3,
                   help="the peer's Björck stopping tolerance on ‖W_k − W_k-1‖_F (torchlip's default 1e-3)")
    p.add_argument("--peer-eps-bjorck-conv", type=float, default=None, help="the same, convolutions only")
    p.add_argument("--peer-eps-bjorck-linear", type=float, default=None, help="the same, linear layers only")
    p.add_argument("--peer-bjorck-detach", type=int, default=4,
                   help="the peer's Björck iterations with a full gradient (torchlip's DEFAULT_BJORK_DETACH 4; "
                        "15 = exact gradient of its 15 iterations)")
    p.add_argument("--skip-ours", action="store_true", help="train the peer only (peer ablations)")
    a = p.parse_args()
    torch.set_num_threads(1)
    rows = {seed: run_seed(a, seed) for seed in (a.seeds or [a.seed])}
    if len(rows) > 1:
        summarise(rows)


def summarise(rows: dict[int, tuple[list[float] | None, list[float] | None]]) -> None:
    """Mean per column of each side, and the paired difference ours − peer over the seeds where both trained."""
    certified = [s for s, (_, q) in rows.items() if q is not None]
    both = [s for s in certified if rows[s][0] is not None]
    print(f"# {len(rows)} seeds {sorted(rows)}; the peer certified on {len(certified)} of them {certified}")
    for i, col in enumerate(["clean"] + [f"ε={e:.3g}" for e in EPS]):
        parts = []
        ours = [o[i] for o, _ in rows.values() if o is not None]
        if ours:
            parts.append(f"robustlab mean {statistics.fmean(ours):.3f} (sd {_sd(ours):.3f})")
        if certified:
            peer = [rows[s][1][i] for s in certified]
            parts.append(f"peer mean {statistics.fmean(peer):.3f} (sd {_sd(peer):.3f})")
        if both:
            diff = [rows[s][0][i] - rows[s][1][i] for s in both]
            parts.append(f"ours − peer on the same seeds {statistics.fmean(diff):+.3f} ± "
                         f"{_sd(diff) / math.sqrt(len(diff)):.3f} (s.e.), ours ahead on {sum(x > 0 for x in diff)}/"
                         f"{len(diff)}")
        print(f"# {col:8s} " + "; ".join(parts))


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else float("nan")


def run_seed(a: argparse.Namespace, seed: int) -> tuple[list[float] | None, list[float] | None]:
    """Train and certify both sides at one seed; print the rows; return (ours, peer at L = 1), None where absent."""
    eps_conv = a.peer_eps_bjorck if a.peer_eps_bjorck_conv is None else a.peer_eps_bjorck_conv
    eps_linear = a.peer_eps_bjorck if a.peer_eps_bjorck_linear is None else a.peer_eps_bjorck_linear
    ours = None
    d = data.load("mnist", root=a.mnist_root, use_test_split_as_train=0.8, seed=seed)
    xtr, ytr, xte, yte = d.x_train[:a.n_train], d.y_train[:a.n_train], d.x_test, d.y_test
    channels, hidden = (16, 32), (256,)
    name, kw = ("lipschitz_cnn", {"channels": channels, "hidden": hidden, "conv": a.conv, "linear": a.linear}) \
        if a.arch == "cnn" else ("lipschitz_mlp", {"hidden": (512, 256), "linear": a.linear})
    if a.arch == "mlp":
        channels, hidden = (), (512, 256)
    print(f"# bench_lipschitz: {a.arch}, MNIST t10k split, {xtr.shape[0]} train / {xte.shape[0]} test, "
          f"{a.epochs} epochs, batch {a.batch_size}, Adam lr {a.lr} ({a.schedule}, weight decay {a.weight_decay}), "
          f"hinge margin {a.margin}, seed {seed}, conv {a.conv}, linear {a.linear}; peer Björck eps "
          f"{eps_conv:g} (conv) {eps_linear:g} (linear), detach after {a.peer_bjorck_detach}; "
          f"torch {torch.__version__}, {platform.machine()}, 1 thread")

    if not a.skip_ours:
        torch.manual_seed(seed)
        model = models.create(name, input_shape=d.input_shape, num_classes=d.num_classes, **kw)
        sub = d.subset(n_train=a.n_train)
        t0, c0 = time.perf_counter(), time.process_time()
        training.fit(model, sub, objective="lipschitz_margin", objective_kw={"mode": "hinge", "margin": a.margin},
                     epochs=a.epochs, batch_size=a.batch_size, optimizer="adam", lr=a.lr, weight_decay=a.weight_decay,
                     schedule=a.schedule, progress=False, seed=seed, eval_every=0)
        ours_s = (time.perf_counter() - t0) / a.epochs  # fit's wall time, set-up included
        ours_cpu = (time.process_time() - c0) / a.epochs
        cert = lipschitz(model.eval(), xte, yte)
        ours = [cert.certified_accuracy(0.0)] + [cert.certified_accuracy(e) for e in EPS]

    peer = None
    if os.path.exists(a.peer_python):
        with tempfile.TemporaryDirectory() as tmp:
            torch.save({"x_train": xtr, "y_train": ytr, "x_test": xte}, os.path.join(tmp, "data.pt"))
            req = {"arch": a.arch, "epochs": a.epochs, "batch_size": a.batch_size, "lr": a.lr, "margin": a.margin,
                   "seed": seed, "threads": 1, "num_classes": d.num_classes, "channels": list(channels),
                   "hidden": list(hidden), "eps_bjorck_conv": eps_conv, "eps_bjorck_linear": eps_linear,
                   "bjorck_detach": a.peer_bjorck_detach}
            with open(os.path.join(tmp, "request.json"), "w") as fh:
                json.dump(req, fh)
            t0 = time.perf_counter()
            proc = subprocess.run([a.peer_python, os.path.join(HERE, "_torchlip_peer.py"), tmp], capture_output=True,
                                  text=True)
            if proc.returncode == 0:
                peer = torch.load(os.path.join(tmp, "result.pt"))
                peer["wall_s"] = time.perf_counter() - t0
            else:
                print(f"# deel-torchlip peer failed: {proc.stderr.strip().splitlines()[-1:]}")
    else:
        print(f"# deel-torchlip is absent ({a.peer_python} not found): robustlab alone")

    cols = "clean   " + "  ".join(f"ε={e:.3g}".ljust(7) for e in EPS)
    print(f"{'':40s} s/epoch  cpu s/ep  {cols}")
    if not a.skip_ours:
        label = f"robustlab ({a.conv}/{a.linear}, L={cert.bound.value:.4g})"
        print(f"{label:40s} {ours_s:7.1f}  {ours_cpu:8.1f}  "
              + "  ".join(f"{v:7.3f}" for v in ours))
    if peer is not None:
        peer_s = sum(peer["epoch_s"]) / len(peer["epoch_s"])
        peer_cpu = sum(peer["epoch_cpu_s"]) / len(peer["epoch_cpu_s"])
        claimed = _cert(peer["logits"], yte, 1.0)
        bad = [k for k, v in peer["state"].items() if not bool(torch.isfinite(v).all())]
        if bad or not bool(torch.isfinite(peer["logits"]).all()):
            print(f"{'deel-torchlip ' + str(peer['version']) + ' diverged':40s} {peer_s:7.1f}  {peer_cpu:8.1f}  "
                  f"non-finite weights after training ({', '.join(bad) or 'logits'}): no certificate")
            return ours, None
        vanilla = _rebuild(peer["state"], a.arch, tuple(d.input_shape), d.num_classes, channels, hidden)
        bound = lipschitz_bound(vanilla, tuple(d.input_shape))
        with torch.no_grad():
            agree = float((vanilla(xte).argmax(1) == peer["logits"].argmax(1)).double().mean())
        sound = _cert(peer["logits"], yte, bound.value * (1 + 1e-3))
        print(f"{'deel-torchlip ' + str(peer['version']) + ' (L=1 declared)':40s} {peer_s:7.1f}  {peer_cpu:8.1f}  "
              + "  ".join(f"{v:7.3f}" for v in claimed))
        label = f"deel-torchlip (L={bound.value:.4f}, robustlab bound)"
        print(f"{label:40s} {'':7s}  {'':8s}  "
              + "  ".join(f"{v:7.3f}" for v in sound))
        if not a.skip_ours:
            print(f"# time ratio ours/peer: wall {ours_s / peer_s:.2f}, CPU {ours_cpu / peer_cpu:.2f}; rebuilt peer "
                  f"model agrees with its logits on {100 * agree:.1f}% of the test points")
        return ours, claimed
    return ours, None


if __name__ == "__main__":
    main()
