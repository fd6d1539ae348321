"""A function whose autograd gradient is deliberately wrong, to prove that ``check_grad`` catches it.

``bad_square(x) = Σᵢ xᵢ²`` (batch-first), but its backward returns 3x instead of the true 2x: what a
hand-written ``backward`` with a typo looks like. Finite differences see the true 2x.
"""

from __future__ import annotations

import torch


class _SquareWithWrongBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return (x * x).sum(-1)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return 3.0 * x * grad_out.unsqueeze(-1)  # wrong on purpose: d/dx Σx² = 2x


def bad_square(x: torch.Tensor) -> torch.Tensor:
    """Σᵢ xᵢ², with a wrong gradient (3x)."""
    return _SquareWithWrongBackward.apply(x)


def good_square(x: torch.Tensor) -> torch.Tensor:
    """Σᵢ xᵢ², plain torch: the control."""
    return (x * x).sum(-1)
