"""Unit tests of the loss zoo: identities and independent reference computations (explicit loops/one-hots)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustlab import losses
from robustlab._validation import InvalidParameterError
from robustlab.losses import functional as LF

ISSUE_NAMES = [
    "ce", "label_smoothing", "focal", "mse", "mae", "gce", "tgce", "sce", "rce", "nce", "nce_rce", "nce_agce",
    "nce_aul", "js", "rll", "cs", "ww", "comp_sum", "zloss", "ensloss", "ldr_kl", "aldr_kl",
]


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    f = 3 * torch.randn(7, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (7,), generator=g)
    return f, y


def _probs(f):
    e = np.exp(f - f.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_registry_has_every_issue_name():
    assert set(ISSUE_NAMES) <= set(losses.available())
    with pytest.raises(KeyError, match="Did you mean 'ldr_kl'"):
        losses.get("ldr_k")


def test_every_public_name_has_a_docstring():
    for name in losses.__all__:
        obj = getattr(losses, name)
        if callable(obj):
            assert (obj.__doc__ or "").strip(), name
    for name in LF.__all__:
        assert (getattr(LF, name).__doc__ or "").strip(), name


# -- references in numpy, straight from the formulas ------------------------------------------
def _reference(name, f, y, **kw):
    f = f.numpy()
    y = y.numpy()
    n, k = f.shape
    p = _probs(f)
    onehot = np.eye(k)[y]
    py = p[np.arange(n), y]
    fy = f[np.arange(n), y]
    if name == "label_smoothing":
        s = kw["smoothing"]
        return -((1 - s) * np.log(py) + s * np.log(p).mean(1))
    if name == "focal":
        return -((1 - py) ** kw["gamma"]) * np.log(py)
    if name == "mse":
        return ((onehot - p) ** 2).sum(1)
    if name == "mae":
        return np.abs(onehot - p).sum(1)
    if name == "gce":
        return (1 - py ** kw["q"]) / kw["q"]
    if name == "rce":
        return -(p * np.log(np.clip(onehot, math.exp(-4), 1))).sum(1)
    if name == "sce":
        return kw["alpha"] * -np.log(py) + kw["beta"] * _reference("rce", torch.tensor(f), torch.tensor(y))
    if name == "nce":
        return (-np.log(py)) / (-np.log(p).sum(1))
    if name == "nce_rce":
        return kw["alpha"] * _reference("nce", torch.tensor(f), torch.tensor(y)) + kw["beta"] * _reference(
            "rce", torch.tensor(f), torch.tensor(y))
    if name == "nce_agce":
        a, q = kw["a"], kw["q"]
        return kw["alpha"] * (np.log(py) / np.log(p).sum(1)) + kw["beta"] * ((a + 1) ** q - (a + py) ** q) / q
    if name == "nce_aul":
        a, q = kw["a"], kw["p"]
        return kw["alpha"] * (np.log(py) / np.log(p).sum(1)) + kw["beta"] * ((a - py) ** q - (a - 1) ** q) / q
    if name == "js":
        p1 = kw["pi"]
        m = p1 * onehot + (1 - p1) * p
        with np.errstate(divide="ignore", invalid="ignore"):
            kl1 = np.where(onehot > 0, onehot * np.log(onehot / m), 0).sum(1)
        kl2 = (p * np.log(p / m)).sum(1)
        return (p1 * kl1 + (1 - p1) * kl2) / (-(1 - p1) * np.log(1 - p1))
    if name == "rll":
        a = kw["alpha"]
        out = []
        for i in range(n):
            others = sum(np.log(a + p[i, j]) for j in range(k) if j != y[i])
            out.append(np.log((a + 1) / a) - np.log(a + py[i]) + others / (k - 1))
        return np.array(out)
    if name == "cs":
        return np.array([max(0.0, max(kw["margin"] + f[i, j] - fy[i] for j in range(k) if j != y[i]))
                         for i in range(n)])
    if name == "ww":
        return np.array([sum(max(0.0, kw["margin"] + f[i, j] - fy[i]) for j in range(k) if j != y[i])
                         for i in range(n)])
    if name == "zloss":
        mu = f.mean(1)
        sd = f.std(1)  # population std (ddof=0)
        z = (fy - mu) / sd
        a, b = kw["a"], kw["b"]
        return np.log1p(np.exp(a * (b - z))) / a
    if name == "ldr_kl":
        lam, c = kw["lam"], kw["margin"]
        out = []
        for i in range(n):
            terms = [math.exp((c * (j != y[i]) + f[i, j] - fy[i]) / lam) for j in range(k)]
            out.append(lam * math.log(sum(terms) / k))
        return np.array(out)
    raise KeyError(name)


CASES = [
    ("label_smoothing", {"smoothing": 0.2}), ("focal", {"gamma": 2.0}), ("focal", {"gamma": 0.5}), ("mse", {}),
    ("mae", {}), ("gce", {"q": 0.7}), ("gce", {"q": 0.05}), ("rce", {}), ("sce", {"alpha": 0.3, "beta": 0.7}),
    ("nce", {}), ("nce_rce", {"alpha": 5.0, "beta": 5.0}), ("nce_agce", {"alpha": 1.0, "beta": 4.0, "a": 6.0, "q": 1.5}),
    ("nce_aul", {"alpha": 1.0, "beta": 4.0, "a": 6.3, "p": 1.5}), ("js", {"pi": 0.5}), ("js", {"pi": 0.9}),
    ("rll", {"alpha": 0.1}), ("cs", {"margin": 1.0}), ("ww", {"margin": 0.5}), ("zloss", {"a": 2.0, "b": 0.5}),
    ("ldr_kl", {"lam": 0.7, "margin": 0.3}),
]


@pytest.mark.parametrize("name, kw", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_against_numpy_reference(batch, name, kw):
    f, y = batch
    got = getattr(LF, name)(f, y, **kw, reduction="none")
    ref = torch.tensor(_reference(name, f, y, **kw))
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-10)
    mod = losses.get(name, **kw, reduction="none")
    torch.testing.assert_close(mod(f, y), ref, rtol=1e-9, atol=1e-10)


# -- identities -------------------------------------------------------------------------------------
def test_ldr_kl_margin0_lam1_is_ce_minus_logk(batch):
    f, y = batch
    got = LF.ldr_kl(f, y, lam=1.0, margin=0.0, normalize=None, reduction="none")
    torch.testing.assert_close(got, F.cross_entropy(f, y, reduction="none") - math.log(5))


def test_ldr_kl_margin0_is_temperature_scaled_ce(batch):
    f, y = batch
    got = LF.ldr_kl(f, y, lam=3.0, margin=0.0, reduction="none")
    torch.testing.assert_close(got, 3.0 * (F.cross_entropy(f / 3.0, y, reduction="none") - math.log(5)))


@pytest.mark.parametrize("lam", [1e-2, 1e-3, 1e-4])
def test_ldr_kl_small_lam_tends_to_crammer_singer(batch, lam):
    f, y = batch
    got = LF.ldr_kl(f, y, lam=lam, margin=0.5, reduction="none")
    cs = LF.cs(f, y, margin=0.5, reduction="none")
    # lam*log((1/K) sum exp(z/lam)) lies in [max z - lam log K, max z]
    assert bool((got <= cs + 1e-12).all()) and bool((got >= cs - lam * math.log(5) - 1e-12).all())


def test_ldr_kl_large_lam_tends_to_average_margin(batch):
    f, y = batch
    c = 0.3
    avg = (c * (1 - F.one_hot(y, 5)) + f - f.gather(1, y[:, None])).mean(1)
    for lam, tol in [(1e3, 1e-1), (1e6, 1e-4)]:
        got = LF.ldr_kl(f, y, lam=lam, margin=c, reduction="none")
        assert float((got - avg).abs().max()) < tol


def test_ldr_kl_normalisations(batch):
    f, y = batch
    sp = F.softplus(f)
    torch.testing.assert_close(LF.ldr_kl(f, y, lam=0.5, margin=0.1, normalize="softplus"),
                               LF.ldr_kl(sp / sp.mean(1, keepdim=True), y, lam=0.5, margin=0.1))
    torch.testing.assert_close(LF.ldr_kl(f, y, normalize="mean_abs"),
                               LF.ldr_kl(f / f.abs().mean(1, keepdim=True), y))
    # scale invariance of both normalisations (softplus only for large positive scale, so use mean_abs)
    torch.testing.assert_close(LF.ldr_kl(7 * f, y, normalize="mean_abs"), LF.ldr_kl(f, y, normalize="mean_abs"))


def test_ldr_kl_gradient_is_worst_case_weights_minus_onehot(batch):
    f, y = batch
    f = f.clone().requires_grad_(True)
    lam, c = 0.8, 0.2
    LF.ldr_kl(f, y, lam=lam, margin=c, reduction="sum").backward()
    z = (c * (1 - F.one_hot(y, 5)) + f.detach() - f.detach().gather(1, y[:, None])) / lam
    torch.testing.assert_close(f.grad, torch.softmax(z, 1) - F.one_hot(y, 5).double())


@pytest.mark.parametrize("tau, other", [
    (0.0, lambda f, y: (f - f.gather(1, y[:, None])).exp().sum(1) - 1.0),  # sum over k != y of exp(f_k - f_y)
    (1.0, lambda f, y: F.cross_entropy(f, y, reduction="none")),
    (1.5, lambda f, y: LF.gce(f, y, q=0.5, reduction="none")),
    (2.0, lambda f, y: LF.mae(f, y, reduction="none") / 2),
])
def test_comp_sum_special_cases(batch, tau, other):
    f, y = batch
    torch.testing.assert_close(LF.comp_sum(f, y, tau=tau, reduction="none"), other(f, y))


def test_comp_sum_continuous_at_tau_one(batch):
    f, y = batch
    ce = F.cross_entropy(f, y, reduction="none")
    for t in (1 - 1e-9, 1 + 1e-9):
        torch.testing.assert_close(LF.comp_sum(f, y, tau=t, reduction="none"), ce, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("name, kw, const", [
    ("mae", {}, lambda k: 2.0 * (k - 1)),
    ("rce", {}, lambda k: 4.0 * (k - 1)),
    ("nce", {}, lambda k: 1.0),
    ("nce_rce", {"alpha": 2.0, "beta": 0.5}, lambda k: 2.0 + 0.5 * 4.0 * (k - 1)),
    ("rll", {"alpha": 0.5}, lambda k: k * math.log(3.0)),
])
def test_symmetric_losses_sum_to_the_closed_form_constant(name, kw, const):
    g = torch.Generator().manual_seed(1)
    for k in (2, 5, 11):
        f = 4 * torch.randn(9, k, generator=g, dtype=torch.float64)
        total = sum(getattr(LF, name)(f, torch.full((9,), y), **kw, reduction="none") for y in range(k))
        torch.testing.assert_close(total, torch.full((9,), const(k), dtype=torch.float64))


def test_mae_gradient_is_not_zero(batch):
    """Regression for the LDR reference code, whose MAE is identically 0 (zero gradient)."""
    f, y = batch
    f = f.clone().requires_grad_(True)
    LF.mae(f, y).backward()
    assert float(f.grad.abs().sum()) > 1e-3


def test_focal_gamma0_and_smoothing0_are_ce(batch):
    f, y = batch
    ce = F.cross_entropy(f, y, reduction="none")
    torch.testing.assert_close(LF.focal(f, y, gamma=0.0, reduction="none"), ce)
    torch.testing.assert_close(LF.label_smoothing(f, y, smoothing=0.0, reduction="none"), ce)


def test_zloss_shift_and_scale_invariant(batch):
    f, y = batch
    base = LF.zloss(f, y, a=1.5, b=0.3, reduction="none")
    torch.testing.assert_close(LF.zloss(3.7 * f - 11.0, y, a=1.5, b=0.3, reduction="none"), base)
    assert not torch.allclose(LF.zloss(-f, y, a=1.5, b=0.3, reduction="none"), base)


def test_nce_in_unit_interval():
    g = torch.Generator().manual_seed(2)
    f = 10 * torch.randn(50, 7, generator=g)
    v = LF.nce(f, torch.randint(0, 7, (50,), generator=g), reduction="none")
    assert bool((v >= 0).all() and (v <= 1).all())


def test_sce_is_ce_plus_rce_with_a_minus_4(batch):
    f, y = batch
    py = torch.softmax(f, 1).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(LF.sce(f, y, alpha=0.5, beta=0.5, reduction="none"),
                               0.5 * F.cross_entropy(f, y, reduction="none") + 0.5 * 4 * (1 - py))


# -- truncated GCE -------------------------------------------------------------------------------------
def test_tgce_truncation_and_pruning(batch):
    f, y = batch
    q, k = 0.7, 0.3
    py = torch.softmax(f, 1).gather(1, y[:, None]).squeeze(1)
    lq = (1 - py**q) / q
    lqk = (1 - k**q) / q
    torch.testing.assert_close(LF.tgce(f, y, q=q, k=k, reduction="none"), torch.where(py > k, lq, lqk))
    loss = losses.get("tgce", q=q, k=k, num_samples=20, reduction="none")
    idx = torch.arange(3, 10)
    torch.testing.assert_close(loss(f, y, index=idx), lq)  # weights start at 1: plain GCE
    kept = loss.prune(f, y, idx)
    assert torch.equal(loss.weight[idx], (py > k).float()) and float(kept) == float((py > k).float().mean())
    assert float(loss.weight[:3].min()) == 1.0  # other samples untouched
    fg = f.clone().requires_grad_(True)
    v = loss(fg, y, index=idx)
    torch.testing.assert_close(v, torch.where(py > k, lq, lqk))
    v.sum().backward()
    assert bool((fg.grad[py <= k] == 0).all()) and bool((fg.grad[py > k] != 0).any())


# -- ALDR-KL -------------------------------------------------------------------------------------------
def _kl_to_uniform(f, lam):
    q = torch.softmax(f / lam[:, None], 1)
    return (q * torch.log(q * f.shape[1])).sum(1)


def test_aldr_kl_update_matches_closed_form_and_stays_in_range(batch):
    f, y = batch
    lam0, alpha = 2.0, 3.0
    loss = losses.get("aldr_kl", lam0=lam0, alpha=alpha, num_samples=10, margin=0.1, reduction="none")
    idx = torch.tensor([0, 2, 4, 6, 8, 9, 1])
    loss(f, y, index=idx)
    expect = lam0 - lam0 * _kl_to_uniform(f, torch.full((7,), lam0, dtype=torch.float64)) / (alpha * math.log(5))
    torch.testing.assert_close(loss.lam[idx], expect.float())
    assert float(loss.lam[[3, 5, 7]].min()) == lam0  # untouched
    for _ in range(5):  # repeated visits and extreme logits keep lambda in range
        loss(f * 100, y, index=idx)
    assert bool((loss.lam >= lam0 * (1 - 1 / alpha) - 1e-6).all() and (loss.lam <= lam0).all())
    # a confident sample gets a smaller temperature than an uncertain one
    conf = torch.tensor([[10.0, 0, 0, 0, 0], [0.1, 0, 0, 0, 0]], dtype=torch.float64)
    loss(conf, torch.tensor([0, 0]), index=torch.tensor([0, 1]))
    assert float(loss.lam[0]) < float(loss.lam[1])


def test_aldr_kl_value_and_gradient_are_ldr_at_the_new_lambda(batch):
    f, y = batch
    lam0, alpha, c = 1.0, 2.0, 0.1
    loss = losses.get("aldr_kl", lam0=lam0, alpha=alpha, num_samples=7, margin=c, reduction="none")
    fg = f.clone().requires_grad_(True)
    v = loss(fg, y, index=torch.arange(7))
    v.sum().backward()
    lam = loss.lam.double()
    for i in range(7):
        fi = f[i:i + 1].clone().requires_grad_(True)
        ref = LF.ldr_kl(fi, y[i:i + 1], lam=float(lam[i]), margin=c, reduction="sum")
        ref.backward()
        pen = alpha * math.log(5) / (2 * lam0) * (float(lam[i]) - lam0) ** 2
        assert abs(float(v[i].detach()) - (float(ref.detach()) - pen)) < 1e-5
        torch.testing.assert_close(fg.grad[i], fi.grad[0], rtol=1e-5, atol=1e-6)


def test_aldr_kl_large_alpha_is_ldr_kl(batch):
    f, y = batch
    got = LF.aldr_kl(f, y, lam0=1.5, alpha=1e12, margin=0.2, reduction="none")
    torch.testing.assert_close(got, LF.ldr_kl(f, y, lam=1.5, margin=0.2, reduction="none"))


def test_aldr_kl_eval_mode_does_not_write_state(batch):
    f, y = batch
    loss = losses.get("aldr_kl", num_samples=7).eval()
    loss(f, y, index=torch.arange(7))
    assert float(loss.lam.min()) == 1.0
    loss.train()(f, y, index=torch.arange(7))
    assert float(loss.lam.min()) < 1.0


@pytest.mark.parametrize("kw, msg", [
    ({"alpha": 1.0}, "'alpha' parameter of aldr_kl"), ({"alpha": 0.5}, "'alpha'"), ({"lam0": 0.0}, "'lam0'"),
    ({"normalize": "l1"}, "'normalize'"), ({"margin": -1.0}, "'margin'"), ({"num_samples": 0}, "'num_samples'"),
])
def test_aldr_kl_bad_hyperparameters(kw, msg):
    with pytest.raises(InvalidParameterError, match=msg):
        losses.get("aldr_kl", **{"num_samples": 4, **kw})


@pytest.mark.parametrize("name, kw", [
    ("gce", {"q": 0.0}), ("gce", {"q": 1.5}), ("tgce", {"k": 1.0, "num_samples": 3}), ("focal", {"gamma": -1.0}),
    ("label_smoothing", {"smoothing": 1.0}), ("js", {"pi": 1.0}), ("rll", {"alpha": 0.0}), ("nce_aul", {"a": 1.0}),
    ("nce_agce", {"q": 0.0}), ("sce", {"beta": -0.1}), ("comp_sum", {"tau": -0.5}), ("zloss", {"a": 0.0}),
    ("ldr_kl", {"lam": 0.0}), ("cs", {"margin": -0.1}), ("ensloss", {"n_draws": 0}), ("ensloss", {"n_draws": 1.5}),
])
def test_out_of_range_hyperparameters_raise(name, kw):
    with pytest.raises(InvalidParameterError, match="parameter of"):
        losses.get(name, **kw)


# -- EnsLoss -----------------------------------------------------------------------------------------
def _margin(f, y):
    fy = f.gather(1, y[:, None]).squeeze(1)
    return fy - f.scatter(1, y[:, None], float("-inf")).amax(1)


def test_ensloss_derivatives_negative_and_monotone_in_the_margin():
    g = torch.Generator().manual_seed(3)
    f = 2 * torch.randn(64, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (64,), generator=g)
    s = _margin(f, y).requires_grad_(True)
    # feed margins directly through a 2-class logit pair: logits (0, s) with target 1 have margin s
    logits = torch.stack([torch.zeros_like(s), s], 1)
    v = LF.ensloss(logits, torch.ones(64, dtype=torch.long), n_draws=3,
                   generator=torch.Generator().manual_seed(0), reduction="sum")
    v.backward()
    d = s.grad
    assert bool((d < 0).all()) and float(d.min()) >= -1.0 - 2e-6
    order = torch.argsort(s.detach())
    assert bool((d[order][1:] >= d[order][:-1] - 1e-12).all()), "derivative must be non-decreasing in the margin"


def test_ensloss_binary_matches_the_published_margin_and_is_seeded():
    g = torch.Generator().manual_seed(4)
    f = torch.randn(16, 1, generator=g, dtype=torch.float64)
    t = torch.randint(0, 2, (16,), generator=g)
    s = (2 * t - 1).double() * f[:, 0]
    two = torch.cat([torch.zeros_like(f), f], 1)  # K = 2 extension: margin of f_1 - f_0 is the same s
    a = LF.ensloss(f, t, generator=torch.Generator().manual_seed(9), reduction="none")
    b = LF.ensloss(two, t, generator=torch.Generator().manual_seed(9), reduction="none")
    torch.testing.assert_close(a, b)
    c = LF.ensloss(f, t, generator=torch.Generator().manual_seed(10), reduction="none")
    assert not torch.allclose(a, c)
    # explicit recomputation of the published algorithm (derivatives) with the same draws
    eps = torch.randn(1, 16, generator=torch.Generator().manual_seed(9), dtype=torch.float64)[0]
    gs = torch.sort(-eps.exp()).values.clamp_min(-1.0)
    gi = torch.empty(16, dtype=torch.float64)
    gi[torch.argsort(s)] = gs
    gi = torch.where(s > 1, gi / s, gi) - 1e-6
    fg = f.clone().requires_grad_(True)
    LF.ensloss(fg, t, generator=torch.Generator().manual_seed(9), reduction="sum").backward()
    torch.testing.assert_close(fg.grad[:, 0], gi * (2 * t - 1).double())
    with pytest.raises(ValueError, match=r"\{0, 1\}"):
        LF.ensloss(f, torch.full((16,), 2))


def test_ensloss_module_advances_its_generator():
    f, y = torch.randn(8, 3, dtype=torch.float64), torch.randint(0, 3, (8,))
    m = losses.get("ensloss", seed=1, reduction="none")
    a, b = m(f, y), m(f, y)
    assert not torch.allclose(a, b)
    m2 = losses.get("ensloss", seed=1, reduction="none")
    torch.testing.assert_close(m2(f, y), a)


# -- integration with training.fit ---------------------------------------------------------------------
def test_fit_passes_indices_to_stateful_losses():
    from robustlab import data, models, training

    d = data.load("gaussians").subset(n_train=64, n_test=16)
    torch.manual_seed(0)
    model = models.create("linear", input_shape=d.input_shape, num_classes=d.num_classes)
    loss = losses.get("aldr_kl", num_samples=64, lam0=1.0, alpha=2.0)
    training.fit(model, d, loss=loss, epochs=1, batch_size=16, lr=0.1, progress=False, eval_every=0)
    assert float(loss.lam.max()) < 1.0  # every sample was visited and updated


@pytest.mark.parametrize("k", [7, 300])  # both code paths of the fused LDR-KL (K <= 64 on CPU / larger K)
def test_ldr_kl_fused_paths_match_logsumexp_and_gradcheck(k):
    g = torch.Generator().manual_seed(7)
    f = (3 * torch.randn(6, k, generator=g, dtype=torch.float64)).requires_grad_(True)
    y = torch.randint(0, k, (6,), generator=g)
    c, lam = 0.3, 0.7
    marg = c * (1.0 - F.one_hot(y, k).double())
    ref = lam * (torch.logsumexp((marg + f - f.gather(1, y[:, None])) / lam, 1) - math.log(k))
    torch.testing.assert_close(LF.ldr_kl(f, y, lam=lam, margin=c, reduction="none"), ref)
    assert torch.autograd.gradcheck(lambda x: LF.ldr_kl(x, y, lam=lam, margin=c, reduction="none"), (f,))
    lam_i = torch.linspace(0.5, 1.0, 6, dtype=torch.float64)
    v = LF.aldr_kl(f, y, lam0=1.0, alpha=2.0, margin=c, lam=lam_i, reduction="none")
    assert bool(torch.isfinite(v).all())


@pytest.mark.parametrize("k", [5, 300])  # both code paths of the temperature update (K <= 64 on CPU / larger K)
def test_aldr_kl_temperature_update_paths(k):
    g = torch.Generator().manual_seed(8)
    f = 4 * torch.randn(6, k, generator=g, dtype=torch.float64)
    lam = torch.linspace(0.6, 1.0, 6, dtype=torch.float64)
    from robustlab.losses._fn_margin import aldr_kl_lambda

    new = aldr_kl_lambda(f, lam, 1.0, 2.0)
    torch.testing.assert_close(new, 1.0 - _kl_to_uniform(f, lam) / (2.0 * math.log(k)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [3, 300])  # both code paths of the fused LDR-KL
@pytest.mark.parametrize("lam, c, gap", [(1e-3, 0.5, 0.3), (1e-2, 1.0, 0.5), (0.1, 2.0, 1.8)])
def test_ldr_kl_exact_inside_the_margin_when_softmax_saturates(dtype, k, lam, c, gap):
    """Regression: a sample whose plain softmax(f/lam)_y rounds to 1 but which is still inside the margin
    (0 < f_y - f_k < c, c/lam large) must keep its loss ~ c - gap (Crammer-Singer limit) and gradient
    p* - e_y; the former analytic margin folding returned -lam log K and a 0/inf/NaN gradient."""
    f = torch.zeros(2, k, dtype=torch.float64)
    f[:, 0] = gap
    f[1, 2] = -gap  # a second row with unequal competitors
    y = torch.zeros(2, dtype=torch.long)
    x = f.clone().to(dtype).requires_grad_(True)
    got = LF.ldr_kl(x, y, lam=lam, margin=c, reduction="none")
    got.sum().backward()
    ref_in = f.clone().requires_grad_(True)  # independent float64 reference: plain logsumexp, autograd
    marg = c * (1.0 - F.one_hot(y, k).double())
    ref = lam * (torch.logsumexp((marg + ref_in - ref_in[:, :1]) / lam, 1) - math.log(k))
    ref.sum().backward()
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(got.double(), ref.detach(), rtol=tol, atol=tol)
    torch.testing.assert_close(x.grad.double(), ref_in.grad, rtol=tol, atol=tol)
    assert float(got[0].detach()) > 0.5 * (c - gap)  # near the Crammer-Singer value c - gap, not ~0
    # the per-sample temperatures of ALDR-KL go through the same kernel
    lam_i = torch.full((2,), lam, dtype=torch.float64)
    torch.testing.assert_close(LF.aldr_kl(f, y, lam0=lam, alpha=1e12, margin=c, lam=lam_i, reduction="none"),
                               ref.detach(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("lam", [torch.zeros(3), -torch.ones(3), torch.full((3,), float("nan")),
                                 torch.full((3,), float("inf")), torch.ones(3, dtype=torch.long)])
def test_aldr_kl_rejects_bad_temperatures(lam):
    """Regression: the public per-sample 'lam' of aldr_kl was only shape-checked (0 gave NaN, -1 a number)."""
    with pytest.raises(InvalidParameterError, match="'lam' parameter of aldr_kl"):
        LF.aldr_kl(torch.randn(3, 4), torch.tensor([0, 1, 2]), lam=lam)


@pytest.mark.parametrize("w", [torch.full((3,), float("nan")), torch.full((3,), 5.0), torch.full((3,), -1.0)])
def test_tgce_rejects_bad_weights(w):
    """Regression: the public 'weight' of tgce was only shape-checked (NaN and 5 gave NaN / 3.8 losses)."""
    with pytest.raises(InvalidParameterError, match="'weight' parameter of tgce"):
        LF.tgce(torch.randn(3, 4), torch.tensor([0, 1, 2]), weight=w)
