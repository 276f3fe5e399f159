"""``robustlab certify`` with the graph/norm extensions: CROWN on a 28x28 CNN at the default batch size under a
memory cap, the L1 ball, and the CLI's norms = the library's."""

import json

import numpy as np
import pytest
import torch

from robustlab.certify.ibp import NORMS
from robustlab.cli import main
from robustlab.models import create
from robustlab.training import save_checkpoint


@pytest.fixture(scope="module")
def cnn28(tmp_path_factory):
    d = tmp_path_factory.mktemp("cnn28")
    g = np.random.default_rng(0)
    x = g.random((40, 1, 28, 28), dtype=np.float32)
    y = g.integers(0, 10, 40)
    np.savez(d / "img.npz", x=x, y=y, x_test=x[:6], y_test=y[:6])
    torch.manual_seed(0)
    model = create("lenet", input_shape=(1, 28, 28), num_classes=10, channels=(2, 4), hidden=(16,)).eval()
    save_checkpoint(model, d / "model.pt")
    return d


def test_crown_at_the_default_batch_size_runs_under_a_memory_cap(cnn28, tmp_path, capped_memory):
    out = tmp_path / "c.json"
    rc = main(["certify", "--checkpoint", str(cnn28 / "model.pt"), "--data", f"npz:{cnn28 / 'img.npz'}",
               "--method", "crown", "--eps", "0", "0.002", "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["batch_size"] == 1000 and res["num_points"] == 6
    acc = res["certified_accuracy"]
    assert acc["0"] == pytest.approx(res["clean_accuracy"]) and acc["0.002"] <= acc["0"]


def test_l1_ball_from_the_cli_and_the_same_norms_as_the_library(cnn28, tmp_path):
    out = tmp_path / "l1.json"
    assert main(["certify", "--checkpoint", str(cnn28 / "model.pt"), "--data", f"npz:{cnn28 / 'img.npz'}",
                 "--method", "crown_ibp", "--norm", "l1", "--eps", "0", "0.05", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["norm"] == "l1" and res["certified_accuracy"]["0"] == pytest.approx(res["clean_accuracy"])
    import argparse

    from robustlab.cli import _certify

    parser = argparse.ArgumentParser()
    _certify.add_parser(parser.add_subparsers())
    action = next(a for a in parser._subparsers._group_actions[0].choices["certify"]._actions if a.dest == "norm")
    assert tuple(action.choices) == NORMS
