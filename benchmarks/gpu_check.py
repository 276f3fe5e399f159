"""One prepared GPU check (issue 13, "GPU"): PreAct ResNet-18 on CIFAR-shaped synthetic data, a few minutes on a GPU.

1. PGD-AT epoch time (ε 8/255, step 2/255, 10 steps; SGD lr 0.1, constant schedule): ``fit(precision="fp32")``,
   ``fit(precision="bf16")`` and a hand-written PGD-AT loop (randperm, uniform start, sign steps, projection,
   cross-entropy step: the reference AT code's inner loop), all from the same initial weights. Ratios to the
   hand loop are printed (goal for fp32: close to 1; bf16 should be faster on a GPU with bf16 tensor cores).
2. PGD-20 throughput (images/s, eval mode, ε 8/255, step 2/255, random start) of ``robustlab.attacks`` and of
   ``torchattacks.PGD`` when it is importable; the ratio is printed.

Each timing is the median of ``--repeats`` runs after one warm-up, with ``torch.cuda.synchronize`` around it on
CUDA. ``--smoke`` shrinks everything (width 4, 32 images, 1 PGD step in training, no warm-up) so the script runs on a
CPU in well under a minute: it checks that the script works, not the speed of anything.

Run: ``.venv/bin/python benchmarks/gpu_check.py [--device cuda] [--n 5120] [--repeats 3] [--smoke]``
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from robustlab import attacks, models
from robustlab.data import ClassificationData
from robustlab.training import fit

SHAPE = (3, 32, 32)
NUM_CLASSES = 10
EPS, STEP = 8 / 255, 2 / 255


def synthetic(n: int, seed: int = 0) -> ClassificationData:
    """CIFAR-shaped synthetic set: class-dependent colour and a low-frequency pattern plus noise, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, NUM_CLASSES, (2 * n,), generator=g)
    proto = torch.rand(NUM_CLASSES, 3, 4, 4, generator=g)
    x = F.interpolate(proto[y], size=SHAPE[1:], mode="bilinear", align_corners=False)
    x = (0.7 * x + 0.3 * torch.rand(2 * n, *SHAPE, generator=g)).clamp(0, 1)
    return ClassificationData(x_train=x[:n], y_train=y[:n], x_test=x[n:], y_test=y[n:], num_classes=NUM_CLASSES,
                              input_shape=SHAPE, class_names=[str(c) for c in range(NUM_CLASSES)],
                              name="cifar_shaped_synthetic")


def hand_pgd_at_epoch(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, bs: int, steps: int,
                      seed: int) -> None:
    """The minimal PGD-AT epoch (Madry et al. 2018), float32, data already on the model's device."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(x.shape[0], generator=gen).to(x.device)
    for start in range(0, x.shape[0], bs):
        idx = perm[start:start + bs]
        xb, yb = x[idx], y[idx]
        model.eval()  # the inner maximisation with fixed BN statistics, as fit's pgd_at objective
        delta = (torch.rand_like(xb) * 2 - 1) * EPS
        x_adv = (xb + delta).clamp(0, 1)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            grad, = torch.autograd.grad(F.cross_entropy(model(x_adv), yb), x_adv)
            x_adv = x_adv.detach() + STEP * grad.sign()
            x_adv = torch.min(torch.max(x_adv, xb - EPS), xb + EPS).clamp(0, 1)
        model.train()
        loss = F.cross_entropy(model(x_adv.detach()), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: bool = True) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` runs after one warm-up (synchronised on CUDA)."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    """Parse the options, run both checks and print the tables."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--n", type=int, default=5120, help="training images per epoch (and attacked images)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="PGD steps in training")
    p.add_argument("--width", type=int, default=64, help="PreAct ResNet-18 base width")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--smoke", action="store_true", help="tiny sizes: a CPU check that the script runs")
    args = p.parse_args(argv)
    if args.smoke:
        args.n, args.batch_size, args.steps, args.width, args.repeats = 32, 32, 1, 4, 1
    device = torch.device(args.device)
    warm = not args.smoke  # the smoke run skips the warm-up runs
    torch.backends.cudnn.benchmark = device.type == "cuda"
    data = synthetic(args.n)
    torch.manual_seed(0)
    init = models.create("preact_resnet18", input_shape=SHAPE, num_classes=NUM_CLASSES, width=args.width)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}; PreAct ResNet-18 width {args.width}; {args.n} images 3x32x32, batch {args.batch_size}; "
          f"torch {torch.__version__}{'; SMOKE RUN (sizes shrunk, timings meaningless)' if args.smoke else ''}")

    obj_kw = {"eps": EPS, "step_size": STEP, "steps": args.steps}

    def run_fit(precision: str) -> Callable[[], object]:
        return lambda: fit(copy.deepcopy(init), data, objective="pgd_at", objective_kw=obj_kw, epochs=1,
                           batch_size=args.batch_size, lr=0.1, schedule="constant", eval_every=0,
                           progress=False, device=device, precision=precision, seed=0)

    x_dev, y_dev = data.x_train.to(device), data.y_train.to(device)

    def run_hand() -> None:
        hand_pgd_at_epoch(copy.deepcopy(init).to(device), x_dev, y_dev, bs=args.batch_size, steps=args.steps,
                          seed=0)

    rows = [("hand-written PGD-AT loop (fp32)", timed(run_hand, device, args.repeats, warm)),
            ('fit(objective="pgd_at", precision="fp32")', timed(run_fit("fp32"), device, args.repeats, warm)),
            ('fit(objective="pgd_at", precision="bf16")', timed(run_fit("bf16"), device, args.repeats, warm))]
    hand = rows[0][1]
    print(f"\nPGD-AT epoch ({args.steps} steps), median of {args.repeats}")
    print(f"{'runner':<44} {'s/epoch':>9} {'ratio vs hand':>14}")
    for label, t in rows:
        print(f"{label:<44} {t:9.3f} {t / hand:14.3f}")
    print(f"bf16 / fp32 (fit): {rows[2][1] / rows[1][1]:.3f}")

    model = copy.deepcopy(init).to(device).eval()
    x_eval, y_eval = data.x_test.to(device), data.y_test.to(device)
    ours = attacks.get("pgd", eps=EPS, step_size=STEP, steps=20)
    gen = torch.Generator(device=device).manual_seed(0)
    results = [("robustlab attacks.get('pgd')", timed(lambda: ours(model, x_eval, y_eval, generator=gen),
                                                      device, args.repeats, warm))]
    try:
        import torchattacks
    except ImportError:
        torchattacks = None
    if torchattacks is not None:
        ta = torchattacks.PGD(model, eps=EPS, alpha=STEP, steps=20, random_start=True)
        results.append(("torchattacks.PGD", timed(lambda: ta(x_eval, y_eval), device, args.repeats, warm)))
    print(f"\nPGD-20 on {x_eval.shape[0]} images, median of {args.repeats}")
    print(f"{'attack':<32} {'images/s':>10}")
    for label, t in results:
        print(f"{label:<32} {x_eval.shape[0] / t:10.1f}")
    if len(results) == 2:
        print(f"robustlab / torchattacks throughput: {results[1][1] / results[0][1]:.3f}")
    else:
        print("torchattacks not importable: no comparison")


if __name__ == "__main__":
    main()
