"""fit on a torch Dataset / DataLoader: the same batches and weights as the in-memory path, clear errors."""

import pytest
import torch
from _helpers import flat_params, tiny_mlp
from torch.utils.data import DataLoader, Dataset, TensorDataset

from robustlab import data
from robustlab._validation import InvalidParameterError
from robustlab.training import fit

KW = dict(epochs=3, batch_size=50, optimizer="adam", lr=1e-2, seed=3, progress=False)


@pytest.fixture(scope="module")
def d():
    return data.load("digits").subset(n_train=300, n_test=80)


class Indexed(Dataset):
    """(x, y, index) items, optionally with the labels as ``targets`` (as an image folder has them)."""

    def __init__(self, x, y, targets=False):
        self.x, self.y = x, y
        if targets:
            self.targets = y.tolist()

    def __len__(self):
        return self.x.shape[0]

    def __getitem__(self, i):
        return self.x[i], self.y[i], i


def _same(a, b):
    assert torch.equal(flat_params(a.model), flat_params(b.model))
    assert a.history.keys() == b.history.keys()
    for k in a.history.keys() - {"time_s"}:  # equal, nan included
        assert torch.equal(torch.tensor(a.history[k]).nan_to_num(-1.0), torch.tensor(b.history[k]).nan_to_num(-1.0)), k


@pytest.mark.parametrize("extra", [
    {},
    {"augment": "crop_flip", "augment_kw": {"padding": 2}, "loss": "aldr_kl"},
    {"loss": "tgce", "objective": "pgd_at", "objective_kw": {"eps": 0.1, "steps": 2}},
    {"precision": "bf16", "ema": 0.9},
])
def test_a_dataset_trains_exactly_like_the_same_tensors_in_memory(d, extra):
    # The streamed batches are the in-memory batches (same permutation, same order), so the weights are equal,
    # not just close; TGCE prunes through a streamed pass over the training set.
    ds = TensorDataset(d.x_train, d.y_train)
    mem = fit(tiny_mlp(d), d, **KW, **extra)
    streamed = fit(tiny_mlp(d), ds, test_data=TensorDataset(d.x_test, d.y_test), **KW, **extra)
    _same(mem, streamed)
    assert streamed.history["test_acc"][-1] == mem.history["test_acc"][-1] >= 0.1  # measured on both paths


def test_dataloader_workers_do_not_change_the_result(d):
    ds = Indexed(d.x_train, d.y_train)
    a = fit(tiny_mlp(d), ds, **KW, loss="aldr_kl")
    b = fit(tiny_mlp(d), ds, **KW, loss="aldr_kl", num_workers=2)
    _same(a, b)
    assert all(v != v for v in b.history["test_acc"])  # no test set given: nan


def test_selection_on_a_dataset_with_targets_matches_the_in_memory_split(d):
    kw = dict(KW, select="clean", val_fraction=0.2)
    mem = fit(tiny_mlp(d), d, **kw)
    streamed = fit(tiny_mlp(d), Indexed(d.x_train, d.y_train, targets=True), test_data=(d.x_test, d.y_test), **kw)
    _same(mem, streamed)
    assert "selected_epoch" in streamed.history


def test_selection_needs_val_data_when_labels_are_unknown(d):
    with pytest.raises(InvalidParameterError, match="val_data"):
        fit(tiny_mlp(d), TensorDataset(d.x_train, d.y_train), **KW, select="clean")
    res = fit(tiny_mlp(d), TensorDataset(d.x_train, d.y_train), **KW, select="clean",
              val_data=TensorDataset(d.x_test, d.y_test))
    assert len(res.history["val_acc"]) == 3
    with pytest.raises(InvalidParameterError, match="val_data and val_fraction"):
        fit(tiny_mlp(d), d, **KW, select="clean", val_fraction=0.1, val_data=TensorDataset(d.x_test, d.y_test))
    with pytest.raises(InvalidParameterError, match="only used with select"):
        fit(tiny_mlp(d), d, **KW, val_data=TensorDataset(d.x_test, d.y_test))


def test_a_dataloader_is_used_as_given(d):
    loader = DataLoader(TensorDataset(d.x_train, d.y_train), batch_size=32, shuffle=False)
    seen = []
    res = fit(tiny_mlp(d), loader, **dict(KW, epochs=1), callback=lambda e, row: seen.append(row))
    assert len(res.history["loss"]) == 1 and seen[0]["train_acc"] > 0
    # its own order: unshuffled batches of 32 give the same result twice (fit's generator is not used)
    again = fit(tiny_mlp(d), loader, **dict(KW, epochs=1, seed=99))
    assert torch.equal(flat_params(res.model), flat_params(again.model))


def test_per_sample_losses_need_indices_from_a_dataloader(d):
    plain = DataLoader(TensorDataset(d.x_train, d.y_train), batch_size=50)
    with pytest.raises(InvalidParameterError, match=r"yields \(x, y\) only.*\(x, y, index\)"):
        fit(tiny_mlp(d), plain, **KW, loss="aldr_kl")
    indexed = DataLoader(Indexed(d.x_train, d.y_train), batch_size=50)
    res = fit(tiny_mlp(d), indexed, **KW, loss="aldr_kl")
    assert res.history["loss"][-1] < res.history["loss"][0]


def test_bad_streaming_inputs_get_clear_errors(d):
    with pytest.raises(TypeError, match="ClassificationData, a torch Dataset or a DataLoader"):
        fit(tiny_mlp(d), [(d.x_train[0], 1)], **KW)
    with pytest.raises(ValueError, match="empty"):
        fit(tiny_mlp(d), TensorDataset(d.x_train[:0], d.y_train[:0]), **KW)
    with pytest.raises(InvalidParameterError, match=r"\(x, y\) or \(x, y, index\)"):
        fit(tiny_mlp(d), TensorDataset(d.x_train), **KW)
    with pytest.raises(InvalidParameterError, match="test_data.*Dataset, a DataLoader or an \\(x, y\\) tensor pair"):
        fit(tiny_mlp(d), d, **KW, test_data="test.csv")
    with pytest.raises(InvalidParameterError, match="num_workers"):
        fit(tiny_mlp(d), d, **KW, num_workers=-1)
    wrong = tiny_mlp(data.load("digits").subset(n_train=20, n_test=5))
    ds3 = TensorDataset(d.x_train, d.y_train)
    ds3.num_classes = 3
    with pytest.raises(ValueError, match="3 classes"):
        fit(wrong, ds3, **KW)


def test_resume_on_the_streaming_path_is_bit_identical(d, tmp_path):
    # interrupted after epoch 2 (an exception in the callback, before epoch 3's checkpoint), then resumed
    ds = Indexed(d.x_train, d.y_train)
    kw = dict(KW, epochs=4, loss="aldr_kl", augment="crop_flip", augment_kw={"padding": 2}, optimizer="adam",
              lr=1e-2, ema=0.9, num_workers=1)

    def net():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                   torch.nn.Dropout(0.2), torch.nn.Linear(32, 10))

    full = fit(net(), ds, **kw)

    def stop(epoch, row):
        if epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(net(), ds, **kw, checkpoint_dir=tmp_path, callback=stop)
    torch.manual_seed(123)  # the resumed run restores torch's global generator itself
    resumed = fit(net(), ds, **kw, checkpoint_dir=tmp_path, resume=True)
    _same(full, resumed)


@pytest.mark.parametrize("batch, match", [
    ((torch.zeros(2, 3),), r"must yield \(x, y\) or \(x, y, index\) items; got a tuple of 1 items"),
    (([1.0, 2.0], torch.zeros(2)), r"must yield input tensors; got list"),
    ((torch.zeros(2, 3), torch.zeros(2, 2)), r"labels of shape \(2, 2\) for inputs of shape \(2, 3\)"),
    ((torch.zeros(2, 3), "cat"), r"must yield integer labels; got str"),
])
def test_one_batch_reader_names_what_is_wrong(batch, match) -> None:
    from robustlab.data._stream import unpack_batch

    with pytest.raises(InvalidParameterError, match=match):
        unpack_batch(batch, "fit", with_index=True)
    x, y, idx = unpack_batch((torch.zeros(2, 3), [0, 1], [5, 6]), "fit", with_index=True)
    assert y.tolist() == [0, 1] and idx.tolist() == [5, 6]
    with pytest.raises(InvalidParameterError, match=r"must yield \(x, y\) items"):  # evaluations: no index
        unpack_batch((torch.zeros(2, 3), torch.zeros(2), torch.zeros(2)), "robust_accuracy")
