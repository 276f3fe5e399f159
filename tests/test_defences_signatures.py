"""Robust weight signatures: extraction, exact patch/unpatch, composition, quantization, storage."""

import copy

import pytest
import torch

from robustlab import models
from robustlab._validation import InvalidParameterError
from robustlab.defences import WeightSignature, extract_signature, patch, patches, unpatch


def _mlp(seed):
    torch.manual_seed(seed)
    return models.create("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=(32, 32, 16))


def _state(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


@pytest.fixture
def trio():
    pre = _mlp(0)
    clean, robust = copy.deepcopy(pre), copy.deepcopy(pre)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # two "fine-tuned" descendants of one pretrained model
        for p in clean.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
        for p in robust.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return pre, clean, robust


def test_shallow_layers_are_the_first_half(trio):
    _, clean, robust = trio
    sig = extract_signature(clean, robust)  # 4 Linear layers -> the first 2, weights and biases
    assert sig.layers == ["1.weight", "1.bias", "3.weight", "3.bias"]
    assert extract_signature(clean, robust, 1).layers == ["1.weight", "1.bias"]
    assert len(extract_signature(clean, robust, "all").layers) == 8
    assert extract_signature(clean, robust, ["5"]).layers == ["5.weight", "5.bias"]
    with pytest.raises(InvalidParameterError):
        extract_signature(clean, robust, "deep")
    with pytest.raises(ValueError, match="no parameter"):
        extract_signature(clean, robust, ["nope"])
    with pytest.raises(ValueError, match="same parameters"):
        extract_signature(clean, models.create("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=(16,)))


def test_patch_clean_with_signature_gives_robust_shallow_layers(trio):
    _, clean, robust = trio
    sig = extract_signature(clean, robust)
    target = copy.deepcopy(clean)
    patch(target, sig, 1.0)
    rp, tp, cp = dict(robust.named_parameters()), dict(target.named_parameters()), dict(clean.named_parameters())
    for n in tp:
        ref = rp[n] if n in sig.layers else cp[n]
        assert torch.allclose(tp[n], ref, atol=1e-6), n


def test_patch_then_unpatch_restores_exactly_and_composes(trio):
    pre, clean, robust = trio
    sig_a = extract_signature(clean, robust, "shallow")
    sig_b = extract_signature(pre, robust, "all")
    target = copy.deepcopy(clean)
    original = _state(target)
    patch(target, sig_a, 0.7)
    patch(target, sig_b, -1.3)
    assert [s for s, _ in patches(target)] == [sig_a, sig_b]
    # additive composition: base + 0.7 A - 1.3 B
    ta, tb = sig_a.tensors(), sig_b.tensors()
    for n, p in target.named_parameters():
        expect = original[n] + 0.7 * ta.get(n, 0) - 1.3 * tb.get(n, 0)
        assert torch.allclose(p, expect, atol=1e-6), n
    unpatch(target, sig_a)  # B alone remains, as if only B had been patched
    only_b = patch(copy.deepcopy(clean), sig_b, -1.3)
    for (n, p), q in zip(target.named_parameters(), only_b.parameters()):
        assert torch.equal(p, q), n
    unpatch(target, sig_b)
    for k, v in target.state_dict().items():
        assert torch.equal(v, original[k]), k  # bit-for-bit
    assert patches(target) == []
    with pytest.raises(ValueError):
        unpatch(target, sig_a)


def test_scale_zero_is_a_no_op(trio):
    _, clean, robust = trio
    target = copy.deepcopy(clean)
    patch(target, extract_signature(clean, robust), 0.0)
    for k, v in target.state_dict().items():
        assert torch.equal(v, clean.state_dict()[k])


def test_projection_removes_the_clean_direction(trio):
    pre, clean, robust = trio
    sig = extract_signature(clean, robust, "all", pretrained=pre)
    cp, pp, rp = dict(clean.named_parameters()), dict(pre.named_parameters()), dict(robust.named_parameters())
    for n, d in sig.tensors().items():
        a = (cp[n] - pp[n]).detach().flatten().double()
        tau = (rp[n] - pp[n]).detach().flatten().double()
        assert abs(float(a @ d.flatten().double())) < 1e-4 * float(a.norm() * tau.norm())
        expect = tau - (a @ tau) / (a @ a) * a
        assert torch.allclose(d.flatten().double(), expect, atol=1e-6)


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_signature_is_small_and_accurate(trio, tmp_path, bits):
    _, clean, robust = trio
    full = extract_signature(clean, robust)
    q = extract_signature(clean, robust, bits=bits)
    assert q.nbytes < full.nbytes / 3.5
    assert q.compression > full.compression > 1
    for n, d in full.tensors().items():
        step = float(d.max() - d.min()) / ((1 << bits) - 1)
        assert float((q.tensors()[n] - d).abs().max()) <= step / 2 + 1e-6
    assert "KiB" in q.summary()
    q.save(tmp_path / "sig.pt")
    back = WeightSignature.load(tmp_path / "sig.pt")
    assert back.layers == q.layers and back.nbytes == q.nbytes
    for n, d in q.tensors().items():
        assert torch.equal(back.tensors()[n], d)


def test_patch_rejects_foreign_signatures(trio):
    _, clean, robust = trio
    sig = extract_signature(clean, robust)
    other = models.create("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=(16,))
    with pytest.raises(ValueError):
        patch(other, sig)
    with pytest.raises(TypeError):
        patch(clean, {"1.weight": torch.zeros(1)})
