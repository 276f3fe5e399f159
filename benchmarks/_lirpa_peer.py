"""auto_LiRPA side of ``bench_certify.py``: run in the peer's own interpreter, one request per stdin line.

    /tmp/lirpa/bin/python benchmarks/_lirpa_peer.py DIR THREADS

``DIR`` holds ``<model>.pt`` (state dicts) and ``x.pt`` (inputs). Each request
``{"model", "norm", "eps", "method", "batch"}`` is answered with ``{"time_s", "faults", "lower", "upper"}`` (minor
page faults of the call, bounds as lists) after one timed ``compute_bounds`` call, or with ``{"ops"}`` (aten ops of one call) when it has ``"ops": true``. auto_LiRPA 0.3 (the PyPI release) predates torch 2; three
shims below restore the torch internals it calls.
"""

import json
import math
import os
import resource
import sys
import time

import torch
import torch.onnx.symbolic_helper as _sh

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _certify_models import build, count_ops  # noqa: E402

try:  # shims for auto_LiRPA 0.3 on torch >= 2
    from torch.onnx._internal.torchscript_exporter._globals import GLOBALS

    if not hasattr(_sh, "_set_opset_version"):
        _sh._set_opset_version = lambda v: setattr(GLOBALS, "export_onnx_opset_version", v)
    if not hasattr(torch._C.Node, "__getitem__"):
        torch._C.Node.__getitem__ = lambda self, k: getattr(self, self.kindOf(k))(k)
except ImportError:
    pass

from auto_LiRPA import BoundedModule, BoundedTensor, PerturbationLpNorm  # noqa: E402

_named_members = BoundedModule._named_members  # torch >= 2 passes remove_duplicate, which 0.3 does not take
BoundedModule._named_members = lambda self, fn, prefix="", recurse=True, **_: _named_members(self, fn, prefix, recurse)


def main() -> None:
    folder, threads = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(threads)
    x_all = torch.load(os.path.join(folder, "x.pt"))
    bounded = {}
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("quit"):
            break
        name = req["model"]
        if name not in bounded:
            m = build(name)
            m.load_state_dict(torch.load(os.path.join(folder, f"{name}.pt")))
            bounded[name] = BoundedModule(m.eval(), torch.zeros_like(x_all[:1]))
        x = x_all[: req["batch"]]
        eps, how, linf = req["eps"], req["method"], req["norm"] == "linf"

        def call(x=x, eps=eps, how=how, linf=linf, model=bounded[name]):  # the input box is part of the call, as ours
            if linf:
                ptb = PerturbationLpNorm(norm=math.inf, eps=eps, x_L=(x - eps).clamp(0, 1), x_U=(x + eps).clamp(0, 1))
            else:
                ptb = PerturbationLpNorm(norm=2, eps=eps)
            return model.compute_bounds(x=(BoundedTensor(x, ptb),), method=how)

        with torch.no_grad():
            if req.get("ops"):  # count the aten ops of one call (robust to machine load, unlike times)
                print(json.dumps({"ops": count_ops(call)}), flush=True)
                continue
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            lb, ub = call()
            dt = time.perf_counter() - t0
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
        print(json.dumps({"time_s": dt, "faults": faults, "lower": lb.tolist(), "upper": ub.tolist()}), flush=True)


if __name__ == "__main__":
    main()
