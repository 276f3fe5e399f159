"""IBP/CROWN hardening: NaN inputs and bad labels refused, BatchNorm's eval statistics in every path,
CROWN's working set bounded by ``max_memory`` with the same results."""

import pytest
import torch
from torch import nn

from robustlab.certify import _crown, certified_accuracy, interval_bounds, margin_bounds, tightness, verified
from robustlab.certify.ibp import _ibp_forward, _layers


def _bn_net(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 6 * 6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(-1, 1)
    return net


def _cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 4, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 4, stride=2, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(8 * 2 * 2, 12), nn.ReLU(), nn.Linear(12, 5)).eval()


X = torch.rand(5, 1, 6, 6, generator=torch.Generator().manual_seed(1))
X8 = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("method", ["ibp", "crown_ibp", "crown"])
def test_train_mode_batchnorm_bounds_at_eps_zero_equal_the_eval_forward(method):
    net = _bn_net()
    with torch.no_grad():
        z = net.eval()(X)
    y = z.argmax(1)
    net.train()
    before = {k: v.clone() for k, v in net.named_buffers()}
    with torch.no_grad():
        lo, up = interval_bounds(net, X, eps=0.0, method=method)
        mb = margin_bounds(net, X, y, eps=0.0, method=method)
    torch.testing.assert_close(lo, z, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(up, z, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mb, z.gather(1, y[:, None]) - z, rtol=1e-5, atol=1e-5)
    assert net.training and all(m.training for m in net.modules())  # modes restored
    assert all(torch.equal(v, before[k]) for k, v in net.named_buffers())  # statistics untouched


def test_every_path_gives_the_same_answer_in_train_and_eval_mode():
    net = _bn_net(1)
    y = torch.tensor([0, 1, 2, 0, 1])
    results = {}
    for mode in (False, True):
        net.train(mode)
        with torch.no_grad():
            results[mode] = [
                *interval_bounds(net, X, eps=0.02), *interval_bounds(net, X, eps=0.02, method="crown"),
                margin_bounds(net, X, y, eps=0.02, method="crown_ibp"),
                verified(net, X, y, eps=0.001).float(),
                torch.tensor(certified_accuracy(net, (X, y), eps=0.001, method="crown")),
            ]
        results[mode].append(tightness(net, X, y))
    for a, b in zip(results[False], results[True]):
        torch.testing.assert_close(a, b)
    # the clipped box keeps the clean point: its logits lie inside the bounds
    with torch.no_grad():
        lo, up = interval_bounds(net.train(), X, eps=0.05)
        z = net.eval()(X)
    assert bool((lo <= z + 1e-5).all() and (z <= up + 1e-5).all())


def test_batchnorm_without_running_statistics_is_refused():
    net = nn.Sequential(nn.Flatten(), nn.Linear(36, 4), nn.BatchNorm1d(4, track_running_stats=False), nn.ReLU(),
                        nn.Linear(4, 2)).eval()
    with pytest.raises(TypeError, match="track_running_stats"):
        interval_bounds(net, X, eps=0.01)
    with pytest.raises(TypeError, match="track_running_stats"):
        verified(net, X, torch.zeros(5, dtype=torch.long), eps=0.01, method="crown")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_inputs_are_refused_by_every_entry_point(bad):
    net = _cnn()
    x = X8.clone()
    x[2, 0, 3, 3] = bad
    y = torch.zeros(5, dtype=torch.long)
    calls = [lambda: interval_bounds(net, x, eps=0.01), lambda: interval_bounds(net, x, eps=0.01, clip=None),
             lambda: margin_bounds(net, x, y, eps=0.01, method="crown_ibp"),
             lambda: verified(net, x, y, eps=0.01), lambda: certified_accuracy(net, (x, y), eps=0.01),
             lambda: tightness(net, x, y)]
    for fn in calls:
        with pytest.raises(ValueError, match="'x'.*NaN or infinite"):
            fn()


@pytest.mark.parametrize("y, kind, text", [
    (torch.tensor([0, 1, 5, 0, 1]), ValueError, r"outside \[0, 5\)"),
    (torch.tensor([0, -1, 2, 0, 1]), ValueError, r"outside \[0, 5\)"),
    (torch.tensor([0.0, 1, 2, 0, 1]), TypeError, "integer class indices"),
    (torch.tensor([0, 1, 2]), ValueError, r"shape \(5,\)"),
    ([0, 1, 2, 0, 1], ValueError, r"shape \(5,\)"),
])
def test_bad_labels_are_refused_with_a_clear_message(y, kind, text):
    net = _cnn()
    for fn in (lambda: margin_bounds(net, X8, y, eps=0.01), lambda: margin_bounds(net, X8, y, eps=0.01, method="crown"),
               lambda: verified(net, X8, y, eps=0.01), lambda: certified_accuracy(net, (X8, y), eps=0.01),
               lambda: tightness(net, X8, y)):
        with pytest.raises(kind, match=text):
            fn()
    # a model not ending in Linear (the class count comes from the bounds)
    net2 = nn.Sequential(*_cnn(), nn.ReLU()).eval()
    with pytest.raises(kind, match=text):
        margin_bounds(net2, X8, y, eps=0.01)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8, torch.int8])
def test_any_integer_label_dtype_is_accepted(dtype):
    net = _cnn()
    y = torch.tensor([0, 1, 4, 2, 3])
    with torch.no_grad():
        for method in ("ibp", "crown_ibp"):
            torch.testing.assert_close(margin_bounds(net, X8, y.to(dtype), eps=0.02, method=method),
                                       margin_bounds(net, X8, y, eps=0.02, method=method), rtol=0, atol=0)
        assert torch.equal(verified(net, X8, y.to(dtype), eps=0.001), verified(net, X8, y, eps=0.001))


def test_max_memory_is_validated():
    with pytest.raises(ValueError, match="'max_memory'"):
        interval_bounds(_cnn(), X8, eps=0.01, method="crown", max_memory=0)
    with pytest.raises(ValueError, match="'progress'"):
        verified(_cnn(), X8, torch.zeros(5, dtype=torch.long), eps=0.01, progress="yes")


@pytest.mark.parametrize("method, tiny", [("crown_ibp", 1), ("crown", 100_000)])
def test_chunked_crown_gives_the_same_bounds(method, tiny):
    net = _cnn(2)
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    with torch.no_grad():
        full = interval_bounds(net, x, eps=0.03, method=method, max_memory=None)
        small = interval_bounds(net, x, eps=0.03, method=method, max_memory=200_000)  # several row chunks
        mb_full = margin_bounds(net, x, y, eps=0.03, method=method, max_memory=None)
        mb_small = margin_bounds(net, x, y, eps=0.03, method=method, max_memory=tiny)  # a few rows at a time
    # same arithmetic per row; only the GEMM blocking may change the last bit
    for a, b in zip(full, small):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(mb_full, mb_small, rtol=1e-6, atol=1e-6)
    ok_full = verified(net, x, y, eps=0.005, method=method, max_memory=None)
    ok_small = verified(net, x, y, eps=0.005, method=method, max_memory=tiny)
    assert torch.equal(ok_full, ok_small)


def test_crown_working_set_stays_under_max_memory(monkeypatch):
    net = _cnn(3)
    x = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    y = torch.randint(0, 5, (40,), generator=torch.Generator().manual_seed(3))
    budget = 2_000_000
    seen = []
    real = _crown._crown_backward

    def spy(layers, records, lam, x_, *args, **kw):
        n, s = lam.shape[:2]
        widths = [r[0][0].numel() for r in records[:len(layers)]]
        seen.append(n * s * max(widths) * lam.element_size())
        return real(layers, records, lam, x_, *args, **kw)

    monkeypatch.setattr(_crown, "_crown_backward", spy)
    ok = verified(net, x, y, eps=0.01, method="crown", batch_size=1000, max_memory=budget)
    assert ok.shape == (40,) and len(seen) > 2
    # one coefficient tensor is a twelfth of the estimated working set
    assert max(seen) * 12 <= budget
    # the default cap keeps the CLI's batch of 1000 for full CROWN on an MNIST CNN to about 1 GiB
    mnist = nn.Sequential(nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 4, stride=2, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10))
    x1 = torch.rand(1, 1, 28, 28)
    with torch.no_grad():
        _, recs = _ibp_forward(_layers(mnist), x1, 0.0, "linf", None)
    per = _crown.crown_bytes_per_sample(_layers(mnist), recs, x1, "crown", 10)
    assert 100e6 < per < 1e9  # ~450 MB per point: 1000 points at once would need ~450 GB
    chunk = max(1, min(1000, _crown.DEFAULT_MAX_MEMORY // per))
    assert chunk * per <= _crown.DEFAULT_MAX_MEMORY
