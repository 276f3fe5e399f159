"""Skew orthogonal convolution (SOC), block convolution orthogonal parametrisation (BCOP), Björck linear layers.

``SOCConv2d``: Singla & Feizi, "Skew Orthogonal Convolutions", ICML 2021 (arXiv:2105.11417). A zero-padded
"same" convolution whose kernel satisfies ``L[i, j, a, b] = −L[j, i, k−1−a, k−1−b]`` is a skew-symmetric
operator (its adjoint is the convolution with the transposed, flipped kernel), so ``exp(L)`` is orthogonal;
the layer evaluates the Taylor series of ``exp(L)x`` to ``terms`` terms.

``BCOPConv2d``: Li, Haque, Anil, Lucas, Grosse & Jacobsen, "Preventing gradient attenuation in Lipschitz
constrained convolutional networks", NeurIPS 2019 (arXiv:1911.00937): a ``k × k`` orthogonal circular convolution
composed of an orthogonal 1 × 1 convolution and ``k − 1`` 2 × 2 block convolutions of symmetric projectors.

``BjorckLinear``: Björck & Bowie, "An iterative algorithm for computing the best estimate of an orthogonal
matrix", SIAM J. Numer. Anal. 1971, as used by Anil, Lucas & Grosse (ICML 2019) and deel-torchlip:
``W ← W(3/2·I − 1/2·WᵀW)`` drives every singular value of a matrix scaled to ``σ_max ≤ 1`` to 1.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .._validation import InvalidParameterError, check_in_range, check_int

__all__ = ["BJORCK_STARTS", "BCOPConv2d", "BjorckLinear", "SOCConv2d", "bjorck", "taylor_tail"]


def taylor_tail(norm: float, terms: int) -> float:
    """``Σ_{k>terms} normᵏ/k!``: the largest norm of what the ``terms``-term Taylor series of ``exp`` leaves out."""
    partial = sum(norm ** k / math.factorial(k) for k in range(terms + 1))
    return max(0.0, math.exp(norm) - partial)



def _operator_matrix(layer: nn.Module, h: int, w: int, apply: Any) -> torch.Tensor:
    """The dense matrix of a bias-free convolution ``apply`` (float64 ``(n, in, h, w)`` identity batch in, the
    outputs out) on ``h × w`` inputs: ``(out·h·w, in·h·w)``, at most 16384 inputs."""
    c = layer.in_channels
    n = c * h * w
    if n > 16384:
        raise InvalidParameterError(f"{type(layer).__name__}.operator_matrix: {c}x{h}x{w} = {n} inputs is too "
                                    "large for a dense matrix (at most 16384).")
    with torch.no_grad():
        return apply(torch.eye(n, dtype=torch.float64).view(n, c, h, w)).reshape(n, -1).T

class SOCConv2d(nn.Module):
    """Skew orthogonal convolution (Singla & Feizi 2021): ``y = Σ_{k≤K} Lᵏx/k! + b`` with ``L`` skew-symmetric.

    ``L = M − M̃`` with ``M̃`` the transposed, spatially flipped kernel, rescaled so that the sound bound
    ``Σ_taps ‖L[:, :, a, b]‖₂`` on its operator norm equals ``max_norm`` (each tap is a channel mixing times a
    zero-padded shift). Then ``‖exp(L)‖ = 1`` and the truncated series is within ``taylor_tail(max_norm, terms)``
    of it: :meth:`lipschitz_constant` returns ``1 + tail`` (1.7e-10 for the defaults ``max_norm=1``, ``terms=12``).
    Zero padding, stride 1, odd kernel. ``in_channels < out_channels``: the input is zero-padded to
    ``out_channels`` channels (an isometry); ``in > out``: the first ``out_channels`` outputs are kept (1-Lipschitz).
    Computation in float32 whatever the input dtype. Cost: ``terms`` ``max(in, out)``-channel convolutions.
    Shape: ``(N, in, H, W)`` -> ``(N, out, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True, *,
                 terms: int = 12, max_norm: float = 1.0) -> None:
        super().__init__()
        owner = "SOCConv2d"
        self.in_channels = check_int(in_channels, "in_channels", 1, None, owner=owner)
        self.out_channels = check_int(out_channels, "out_channels", 1, None, owner=owner)
        k = check_int(kernel_size, "kernel_size", 1, None, owner=owner)
        if k % 2 == 0:
            raise InvalidParameterError(f"The 'kernel_size' parameter of {owner} must be odd (a 'same' zero-padded "
                                        f"convolution whose adjoint is the flipped kernel). Got {k} instead.")
        self.kernel_size = (k, k)
        self.terms = check_int(terms, "terms", 1, None, owner=owner)
        self.max_norm = float(check_in_range(max_norm, "max_norm", 0.0, None, closed="neither", owner=owner))
        c = max(self.in_channels, self.out_channels)
        self.weight = nn.Parameter(torch.empty(c, c, k, k))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.bias = nn.Parameter(torch.zeros(self.out_channels)) if bias else None

    def skew_kernel(self) -> torch.Tensor:
        """The scaled skew-symmetric kernel ``L`` (float32), operator norm ≤ ``max_norm``."""
        with torch.autocast(self.weight.device.type, enabled=False):
            w = self.weight.float()
            skew = w - w.transpose(0, 1).flip(2, 3)
            bound = torch.linalg.matrix_norm(skew.permute(2, 3, 0, 1), ord=2).sum()
            return skew * (self.max_norm / bound.clamp_min(1e-12))

    def _exp(self, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        pad = (self.kernel_size[0] - 1) // 2
        term, out = x, x
        for i in range(1, self.terms + 1):
            term = nn.functional.conv2d(term, kernel, padding=pad) / i
            out = out + term
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise InvalidParameterError(f"SOCConv2d expects inputs of shape (N, {self.in_channels}, H, W). "
                                        f"Got {tuple(x.shape)} instead.")
        kernel = self.skew_kernel()
        with torch.autocast(x.device.type, enabled=False):
            z = x.float()
            if self.out_channels > self.in_channels:
                z = nn.functional.pad(z, (0, 0, 0, 0, 0, self.out_channels - self.in_channels))
            y = self._exp(z, kernel)[:, :self.out_channels]
            if self.bias is not None:
                y = y + self.bias.float()[:, None, None]
        return y.to(x.dtype)

    def operator_matrix(self, h: int, w: int) -> torch.Tensor:
        """The dense ``(out·h·w, in·h·w)`` matrix of the bias-free layer on ``h × w`` inputs (float64; small sizes)."""
        pad = (0, 0, 0, 0, 0, self.out_channels - self.in_channels)
        return _operator_matrix(self, h, w, lambda eye: self._exp(
            nn.functional.pad(eye, pad) if self.out_channels > self.in_channels else eye,
            self.skew_kernel().double())[:, :self.out_channels])

    def lipschitz_constant(self) -> float:
        """``1 + taylor_tail(max_norm, terms)``: ``exp(L)`` is orthogonal, the truncation adds at most the tail."""
        return 1.0 + taylor_tail(self.max_norm, self.terms)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, terms={self.terms}, "
                f"max_norm={self.max_norm}, bias={self.bias is not None}")


BJORCK_STARTS = ("frobenius", "spectral")


def bjorck(w: torch.Tensor, n_iter: int = 15, *, tol: float | None = None, start: str = "frobenius",
           grad_iters: int | None = None) -> torch.Tensor:
    """Björck–Bowie orthonormalisation of ``(out, in)`` matrices: up to ``n_iter`` steps of ``W ← W(3/2·I − 1/2·WᵀW)``.

    ``start``: ``W₀ = W / ‖(WᵀW)²‖_F^{1/4}`` ("frobenius", an upper bound on σ_max) or ``W / σ_max(W)`` ("spectral",
    exact, deel-torchlip's spectral normalisation). Every σ of ``W₀`` is then ≤ 1 (up to rounding: the step maps any
    σ < 2 to a singular value ≤ 1); the step maps [0, 1] into itself and each σ to 1 (quadratically once near), so
    every iterate is 1-Lipschitz. ``tol``: stop
    once ``‖W_k − W_{k−1}‖_F < tol`` (deel-torchlip's criterion, its default 1e-3; at least one step). ``grad_iters``:
    only the first ``grad_iters`` steps are differentiated, later ones pass the gradient on as their linear term
    ``3/2·W`` (deel-torchlip detaches the cubic term after 4 steps); the values are the same. Every iterate is
    ``W₀·Zₙ`` with ``Zₙ`` a polynomial in the Gram matrix ``G = W₀ᵀW₀`` of the smaller side, so the iteration runs on
    small square matrices in the stable coupled Newton–Schulz form (``T = 3/2·I − 1/2·ZY``, ``Y ← YT``, ``Z ← TZ``,
    ``Y₀ = G``, ``Z₀ = I``; Higham 2008) and ``W₀`` is multiplied once: the same iterates as the plain recursion (to
    1e-15 in float64) at 1/6 of its cost for a 6272 × 256 weight. Shape: ``(..., out, in)`` -> same.
    """
    _check_start(start, "bjorck")
    if w.shape[-2] < w.shape[-1]:
        return bjorck(w.transpose(-2, -1), n_iter, tol=tol, start=start, grad_iters=grad_iters).transpose(-2, -1)
    gram = w.mT @ w
    if start == "spectral":
        scale = torch.linalg.eigvalsh(gram)[..., -1].clamp_min(1e-30).sqrt()
    else:
        scale = torch.linalg.matrix_norm(gram @ gram).clamp_min(1e-30) ** 0.25
    y = gram / (scale * scale)[..., None, None]
    eye = torch.eye(y.shape[-1], dtype=w.dtype, device=w.device)
    z = eye.expand_as(y)
    w0, g0 = w / scale[..., None, None], y.detach()
    limit = n_iter if grad_iters is None else min(n_iter, grad_iters)
    done, steps = 0, 0
    while done < n_iter:
        if done == limit:  # the rest without a graph; the gradient goes on as (3/2)^steps through the last iterate
            with torch.no_grad():
                z_g, y, z = z, y.detach(), z.detach()
                while done < n_iter:
                    z_prev, (y, z) = z, _bjorck_step(y, z, eye)
                    done, steps = done + 1, steps + 1
                    if tol is not None and _step_size(g0, z, z_prev) < tol:
                        break
            out = w0 @ z_g
            return (w0.detach() @ z) + 1.5 ** steps * (out - out.detach())
        z_prev, (y, z) = z, _bjorck_step(y, z, eye)
        done += 1
        if tol is not None and _step_size(g0, z.detach(), z_prev.detach()) < tol:
            break
    return w0 @ z


def _check_start(start: str, owner: str) -> str:
    if start not in BJORCK_STARTS:
        raise InvalidParameterError(f"The 'start' parameter of {owner} must be one of {list(BJORCK_STARTS)}. "
                                    f"Got {start!r} instead.")
    return start


def _bjorck_step(y: torch.Tensor, z: torch.Tensor, eye: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One coupled Newton–Schulz step of :func:`bjorck`: ``T = 3/2·I − 1/2·ZY``, ``(Y, Z) ← (YT, TZ)``."""
    t = 1.5 * eye - 0.5 * z @ y
    return y @ t, t @ z


def _step_size(gram: torch.Tensor, z: torch.Tensor, z_prev: torch.Tensor) -> float:
    """``max ‖W₀Z − W₀Z_prev‖_F`` over the batch, as ``√tr(ΔZᵀ G ΔZ)`` with ``G = W₀ᵀW₀`` (on the small side)."""
    dz = z - z_prev
    return float((gram @ dz * dz).sum((-2, -1)).clamp_min(0).sqrt().max())


class BjorckLinear(nn.Linear):
    """Linear layer with the weight orthonormalised by up to ``n_iter`` Björck–Bowie steps (:func:`bjorck`).

    Orthogonal initialisation, zero bias; ``σ(Q) ≤ 1`` at every step, all σ → 1 (``QᵀQ = I`` when out ≥ in, ``QQᵀ = I``
    otherwise, up to the iteration's convergence). ``tol``, ``start``, ``grad_iters``: see :func:`bjorck`
    (``tol=1e-3, start="spectral", grad_iters=4`` is deel-torchlip's ``SpectralLinear``). Cost: ``2·n_iter``
    products with the ``min(in, out)``-square Gram matrix per forward (more than
    :class:`~robustlab.models._lipschitz.CayleyLinear` for wide layers).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, n_iter: int = 15,
                 tol: float | None = None, start: str = "frobenius", grad_iters: int | None = None) -> None:
        super().__init__(in_features, out_features, bias=bias)
        owner = "BjorckLinear"
        self.n_iter = check_int(n_iter, "n_iter", 1, None, owner=owner)
        self.tol = None if tol is None else float(check_in_range(tol, "tol", 0.0, None, closed="neither", owner=owner))
        self.start = _check_start(start, owner)
        self.grad_iters = None if grad_iters is None else check_int(grad_iters, "grad_iters", 0, None, owner=owner)
        with torch.no_grad():
            nn.init.orthogonal_(self.weight)
            if self.bias is not None:
                self.bias.zero_()

    def orthogonal_weight(self) -> torch.Tensor:
        """The ``(out, in)`` orthonormalised matrix used by ``forward`` (float32, also under autocast)."""
        with torch.autocast(self.weight.device.type, enabled=False):
            return bjorck(self.weight.float(), self.n_iter, tol=self.tol, start=self.start, grad_iters=self.grad_iters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.orthogonal_weight().to(x.dtype)
        return nn.functional.linear(x, q, None if self.bias is None else self.bias.to(x.dtype))

    def lipschitz_constant(self) -> float:
        """1 (every singular value stays in [0, 1])."""
        return 1.0

    def extra_repr(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in (("tol", self.tol), ("start", self.start),
                                                     ("grad_iters", self.grad_iters)) if v not in (None, "frobenius"))
        return super().extra_repr() + f", n_iter={self.n_iter}" + extra


def _compose(block: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Kernel of ``conv(block) ∘ conv(kernel)`` (cross-correlations, ``block`` applied last): ``C[s] = Σ_p B[p]·A[s − p]``.

    Shape: block ``(c, c, 2, 2)``, kernel ``(c, c, a, b)`` -> ``(c, c, a + 1, b + 1)``.
    """
    c, _, a, b = kernel.shape
    out = kernel.new_zeros(c, c, a + 1, b + 1)
    for p in range(2):
        for q in range(2):
            out[:, :, p:p + a, q:q + b] += torch.einsum("om,mihw->oihw", block[:, :, p, q], kernel)
    return out


class BCOPConv2d(nn.Module):
    """Block convolution orthogonal parametrisation (BCOP, Li et al., NeurIPS 2019, arXiv:1911.00937).

    A ``k × k`` kernel built from a ``c × c`` orthogonal matrix ``H`` (``c = max(in, out)``) and ``k − 1`` 2 × 2
    block convolutions ``[[PQ, P(I−Q)], [(I−P)Q, (I−P)(I−Q)]]`` with symmetric projectors ``P = UUᵀ``, ``Q = VVᵀ``
    (``U``, ``V``: ``c × c//2`` with orthonormal columns). All matrices are Björck-orthonormalised (:func:`bjorck`,
    ``n_iter`` steps). In the Fourier domain each block is ``(P + e^{-iu}(I−P))(Q + e^{-iv}(I−Q))``, a product of
    unitaries, so the layer is orthogonal with **circular** padding on any ``H × W ≥ k//2`` input (with zero padding
    it would not be: Achour et al. 2022); an unconverged Björck step only shrinks (σ ∈ [0, 1]), so it stays
    1-Lipschitz. ``in < out``: the first ``in`` input columns of the square kernel (an isometry); ``in > out``: its
    first ``out`` rows (1-Lipschitz). Stride 1, "same" output size; zero initial bias; computed in float32.
    Cost: one ordinary ``k × k`` convolution per forward (plus building the kernel from ``2k − 1`` small matrices).
    Shape: ``(N, in, H, W)`` -> ``(N, out, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True, *,
                 n_iter: int = 20) -> None:
        super().__init__()
        owner = "BCOPConv2d"
        self.in_channels = check_int(in_channels, "in_channels", 1, None, owner=owner)
        self.out_channels = check_int(out_channels, "out_channels", 1, None, owner=owner)
        k = check_int(kernel_size, "kernel_size", 1, None, owner=owner)
        self.kernel_size = (k, k)
        self.n_iter = check_int(n_iter, "n_iter", 1, None, owner=owner)
        c = max(self.in_channels, self.out_channels)
        self.ortho = nn.Parameter(torch.empty(c, c))
        self.projectors = nn.Parameter(torch.empty(2 * (k - 1), c, c // 2))
        with torch.no_grad():
            nn.init.orthogonal_(self.ortho)
            for u in self.projectors:
                if u.numel():
                    nn.init.orthogonal_(u)
        self.bias = nn.Parameter(torch.zeros(self.out_channels)) if bias else None

    def kernel(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The ``(out, in, k, k)`` kernel of the circular convolution (``dtype``, float32 by default, also under autocast)."""
        with torch.autocast(self.ortho.device.type, enabled=False):
            h = bjorck(self.ortho.to(dtype), self.n_iter)
            kernel = h[:, :, None, None]
            if self.projectors.shape[0]:
                c = h.shape[0]
                eye = torch.eye(c, dtype=dtype, device=h.device)
                u = self.projectors.to(dtype)
                if u.shape[-1]:
                    q = bjorck(u, self.n_iter)
                    p = q @ q.mT
                else:  # one channel: the projectors are 0 (each block is a shift)
                    p = u.new_zeros(u.shape[0], c, c)
                for j in range(self.kernel_size[0] - 1):
                    rows = (p[2 * j], eye - p[2 * j])
                    cols = (p[2 * j + 1], eye - p[2 * j + 1])
                    block = torch.stack([torch.stack([r @ q for q in cols], -1) for r in rows], -2)
                    kernel = _compose(block, kernel)
            return kernel[:self.out_channels, :self.in_channels]

    def _conv(self, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size[0]
        lo, hi = (k - 1) // 2, k // 2
        return nn.functional.conv2d(nn.functional.pad(x, (lo, hi, lo, hi), mode="circular"), kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels or min(x.shape[-2:]) < self.kernel_size[0] // 2:
            raise InvalidParameterError(f"BCOPConv2d expects inputs of shape (N, {self.in_channels}, H, W) with H, W ≥ "
                                        f"{self.kernel_size[0] // 2} (circular padding). Got {tuple(x.shape)} instead.")
        kernel = self.kernel()
        with torch.autocast(x.device.type, enabled=False):
            y = self._conv(x.float(), kernel)
            if self.bias is not None:
                y = y + self.bias.float()[:, None, None]
        return y.to(x.dtype)

    def operator_matrix(self, h: int, w: int) -> torch.Tensor:
        """The dense ``(out·h·w, in·h·w)`` matrix of the bias-free layer on ``h × w`` inputs (float64; small sizes)."""
        return _operator_matrix(self, h, w, lambda eye: self._conv(eye, self.kernel(torch.float64)))

    def lipschitz_constant(self) -> float:
        """1 (a product of orthogonal / contracting per-frequency matrices)."""
        return 1.0

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, n_iter={self.n_iter}, "
                f"bias={self.bias is not None}")
