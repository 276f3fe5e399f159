"""fit: determinism, schedules, epoch averages, needs_index losses, checkpoints, bad arguments."""

import math
import os

import pytest
import torch
import torch.nn.functional as F

from robustlab import data, models
from robustlab.training import Objective, _checkpoint, fit, load_checkpoint, save_checkpoint
from robustlab.training._fit import _lr_factor


@pytest.fixture
def tiny():
    return data.load("gaussians", num_classes=3, dim=5, n_train=90, n_test=30, seed=0)


def _model(d, seed=0):
    torch.manual_seed(seed)
    return models.create("mlp", input_shape=d.input_shape, num_classes=d.num_classes, hidden=(16,))


def _params(m):
    return torch.cat([p.detach().flatten() for p in m.parameters()])


def test_same_seed_same_model_other_seed_differs(tiny):
    a = fit(_model(tiny), tiny, epochs=3, batch_size=16, seed=1, progress=False).model
    b = fit(_model(tiny), tiny, epochs=3, batch_size=16, seed=1, progress=False).model
    c = fit(_model(tiny), tiny, epochs=3, batch_size=16, seed=2, progress=False).model
    assert torch.equal(_params(a), _params(b))
    assert not torch.equal(_params(a), _params(c))


def test_fit_matches_hand_written_loop(tiny):
    """One epoch of fit == the minimal loop with the same permutation, constant lr, SGD."""
    m1, m2 = _model(tiny), _model(tiny)
    fit(m1, tiny, loss=F.cross_entropy, epochs=1, batch_size=32, lr=0.1, momentum=0.9, weight_decay=0.0,
        schedule="constant", seed=5, eval_every=0, progress=False)
    opt = torch.optim.SGD(m2.parameters(), lr=0.1, momentum=0.9)
    perm = torch.randperm(90, generator=torch.Generator().manual_seed(5))
    m2.train()
    for idx in perm.split(32):
        loss = F.cross_entropy(m2(tiny.x_train[idx]), tiny.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.testing.assert_close(_params(m1), _params(m2))


def test_lr_schedules():
    assert _lr_factor("constant", 7, 10) == 1.0
    assert _lr_factor("cosine", 0, 10) == 1.0 and _lr_factor("cosine", 5, 10) == pytest.approx(0.5)
    assert _lr_factor("cosine", 10, 10) == pytest.approx(0.0, abs=1e-12)
    assert [_lr_factor("step", s, 100) for s in (0, 49, 50, 74, 75, 99)] == [1, 1, 0.1, 0.1, 0.01, 0.01]


def test_schedule_applied_to_optimizer(tiny):
    # inspect the lr through the history: recorded after each epoch (end-of-epoch factor)
    h = fit(_model(tiny), tiny, epochs=4, batch_size=30, lr=0.2, schedule="step", progress=False).history
    steps = 3 * 4
    assert h["lr"] == pytest.approx([0.2 * _lr_factor("step", 3 * (e + 1), steps) for e in range(4)])
    h = fit(_model(tiny), tiny, epochs=2, batch_size=30, lr=0.2, schedule="cosine", progress=False).history
    assert h["lr"][0] == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi * 0.5)))


class _BatchSizeMetric(Objective):
    """Reports the batch size as a 'metric': the epoch value must be sum(b_i^2) / n."""

    def __call__(self, model, batch, loss):
        logits = model(batch.x)
        b = torch.tensor(float(batch.x.shape[0]))
        return F.cross_entropy(logits, batch.y), {"bs": b, "acc": torch.tensor(1.0)}


def test_epoch_metrics_are_sample_weighted(tiny):
    h = fit(_model(tiny), tiny, objective=_BatchSizeMetric(), epochs=1, batch_size=40, progress=False).history
    assert h["train_bs"] == [pytest.approx((40**2 + 40**2 + 10**2) / 90)]
    assert h["train_acc"] == [1.0]
    assert set(h) >= {"epoch", "loss", "train_acc", "test_acc", "lr", "time_s"}


def test_eval_every(tiny):
    h = fit(_model(tiny), tiny, epochs=5, batch_size=30, eval_every=2, progress=False).history
    assert h["epoch"] == [2.0, 4.0, 5.0]
    assert fit(_model(tiny), tiny, epochs=2, eval_every=0, progress=False).history["epoch"] == []


def test_test_acc_matches_predictions(tiny):
    res = fit(_model(tiny), tiny, epochs=2, batch_size=30, progress=False)
    res.model.eval()
    with torch.no_grad():
        acc = float((res.model(tiny.x_test).argmax(1) == tiny.y_test).float().mean())
    assert res.history["test_acc"][-1] == pytest.approx(acc)


class _IndexLoss(torch.nn.Module):
    needs_index = True

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, logits, target, index=None):
        self.seen.append((index.clone(), target.clone()))
        return F.cross_entropy(logits, target)


def test_needs_index_losses_get_dataset_indices(tiny):
    loss = _IndexLoss()
    noisy = tiny.with_train_labels(torch.roll(tiny.y_train, 1))
    fit(_model(tiny), noisy, loss=loss, epochs=2, batch_size=25, progress=False)
    first_epoch = loss.seen[:4]
    idx = torch.cat([i for i, _ in first_epoch])
    assert sorted(idx.tolist()) == list(range(90))  # every sample once per epoch
    for i, t in loss.seen:
        assert torch.equal(noisy.y_train[i], t)


def test_learns_easy_data(tiny):
    h = fit(_model(tiny), tiny, epochs=15, batch_size=16, lr=0.1, progress=True).history
    assert h["loss"][-1] < h["loss"][0] and h["test_acc"][-1] > 0.8


def test_bad_arguments(tiny):
    m = _model(tiny)
    for kw, msg in [({"epochs": 0}, "'epochs' parameter of fit"), ({"optimizer": "rmsprop"}, "'optimizer'"),
                    ({"schedule": "linear"}, "'schedule'"), ({"lr": -1.0}, "'lr'"), ({"batch_size": 0}, "'batch_size'"),
                    ({"momentum": 1.0}, "'momentum'"), ({"loss": F.cross_entropy, "loss_kw": {"q": 1}}, "loss_kw"),
                    ({"loss": 3}, "'loss' parameter"), ({"loss": "not_a_loss"}, "Unknown loss")]:
        with pytest.raises((ValueError, TypeError, KeyError), match=msg):
            fit(m, tiny, progress=False, **kw)
    with pytest.raises(ValueError, match="empty train split"):
        fit(m, tiny.subset(n_train=0), progress=False)
    with pytest.raises(TypeError, match="ClassificationData"):
        fit(m, (tiny.x_train, tiny.y_train), progress=False)


def test_checkpoint_round_trip_weights_only(tmp_path, tiny):
    res = fit(_model(tiny), tiny, epochs=1, progress=False, checkpoint=tmp_path / "run")
    loaded = load_checkpoint(tmp_path / "run")
    assert torch.equal(_params(loaded), _params(res.model))
    assert loaded.robustlab_extra["history"]["epoch"] == [1.0]
    assert oct(os.stat(tmp_path / "run" / "model.pt").st_mode & 0o777) != oct(0o600)


class NotAllowed:
    """An arbitrary class: weights_only loading must refuse to build it."""


def test_checkpoint_refuses_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "robustlab-checkpoint-v1", "state_dict": {}, "config_json": "", "extra_json": "{}",
                "x": NotAllowed()}, path)
    with pytest.raises(ValueError, match="does not unpickle code"):  # InvalidParameterError, naming the file
        load_checkpoint(path, model=torch.nn.Linear(2, 2))


@pytest.mark.parametrize("content", [b"", b"garbage", b"PK\x03\x04broken"], ids=["empty", "garbage", "zip"])
def test_load_checkpoint_bad_files_are_clear_errors(tmp_path, content):
    """The Python loader itself (not only the CLI) turns damaged files into one clear error naming the file."""
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="model.pt"):
        load_checkpoint(path)


def test_checkpoint_write_is_atomic(tmp_path, tiny, monkeypatch):
    m = _model(tiny)
    target = save_checkpoint(m, tmp_path / "model.pt")
    before = target.read_bytes()

    def broken_save(obj, fh):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(_checkpoint.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(_model(tiny, seed=1), target)
    assert target.read_bytes() == before  # the old checkpoint is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temp file left


def test_missing_checkpoint_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.pt"):
        load_checkpoint(tmp_path)


# -- issue 11: fit's safety checks and TGCE pruning ------------------------------------------------------------
def test_output_width_must_match_the_classes(tiny):
    torch.manual_seed(0)
    wide = models.create("mlp", input_shape=tiny.input_shape, num_classes=tiny.num_classes + 1, hidden=(8,))
    before = _params(wide).clone()
    with pytest.raises(ValueError, match=r"output has shape \(1, 4\).*has 3 classes.*num_classes=3"):
        fit(wide, tiny, epochs=1, progress=False)
    assert torch.equal(_params(wide), before)  # refused before any training


def test_non_finite_loss_stops_fit_naming_epoch_and_step(tiny, tmp_path):
    from robustlab.training._fit import NonFiniteLossError

    with pytest.raises(NonFiniteLossError, match=r"non-finite .* at epoch 1, step \d+ of 6 .*Lower the learning rate \(lr=1e\+10\)"):
        fit(_model(tiny), tiny, epochs=3, batch_size=16, lr=1e10, progress=False, checkpoint=tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()
    assert issubclass(NonFiniteLossError, ValueError)


def test_prune_schedule_follows_zhang_sabuncu():
    from robustlab.training._fit import prune_epochs

    assert prune_epochs(120) == [40, 50, 60, 70, 80, 90, 100, 110]  # the paper's run
    assert prune_epochs(20) == [7, 9, 11, 13, 15, 17, 19]
    assert prune_epochs(1) == [] and prune_epochs(3) == [1, 2]


def test_tgce_never_prunes_every_sample_and_records_the_kept_fraction():
    d = data.load("digits", flatten=True)
    torch.manual_seed(0)
    m = models.create("linear", input_shape=d.input_shape, num_classes=d.num_classes)
    # the run: digits, linear model, E = 20; a prune used to keep 0% and leave no gradient. With a tiny
    # lr no sample reaches p_y > k = 0.5 by the first prune: the 10% most confident are kept (min_kept)
    h = fit(m, d, loss="tgce", epochs=20, batch_size=128, lr=1e-4, progress=False).history
    kept = h["kept_fraction"]
    n = d.x_train.shape[0]
    assert len(kept) == 20 and kept[:7] == [1.0] * 7  # first prune at epoch 8 (0-based 7)
    assert kept[7:] == [pytest.approx(math.ceil(0.1 * n) / n)] * 13


def test_tgce_prune_keeps_the_most_confident_when_all_fall_below_k():
    from robustlab import losses

    loss = losses.get("tgce", num_samples=10, k=0.5, min_kept=0.2)
    logits = torch.zeros(10, 4)
    logits[:, 0] = torch.arange(10.0) / 10  # p_0 < 0.5 everywhere, largest for the last rows
    frac = loss.prune(logits, torch.zeros(10, dtype=torch.long), torch.arange(10))
    assert float(frac) == pytest.approx(0.2) and loss.weight.tolist() == [0.0] * 8 + [1.0] * 2
    logits[:5, 0] = 10.0  # half pass the threshold: the paper's rule applies unchanged
    assert float(loss.prune(logits, torch.zeros(10, dtype=torch.long), torch.arange(10))) == 0.5


def test_stateful_loss_index_message_says_indices():
    from robustlab import losses

    loss = losses.get("aldr_kl", num_samples=4)
    with pytest.raises(ValueError, match=r"data-set indices outside \[0, 4\)") as e:
        loss(torch.zeros(2, 3), torch.tensor([0, 1]), index=torch.tensor([0, 7]))
    assert "labels" not in str(e.value)


def test_non_finite_check_runs_without_recording(tiny):
    from robustlab.training._fit import NonFiniteLossError

    with pytest.raises(NonFiniteLossError, match="epoch 1"):
        fit(_model(tiny), tiny, epochs=2, batch_size=16, lr=1e10, eval_every=0, progress=False)


def test_one_logit_column_is_accepted_for_two_classes():
    d = data.load("gaussians", num_classes=2, dim=4, n_train=40, n_test=10, seed=0)
    torch.manual_seed(0)
    m = torch.nn.Linear(4, 1)  # EnsLoss's published binary form: one score per sample
    h = fit(m, d, loss="ensloss", epochs=1, batch_size=16, progress=False).history
    assert math.isfinite(h["loss"][0])
