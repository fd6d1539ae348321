"""Standard optimisation test functions, with their textbook formulas and known minima.

All are batch-first: ``(..., d) -> (...)``. Starts are the customary ones from the literature where one
exists (Rosenbrock's (−1.2, 1), Beale's (1, 1)); for the multimodal Rastrigin and Ackley, whose
literature draws random starts, the start is a fixed point inside the global minimum's basin so that
a local method can be expected to find it (and say so in their docstrings).
"""

from __future__ import annotations

import math

import torch

from objectives.registry import register


@register(
    "rosenbrock",
    dim=2,
    n_dim=True,
    min_dim=2,
    start=lambda d: torch.tensor([-1.2, 1.0], dtype=torch.float64).repeat((d + 1) // 2)[:d],
    minima=lambda d: [[1.0] * d],
    min_value=0.0,
)
def rosenbrock(x: torch.Tensor) -> torch.Tensor:
    """Chained Rosenbrock: Σᵢ₌₁ⁿ⁻¹ 100(xᵢ₊₁ − xᵢ²)² + (1 − xᵢ)²; minimum 0 at (1, …, 1).

    Start: (−1.2, 1, −1.2, 1, …), the extended-Rosenbrock start of Moré, Garbow and Hillstrom.
    """
    head, tail = x[..., :-1], x[..., 1:]
    return (100.0 * (tail - head**2) ** 2 + (1.0 - head) ** 2).sum(-1)


@register(
    "himmelblau",
    dim=2,
    start=[0.0, 0.0],
    minima=[[3.0, 2.0], [-2.805118, 3.131312], [-3.779310, -3.283186], [3.584428, -1.848126]],
    min_value=0.0,
)
def himmelblau(x: torch.Tensor) -> torch.Tensor:
    """(x1² + x2 − 11)² + (x1 + x2² − 7)²; four minima of value 0, one at (3, 2)."""
    x1, x2 = x[..., 0], x[..., 1]
    return (x1**2 + x2 - 11.0) ** 2 + (x1 + x2**2 - 7.0) ** 2


@register("beale", dim=2, start=[1.0, 1.0], minima=[[3.0, 0.5]], min_value=0.0)
def beale(x: torch.Tensor) -> torch.Tensor:
    """(1.5 − x1 + x1x2)² + (2.25 − x1 + x1x2²)² + (2.625 − x1 + x1x2³)²; minimum 0 at (3, 0.5)."""
    x1, x2 = x[..., 0], x[..., 1]
    return (
        (1.5 - x1 + x1 * x2) ** 2
        + (2.25 - x1 + x1 * x2**2) ** 2
        + (2.625 - x1 + x1 * x2**3) ** 2
    )


@register("booth", dim=2, start=[0.0, 0.0], minima=[[1.0, 3.0]], min_value=0.0)
def booth(x: torch.Tensor) -> torch.Tensor:
    """(x1 + 2x2 − 7)² + (2x1 + x2 − 5)²; minimum 0 at (1, 3). A convex quadratic."""
    x1, x2 = x[..., 0], x[..., 1]
    return (x1 + 2.0 * x2 - 7.0) ** 2 + (2.0 * x1 + x2 - 5.0) ** 2


@register(
    "rastrigin",
    dim=2,
    n_dim=True,
    start=lambda d: torch.full((d,), 0.4, dtype=torch.float64),
    minima=lambda d: [[0.0] * d],
    min_value=0.0,
)
def rastrigin(x: torch.Tensor) -> torch.Tensor:
    """10n + Σᵢ (xᵢ² − 10 cos 2πxᵢ); minimum 0 at the origin, a local minimum near every integer point.

    Start: 0.4 in every coordinate, inside the global basin (|xᵢ| < ~0.5).
    """
    n = x.shape[-1]
    return 10.0 * n + (x**2 - 10.0 * torch.cos(2.0 * math.pi * x)).sum(-1)


def _safe_sqrt(s: torch.Tensor) -> torch.Tensor:
    """√s with gradient 0 at s = 0 instead of nan: 0 is a subgradient of the cone √(x²) at 0.

    The double ``where`` keeps autograd from ever differentiating √ at 0 (which would give inf·0).
    """
    positive = s > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, s, torch.ones_like(s))), torch.zeros_like(s))


@register("ackley", dim=2, start=[0.4, 0.4], minima=[[0.0, 0.0]], min_value=0.0)
def ackley(x: torch.Tensor) -> torch.Tensor:
    """−20 exp(−0.2 √(½(x1² + x2²))) − exp(½(cos 2πx1 + cos 2πx2)) + e + 20; minimum 0 at the origin.

    The origin is a cone point (not differentiable); the gradient reported there is the subgradient 0.
    Start: (0.4, 0.4), inside the global basin (local minima sit near every integer point).
    """
    x1, x2 = x[..., 0], x[..., 1]
    radius = _safe_sqrt(0.5 * (x1**2 + x2**2))
    waves = 0.5 * (torch.cos(2.0 * math.pi * x1) + torch.cos(2.0 * math.pi * x2))
    return -20.0 * torch.exp(-0.2 * radius) - torch.exp(waves) + math.e + 20.0


@register(
    "quadratic",
    dim=2,
    n_dim=True,
    start=lambda d: torch.ones(d, dtype=torch.float64),
    minima=lambda d: [[0.0] * d],
    min_value=0.0,
)
def quadratic(x: torch.Tensor) -> torch.Tensor:
    """½ Σᵢ i·xᵢ²: Hessian diag(1, …, n), condition number n, minimum 0 at the origin.

    Plain gradient descent converges for lr < 2/n; start (1, …, 1).
    """
    weights = torch.arange(1, x.shape[-1] + 1, dtype=x.dtype, device=x.device)
    return 0.5 * (weights * x**2).sum(-1)
