"""Defences benchmark: cost per epoch of each objective and a clean / PGD accuracy table.

Run: ``nice .venv/bin/python benchmarks/bench_defences.py`` (about 5-10 minutes on 2 shared CPU cores).

1. Cost: wall time of one training epoch of each objective on the MNIST split, as a multiple of
   ``standard`` (expected about steps+1 for PGD-AT, steps+2 for TRADES/MART), best of ``--repeats``.
   Peer: the same PGD-AT epoch written as a plain loop around ``torchattacks.PGD`` (ratio ours / peer).
2. Accuracy: ``digits`` (8x8, eps 0.2) and the MNIST test set split 8000/2000 (eps 0.1), an MLP trained
   with each objective for a reduced number of epochs (``--epochs-digits``, ``--epochs-mnist``), then
   clean and PGD-20 accuracy on the test split with ``robustlab.attacks`` (random start, step 2.5 eps/20);
   the peer column is ``torchattacks.PGD`` with the same settings.

MNIST comes from ``robustlab.data.load("mnist", root=..., use_test_split_as_train=0.8)`` when the data
loader supports it; otherwise the IDX gz files are read here. ``--mnist-root`` defaults to
``../shared/datasets/mnist-t10k`` next to the repository.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from robustlab import attacks, data, models, training
from robustlab.data import ClassificationData

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MNIST = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "datasets", "mnist-t10k"))
TABLE_OBJECTIVES = ("standard", "pgd_at", "trades", "mart", "dro_at")
EXTRA_OBJECTIVES = ("smooth_adv_compsum", "ard", "mtard")


def _read_idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_mnist(root: str, train_fraction: float = 0.8, seed: int = 0) -> ClassificationData:
    try:
        return data.load("mnist", root=root, use_test_split_as_train=train_fraction, seed=seed)
    except (TypeError, ValueError, KeyError) as e:  # loader without that option: read the IDX files here
        print(f"# data.load('mnist') failed ({e}); reading the IDX files directly", file=sys.stderr)
    x = _read_idx(os.path.join(root, "t10k-images-idx3-ubyte.gz")).astype(np.float32) / 255.0
    y = _read_idx(os.path.join(root, "t10k-labels-idx1-ubyte.gz")).astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(y))
    n = int(round(train_fraction * len(y)))
    tr, te = perm[:n], perm[n:]
    xt = torch.from_numpy(x[:, None])
    yt = torch.from_numpy(y)
    return ClassificationData(xt[tr], yt[tr], xt[te], yt[te], 10, (1, 28, 28), [str(i) for i in range(10)],
                              "mnist-t10k-split", {"seed": seed, "train_fraction": train_fraction})


def make_model(d: ClassificationData, hidden: tuple[int, ...]) -> torch.nn.Module:
    torch.manual_seed(0)
    return models.create("mlp", input_shape=d.input_shape, num_classes=d.num_classes, hidden=hidden)


def objective_kwargs(name: str, eps: float, steps: int, teachers: dict[str, torch.nn.Module]) -> dict:
    base = {"eps": eps, "steps": steps}
    return {
        "standard": {},
        "pgd_at": base,
        "trades": {**base, "beta": 6.0},
        "mart": {**base, "beta": 5.0},
        "dro_at": {**base, "r": 1.0},
        "smooth_adv_compsum": {**base, "tau": 1.0, "nu": 0.3},
        "ard": {**base, "teacher": teachers.get("robust")},
        "mtard": {**base, "clean_teacher": teachers.get("clean"), "robust_teacher": teachers.get("robust")},
    }[name]


def train(d, name, kw, *, epochs, hidden, lr, batch_size=128):
    m = make_model(d, hidden)
    t0 = time.perf_counter()
    training.fit(m, d, objective=name, objective_kw=kw, epochs=epochs, batch_size=batch_size, lr=lr,
                 progress=False, seed=0, eval_every=0)
    return m.eval(), (time.perf_counter() - t0) / epochs


def accuracy(model, x, y) -> float:
    return float((training.predict_logits(model, x).argmax(1) == y).float().mean())


def worst_classes_accuracy(model, x, y, fraction=0.3) -> float:
    """Mean accuracy over the worst ``fraction`` of classes (RA-Tail-30 in the DRO-AT paper)."""
    pred = training.predict_logits(model, x).argmax(1)
    per_class = torch.stack([(pred[y == c] == c).float().mean() for c in torch.unique(y)])
    k = max(1, int(round(fraction * per_class.numel())))
    return float(per_class.sort().values[:k].mean())


def robust_accuracy(model, d, eps, steps=20) -> tuple[float, float, float]:
    step = 2.5 * eps / steps
    atk = attacks.get("pgd", norm="linf", eps=eps, step_size=step, steps=steps)
    x_adv = atk(model, d.x_test, d.y_test, generator=torch.Generator().manual_seed(0))
    ours = accuracy(model, x_adv, d.y_test)
    tail = worst_classes_accuracy(model, x_adv, d.y_test)
    peer = float("nan")
    try:
        import torchattacks

        torch.manual_seed(0)  # torchattacks draws its random start from the global RNG
        x_peer = torchattacks.PGD(model, eps=eps, alpha=step, steps=steps, random_start=True)(d.x_test, d.y_test)
        peer = accuracy(model, x_peer, d.y_test)
    except ImportError:
        pass
    return ours, peer, tail


def peer_pgd_at_epoch(d, hidden, eps, steps, lr, batch_size=128) -> float:
    """One PGD-AT epoch written as a plain loop around torchattacks.PGD (the peer for the cost ratio)."""
    import torchattacks

    m = make_model(d, hidden)
    opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    atk = torchattacks.PGD(m, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=True)
    perm = torch.randperm(d.x_train.shape[0], generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    m.train()
    for s in range(0, len(perm), batch_size):
        idx = perm[s:s + batch_size]
        x_adv = atk(d.x_train[idx], d.y_train[idx])  # torchattacks sets eval mode and restores it
        loss = F.cross_entropy(m(x_adv), d.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def cost_table(d, names, *, eps, steps, hidden, lr, repeats, teachers) -> list[str]:
    # Round-robin repeats so that load changes on a shared machine hit every objective alike; keep the best.
    teachers = {k: teachers.get(k) or make_model(d, hidden) for k in ("clean", "robust")}  # timing only
    times: dict[str, float] = {}
    peer = float("inf")
    for _ in range(repeats):
        for name in names:
            kw = objective_kwargs(name, eps, steps, teachers)
            times[name] = min(times.get(name, float("inf")), train(d, name, kw, epochs=1, hidden=hidden, lr=lr)[1])
        try:
            peer = min(peer, peer_pgd_at_epoch(d, hidden, eps, steps, lr))
        except ImportError:  # no peer installed
            peer = float("nan")
    std = times["standard"]
    lines = [f"Cost per epoch on {d.name} ({d.x_train.shape[0]} train, MLP {hidden}, batch 128, "
             f"K = {steps} attack steps; best of {repeats}):", "",
             "| objective | s / epoch | x standard | documented passes_per_step |", "|---|---|---|---|"]
    from robustlab.training import objectives

    for name in names:
        pps = objectives.get(name, **objective_kwargs(name, eps, steps, teachers)).passes_per_step
        lines.append(f"| {name} | {times[name]:.3f} | {times[name] / std:.1f} | {pps:g} |")
    lines.append(f"| peer: torchattacks.PGD + plain loop (PGD-AT) | {peer:.3f} | {peer / std:.1f} | {steps + 1} |")
    lines += ["", f"PGD-AT ours / peer wall time: {times['pgd_at'] / peer:.2f}"]
    return lines


def accuracy_table(d, names, *, eps, steps, epochs, hidden, lr, teachers) -> list[str]:
    lines = [f"{d.name}: {d.x_train.shape[0]} train / {d.x_test.shape[0]} test, MLP {hidden}, {epochs} epochs "
             f"(SGD lr {lr}, cosine, batch 128), train attack eps {eps} K={steps}; PGD-20 eval at eps {eps}:", "",
             "| objective | clean acc | PGD-20 acc (robustlab) | PGD-20 acc (torchattacks peer) "
             "| PGD-20 acc, worst 30% classes | s / epoch |",
             "|---|---|---|---|---|---|"]
    for name in names:
        kw = objective_kwargs(name, eps, steps, teachers)
        m, per_epoch = train(d, name, kw, epochs=epochs, hidden=hidden, lr=lr)
        clean = accuracy(m, d.x_test, d.y_test)
        ours, peer, tail = robust_accuracy(m, d, eps)
        lines.append(f"| {name} | {clean:.3f} | {ours:.3f} | {peer:.3f} | {tail:.3f} | {per_epoch:.2f} |")
        print(lines[-1], flush=True)
        if name == "standard":
            teachers["clean"] = m
        if name == "pgd_at":
            teachers["robust"] = m
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mnist-root", default=DEFAULT_MNIST)
    p.add_argument("--epochs-digits", type=int, default=30)
    p.add_argument("--epochs-mnist", type=int, default=10)
    p.add_argument("--steps", type=int, default=10, help="training attack steps K")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cost-only", action="store_true", help="only the MNIST cost table")
    p.add_argument("--extra", action="store_true", help="also smooth_adv_compsum, ard, mtard")
    p.add_argument("--skip-mnist", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    p.add_argument("--out", default=None, help="also write the markdown here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    names = TABLE_OBJECTIVES + (EXTRA_OBJECTIVES if a.extra else ())
    out = [f"# bench_defences  (torch {torch.__version__}, {platform.processor() or platform.machine()}, "
           f"{torch.get_num_threads()} threads)", ""]
    digits = data.load("digits")
    train(digits, "pgd_at", {"eps": 0.1, "steps": 2}, epochs=1, hidden=(64,), lr=0.05)  # warm-up (lazy init)
    teachers: dict[str, torch.nn.Module] = {}
    if not a.cost_only:
        out += accuracy_table(digits, names, eps=0.2, steps=a.steps, epochs=a.epochs_digits, hidden=(64,),
                              lr=0.05, teachers=teachers) + [""]
    if not a.skip_mnist:
        if not os.path.isdir(a.mnist_root):
            print(f"# MNIST not found at {a.mnist_root}; skipping it", file=sys.stderr)
        else:
            mnist = load_mnist(a.mnist_root)
            teachers = {}
            if not a.cost_only:
                out += accuracy_table(mnist, names, eps=0.1, steps=a.steps, epochs=a.epochs_mnist,
                                      hidden=(256, 256), lr=0.05, teachers=teachers) + [""]
            out += cost_table(mnist, names, eps=0.1, steps=a.steps, hidden=(256, 256), lr=0.05,
                              repeats=a.repeats, teachers=teachers)
    text = "\n".join(out)
    print(text)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
