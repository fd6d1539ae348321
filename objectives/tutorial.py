"""The tutorial's two functions (their reference numbers: ``docs/tutorial.md``).

* ``f(x) = 3x² + 2x − 1``: f'(x) = 6x + 2, f'' = 6; the minimum is at x = −1/3 with f = −4/3.
  Plain gradient descent is stable for lr < 2/6 = 1/3.
* ``g(x1, x2) = (x1 + 5)·x2²``: ∇g = (x2², 2(x1 + 5)x2), so ∇g(2, 3) = (9, 42); the Hessian is
  [[0, 2x2], [2x2, 2(x1 + 5)]] = [[0, 6], [6, 14]] at (2, 3). g is unbounded below (no minimum).
"""

from __future__ import annotations

import torch

from objectives.registry import register


@register("f", dim=1, start=[0.0], minima=[[-1.0 / 3.0]], min_value=-4.0 / 3.0, var_names=lambda d: ["x"])
def f(x: torch.Tensor) -> torch.Tensor:
    """f(x) = 3x² + 2x − 1, batch-first: (..., 1) -> (...)."""
    x = x[..., 0]
    return 3.0 * x**2 + 2.0 * x - 1.0


@register("g", dim=2, start=[2.0, 3.0])
def g(x: torch.Tensor) -> torch.Tensor:
    """g(x1, x2) = (x1 + 5)·x2², batch-first: (..., 2) -> (...)."""
    return (x[..., 0] + 5.0) * x[..., 1] ** 2
