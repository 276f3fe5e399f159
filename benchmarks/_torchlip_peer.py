"""deel-torchlip side of ``bench_lipschitz.py``: run in the peer's own interpreter.

    /tmp/torchlip/bin/python benchmarks/_torchlip_peer.py DIR

``DIR/request.json`` gives the settings (arch, epochs, batch size, lr, margin, seed, threads); ``DIR/data.pt`` the
tensors. Trains the same architecture as robustlab's ``lipschitz_cnn``/``lipschitz_mlp`` built from torchlip's
layers (SpectralConv2d / SpectralLinear: spectral normalisation + Björck, GroupSort2, InvertibleDownSampling) with
torchlip's ``HingeMulticlassLoss``, and writes ``DIR/result.pt``: wall and CPU seconds per epoch, test logits of the exported
(vanilla) model and its state dict (plain Conv2d/Linear weights, for an independent bound).

Ablation keys of the request (defaults: torchlip's own): ``eps_bjorck_conv``/``eps_bjorck_linear`` (the Björck
stopping tolerance on ``‖W_k − W_{k−1}‖_F`` of the convolutions / linear layers, 1e-3) and ``bjorck_detach``
(torchlip's ``DEFAULT_BJORK_DETACH``, 4: the iterations after the first 4 take no gradient through their cubic term).
"""

import json
import os
import sys
import time

import torch
from deel import torchlip as tl
from deel.torchlip import normalizers


def build(arch: str, input_shape, num_classes: int, channels, hidden, eps_conv: float = 1e-3,
          eps_linear: float = 1e-3) -> torch.nn.Module:
    c, h, w = input_shape
    layers = []
    if arch == "cnn":
        for ch in channels:
            layers += [tl.SpectralConv2d(c, ch, 3, padding=1, eps_bjorck=eps_conv), tl.GroupSort2(),
                       tl.InvertibleDownSampling(2)]
            c, h, w = 4 * ch, h // 2, w // 2
    layers.append(torch.nn.Flatten())
    d = c * h * w
    for units in hidden:
        layers += [tl.SpectralLinear(d, units, eps_bjorck=eps_linear), tl.GroupSort2()]
        d = units
    layers.append(tl.SpectralLinear(d, num_classes, eps_bjorck=eps_linear))
    return tl.Sequential(*layers)


def main() -> None:
    folder = sys.argv[1]
    with open(os.path.join(folder, "request.json")) as fh:
        req = json.load(fh)
    torch.set_num_threads(req["threads"])
    d = torch.load(os.path.join(folder, "data.pt"))
    normalizers.DEFAULT_BJORK_DETACH = req.get("bjorck_detach", normalizers.DEFAULT_BJORK_DETACH)
    torch.manual_seed(req["seed"])
    model = build(req["arch"], tuple(d["x_train"].shape[1:]), req["num_classes"], req["channels"], req["hidden"],
                  req.get("eps_bjorck_conv", normalizers.DEFAULT_EPS_BJORCK),
                  req.get("eps_bjorck_linear", normalizers.DEFAULT_EPS_BJORCK))
    opt = torch.optim.Adam(model.parameters(), lr=req["lr"])
    loss_fn = tl.HingeMulticlassLoss(min_margin=req["margin"])
    g = torch.Generator().manual_seed(req["seed"])
    x, y = d["x_train"], d["y_train"]
    times, cpu = [], []
    for _ in range(req["epochs"]):
        model.train()
        t0, c0 = time.perf_counter(), time.process_time()
        perm = torch.randperm(x.shape[0], generator=g)
        for i in range(0, x.shape[0], req["batch_size"]):
            idx = perm[i:i + req["batch_size"]]
            out = model(x[idx])
            loss = loss_fn(out, torch.nn.functional.one_hot(y[idx], req["num_classes"]).float())
            opt.zero_grad()
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    model.eval()
    vanilla = model.vanilla_export().eval()
    with torch.no_grad():
        logits = torch.cat([vanilla(d["x_test"][i:i + 500]) for i in range(0, d["x_test"].shape[0], 500)])
    torch.save({"epoch_s": times, "epoch_cpu_s": cpu, "logits": logits, "state": vanilla.state_dict(),
                "version": getattr(tl, "__version__", "?")}, os.path.join(folder, "result.pt"))


if __name__ == "__main__":
    main()
