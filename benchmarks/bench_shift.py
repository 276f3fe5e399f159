"""Corruption throughput (images/s) of every registered corruption at 32x32 RGB and 28x28 grayscale.

Run: ``.venv/bin/python benchmarks/bench_shift.py [--n 256] [--repeats 3] [--threads 1]``.
Peers measured in the same run:
* ``per-image``: the same corruption called one image at a time (what the per-image reference
  scripts do); the ratio shows what batching buys.
* ``torchvision``: the closest ``torchvision.transforms.v2.functional`` op, when torchvision is
  installed (gaussian noise, gaussian blur, JPEG, rotate, affine shear, elastic, contrast, saturation).
Each figure is the median over ``repeats`` rounds, severity 3, float32 CPU.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch

from robustlab import shift


def _tv_peers() -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    try:
        import torchvision.transforms.v2.functional as F
    except ImportError:
        return {}

    def jpeg(x):
        u8 = (x * 255).round().to(torch.uint8)
        return F.jpeg(u8, quality=58).float() / 255

    return {
        "gaussian_noise": lambda x: F.gaussian_noise(x, sigma=0.08, clip=True),
        "gaussian_blur": lambda x: F.gaussian_blur(x, kernel_size=[5, 5], sigma=[0.7, 0.7]),
        "jpeg_compression": jpeg,
        "rotate": lambda x: F.rotate(x, 34.0, interpolation=F.InterpolationMode.BILINEAR),
        "shear": lambda x: F.affine(x, angle=0.0, translate=[0, 0], scale=1.0, shear=[34.0, 0.0],
                                    interpolation=F.InterpolationMode.BILINEAR),
        "elastic_transform": lambda x: F.elastic(x, torch.randn(1, x.shape[-2], x.shape[-1], 2) * 0.05),
        "contrast": lambda x: F.adjust_contrast(x, 0.4),
        "saturate": lambda x: F.adjust_saturation(x, 1.5) if x.shape[1] == 3 else x.clone(),
    }


def _time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=256, help="images per batch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--per-image", type=int, default=32, help="images for the per-image peer (0 = skip)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    peers = _tv_peers()
    print(f"torch threads {args.threads}, batch {args.n}, severity 3; torchvision peers: "
          f"{'yes' if peers else 'not installed'}")
    for c, h, w in ((3, 32, 32), (1, 28, 28)):
        g = torch.Generator().manual_seed(0)
        x = torch.rand(args.n, c, h, w, generator=g)
        print(f"\n== {c}x{h}x{w} ==")
        print(f"{'corruption':<18} {'img/s':>10} {'per-image img/s':>16} {'batch gain':>10} {'tv img/s':>10} {'ours/tv':>8}")
        for name in shift.available():
            corr = shift.CORRUPTIONS.get(name, severity=3)
            t = _time(lambda corr=corr, x=x: corr(x, generator=torch.Generator().manual_seed(1)), args.repeats)
            ips = args.n / t
            pi_s = gain = float("nan")
            if args.per_image:
                m = min(args.per_image, args.n)

                def one_by_one(corr=corr, x=x, m=m):
                    gg = torch.Generator().manual_seed(1)
                    for i in range(m):
                        corr(x[i:i + 1], generator=gg)

                pi_s = m / _time(one_by_one, max(1, args.repeats - 1))
                gain = ips / pi_s
            tv = ratio = float("nan")
            if name in peers:
                fn = peers[name]
                tv = args.n / _time(lambda fn=fn, x=x: fn(x), args.repeats)
                ratio = ips / tv
            cells = [f"{ips:10.0f}", f"{pi_s:16.0f}", f"{gain:10.2f}",
                     f"{tv:10.0f}" if not math.isnan(tv) else f"{'-':>10}",
                     f"{ratio:8.2f}" if not math.isnan(ratio) else f"{'-':>8}"]
            print(f"{name:<18} " + " ".join(cells))


if __name__ == "__main__":
    main()
