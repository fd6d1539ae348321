"""Gradient backends: how ∇loss is computed for a batch of points.

Both backends take a batch-first loss ``L: (B, *, k) -> (B, *)`` and a batch of points
``p: (B, k)`` and return ``(L(p), ∇L(p))`` with shapes ``(B,)`` and ``(B, k)``. The rows are
independent trajectories, so one backward pass of ``ΣᵢL(pᵢ)`` gives every row's gradient.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from runner.errors import UserError

Loss = Callable[[torch.Tensor], torch.Tensor]


class Autograd:
    """Reverse-mode automatic differentiation (PyTorch autograd; the tutorial's GradientTape).

    ``∇L(p)`` is the exact derivative of the computation, up to floating-point rounding.
    """

    name = "autograd"

    def value_and_grad(self, loss: Loss, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            q = p if (p.is_leaf and p.requires_grad) else p.detach().requires_grad_(True)
            value = loss(q)
            if not value.requires_grad:  # the loss does not depend on p at all
                return value.detach(), torch.zeros_like(q)
            # ∂(Σᵢ Lᵢ)/∂p with the vector of ones as grad_outputs rather than value.sum(): the same
            # numbers (each row's gradient times 1.0), one forward op and one backward node fewer:
            # ~25 µs of a ~210 µs step of the scalar f on the dev box.
            (grad,) = torch.autograd.grad(value, q, grad_outputs=torch.ones_like(value), allow_unused=True)
        return value.detach(), torch.zeros_like(q) if grad is None else grad


def auto_step(p: torch.Tensor, order: int, scheme: str = "central") -> torch.Tensor:
    """The default finite-difference step per coordinate: ``ε^(1/m)·max(1, |p|)``.

    m = 2 for forward differences (truncation error O(h), rounding O(ε/h)), m = 3 for central
    differences of first derivatives (O(h²) against O(ε/h)), m = 4 for central second differences
    (O(h²) against O(ε/h²)); ε is the dtype's machine epsilon. Each choice balances the two errors.
    """
    eps = torch.finfo(p.dtype).eps
    m = {1: 2 if scheme == "forward" else 3, 2: 4}[order]
    return eps ** (1.0 / m) * torch.clamp(p.abs(), min=1.0)


def representable(p: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The step actually taken, ``(p + h) − p``: dividing by it removes one rounding error."""
    return (p + h) - p


class FiniteDifference:
    """Finite-difference gradients, every perturbed point in one batched call.

    central: ``∂ᵢL ≈ (L(p + hᵢeᵢ) − L(p − hᵢeᵢ)) / 2hᵢ`` (error O(h²));
    forward: ``∂ᵢL ≈ (L(p + hᵢeᵢ) − L(p)) / hᵢ`` (error O(h)).
    With ``richardson=True`` the central estimate D(h) is combined with D(h/2) as
    ``(4·D(h/2) − D(h)) / 3``, cancelling the h² term (error O(h⁴)).

    The stencil for a batch ``(B, k)`` is a tensor ``(B, 1 + 2k, k)`` (``(B, 1 + 4k, k)`` with
    Richardson), evaluated by one call of the loss: no Python loop over coordinates.
    """

    name = "finite_diff"

    def __init__(self, scheme: str = "central", eps: float | str = "auto", richardson: bool = False):
        if scheme not in ("central", "forward"):
            raise UserError(f"backend.scheme: {scheme!r} is not allowed; choose central or forward")
        if richardson and scheme != "central":
            raise UserError("backend.richardson=true needs backend.scheme=central")
        if eps != "auto":
            try:
                eps = float(eps)
            except (TypeError, ValueError):
                raise UserError(f"backend.eps: {eps!r} is not allowed; use auto or a positive number") from None
            if not (math.isfinite(eps) and eps > 0):
                raise UserError(f"backend.eps: {eps} is not allowed; use auto or a positive number")
        self.scheme, self.eps, self.richardson = scheme, eps, richardson

    def steps(self, p: torch.Tensor) -> torch.Tensor:
        """The step h per coordinate, shape of p: auto or the fixed ``backend.eps``."""
        h = auto_step(p, 1, self.scheme) if self.eps == "auto" else torch.full_like(p, self.eps)
        return representable(p, h)

    def stencil(self, p: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Points ``(B, 1 + m·k, k)``: p itself, then p ± hᵢeᵢ (central) or p + hᵢeᵢ (forward)."""
        shifts = torch.diag_embed(h)  # (B, k, k): row i is hᵢeᵢ
        centre = p.unsqueeze(1)
        parts = [centre, centre + shifts]
        if self.scheme == "central":
            parts.append(centre - shifts)
        return torch.cat(parts, dim=1)

    def estimate(self, loss: Loss, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(L(p), ∇L(p), error estimate)``; the estimate is |D(h) − D(h/2)| with Richardson, else nan."""
        k = p.shape[-1]
        h = self.steps(p)
        if not self.richardson:
            values = loss(self.stencil(p, h))
            value, plus = values[:, 0], values[:, 1 : 1 + k]
            if self.scheme == "forward":
                return value, (plus - value.unsqueeze(-1)) / h, torch.full_like(p, math.nan)
            return value, (plus - values[:, 1 + k :]) / (2 * h), torch.full_like(p, math.nan)
        half = representable(p, h / 2)
        values = loss(torch.cat([self.stencil(p, h), self.stencil(p, half)[:, 1:]], dim=1))
        value = values[:, 0]
        d_h = (values[:, 1 : 1 + k] - values[:, 1 + k : 1 + 2 * k]) / (2 * h)
        d_half = (values[:, 1 + 2 * k : 1 + 3 * k] - values[:, 1 + 3 * k :]) / (2 * half)
        return value, (4 * d_half - d_h) / 3, (d_half - d_h).abs()

    def value_and_grad(self, loss: Loss, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            value, grad, _ = self.estimate(loss, p.detach())
        return value, grad


def make_backend(cfg) -> Autograd | FiniteDifference:
    """The backend named by ``backend.name``."""
    if cfg.name == "autograd":
        return Autograd()
    if cfg.name == "finite_diff":
        return FiniteDifference(cfg.scheme, cfg.eps, cfg.richardson)
    raise UserError(f"backend: unknown backend {cfg.name!r}; choose autograd or finite_diff")


def resolve_dtype(name: str) -> torch.dtype:
    dtypes = {"float32": torch.float32, "float64": torch.float64}
    if name not in dtypes:
        raise UserError(f"backend.dtype: {name!r} is not allowed; choose float32 or float64")
    return dtypes[name]


def resolve_device(name: str, size: int) -> torch.device:
    """``cpu``, ``cuda``, or ``auto``: CUDA only when there is one and the problem has ≥ 2¹⁶
    numbers per step; smaller problems are faster on the CPU (a CUDA launch costs more than the math)."""
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("backend.device=cuda: no CUDA device is available here; use backend.device=cpu or auto")
        return torch.device("cuda")
    if name == "auto":
        use_cuda = size >= 2**16 and torch.cuda.is_available()
        return torch.device("cuda" if use_cuda else "cpu")
    raise UserError(f"backend.device: {name!r} is not allowed; choose auto, cpu or cuda")


def device_name(device: torch.device) -> str:
    """What the device is: the GPU's name and CUDA version, or the CPU's model name."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or platform.machine()
