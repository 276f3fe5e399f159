"""``robustlab train`` on a regression data set: the summary and ``metrics.json`` of a regression run."""

from __future__ import annotations

import argparse
import time
from typing import Any

__all__ = ["report_regression"]


def report_regression(args: argparse.Namespace, config: Any, res: Any, t_start: float) -> int:
    """Print the regression run's summary (test MSE/MAE/R^2) and write ``metrics.json`` next to ``model.pt``."""
    from .. import metrics, pipeline
    from ..training import predict_regression
    from ._train import _kwargs_text, _versions, emit_summary

    d, model, rz = res.data, res.model, res.resolved
    pred, train_pred = predict_regression(model, d.x_test), predict_regression(model, d.x_train)
    final = {
        "test_mse": metrics.mean_squared_error(pred, d.y_test),
        "test_mae": metrics.mean_absolute_error(pred, d.y_test),
        "test_r2": metrics.r2_score(pred, d.y_test),
        "train_mse_noisy_targets": metrics.mean_squared_error(train_pred, res.train_data.y_train),
        "train_mse_clean_targets": metrics.mean_squared_error(train_pred, d.y_train),
    }
    total_s = time.perf_counter() - t_start
    realized = float(res.noisy.realized_rate) if res.noisy is not None else 0.0
    noise_opts = {k: v for k, v in rz["noise"].items() if k not in ("kind", "rate")}
    rows = [
        ("data", f"{d.name} (train {d.x_train.shape[0]}, test {d.x_test.shape[0]}, regression)"),
        ("noise", f"{config.noise.kind} rate {config.noise.rate:g}" + (f" {noise_opts}" if noise_opts else "")
         + f", realized {realized:.3f}"),
        ("model", _kwargs_text(config.model.name, rz["model"], config.model.kwargs)),
        ("loss", _kwargs_text(config.loss.name, rz["loss"], config.loss.kwargs)),
        ("train", " ".join(f"{k}={v}" for k, v in config.train.items())),
        ("test mse (clean)", f"{final['test_mse']:.4f}"),
        ("test mae (clean)", f"{final['test_mae']:.4f}"),
        ("test r2 (clean)", f"{final['test_r2']:.4f}"),
        ("time", f"{total_s:.1f} s (fit {res.timings['train_s']:.1f} s)"),
    ]
    record = {"config": {**pipeline.record(config), "device": args.device}, "resolved": rz,
              "noise": {"realized_rate": realized}, "metrics": final, "history": res.history,
              "time_s": {"total": total_s, "fit": res.timings["train_s"]}, "versions": _versions()}
    return emit_summary(args, rows, record)
