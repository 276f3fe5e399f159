"""fit(checkpoint_dir=..., resume=True): a run SIGKILLed mid-epoch and resumed ends bit-identical on the CPU."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from _helpers import flat_params as _params
from _helpers import tiny_mlp

from robustlab import data, models
from robustlab._validation import InvalidParameterError
from robustlab.training import fit

# Every kind of state at once: BatchNorm buffers, dropout (torch's global RNG), Adam moments, cosine LR
# position, per-sample loss state (ALDR-KL lambda), PGD random starts (objective generator), crop_flip (augment
# generator), weight EMA and clean-accuracy selection on a held-out split.
CHILD = textwrap.dedent('''
    import json, os, signal, sys
    import torch
    from torch import nn
    from robustlab import data
    from robustlab.training import fit

    torch.set_num_threads(1)
    mode, ckpt, out = sys.argv[1], sys.argv[2], sys.argv[3]
    d = data.load("digits").subset(n_train=240, n_test=60)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(),
                                      nn.Dropout(0.2), nn.Linear(32, 10))
            self.armed, self.calls = False, 0

        def forward(self, x):
            if self.armed and self.training:
                self.calls += 1
                if self.calls == 3:  # a few steps into the epoch after the checkpoint: no clean shutdown
                    os.kill(os.getpid(), signal.SIGKILL)
            return self.body(x)

    torch.manual_seed(0)
    net = Net()

    def arm(epoch, row):
        if mode == "kill" and epoch == KILL_AFTER:
            net.armed = True

    res = fit(net, d, loss="aldr_kl", objective="pgd_at", objective_kw={"eps": 0.1, "steps": 2},
              augment="crop_flip", augment_kw={"padding": 2}, optimizer="adam", lr=1e-2, schedule="cosine",
              epochs=EPOCHS, batch_size=50, seed=7, ema=0.9, select="clean", val_fraction=0.2,
              checkpoint_dir=ckpt, checkpoint_every=1, resume=(mode == "resume"), callback=arm, progress=False)
    torch.save({k: v for k, v in res.model.state_dict().items()}, out)
    hist = {k: v for k, v in res.history.items() if k != "time_s"}
    with open(out + ".json", "w") as fh:
        json.dump(hist, fh)
''')


def _run(tmp_path, mode, ckpt, out, epochs=4, kill_after=2):
    script = tmp_path / "child.py"
    script.write_text(CHILD.replace("KILL_AFTER", str(kill_after)).replace("EPOCHS", str(epochs)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(script), mode, str(ckpt), str(out)], env=env,
                          capture_output=True, text=True, timeout=300)


def test_sigkilled_run_resumes_bit_identical(tmp_path):
    full = _run(tmp_path, "full", tmp_path / "full", tmp_path / "full.pt")
    assert full.returncode == 0, full.stderr
    killed = _run(tmp_path, "kill", tmp_path / "run", tmp_path / "never.pt")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "never.pt").exists()
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["epoch"] == 2  # the epoch-2 state was written; killed 3 steps into epoch 3
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["best.pt", "last.pt"]  # no temp files
    resumed = _run(tmp_path, "resume", tmp_path / "run", tmp_path / "resumed.pt")
    assert resumed.returncode == 0, resumed.stderr
    a, b = torch.load(tmp_path / "full.pt"), torch.load(tmp_path / "resumed.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resuming"
    ha = json.loads((tmp_path / "full.pt.json").read_text())
    hb = json.loads((tmp_path / "resumed.pt.json").read_text())
    assert ha == hb and ha["epoch"] == [1.0, 2.0, 3.0, 4.0] and len(ha["selected_epoch"]) == 1


@pytest.fixture(scope="module")
def digits():
    return data.load("digits").subset(n_train=200, n_test=50)


_model = tiny_mlp


def test_in_process_resume_equals_uninterrupted_and_fresh_resume_starts_over(digits, tmp_path):
    kw = dict(loss="tgce", epochs=6, batch_size=40, seed=1, progress=False)
    full = fit(_model(digits), digits, **kw)
    fresh = fit(_model(digits), digits, checkpoint_dir=tmp_path / "a", resume=True, **kw)  # nothing to resume
    assert torch.equal(_params(full.model), _params(fresh.model))

    class Stop(Exception):
        pass

    def stop_at_4(epoch, row):
        if epoch == 4:
            raise Stop

    with pytest.raises(Stop):
        fit(_model(digits), digits, checkpoint_dir=tmp_path / "b", checkpoint_every=2, callback=stop_at_4, **kw)
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["epoch"] == 2  # every 2 epochs
    res = fit(_model(digits, seed=5), digits, checkpoint_dir=tmp_path / "b", resume=True, **kw)  # other init: overwritten
    assert torch.equal(_params(full.model), _params(res.model))
    assert res.history["kept_fraction"] == full.history["kept_fraction"]  # TGCE pruning state restored
    assert res.history["epoch"] == full.history["epoch"]


def test_resume_with_other_settings_is_refused(digits, tmp_path):
    fit(_model(digits), digits, epochs=2, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(InvalidParameterError, match=r"other settings \(lr: 0.1 in the checkpoint, 0.05 now; "
                                                    r"seed: 0 in the checkpoint, 3 now\)"):
        fit(_model(digits), digits, epochs=2, lr=0.05, seed=3, checkpoint_dir=tmp_path, resume=True, progress=False)
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable robustlab training state"):
        fit(_model(digits), digits, epochs=2, checkpoint_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(InvalidParameterError, match="'resume' parameter of fit needs checkpoint_dir"):
        fit(_model(digits), digits, resume=True, progress=False)
    with pytest.raises(InvalidParameterError, match="'checkpoint_every'"):
        fit(_model(digits), digits, checkpoint_dir=tmp_path, checkpoint_every=0, progress=False)


def test_state_file_loads_without_code(digits, tmp_path):
    fit(_model(digits), digits, epochs=1, checkpoint_dir=tmp_path, progress=False, optimizer="adam")
    state = torch.load(tmp_path / "last.pt", weights_only=True)  # weights_only: no pickled objects inside
    assert {"model", "optimizer", "rng", "history", "loss", "objective", "fingerprint"} <= set(state)


# -- the rule for every registered objective and every stateful or stochastic loss ----------------------------
class _Stop(Exception):
    pass


def _stop_after(k):
    def cb(epoch, row):
        if epoch == k:
            raise _Stop

    return cb


def _interrupted_then_resumed_equals_full(tmp_path, make_model, d, kw):
    full = fit(make_model(), d, progress=False, **kw())
    with pytest.raises(_Stop):
        fit(make_model(), d, checkpoint_dir=tmp_path, callback=_stop_after(2), progress=False, **kw())
    res = fit(make_model(), d, checkpoint_dir=tmp_path, resume=True, progress=False, **kw())
    assert torch.equal(_params(full.model), _params(res.model))
    def hist(h):  # NaN-aware (train_acc is NaN for objectives that report no accuracy)
        return json.dumps({k: v for k, v in h.items() if k != "time_s"}, sort_keys=True)

    assert hist(full.history) == hist(res.history)


def _objective(name, d):
    from robustlab.losses import LOSSES
    from robustlab.training import OBJECTIVES

    spec = OBJECTIVES.spec(name)
    if "requires_comp_sum" in spec.tags and "comp_sum" not in LOSSES:
        pytest.skip("the loss zoo has no 'comp_sum' yet")
    kw = dict(spec.example_kwargs)
    for k, v in kw.items():
        if v is None and k.endswith("teacher"):
            torch.manual_seed(1)
            kw[k] = models.create("mlp", input_shape=d.input_shape, num_classes=d.num_classes, hidden=(8,))
    return OBJECTIVES.get(name, **kw), ("comp_sum" if "requires_comp_sum" in spec.tags else "ce")


def _objective_names():
    from robustlab.training import OBJECTIVES

    return OBJECTIVES.available()


@pytest.mark.filterwarnings("ignore:.*collapsed")
@pytest.mark.parametrize("name", _objective_names())
def test_every_objective_resumes_bit_identical(name, tmp_path):
    d = data.load("gaussians", num_classes=3, dim=6, n_train=48, n_test=24, separation=4.0, seed=0)

    def kw():
        obj, loss = _objective(name, d)
        return dict(objective=obj, loss=loss, epochs=4, batch_size=16, seed=2)

    _interrupted_then_resumed_equals_full(tmp_path, lambda: _model(d), d, kw=kw)


def _stateful_losses():
    from robustlab.losses import LOSSES

    return sorted(set(LOSSES.available(tags={"stateful"})) | set(LOSSES.available(tags={"stochastic"})))


@pytest.mark.filterwarnings("ignore:.*collapsed")
@pytest.mark.parametrize("name", _stateful_losses())
def test_every_stateful_or_stochastic_loss_resumes_bit_identical(name, tmp_path):
    d = data.load("gaussians", num_classes=3, dim=6, n_train=48, n_test=24, separation=4.0, seed=0)
    _interrupted_then_resumed_equals_full(tmp_path, lambda: _model(d), d,
                                          kw=lambda: dict(loss=name, epochs=4, batch_size=16, seed=2))


def test_fingerprint_names_callables_without_addresses():
    import torch.nn.functional as F

    from robustlab.training._resume import fingerprint

    a = json.loads(fingerprint(loss=F.cross_entropy, objective=_Stop(), augment=lambda x, g: x))
    assert a["loss"] == "<torch.nn.functional.cross_entropy>"
    assert a["objective"].endswith("._Stop>") and "0x" not in json.dumps(a)
    assert fingerprint(loss=F.cross_entropy) != fingerprint(loss=F.nll_loss)
