"""Per-step trace of consistency-denoiser training in exp_denoised_smoothing.py (σ = 0.25), before and after the
BatchNorm fix of the teacher pass, with the controlled variants that located the loss excursion.

Runs the stages of exp_denoised_smoothing.py that precede the consistency training (base LeNet, MSE pre-training,
FO, ZO-AE-DS: they consume the same generator stream), then trains the consistency denoiser from that state once
per variant and prints the per-step loss, its two KL terms, the gradient norm, the epoch means and the noisy
accuracy base(D(x + δ)) on 500 test points:

* ``fixed``: the library as it is (teacher pass on batch statistics, running statistics untouched);
* ``running_teacher``: the earlier teacher pass, BatchNorm on its running statistics (eval mode);
* ``running_teacher_skip_small``: the same, without the optimiser step of each epoch's last, smaller batch;
* ``running_teacher_no_bn_small``: the same, that batch not updating the running statistics;
* ``running_teacher_clip``: the same with the gradient norm clipped at 1.

    .venv/bin/python benchmarks/exp_denoised_consistency_trace.py [--variants fixed,running_teacher] [--json t.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from robustlab import data, models, training
from robustlab.defences import DenoisedSmoothing
from robustlab.defences import _denoised as dmod

VARIANTS = ("fixed", "running_teacher", "running_teacher_skip_small", "running_teacher_no_bn_small",
            "running_teacher_clip")


@contextmanager
def _running_teacher(module: nn.Module) -> Iterator[None]:
    """The earlier teacher pass: BatchNorm layers in eval mode (running statistics) inside the block."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for m in norms:
        m.eval()
    try:
        yield
    finally:
        for m in norms:
            m.train(True)


def _trace(variant: str, base: nn.Module, den: nn.Module, gen_state: torch.Tensor, x: torch.Tensor,
           xt: torch.Tensor, yt: torch.Tensor, sigma: float, epochs: int, batch_size: int) -> dict[str, Any]:
    den = copy.deepcopy(den)
    g = torch.Generator()
    g.set_state(gen_state)
    norms = [m for m in den.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    steps: list[dict[str, float]] = []
    kls: list[float] = []
    sq = [0.0]
    saved = (dmod._frozen_norm, DenoisedSmoothing._consistency_step, torch.optim.Adam.step, dmod.F.kl_div)
    orig_step, orig_adam, orig_kl = saved[1], saved[2], saved[3]

    def kl_div(*args: Any, **kw: Any) -> torch.Tensor:
        v = orig_kl(*args, **kw)
        kls.append(float(v.detach()))
        return v

    def step(self: DenoisedSmoothing, xb: torch.Tensor, yb: Any, noise: torch.Tensor, res: Any) -> torch.Tensor:
        small = xb.shape[0] < batch_size
        momenta = [m.momentum for m in norms]
        if variant == "running_teacher_no_bn_small" and small:
            for m in norms:
                m.momentum = 0.0
        try:
            v = orig_step(self, xb, yb, noise, res)
        finally:
            for m, mo in zip(norms, momenta):
                m.momentum = mo
        steps.append({"n": int(xb.shape[0]), "loss": float(v.detach()), "kl_teacher": kls[-2], "kl_clean": kls[-1]})
        return v

    def adam_step(self: torch.optim.Adam, *args: Any, **kw: Any) -> Any:
        steps[-1]["grad_norm"] = sq[0] ** 0.5
        sq[0] = 0.0
        if variant == "running_teacher_skip_small" and steps[-1]["n"] < batch_size:
            return None
        if variant == "running_teacher_clip":
            nn.utils.clip_grad_norm_([p for group in self.param_groups for p in group["params"]], 1.0)
        return orig_adam(self, *args, **kw)

    hooks = [p.register_hook(lambda gr: sq.__setitem__(0, sq[0] + float(gr.square().sum())) or gr)
             for p in den.parameters()]
    if variant != "fixed":
        dmod._frozen_norm = _running_teacher
    DenoisedSmoothing._consistency_step = step  # type: ignore[method-assign]
    torch.optim.Adam.step = adam_step  # type: ignore[method-assign]
    dmod.F.kl_div = kl_div
    try:
        cons = DenoisedSmoothing(base, den, sigma)
        fit = cons.fit(x, method="consistency", levels=4, epochs=epochs, lr=1e-3, batch_size=batch_size, generator=g)
    finally:
        dmod._frozen_norm, DenoisedSmoothing._consistency_step, torch.optim.Adam.step, dmod.F.kl_div = saved
        for h in hooks:
            h.remove()
    with torch.no_grad():
        noisy = xt + sigma * torch.randn(xt.shape, generator=torch.Generator().manual_seed(5))
        acc = float((cons(noisy).argmax(1) == yt).float().mean())
    return {"history": fit.history, "noisy_acc": acc, "steps": steps}


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=os.path.join(here, "..", "..", "shared", "datasets", "mnist-t10k"))
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    sigma, epochs, batch_size = 0.25, 2, 64  # exp_denoised_smoothing.py --n-train 2000 --epochs 2 --sigma 0.25
    d = data.load("mnist", root=a.root, use_test_split_as_train=0.8, seed=a.seed).subset(n_train=2000)
    x, shape = d.x_train, d.input_shape
    t0 = time.time()
    torch.manual_seed(a.seed)
    base = models.create("lenet", input_shape=shape, num_classes=10)
    training.fit(base, d, epochs=epochs + 2, batch_size=64, lr=0.05, progress=False, seed=a.seed)
    base.eval()
    g = torch.Generator().manual_seed(a.seed)
    torch.manual_seed(a.seed)
    den = models.create("dncnn", input_shape=shape, num_classes=10, width=16, depth=5)
    DenoisedSmoothing(base, den, sigma).fit(x, method="mse", epochs=epochs, lr=2e-3, generator=g)
    DenoisedSmoothing(base, copy.deepcopy(den), sigma).fit(x, method="fo", loss="stability", epochs=epochs, lr=1e-3,
                                                           generator=g)

    def black_box(z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return base(z)

    torch.manual_seed(a.seed)
    ae = models.create("conv_autoencoder", input_shape=shape, num_classes=10, width=16, latent_channels=4)
    zo = DenoisedSmoothing(black_box, copy.deepcopy(den), sigma, autoencoder=ae)
    zo.fit_autoencoder(x, epochs=epochs, lr=2e-3, generator=g)
    zo.fit(x, method="zo", estimator="rge", q=20, mu=0.005, epochs=2, lr=1e-3, generator=g)
    print(f"[{time.time() - t0:.0f}s] stages before the consistency training done", flush=True)
    state = g.get_state()
    xt, yt = d.x_test[:500], d.y_test[:500]
    out = {}
    per_epoch = -(-x.shape[0] // batch_size)
    for variant in a.variants.split(","):
        r = _trace(variant, base, den, state, x, xt, yt, sigma, epochs, batch_size)
        out[variant] = r
        st = r["steps"]
        second = st[per_epoch:]
        print(f"[{time.time() - t0:.0f}s] {variant}: epoch means {[round(h, 4) for h in r['history']]}, largest "
              f"second-epoch step {max(s['loss'] for s in second):.3f}, noisy accuracy {r['noisy_acc']:.3f}", flush=True)
        for i in range(per_epoch - 2, min(per_epoch + 8, len(st))):
            s = st[i]
            print(f"    step {i:3d} (n={s['n']:2d}) loss {s['loss']:.3f}  KL teacher {s['kl_teacher']:.3f}  "
                  f"KL clean {s['kl_clean']:.3f}  grad norm {s['grad_norm']:.2f}")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"args": vars(a), "results": out, "seconds": time.time() - t0}, f, indent=2)


if __name__ == "__main__":
    main()
