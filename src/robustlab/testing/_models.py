"""Conformance checks for every registered model (``robustlab.models.MODELS``).

timm's forward/backward checks: output shape (N, num_classes), finite outputs, every parameter gets a
gradient; plus the ``normalize=`` option, eval determinism, batch size 1 and a checkpoint round trip.
Models tagged ``image_to_image`` (denoisers, autoencoders) return images of the input's shape instead of
logits: they get the shape check below and must learn to remove Gaussian noise in a few steps.
"""

from __future__ import annotations

import tempfile
from typing import Any

import torch

from .._registry import Spec
from . import check


def _build(spec: Spec[Any], seed: int = 0, **override: Any) -> tuple[torch.nn.Module, dict[str, Any]]:
    from ..models import create

    kw = {**spec.example_kwargs, **override}
    torch.manual_seed(seed)
    return create(spec.name, **kw), kw


def _x(kw: dict[str, Any], n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, *kw["input_shape"], generator=torch.Generator().manual_seed(seed))


@check(excludes={"image_to_image"})
def check_forward_shape_finite(spec: Spec[Any]) -> None:
    model, kw = _build(spec)
    model.eval()
    with torch.no_grad():
        out = model(_x(kw))
    assert out.shape == (4, kw["num_classes"]), f"output shape {tuple(out.shape)}"
    assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    assert spec.reference and spec.doc


@check(excludes={"image_to_image"})
def check_num_classes_respected(spec: Spec[Any]) -> None:
    model, kw = _build(spec, num_classes=7)
    model.eval()
    with torch.no_grad():
        assert model(_x(kw, 2)).shape == (2, 7)


@check()
def check_every_parameter_gets_gradient(spec: Spec[Any]) -> None:
    model, kw = _build(spec)
    model.train()
    out = model(_x(kw, 6))
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not bool(torch.isfinite(p.grad).all()))]
    assert not missing, f"parameters without a finite gradient: {missing}"
    assert any(float(p.grad.abs().sum()) > 0 for p in model.parameters() if p.grad is not None)


@check()
def check_eval_deterministic_and_batch_one(spec: Spec[Any]) -> None:
    model, kw = _build(spec)
    model.eval()
    x = _x(kw, 3)
    with torch.no_grad():
        a, b = model(x), model(x)
        single = model(x[:1])
    assert torch.equal(a, b)
    assert torch.allclose(single, a[:1], atol=1e-5, rtol=1e-4), "eval output depends on the batch"


@check()
def check_normalize_option(spec: Spec[Any]) -> None:
    from ..models import Normalize

    built, kw = _build(spec, normalize=(0.5, 0.25))
    assert isinstance(built, torch.nn.Sequential)
    model = built.eval()
    assert isinstance(model[0], Normalize)
    x = _x(kw, 3)
    with torch.no_grad():
        assert torch.allclose(model(x), model[1]((x - 0.5) / 0.25), atol=1e-6)


@check()
def check_checkpoint_round_trip(spec: Spec[Any]) -> None:
    from ..training import load_checkpoint, save_checkpoint

    model, kw = _build(spec, seed=1)
    model.eval()
    x = _x(kw, 2)
    with tempfile.TemporaryDirectory() as d:
        save_checkpoint(model, d)
        torch.manual_seed(123)  # a rebuilt model starts from different weights
        loaded = load_checkpoint(d)
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


@check()
def check_bad_arguments_raise(spec: Spec[Any]) -> None:
    import pytest

    from ..models import create

    kw = dict(spec.example_kwargs)
    with pytest.raises(ValueError, match="num_classes"):
        create(spec.name, **{**kw, "num_classes": 1})
    with pytest.raises(TypeError):
        create(spec.name, **kw, not_an_option=3)


@check(requires={"image_to_image"})
def check_image_to_image_shape_and_denoising(spec: Spec[Any]) -> None:
    """Output has the input's shape (any ``num_classes``), is finite float32; 30 Adam steps on
    ``x + N(0, 0.25²)`` -> ``x`` lower the denoising error."""
    model, kw = _build(spec)
    for c in (kw["num_classes"], 3):
        built, _ = _build(spec, num_classes=c)
        with torch.no_grad():
            out = built.eval()(_x(kw, 4))
        assert out.shape == (4, *kw["input_shape"]) and out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    assert spec.reference and spec.doc
    g = torch.Generator().manual_seed(0)
    x = _x(kw, 32, seed=1)
    noisy = x + 0.25 * torch.randn(x.shape, generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def err() -> float:
        with torch.no_grad():
            return float((model.eval()(noisy) - x).square().mean())

    before = err()
    model.train()
    for _ in range(30):
        loss = (model(noisy) - x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert err() < before, f"{spec.name}: denoising error {before:.4f} -> {err():.4f}"


@check(requires={"autoencoder"})
def check_autoencoder_is_decoder_of_encoder(spec: Spec[Any]) -> None:
    """An ``autoencoder`` exposes ``encoder``/``decoder`` and ``forward = decoder ∘ encoder`` (ZO-AE-DS needs the latent)."""
    model, kw = _build(spec)
    model.eval()
    x = _x(kw, 2)
    with torch.no_grad():
        z = model.encoder(x)
        assert z[0].numel() < x[0].numel(), "the latent code is not smaller than the input"
        assert torch.equal(model.decoder(z), model(x))
