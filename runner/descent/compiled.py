"""``backend.compile=true``: the step as one ``torch.compile``d function.

For plain descent (``manual``, or ``sgd`` without momentum or weight decay) with autograd, the whole
step is fused: ``(p) -> (p − lr·∇L(p), L(p), ‖∇L(p)‖, the recorded coordinates of p and ∇L(p))``, so
Inductor can read x once and write it once (on a GPU the step then runs near memory bandwidth:
chained Rosenbrock with n = 10⁸ in float32 is a stencil, one kernel). For any other optimizer or
backend, ``value_and_grad`` alone is compiled and the optimizer steps as usual.

Compiling costs seconds once per run (more on a CPU, which needs a C++ compiler); it pays off for
large problems or long runs. Results match the eager step to rounding: Inductor may fuse
``p − lr·g`` into one multiply-add and reorder sums.
"""

from __future__ import annotations

from typing import Callable

import torch

Loss = Callable[[torch.Tensor], torch.Tensor]


def _value_and_grad_fn(loss: Loss):
    """``p -> (∇L, L)`` with torch.func: per-row values as the auxiliary output of ΣL."""

    def summed(q):
        value = loss(q)
        return value.sum(), value

    grad_and_value = torch.func.grad_and_value(summed, has_aux=True)

    def value_and_grad(p):
        grad, (_, value) = grad_and_value(p)
        return value, grad

    return value_and_grad


class CompiledAutograd:
    """Autograd through ``torch.func``, compiled with ``torch.compile`` (shapes fixed per run)."""

    name = "autograd"

    def __init__(self) -> None:
        self._compiled: dict[int, Callable] = {}

    def value_and_grad(self, loss: Loss, p: torch.Tensor):
        fn = self._compiled.get(id(loss))
        if fn is None:
            fn = self._compiled[id(loss)] = torch.compile(_value_and_grad_fn(loss), dynamic=False)
        return fn(p.detach())


class CompiledBackend:
    """Any backend's ``value_and_grad`` compiled for one loss (finite differences included)."""

    def __init__(self, backend) -> None:
        self.backend, self.name = backend, backend.name
        self._compiled: dict[int, Callable] = {}

    def value_and_grad(self, loss: Loss, p: torch.Tensor):
        fn = self._compiled.get(id(loss))
        if fn is None:
            fn = self._compiled[id(loss)] = torch.compile(lambda q: self.backend.value_and_grad(loss, q), dynamic=False)
        return fn(p.detach())


def fused_descent_step(loss: Loss, lr: float, x_index: torch.Tensor, g_index: torch.Tensor, backend=None):
    """One compiled step of plain descent and its records.

    Returns ``step(p) -> (p_next, L(p), ‖∇L(p)‖, p[:, x_index], ∇L(p)[:, g_index])`` with
    ``p_next = p − lr·∇L(p)``; the gradient comes from ``backend`` when given (finite differences),
    else from torch.func.
    """
    value_and_grad = _value_and_grad_fn(loss) if backend is None else (lambda q: backend.value_and_grad(loss, q))

    def step(p):
        value, grad = value_and_grad(p)
        return (
            p - lr * grad,
            value,
            torch.linalg.vector_norm(grad, dim=-1),
            p.index_select(-1, x_index),
            grad.index_select(-1, g_index),
        )

    return torch.compile(step, dynamic=False)
