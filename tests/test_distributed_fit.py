"""fit(distributed=True) under torchrun with 2 CPU processes (gloo): equal to one process, sync_bn, crash, resume, CLI.

Tolerance: 2 processes with the same global batch reproduce 1 process up to float reduction order (gradient
all-reduce, loss sums); after 3 epochs of SGD on digits the weights differ by < 1e-6 (measured ~3e-7),
checked with ``rtol=1e-5, atol=1e-5``. A resumed 2-process run is bit-identical to the uninterrupted one.
"""

import copy
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from robustlab import data, models
from robustlab._validation import InvalidParameterError
from robustlab.training import fit

LAUNCH_TIMEOUT = 180  # seconds: a hung collective would otherwise block the suite (dist_timeout is 20 s below)

CHILD = textwrap.dedent('''
    import json, os, sys
    import torch
    from robustlab import data, models
    from robustlab.training import fit

    torch.set_num_threads(1)
    out, mode, ckpt = sys.argv[1], sys.argv[2], sys.argv[3]
    configs = json.loads(sys.argv[4])
    rank = int(os.environ["RANK"])
    d = data.load("digits").subset(n_train=300, n_test=80)
    results = []
    for kw in configs:
        torch.manual_seed(0)
        if kw.pop("bn", False):
            m = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                    torch.nn.Flatten(), torch.nn.Linear(144, 32), torch.nn.BatchNorm1d(32),
                                    torch.nn.ReLU(), torch.nn.Linear(32, 10))
        else:
            m = models.create("mlp", input_shape=d.input_shape, num_classes=10, hidden=(32,))

        def crash(epoch, row):
            if mode == "crash" and rank == 1 and epoch == 2:
                raise RuntimeError("rank 1 fails on purpose")

        extra = {"checkpoint_dir": ckpt, "resume": mode == "resume"} if ckpt != "-" else {}
        res = fit(m, d, epochs=3, seed=1, progress=False, distributed=True,
                  dist_timeout=20, callback=crash, **kw, **extra)
        results.append({"sd": res.model.state_dict(), "hist": res.history})
    if rank == 0:
        torch.save(results, out)
''')

# 270 training samples after the held-out split: with batch 269 the last global batch has 1 sample, so rank 1
# runs a zero-weight step (the per-sample state of that sample comes from rank 0)
CONFIGS = [{"loss": "aldr_kl", "select": "clean", "batch_size": 269, "optimizer": "adam", "lr": 0.01},
           {"bn": True, "sync_bn": True, "batch_size": 64, "lr": 0.1}]


def _torchrun(tmp_path, args, timeout=LAUNCH_TIMEOUT):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def _child(tmp_path, mode, ckpt, configs):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    out = tmp_path / f"{mode}.pt"
    proc = _torchrun(tmp_path, [str(script), str(out), mode, str(ckpt), json.dumps(configs)])
    return proc, out


def _one_process(kw):
    kw = dict(kw)
    d = data.load("digits").subset(n_train=300, n_test=80)
    torch.manual_seed(0)
    if kw.pop("bn", False):
        m = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(144, 32), torch.nn.BatchNorm1d(32),
                                torch.nn.ReLU(), torch.nn.Linear(32, 10))
    else:
        m = models.create("mlp", input_shape=d.input_shape, num_classes=10, hidden=(32,))
    kw.pop("sync_bn", None)
    return fit(m, d, epochs=3, seed=1, progress=False, **kw)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    proc, out = _child(tmp, "full", "-", CONFIGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out, weights_only=True)


@pytest.mark.parametrize("i", range(len(CONFIGS)), ids=["aldr_kl+select", "sync_bn"])
def test_two_processes_reproduce_one_with_the_same_global_batch(two_processes, i):
    # per-sample loss state (ALDR-KL lambda) synced across ranks, selection on summed counts, and BatchNorm
    # statistics over the global batch (sync_bn; running statistics included)
    one = _one_process(CONFIGS[i])
    two = two_processes[i]
    for k, v in one.model.state_dict().items():
        torch.testing.assert_close(two["sd"][k].to(v.dtype), v, rtol=1e-5, atol=1e-5, msg=k)
    assert two["hist"]["test_acc"] == one.history["test_acc"]
    assert two["hist"].get("selected_epoch") == one.history.get("selected_epoch")
    torch.testing.assert_close(torch.tensor(two["hist"]["loss"]), torch.tensor(one.history["loss"]), rtol=1e-5, atol=0)


def test_a_crashing_rank_fails_the_run_cleanly_and_resume_is_bit_identical(tmp_path, two_processes):
    ckpt = tmp_path / "state"
    proc, out = _child(tmp_path, "crash", ckpt, CONFIGS[:1])
    assert proc.returncode != 0 and not out.exists()
    assert "rank 1 fails on purpose" in proc.stderr
    # rank 0 never wrote epoch 2: it waits for every rank before writing; no temp file is left behind
    assert sorted(p.name for p in ckpt.iterdir()) == ["best.pt", "last.pt"]
    state = torch.load(ckpt / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and len(state["rng_ranks"]) == 2
    proc, out = _child(tmp_path, "resume", ckpt, CONFIGS[:1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = torch.load(out, weights_only=True)[0]
    for k, v in two_processes[0]["sd"].items():
        assert torch.equal(resumed["sd"][k], v), k


def test_torchrun_robustlab_train(tmp_path):
    proc = _torchrun(tmp_path, ["-m", "robustlab", "train", "--data", "digits", "--model", "mlp", "--model-arg",
                                "hidden=32", "--epochs", "2", "--batch-size", "64", "--out", str(tmp_path / "run"),
                                "--quiet"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("test acc (clean)") == 1  # rank 0 alone reports
    assert "2 (torchrun, data-parallel)" in proc.stdout
    rec = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert rec["metrics"]["test_acc"] > 0.5 and len(rec["history"]["loss"]) == 2


def test_distributed_needs_torchrun_and_refuses_what_it_cannot_shard(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    d = data.load("digits").subset(n_train=40, n_test=10)
    m = models.create("mlp", input_shape=d.input_shape, num_classes=10, hidden=(8,))
    with pytest.raises(InvalidParameterError, match="torchrun.*RANK"):
        fit(m, d, epochs=1, distributed=True, progress=False)
    with pytest.raises(InvalidParameterError, match="sync_bn.*distributed=True"):
        fit(m, d, epochs=1, sync_bn=True, progress=False)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(d.x_train, d.y_train), batch_size=8)
    with pytest.raises(InvalidParameterError, match="not a DataLoader"):
        fit(m, loader, epochs=1, distributed=True, progress=False)
    with pytest.raises(InvalidParameterError, match="dist_timeout"):
        fit(m, d, epochs=1, distributed=True, dist_timeout=0, progress=False)


def test_cli_sync_bn_needs_a_distributed_launch(capsys, monkeypatch):
    from robustlab.cli import main

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    code = main(["train", "--data", "digits", "--epochs", "1", "--sync-bn", "--quiet"])
    assert code == 2
    assert "--sync-bn" in capsys.readouterr().err


def test_cpu_sync_batchnorm_keeps_the_parameters_and_is_plain_batchnorm_outside_a_group():
    from robustlab.training._distributed import GlooSyncBatchNorm, convert_sync_batchnorm

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.Flatten(),
                              torch.nn.Linear(3 * 36, 4), torch.nn.BatchNorm1d(4))
    ref = copy.deepcopy(net)
    params = [id(p) for p in net.parameters()]
    keys = list(net.state_dict())
    out = convert_sync_batchnorm(net, torch.device("cpu"))
    assert isinstance(out[1], GlooSyncBatchNorm) and isinstance(out[4], GlooSyncBatchNorm)
    assert [id(p) for p in out.parameters()] == params and list(out.state_dict()) == keys  # optimizer/checkpoints
    x = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(out(x), ref(x), rtol=0, atol=0)  # training mode, no process group: plain BN
    torch.testing.assert_close(out[1].running_var, ref[1].running_var, rtol=0, atol=0)
