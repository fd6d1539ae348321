"""Curvature at a point: the Hessian, its eigenvalues, and the largest stable step of plain descent.

On the local quadratic model L(x + δ) ≈ L(x) + gᵀδ + ½δᵀHδ, plain gradient descent
x ← x − lr·∇L multiplies the error along each eigenvector of H by (1 − lr·λᵢ); it shrinks only when
|1 − lr·λᵢ| < 1 for every λᵢ > 0, that is lr < 2/λ_max. That bound is ``stable_lr``
(f: λ = 6, stable_lr = 1/3; lr = 1/6 lands on the minimum in one step).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

MAX_DIM = 64  # above this the start-point check is skipped (a d×d Hessian per run is not free)


def autograd_hessian(loss: Callable[[torch.Tensor], torch.Tensor], p: torch.Tensor) -> torch.Tensor:
    """The exact Hessian ``∂²L/∂pᵢ∂pⱼ`` at one point p ``(k,)``, by ``torch.func.hessian``
    (forward-over-reverse); ``loss`` is batch-first, so it is called on ``p[None]``."""
    return torch.func.hessian(lambda q: loss(q.unsqueeze(0)).squeeze(0))(p)


def stable_lr(eigenvalues: torch.Tensor) -> float:
    """2/λ_max; infinite when no eigenvalue is positive (no step size is unstable on a concave
    or flat model, descent just never settles)."""
    top = float(eigenvalues.max())
    return 2.0 / top if top > 0 else math.inf


def stable_lr_warning(problem, backend, lr: float) -> str | None:
    """A one-line warning when ``lr`` exceeds the stable step at the start point, else None.

    Computed only for k ≤ :data:`MAX_DIM` moving variables, with autograd (whatever the run's backend:
    the bound is a property of the function); silent when autograd cannot differentiate it twice.
    """
    base = problem.x0.unsqueeze(0)
    p = problem.params(base)[0]
    if p.numel() > MAX_DIM:
        return None
    try:
        H = autograd_hessian(problem.loss(base), p)
        eigenvalues = torch.linalg.eigvalsh(0.5 * (H + H.T))
    except (RuntimeError, TypeError, ValueError):
        return None
    if not bool(torch.isfinite(eigenvalues).all()):
        return None
    bound = stable_lr(eigenvalues)
    if lr <= bound:
        return None
    return (
        f"lr={lr:g} exceeds the stable step 2/λ_max = {bound:.6g} at the start point "
        f"(λ_max = {float(eigenvalues.max()):.6g}); plain gradient descent may diverge"
    )
