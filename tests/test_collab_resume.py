"""collab.fit(checkpoint_dir=..., resume=True): a run killed mid-epoch and resumed ends bit-identical on the CPU."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from robustlab import collab, data, models, pipeline
from robustlab._validation import InvalidParameterError
from robustlab.collab import _fit

# Every kind of state at once: parameters and momentum of every worker, the workers' batch generators
# (Dirichlet split), the Byzantine generator (gaussian), cosine LR position, evaluation every 2 epochs.
CHILD = textwrap.dedent('''
    import json, os, signal, sys
    import torch
    from robustlab import collab, data, models
    from robustlab.collab import _fit

    torch.set_num_threads(1)
    mode, ckpt, out = sys.argv[1], sys.argv[2], sys.argv[3]
    d = data.load("digits").subset(n_train=300, n_test=80)
    torch.manual_seed(0)
    net = models.create("mlp", input_shape=d.input_shape, num_classes=d.num_classes, hidden=(16,))
    rounds, mix = [0], _fit._mix

    def counted(*a, **k):
        rounds[0] += 1
        if mode == "kill" and rounds[0] == KILL_ROUND:  # a few rounds after the checkpoint: no clean shutdown
            os.kill(os.getpid(), signal.SIGKILL)
        return mix(*a, **k)

    _fit._mix = counted
    res = collab.fit(net, d, workers=5, f=1, aggregator="monna", byzantine="gaussian", heterogeneity="dirichlet:1",
                     epochs=4, batch_size=16, lr=0.2, schedule="cosine", eval_every=2, seed=3,
                     checkpoint_dir=ckpt, resume=(mode == "resume"))
    torch.save(dict(res.model.state_dict()), out)
    with open(out + ".json", "w") as fh:
        json.dump(res.history, fh)
''')

ROUNDS_PER_EPOCH = 4  # ceil(300 / 5 / 16)


def _run(tmp_path, mode, ckpt, out, kill_round):
    script = tmp_path / "child.py"
    script.write_text(CHILD.replace("KILL_ROUND", str(kill_round)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(script), mode, str(ckpt), str(out)], env=env,
                          capture_output=True, text=True, timeout=300)


def test_sigkilled_collab_run_resumes_bit_identical(tmp_path):
    kill_round = 2 * ROUNDS_PER_EPOCH + 2  # inside epoch 3, after the epoch-2 state was written
    full = _run(tmp_path, "full", tmp_path / "full", tmp_path / "full.pt", kill_round)
    assert full.returncode == 0, full.stderr
    killed = _run(tmp_path, "kill", tmp_path / "run", tmp_path / "never.pt", kill_round)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "never.pt").exists()
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["history"]["epoch"] == [2]
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["last.pt"]  # no temp files
    resumed = _run(tmp_path, "resume", tmp_path / "run", tmp_path / "resumed.pt", kill_round)
    assert resumed.returncode == 0, resumed.stderr
    a, b = torch.load(tmp_path / "full.pt"), torch.load(tmp_path / "resumed.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resuming"
    ha = json.loads((tmp_path / "full.pt.json").read_text())
    hb = json.loads((tmp_path / "resumed.pt.json").read_text())
    assert ha == hb and ha["epoch"] == [2, 4]


@pytest.fixture(scope="module")
def digits():
    return data.load("digits").subset(n_train=200, n_test=50)


def _mlp(d):
    torch.manual_seed(0)
    return models.create("mlp", input_shape=d.input_shape, num_classes=d.num_classes, hidden=(16,))


KW = dict(workers=5, f=1, aggregator="trimmed_mean", byzantine="label_flip", epochs=3, batch_size=16, lr=0.2,
          seed=1)


class _Stop(Exception):
    pass


def test_interrupted_momentum_mode_run_resumes_bit_identical(digits, tmp_path, monkeypatch):
    full = collab.fit(_mlp(digits), digits, **KW)
    mix, rounds = _fit._mix, [0]

    def stop_in_epoch_2(*a, **k):
        rounds[0] += 1
        if rounds[0] == 4:  # 3 rounds per epoch
            raise _Stop
        return mix(*a, **k)

    monkeypatch.setattr(_fit, "_mix", stop_in_epoch_2)
    with pytest.raises(_Stop):
        collab.fit(_mlp(digits), digits, checkpoint_dir=tmp_path, **KW)
    monkeypatch.setattr(_fit, "_mix", mix)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 1
    resumed = collab.fit(_mlp(digits), digits, checkpoint_dir=tmp_path, resume=True, **KW)
    for p, q in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)
    assert full.history == resumed.history
    # a finished run's state resumes to the same result without training again
    again = collab.fit(_mlp(digits), digits, checkpoint_dir=tmp_path, resume=True, **KW)
    assert again.history == full.history


def test_resume_from_nothing_starts_over_and_other_settings_are_refused(digits, tmp_path):
    fresh = collab.fit(_mlp(digits), digits, checkpoint_dir=tmp_path / "new", resume=True, **KW)
    plain = collab.fit(_mlp(digits), digits, **KW)
    assert fresh.history == plain.history
    with pytest.raises(InvalidParameterError, match="written with other settings.*lr: 0.2 in the checkpoint, 0.1 now"):
        collab.fit(_mlp(digits), digits, checkpoint_dir=tmp_path / "new", resume=True, **{**KW, "lr": 0.1})


@pytest.mark.parametrize("kw, match", [
    ({"resume": True}, "'resume' parameter of collab.fit needs checkpoint_dir"),
    ({"checkpoint_dir": 3}, "'checkpoint_dir' parameter of collab.fit must be a path or None. Got 3"),
    ({"checkpoint_dir": "x", "checkpoint_every": 0}, "'checkpoint_every' parameter of collab.fit"),
])
def test_checkpoint_option_errors(digits, kw, match):
    with pytest.raises(InvalidParameterError, match=match):
        collab.fit(_mlp(digits), digits, **{**KW, **kw})


def test_pipeline_resume_keeps_the_collab_state(tmp_path):
    cfg = {"data": {"name": "digits", "n_train": 200, "n_test": 50}, "model": {"name": "mlp"},
           "train": {"epochs": 2, "batch_size": 32, "lr": 0.1},
           "collab": {"workers": 5, "f": 1, "aggregator": "monna", "byzantine": "sign_flip"}, "evaluations": []}
    res = pipeline.run(cfg, out=tmp_path, resume=True, progress=False)
    state = torch.load(tmp_path / "train_state" / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["history"]["test_acc"] == res.history["test_acc"]
    again = pipeline.run(cfg, out=tmp_path, resume=True, progress=False)  # resumes from the finished state
    assert again.metrics == res.metrics
