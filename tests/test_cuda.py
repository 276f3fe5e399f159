"""The library on a CUDA device (issue 13, "GPU"): no device-specific code paths beyond what torch needs.

Each check runs one public entry point on ``cuda`` and asserts where its outputs live; where the computation is
deterministic it is compared with the same call on the CPU. Random draws come from CPU generators (attacks,
smoothing and corruptions draw on the generator's device), so both devices see the same random numbers. TF32 is
switched off for the comparisons (``_exact_fp32``), leaving float32 rounding differences only: hence the stated
``atol``/``rtol`` values. Skipped where CUDA is absent; ``DEVICE`` can be pointed at ``cpu`` to dry-run the
checks' logic on a machine without a GPU.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from robustlab import attacks, models, shift
from robustlab.certify import ibp
from robustlab.certify.smoothing import SmoothedClassifier
from robustlab.conformal import SplitConformal
from robustlab.data import ClassificationData
from robustlab.training import fit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DEVICE = torch.device("cuda")
CPU = torch.device("cpu")
SHAPE = (3, 32, 32)  # CIFAR-shaped
NUM_CLASSES = 10
ATOL, RTOL = 1e-4, 1e-3  # float32 kernels of two devices (TF32 off): rounding differences only


@pytest.fixture(autouse=True)
def _exact_fp32() -> Iterator[None]:
    """No TF32 in matmul/conv while a check runs, so CUDA float32 compares with the CPU at ``ATOL``."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _data(n_train: int = 64, n_test: int = 32) -> ClassificationData:
    """A tiny CIFAR-shaped synthetic set: class-dependent mean colour plus uniform noise, in [0, 1]."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, NUM_CLASSES, (n_train + n_test,), generator=g)
    base = torch.linspace(0.2, 0.8, NUM_CLASSES)[y].view(-1, 1, 1, 1)
    x = (base + 0.2 * (torch.rand(n_train + n_test, *SHAPE, generator=g) - 0.5)).clamp(0, 1)
    return ClassificationData(x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:], y_test=y[n_train:],
                              num_classes=NUM_CLASSES, input_shape=SHAPE, class_names=[str(c) for c in range(10)],
                              name="cifar_shaped_synthetic")


def _model(name: str = "lenet", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.create(name, input_shape=SHAPE, num_classes=NUM_CLASSES).eval()


def _pair(name: str = "lenet") -> tuple[torch.nn.Module, torch.nn.Module]:
    """The same initial weights on the CPU and on ``DEVICE``."""
    cpu = _model(name)
    dev = _model(name).to(DEVICE)
    return cpu, dev


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL, rtol: float = RTOL) -> None:
    torch.testing.assert_close(a.detach().cpu(), b.detach().cpu(), atol=atol, rtol=rtol)


def _on(t: torch.Tensor, device: torch.device) -> None:
    assert t.device.type == device.type, f"expected a tensor on {device}, got one on {t.device}"


def test_fit_crop_flip_bf16_trains_on_the_device() -> None:
    data = _data()
    model, history = fit(_model(), data, epochs=1, batch_size=32, augment="crop_flip", precision="bf16",
                         device=DEVICE, progress=False, seed=0)
    params = list(model.parameters())
    assert all(p.device.type == DEVICE.type and p.dtype == torch.float32 for p in params)  # weights stay fp32
    assert all(torch.isfinite(p).all() for p in params)
    assert torch.isfinite(torch.tensor(history["loss"])).all() and 0.0 <= history["test_acc"][-1] <= 1.0


def test_fit_fp32_matches_the_cpu_run() -> None:
    """Without augmentation the fit is deterministic (CPU permutation generator): same weights up to ATOL."""
    data = _data()
    cpu, _ = fit(_model(), data, epochs=1, batch_size=32, device=CPU, progress=False, seed=0, lr=0.01)
    dev, _ = fit(_model(), data, epochs=1, batch_size=32, device=DEVICE, progress=False, seed=0, lr=0.01)
    for p_cpu, p_dev in zip(cpu.parameters(), dev.parameters(), strict=True):
        _on(p_dev, DEVICE)
        _close(p_dev, p_cpu)


@pytest.mark.parametrize("name", ["pgd", "apgd_ce"])
def test_attacks_run_on_the_device_and_match_the_cpu(name: str) -> None:
    data = _data()
    x, y = data.x_test, data.y_test
    cpu, dev = _pair()
    eps = 8 / 255
    attack = attacks.get(name, eps=eps, steps=10)
    adv_cpu = attack(cpu, x, y, generator=torch.Generator().manual_seed(1))
    adv_dev = attack(dev, x.to(DEVICE), y.to(DEVICE), generator=torch.Generator().manual_seed(1))
    _on(adv_dev, DEVICE)
    assert adv_dev.dtype == torch.float32
    diff = (adv_dev.cpu() - x).abs().amax()
    assert diff <= eps + 1e-6 and adv_dev.min() >= 0 and adv_dev.max() <= 1
    # sign steps amplify float rounding only where a gradient is ~0: demand agreement on 99% of the pixels
    agree = torch.isclose(adv_dev.cpu(), adv_cpu, atol=ATOL, rtol=0).float().mean()
    assert agree >= 0.99, f"{name}: only {agree:.3f} of the pixels agree with the CPU run"


def test_ibp_bounds_and_certified_accuracy_match_the_cpu() -> None:
    data = _data()
    x, y = data.x_test, data.y_test
    cpu, dev = _pair()
    lo_cpu, up_cpu = ibp.interval_bounds(cpu, x, eps=1 / 255)
    lo_dev, up_dev = ibp.interval_bounds(dev, x.to(DEVICE), eps=1 / 255)
    _on(lo_dev, DEVICE)
    _on(up_dev, DEVICE)
    _close(lo_dev, lo_cpu)
    _close(up_dev, up_cpu)
    ok_dev = ibp.verified(dev, x.to(DEVICE), y.to(DEVICE), eps=1 / 255)
    assert torch.equal(ok_dev.cpu(), ibp.verified(cpu, x, y, eps=1 / 255))
    assert ibp.certified_accuracy(dev, (x.to(DEVICE), y.to(DEVICE)), eps=1 / 255) == \
        ibp.certified_accuracy(cpu, (x, y), eps=1 / 255)


def test_smoothing_counts_and_certify_match_the_cpu() -> None:
    """Same noise (CPU generator) on both devices: the argmax counts agree except at ties within rounding."""
    x = _data().x_test[:8]
    cpu, dev = _pair()
    s_cpu = SmoothedClassifier(cpu, sigma=0.25, num_classes=NUM_CLASSES)
    s_dev = SmoothedClassifier(dev, sigma=0.25, num_classes=NUM_CLASSES)
    counts_dev = s_dev.sample_counts(x.to(DEVICE), 200, batch_size=400, generator=torch.Generator().manual_seed(2))
    counts_cpu = s_cpu.sample_counts(x, 200, batch_size=400, generator=torch.Generator().manual_seed(2))
    _on(counts_dev, DEVICE)
    assert (counts_dev.cpu() - counts_cpu).abs().sum() <= 0.01 * counts_cpu.sum()
    cls, radius = s_dev.certify(x.to(DEVICE), n0=20, n=200, alpha=0.01, generator=torch.Generator().manual_seed(3))
    cls_cpu, radius_cpu = s_cpu.certify(x, n0=20, n=200, alpha=0.01, generator=torch.Generator().manual_seed(3))
    assert cls.shape == radius.shape == (8,)
    assert (cls == cls_cpu).float().mean() >= 0.875  # one of 8 points may flip on a near-tie
    assert torch.isfinite(radius).all()


def test_split_conformal_on_device_probabilities_matches_the_cpu() -> None:
    data = _data()
    cpu, dev = _pair()
    with torch.no_grad():
        p_cpu = cpu(data.x_test).softmax(1)
        p_dev = dev(data.x_test.to(DEVICE)).softmax(1)
    _close(p_dev, p_cpu)
    cal, te = slice(0, 16), slice(16, None)
    conf_cpu = SplitConformal("thr", alpha=0.1).calibrate(p_cpu[cal], data.y_test[cal])
    conf_dev = SplitConformal("thr", alpha=0.1).calibrate(p_dev[cal], data.y_test[cal].to(DEVICE))
    _close(conf_dev.threshold_, conf_cpu.threshold_)
    sets = conf_dev.predict_sets(p_dev[te])
    _on(sets, DEVICE)
    assert sets.dtype == torch.bool and sets.shape == (16, NUM_CLASSES)
    # a class whose score sits within rounding of the threshold may differ: allow one cell in the 160
    assert (sets.cpu() != conf_cpu.predict_sets(p_cpu[te])).sum() <= 1


@pytest.mark.parametrize("name", ["brightness", "gaussian_noise"])
def test_corruptions_run_on_the_input_device_and_match_the_cpu(name: str) -> None:
    x = _data().x_test[:8]
    out_dev = shift.corrupt(x.to(DEVICE), name, severity=3, generator=torch.Generator().manual_seed(4))
    out_cpu = shift.corrupt(x, name, severity=3, generator=torch.Generator().manual_seed(4))
    _on(out_dev, DEVICE)
    assert out_dev.shape == x.shape and out_dev.dtype == x.dtype
    assert out_dev.min() >= 0 and out_dev.max() <= 1
    _close(out_dev, out_cpu, atol=1e-6, rtol=1e-6)  # element-wise float32 ops: same rounding on both devices
