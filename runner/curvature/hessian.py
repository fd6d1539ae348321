"""Curvature at a point: Hessians (autograd and finite differences), eigenvalues, the largest stable step
of plain descent, and finite-difference gradients with an error estimate.

On the local quadratic model L(x + δ) ≈ L(x) + gᵀδ + ½δᵀHδ, plain gradient descent
x ← x − lr·∇L multiplies the error along each eigenvector of H by (1 − lr·λᵢ); it shrinks only when
|1 − lr·λᵢ| < 1 for every λᵢ > 0, that is lr < 2/λ_max. That bound is ``stable_lr``
(f: λ = 6, stable_lr = 1/3; lr = 1/6 lands on the minimum in one step).

Finite differences here always evaluate the step h *and* h/2 in the same batched call of the loss:
D(h) − D(h/2) measures the truncation error (and some of the rounding noise) of the estimate, so every
finite-difference number comes with an error bar (:class:`FDEstimate`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from runner.descent.backends import FiniteDifference, auto_step, representable

MAX_DIM = 64  # above this the start-point check is skipped (a d×d Hessian per run is not free)

Loss = Callable[[torch.Tensor], torch.Tensor]


def _at_point(loss: Loss) -> Callable[[torch.Tensor], torch.Tensor]:
    """The batch-first loss as a function of one point ``(k,) -> ()``."""
    return lambda q: loss(q.unsqueeze(0)).squeeze(0)


# -- autograd ------------------------------------------------------------------------------------


def autograd_hessian(loss: Loss, p: torch.Tensor) -> torch.Tensor:
    """The exact Hessian ``Hᵢⱼ = ∂²L/∂pᵢ∂pⱼ`` at one point p ``(k,)``.

    By ``torch.func.hessian`` (forward-over-reverse); when the function does not support torch.func
    transforms (a ``torch.autograd.Function`` without ``setup_context``/``jvp``), by double backward:
    row i is ∇(∂L/∂pᵢ), one reverse pass of the graph of the gradient per row.
    """
    try:
        return torch.func.hessian(_at_point(loss))(p)
    except (RuntimeError, NotImplementedError):
        return _double_backward(loss, p, 1.0)


def _double_backward(loss: Loss, p: torch.Tensor, fill: float) -> torch.Tensor:
    """Rows ``∇(∂L/∂pᵢ)·fill``, by reverse-over-reverse; a row is 0 where the gradient has no graph."""
    k = p.numel()
    with torch.enable_grad():
        q = p.detach().requires_grad_(True)
        value = _at_point(loss)(q)
        (grad,) = torch.autograd.grad(value, q, create_graph=True)
        rows = []
        for i in range(k):
            if not grad.requires_grad:
                rows.append(torch.zeros_like(q))
                continue
            cotangent = torch.zeros_like(grad)
            cotangent[i] = fill
            (row,) = torch.autograd.grad(grad, q, cotangent, retain_graph=True, allow_unused=True)
            rows.append(torch.zeros_like(q) if row is None else row)
    return torch.stack(rows).detach()


def hessian_structure(loss: Loss, p: torch.Tensor) -> torch.Tensor | None:
    """Which Hessian entries are *structural* zeros: ``S[i, j]`` is True when no path of the autograd
    computation carries a change of pⱼ into ∂L/∂pᵢ (TensorFlow's ``None`` for d²g/dx1² of
    g = (x1 + 5)·x2²: dg/dx1 = x2² does not involve x1), as opposed to a zero that was computed.

    How: forward-over-reverse differentiation of the gradient with a poisoned tangent, NaN·eⱼ. The
    poison reaches ∂L/∂pᵢ through every operation on the path (0·NaN is NaN, so even a coefficient
    that happens to be 0 passes it on); only where no path exists does the entry stay exactly 0.
    Vectorised over j with ``vmap``: one poisoned Hessian, read as ``isfinite``. The relation is made
    symmetric (i ↔ j). Branches not taken at this point (``where``, ``min``/``max``, ``abs`` at its
    kink…) count as absent, so "structural" is local to the point, as autograd sees it.

    None when torch.func cannot transform the function (then nothing is marked).
    """
    f = _at_point(loss)
    k = p.numel()
    basis = torch.diag_embed(torch.full((k,), math.nan, dtype=p.dtype, device=p.device))

    def column(tangent: torch.Tensor) -> torch.Tensor:
        return torch.func.jvp(torch.func.grad(f), (p,), (tangent,))[1]

    try:
        poisoned = torch.func.vmap(column)(basis)  # row j: ∂(∇L)/∂pⱼ, poisoned
    except (RuntimeError, NotImplementedError):
        return None
    free = torch.isfinite(poisoned)
    return free & free.T


def eigenvalues(H: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of the symmetric part ½(H + Hᵀ), ascending."""
    return torch.linalg.eigvalsh(0.5 * (H + H.transpose(-1, -2)))


def stable_lr(eigenvalues: torch.Tensor) -> float:
    """2/λ_max; infinite when no eigenvalue is positive (no step size is unstable on a concave
    or flat model, descent just never settles)."""
    top = float(eigenvalues.max())
    return 2.0 / top if top > 0 else math.inf


# -- finite differences --------------------------------------------------------------------------

NOISE_POINTS = 8  # points p + j·δ, j = 0 … 7, for the noise level of L (p itself included)
SIGMAS = 3.0  # the rounding part of an error bar is 3 standard deviations of the stencil's noise


@dataclass
class FDEstimate:
    """A finite-difference estimate with its error bar.

    Attributes:
        value: L(p), shape ``(B,)``.
        estimate: the derivative (``(B, k)`` gradient or ``(B, k, k)`` Hessian).
        error: estimated absolute error of ``estimate``, same shape: truncation + rounding.
        step: the step h per coordinate, ``(B, k)`` (h/2 was evaluated as well).
        noise: σ, the measured rounding noise of one evaluation of L near p, ``(B,)``.
        evaluations: how many points the one batched call of the loss evaluated, per row.
    """

    value: torch.Tensor
    estimate: torch.Tensor
    error: torch.Tensor
    step: torch.Tensor
    noise: torch.Tensor
    evaluations: int


def noise_points(p: torch.Tensor) -> torch.Tensor:
    """``(B, NOISE_POINTS − 1, k)``: p + j·δ for j = 1 … 7, along a fixed direction with entries in
    [−1, 1]·√ε·max(1, |pᵢ|): far enough apart (√ε/ε ulps) for independent rounding, close enough that
    the smooth part of L is a cubic to working precision."""
    k = p.shape[-1]
    gen = torch.Generator().manual_seed(20240611)
    u = torch.rand(k, generator=gen, dtype=torch.float64) * 2 - 1
    u = (u / u.abs().max()).to(dtype=p.dtype, device=p.device)
    delta = torch.finfo(p.dtype).eps ** 0.5 * torch.clamp(p.abs(), min=1.0) * u
    j = torch.arange(1, NOISE_POINTS, dtype=p.dtype, device=p.device)
    return p.unsqueeze(1) + j.view(1, -1, 1) * delta.unsqueeze(1)


def noise_level(values: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """σ of L's rounding noise from its values on :func:`noise_points` ``(B, 8)`` (p first).

    Fourth differences Δ⁴Lⱼ = Lⱼ − 4Lⱼ₊₁ + 6Lⱼ₊₂ − 4Lⱼ₊₃ + Lⱼ₊₄ remove the smooth part (a cubic), and
    of independent noise of deviation σ leave a deviation √70·σ (1 + 16 + 36 + 16 + 1 = 70), so
    σ ≈ max |Δ⁴L| / √70 (Moré and Wild's ECnoise, simplified); at least ε·|L(p)|/2, the rounding of
    the result alone. ``0`` where L is exact (polynomials at integer points).
    """
    w = torch.tensor([1.0, -4.0, 6.0, -4.0, 1.0], dtype=values.dtype, device=values.device)
    windows = values.unfold(-1, 5, 1)  # (B, 4, 5)
    sigma = (windows * w).sum(-1).abs().amax(-1) / math.sqrt(70.0)
    return torch.maximum(sigma, torch.finfo(values.dtype).eps * centre.abs() / 2)


def _combine(d_h, d_half, w_h, w_half, sigma, order: int, richardson: bool):
    """The reported estimate and its error bar from D(h) and D(h/2).

    ``w_h``, ``w_half`` are the 2-norms of the stencils' weights, so the rounding noise of D(h) has
    deviation σ·‖w_h‖ (independent noise per point).

    Truncation: D(h) = D + c·hᵖ + …, so D(h) − D(h/2) = (1 − 2⁻ᵖ)·c·hᵖ and the truncation error of D(h)
    is about 2ᵖ/(2ᵖ − 1)·|D(h) − D(h/2)|. Richardson's R = (2ᵖ·D(h/2) − D(h))/(2ᵖ − 1) cancels the hᵖ
    term; its truncation is bounded by the size of that correction, |R − D(h/2)| = |D(h) − D(h/2)|/(2ᵖ − 1).
    Rounding: 3σ·‖w‖, with ‖w‖ of R = √((2ᵖ‖w_half‖)² + ‖w_h‖²)/(2ᵖ − 1).
    """
    q = 2.0**order
    diff = (d_h - d_half).abs()
    if richardson:
        w = torch.sqrt((q * w_half) ** 2 + w_h**2) / (q - 1)
        return (q * d_half - d_h) / (q - 1), diff / (q - 1) + SIGMAS * sigma * w
    return d_h, q / (q - 1) * diff + SIGMAS * sigma * w_h


def fd_gradient(loss: Loss, p: torch.Tensor, scheme: str = "central", eps: float | str = "auto", richardson: bool = False) -> FDEstimate:
    """∇L at a batch of points p ``(B, k)`` with the run's finite-difference settings, and its error bar.

    The estimate is exactly the one of :class:`runner.descent.backends.FiniteDifference` (same steps, same
    formulas): central ``(L(p + hᵢeᵢ) − L(p − hᵢeᵢ)) / 2hᵢ`` (truncation O(h²)), forward
    ``(L(p + hᵢeᵢ) − L(p)) / hᵢ`` (O(h)), optionally Richardson-extrapolated (O(h⁴)). In the same
    batched call: the stencil at h/2 (truncation, see :func:`_combine`) and :func:`noise_points`
    (rounding: 3σ·‖w‖, ‖w‖ = 1/(√2·hᵢ) central, √2/hᵢ forward).
    """
    fd = FiniteDifference(scheme, eps, richardson)
    k = p.shape[-1]
    h = fd.steps(p)
    half = representable(p, h / 2)
    points = torch.cat([fd.stencil(p, h), fd.stencil(p, half)[:, 1:], noise_points(p)], dim=1)
    with torch.no_grad():
        values = loss(points)
    m = 2 * k if scheme == "central" else k
    value = values[:, 0]
    sigma = noise_level(torch.cat([values[:, :1], values[:, 1 + 2 * m :]], dim=1), value).unsqueeze(-1)

    def derivative(block: torch.Tensor, step: torch.Tensor):
        if scheme == "central":
            return (block[:, :k] - block[:, k:]) / (2 * step), 1 / (math.sqrt(2.0) * step)
        return (block - value.unsqueeze(-1)) / step, math.sqrt(2.0) / step

    d_h, w_h = derivative(values[:, 1 : 1 + m], h)
    d_half, w_half = derivative(values[:, 1 + m : 1 + 2 * m], half)
    order = 2 if scheme == "central" else 1
    estimate, error = _combine(d_h, d_half, w_h, w_half, sigma, order, richardson)
    return FDEstimate(value, estimate, error, h, sigma.squeeze(-1), points.shape[1])


def hessian_offsets(k: int, dtype: torch.dtype, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The unit stencil of second central differences: ``(U, i, j)`` with U ``(2k + 4n, k)``, n = k(k−1)/2.

    Rows of U: +eᵢ and −eᵢ for every i, then for every pair i < j (``i``, ``j``, from ``triu_indices``)
    the four corners +eᵢ+eⱼ, +eᵢ−eⱼ, −eᵢ+eⱼ, −eᵢ−eⱼ, in blocks of n.
    """
    eye = torch.eye(k, dtype=dtype, device=device)
    i, j = torch.triu_indices(k, k, 1, device=device)
    ei, ej = eye[i], eye[j]
    return torch.cat([eye, -eye, ei + ej, ei - ej, ej - ei, -ei - ej]), i, j


def fd_hessian(loss: Loss, p: torch.Tensor, eps: float | str = "auto", richardson: bool = False) -> FDEstimate:
    """The Hessian at a batch of points p ``(B, k)`` by second-order central differences, and its error.

    With steps hᵢ (``auto``: ``ε^(1/4)·max(1, |pᵢ|)``, which balances the O(h²) truncation against
    the O(ε/h²) rounding; else the fixed ``backend.eps``), made representable (``(p + h) − p``):

        Hᵢᵢ = (L(p + hᵢeᵢ) − 2L(p) + L(p − hᵢeᵢ)) / hᵢ²
        Hᵢⱼ = (L(p + hᵢeᵢ + hⱼeⱼ) − L(p + hᵢeᵢ − hⱼeⱼ) − L(p − hᵢeᵢ + hⱼeⱼ) + L(p − hᵢeᵢ − hⱼeⱼ)) / 4hᵢhⱼ

    both with truncation error O(h²); Hⱼᵢ = Hᵢⱼ by construction. All 1 + 2k² points, the same
    stencil at h/2 and the :func:`noise_points` are evaluated in ONE call of the loss:
    ``(B, 1 + 4k² + 7, k)``. The error bar is that of :func:`_combine` (p = 2), with ‖w‖ = √6/hᵢ²
    on the diagonal and 1/(2hᵢhⱼ) off it. With ``richardson=True`` the estimate is
    (4·D(h/2) − D(h))/3 (error O(h⁴)).
    """
    B, k = p.shape
    U, i, j = hessian_offsets(k, p.dtype, p.device)
    n = i.numel()
    if eps == "auto":
        h = auto_step(p, 2)
    else:
        h = torch.full_like(p, float(eps))
    h = representable(p, h)
    half = representable(p, h / 2)
    centre = p.unsqueeze(1)
    points = torch.cat([centre, centre + U * h.unsqueeze(1), centre + U * half.unsqueeze(1), noise_points(p)], dim=1)
    with torch.no_grad():
        values = loss(points)
    M = U.shape[0]
    value = values[:, :1]
    sigma = noise_level(torch.cat([value, values[:, 1 + 2 * M :]], dim=1), value[:, 0]).view(B, 1, 1)
    diag_idx = torch.arange(k, device=p.device)

    def second(block: torch.Tensor, step: torch.Tensor):
        plus, minus = block[:, :k], block[:, k : 2 * k]
        pp, pm, mp, mm = block[:, 2 * k :].reshape(B, 4, n).unbind(1)
        H = torch.empty(B, k, k, dtype=p.dtype, device=p.device)
        W = torch.empty_like(H)
        H[:, diag_idx, diag_idx] = (plus - 2 * value + minus) / step**2
        W[:, diag_idx, diag_idx] = math.sqrt(6.0) / step**2
        denom = 4 * step[:, i] * step[:, j]
        off = (pp - pm - mp + mm) / denom
        H[:, i, j], H[:, j, i] = off, off
        W[:, i, j], W[:, j, i] = 2 / denom, 2 / denom
        return H, W

    d_h, w_h = second(values[:, 1 : 1 + M], h)
    d_half, w_half = second(values[:, 1 + M : 1 + 2 * M], half)
    estimate, error = _combine(d_h, d_half, w_h, w_half, sigma, 2, richardson)
    return FDEstimate(values[:, 0], estimate, error, h, sigma.view(B), points.shape[1])


# -- the start-point warning ---------------------------------------------------------------------


def stable_lr_warning(problem, backend, lr: float) -> str | None:
    """A one-line warning when ``lr`` exceeds the stable step at the start point, else None.

    Computed only for k ≤ :data:`MAX_DIM` moving variables, with autograd (whatever the run's backend:
    the bound is a property of the function); silent when autograd cannot differentiate it twice.
    By double backward rather than ``torch.func.hessian``: at the start of every run the latter would
    import ``torch._dynamo`` (~2-3 s) for a few milliseconds of work.
    """
    return lr_warning(lr, stable_step(problem))


def stable_step(problem) -> tuple[float, float] | None:
    """``(2/λ_max, λ_max)`` at the problem's start point, or None where it is not computed (see
    :func:`stable_lr_warning`). The batched launcher computes it once per start point."""
    base = problem.x0.unsqueeze(0)
    p = problem.params(base)[0]
    if p.numel() > MAX_DIM:
        return None
    try:
        eigs = eigenvalues(_double_backward(problem.loss(base), p, 1.0))
    except (RuntimeError, TypeError, ValueError):
        return None
    if not bool(torch.isfinite(eigs).all()):
        return None
    return stable_lr(eigs), float(eigs.max())


def lr_warning(lr: float, step: tuple[float, float] | None) -> str | None:
    """The warning for ``lr`` against a :func:`stable_step` result (None: no warning)."""
    if step is None or lr <= step[0]:
        return None
    bound, lam = step
    return (
        f"lr={lr:g} exceeds the stable step 2/λ_max = {bound:.6g} at the start point "
        f"(λ_max = {lam:.6g}); plain gradient descent may diverge"
    )
