"""Bound time and width of robustlab's IBP / CROWN-IBP / CROWN against auto_LiRPA (part of ``bench_certify.py``).

The peer runs in its own interpreter (``--lirpa-python``, default ``/tmp/lirpa/bin/python``: a venv with
``auto_LiRPA==0.3 --no-deps``, ``numpy<2`` and the project's torch) as a subprocess that answers one request
per line (``_lirpa_peer.py``), so both sides are timed in the same run, paired and interleaved, on the same
weights and inputs. Without that interpreter the ratios use the peer figures stored by a previous run in
``benchmarks/data/certify_lirpa.json`` (``--save-peer`` writes them).
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _certify_models import build, count_ops  # noqa: E402

from robustlab.certify import interval_bounds  # noqa: E402

STORED = Path(__file__).resolve().parent / "data" / "certify_lirpa.json"
METHODS = {"IBP": "ibp", "CROWN-IBP": "crown_ibp", "CROWN": "crown"}
# (model, norm, eps, peer method, batch, quick batch)
CASES = [
    ("mlp", "linf", 0.02, "IBP", 256, 64), ("mlp", "linf", 0.02, "CROWN-IBP", 256, 64),
    ("mlp", "linf", 0.02, "CROWN", 32, 8),
    ("cnn", "linf", 0.02, "IBP", 256, 64), ("cnn", "linf", 0.02, "CROWN-IBP", 256, 64),
    ("cnn", "linf", 0.02, "CROWN", 2, 1),
    ("rescnn", "linf", 0.01, "IBP", 256, 64), ("rescnn", "linf", 0.01, "CROWN-IBP", 64, 16),
    ("rescnn", "linf", 0.01, "CROWN", 1, 1),
    ("cnn", "l2", 0.3, "IBP", 256, 64), ("cnn", "l2", 0.3, "CROWN-IBP", 256, 64),
]


#: glibc's malloc hands freed heap memory back to the OS once the free top of the heap passes a threshold that each
#: process derives from its own history, and the next call page-faults it back in (the faults columns show how
#: many per call). So both processes run with the same fixed thresholds: freed memory is kept, and only
#: blocks over 32 MiB are mapped on their own. ``--default-malloc`` keeps each process's default instead.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


def _fix_malloc() -> bool:
    """Set :data:`MALLOC_ENV`'s thresholds in this process (``mallopt``, glibc only); whether it took."""
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(-3, 32 << 20)) and bool(libc.mallopt(-1, 1 << 30))  # M_MMAP_ / M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        return False


def _median(xs: list[int]) -> str:
    return str(int(statistics.median(xs))) if xs else "-"


def _key(model: str, norm: str, eps: float, method: str, batch: int) -> str:
    return f"{model}/{norm}/{eps:g}/{method}/{batch}"


class _Peer:
    def __init__(self, python: str, folder: str, threads: int, env: dict[str, str] | None = None) -> None:
        script = str(Path(__file__).resolve().parent / "_lirpa_peer.py")
        self.proc = subprocess.Popen([python, script, folder, str(threads)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env={**os.environ, **(env or {})})
        json.loads(self._line())

    def _line(self) -> str:
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError("the auto_LiRPA peer exited")
        return line

    def ask(self, **req: object) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return json.loads(self._line())

    def close(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"quit": True}) + "\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
            self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()


def run(*, threads: int, quick: bool, rounds: int, lirpa_python: str | None, save_peer: bool,
        cases: str | None = None, ops: bool = False, default_malloc: bool = False) -> None:
    """Print one line per case: median time (ours, peer), time ratio, width ratio, largest bound difference,
    median minor page faults per call on each side.

    Each round times one call on each side, the side that goes first alternating; the time ratio is the median
    over rounds of the paired ratios (ours / peer of the same round), so drifts in the machine's load cancel.

    ``cases``: comma-separated ``model/norm/method`` names (e.g. ``cnn/linf/CROWN,rescnn/linf/CROWN``); all by default.
    ``ops``: also the number of aten ops of one call on each side (torch.profiler; robust to machine load).
    ``default_malloc``: leave glibc's thresholds as each process has them (see :data:`MALLOC_ENV`).
    """
    wanted = None if not cases else {c.strip() for c in cases.split(",") if c.strip()}
    python = lirpa_python or "/tmp/lirpa/bin/python"
    live = os.path.exists(python)
    stored = json.loads(STORED.read_text()) if STORED.exists() else {}
    if not live and not stored:
        print(f"(no auto_LiRPA interpreter at {python} and no stored figures: skipped)")
        return
    g = torch.Generator().manual_seed(0)
    x_all = torch.rand((256, 1, 28, 28), generator=g)
    models = {name: build(name).eval() for name in ("mlp", "cnn", "rescnn")}
    src = "live, same run" if live else f"stored in {STORED.name} ({stored.get('_meta', {}).get('when', '?')})"
    fixed = not default_malloc and live and _fix_malloc()
    print(f"\n== bounds vs auto_LiRPA 0.3 ({src}); goal: time ratio <= 1.0 ==")
    print("(time x: median over rounds of the paired ratio; malloc: "
          + ("same fixed thresholds in both processes)" if fixed else "each process's default)"))
    print("(faults: median minor page faults per call, getrusage in each process)")
    print(f"{'model':<8}{'norm':<6}{'method':<11}{'batch':>6}{'ours ms':>10}{'peer ms':>10}{'time x':>8}"
          f"{'width x':>9}{'max |diff|':>12}{'faults':>8}{'peer':>7}" + (f"{'ours ops':>10}{'peer ops':>10}" if ops else ""))
    new: dict[str, object] = {"_meta": {"when": time.strftime("%Y-%m-%d"), "threads": threads,
                                        "torch": torch.__version__}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, m in models.items():
            torch.save(m.state_dict(), os.path.join(tmp, f"{name}.pt"))
        torch.save(x_all, os.path.join(tmp, "x.pt"))
        peer = _Peer(python, tmp, threads, MALLOC_ENV if fixed else None) if live else None
        try:
            for model, norm, eps, method, batch, qbatch in CASES:
                if wanted is not None and f"{model}/{norm}/{method}" not in wanted:
                    continue
                b = qbatch if quick else batch
                x = x_all[:b]
                key = _key(model, norm, eps, method, b)

                def ours(m=models[model], x=x, eps=eps, norm=norm, how=METHODS[method]) -> tuple[torch.Tensor, torch.Tensor]:
                    with torch.no_grad():
                        return interval_bounds(m, x, eps=eps, norm=norm, method=how)

                t0 = time.perf_counter()
                lo, up = ours()  # warm-up (and the fx trace of the residual model)
                took = time.perf_counter() - t0
                # slow cases: one timed round each; fast ones: at least ~2 s of calls per side (up to 30 rounds)
                reps = 1 if took >= 2.0 else max(rounds, min(30, int(2.0 / max(took, 1e-3))))
                times_ours, times_peer, peer_lo, peer_up = [], [], None, None
                faults: dict[str, list[int]] = {"ours": [], "peer": []}
                if peer is not None:
                    req = dict(model=model, norm=norm, eps=eps, method=method, batch=b)
                    peer.ask(**req)  # warm-up (BoundedModule built on first use)
                for r in range(reps):  # interleaved, the side that goes first alternating: both see the same load
                    for side in ((0, 1) if r % 2 == 0 else (1, 0)):
                        if side == 0:
                            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                            t0 = time.perf_counter()
                            ours()
                            times_ours.append(time.perf_counter() - t0)
                            faults["ours"].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
                        elif peer is not None:
                            got = peer.ask(**req)
                            times_peer.append(got["time_s"])
                            faults["peer"].append(got.get("faults", -1))
                            peer_lo, peer_up = torch.tensor(got["lower"]), torch.tensor(got["upper"])
                t_ours = statistics.median(times_ours)
                if peer is not None:
                    t_peer = statistics.median(times_peer)
                    ratio = statistics.median(a / p for a, p in zip(times_ours, times_peer))
                    width_peer = float((peer_up - peer_lo).mean())
                    diff = float(torch.maximum((lo - peer_lo).abs(), (up - peer_up).abs()).max())
                    new[key] = {"time_s": t_peer, "width": width_peer}
                elif key in stored:
                    t_peer, width_peer, diff = stored[key]["time_s"], stored[key]["width"], float("nan")
                    ratio = t_ours / t_peer
                else:
                    t_peer, width_peer, diff = float("nan"), float("nan"), float("nan")
                    ratio = float("nan")
                width = float((up - lo).mean())
                counts = ""
                if ops:
                    theirs = peer.ask(**req, ops=True)["ops"] if peer is not None else float("nan")
                    counts = f"{count_ops(ours):>10}{theirs:>10}"
                print(f"{model:<8}{norm:<6}{method:<11}{b:>6}{1e3 * t_ours:>10.2f}{1e3 * t_peer:>10.2f}"
                      f"{ratio:>8.2f}{width / width_peer:>9.3f}{diff:>12.2e}{_median(faults['ours']):>8}"
                      f"{_median(faults['peer']):>7}{counts}", flush=True)
        finally:
            if peer is not None:
                peer.close()
    if live and save_peer:
        STORED.parent.mkdir(parents=True, exist_ok=True)
        merged = {**stored, **new}
        STORED.write_text(json.dumps(merged, indent=1, sort_keys=True) + "\n")
        print(f"peer figures written to {STORED}")
