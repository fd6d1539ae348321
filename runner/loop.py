"""The descent loop: a batch of trajectories ``(B, k)`` moved by one optimizer, every step recorded.

At each step k = 0 … steps the loop evaluates the loss and its gradient at x_k, records them (k = 0
is the start point, before any update), and then updates. A row stops at the first step whose loss
or gradient is not finite (``diverged``), or whose gradient norm is ≤ ``tol`` (``converged``);
otherwise it runs all steps (``max_steps``). Stopped rows are frozen while the others go on.

Records stay on the run's device; the stopping test reads them back only every ``sync_every`` steps
(every step on the CPU, where reading is free; in chunks on a GPU, where each read waits for the
device), and finds each row's first stopping step from the records, so the result is the same.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from runner.problem import Problem

OUTCOMES = ("max_steps", "converged", "diverged")
Monitor = Callable[[int, torch.Tensor], None]


@dataclass
class Trajectory:
    """What a descent did, on the host, as numpy arrays.

    Attributes:
        loss, grad_norm: ``(K, B)``, K = last recorded step + 1; nan after a row's final step.
        x: ``(K, B, m)`` the recorded coordinates ``x_coords`` of x.
        grad: ``(K, B, n)`` the recorded coordinates ``grad_coords`` of the gradient (indices into
            the moving variables).
        final_step: ``(B,)`` each row's last recorded step.
        outcome: each row's outcome, one of :data:`OUTCOMES`.
        x_final: ``(B, d)`` each row's final point, all coordinates.
        seconds: wall time of the loop.
    """

    loss: np.ndarray
    grad_norm: np.ndarray
    x: np.ndarray
    grad: np.ndarray
    x_coords: list[int]
    grad_coords: list[int]
    final_step: np.ndarray
    outcome: list[str]
    x_final: np.ndarray
    seconds: float

    @property
    def batch(self) -> int:
        return self.loss.shape[1]

    def final_loss(self, row: int = 0) -> float:
        return float(self.loss[self.final_step[row], row])


def sample_coords(n: int, limit: int) -> list[int]:
    """All of range(n) when n ≤ limit, else ``limit`` evenly spaced indices (first and last kept)."""
    if n <= limit:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, limit).round().astype(int).tolist()))


def _first_stop(loss: torch.Tensor, gnorm: torch.Tensor, tol: float | None):
    """For records ``(T, B)``: the first index where each row stops (-1: it does not), and why.

    A row diverges at the first non-finite loss or gradient norm, converges at the first finite
    gradient norm ≤ tol; codes index :data:`OUTCOMES`.
    """
    bad = ~(torch.isfinite(loss) & torch.isfinite(gnorm))
    event = bad if tol is None else bad | (gnorm <= tol)
    T = loss.shape[0]
    idx = torch.arange(T, device=loss.device).unsqueeze(1).expand_as(event)
    first = torch.where(event, idx, T).min(dim=0).values  # (B,)
    hit = first < T
    was_bad = bad.gather(0, first.clamp(max=T - 1).unsqueeze(0)).squeeze(0)
    return torch.where(hit, first, -1), torch.where(hit, torch.where(was_bad, 2, 1), 0)


def _all_running(loss: torch.Tensor, gnorm: torch.Tensor, tol: float | None) -> bool:
    """The cheap test made at every check: no stopping event anywhere in the window."""
    ok = torch.isfinite(loss).all() & torch.isfinite(gnorm).all()
    if tol is not None:
        ok = ok & (gnorm > tol).all()
    return bool(ok)


def descend(
    problem: Problem,
    backend: Any,
    make_optimizer: Callable[[list[torch.Tensor]], Any],
    *,
    steps: int,
    tol: float | None = None,
    x0: torch.Tensor | None = None,
    max_coords: int = 64,
    closure: bool = False,
    sync_every: int | None = None,
    monitor: Monitor | None = None,
    monitor_every: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> Trajectory:
    """Descend ``problem`` from ``x0`` (``(B, d)``; default: the problem's start, B = 1).

    Args:
        backend: has ``value_and_grad(loss, p) -> (value (B,), grad (B, k))``.
        make_optimizer: called with ``[p]``, p the ``(B, k)`` leaf of moving coordinates.
        closure: pass a closure to ``step`` (L-BFGS).
        monitor: called as ``monitor(k, x_k)`` at k = 0, monitor_every, … (gradient checks).
        progress: called as ``progress(k, loss_of_row_0)`` every so often.
    """
    start = time.perf_counter()
    base = (problem.x0 if x0 is None else x0).reshape(-1, problem.dim).clone()
    B, device = base.shape[0], base.device
    loss_fn = problem.loss(base)
    p = problem.params(base).clone().requires_grad_(True)
    optimizer = make_optimizer([p])
    if sync_every is None:
        sync_every = 1 if device.type == "cpu" else 64
    x_coords = sample_coords(problem.dim, max_coords)
    g_coords = sample_coords(p.shape[-1], max_coords)
    x_index = torch.tensor(x_coords, device=device)
    g_index = torch.tensor(g_coords, device=device)

    losses: list[torch.Tensor] = []  # per step, (B,)
    gnorms: list[torch.Tensor] = []
    xs: list[torch.Tensor] = []  # per step, (B, m): copies, so later in-place updates cannot reach them
    gs: list[torch.Tensor] = []
    stop = torch.full((B,), -1, dtype=torch.long, device=device)
    code = torch.zeros((B,), dtype=torch.long, device=device)
    x_final = base.clone()

    def evaluate():
        optimizer.zero_grad()
        value, grad = backend.value_and_grad(loss_fn, p.detach())
        p.grad = grad
        return value.sum()

    checked, k, frozen = 0, 0, None
    # With every coordinate recorded, gradient norms come from the records at the end, and the
    # per-step test only needs "is anything non-finite": one reduction instead of a norm.
    full_grad = len(g_coords) == p.shape[-1] and tol is None
    x_whole, g_whole = len(x_coords) == problem.dim, len(g_coords) == p.shape[-1]
    for k in range(steps + 1):
        value, grad = backend.value_and_grad(loss_fn, p)
        # Nothing below needs autograd: p is detached, value and grad carry no graph.
        x_k = problem.assemble(p.detach(), base)
        if monitor is not None and monitor_every and k % monitor_every == 0:
            monitor(k, x_k)
        losses.append(value)
        # Copies of x: the optimizer updates p in place. The gradient is a fresh tensor every
        # step, and no optimizer here writes into .grad, so it is kept as it is.
        xs.append(x_k.clone() if x_whole else x_k.index_select(-1, x_index))
        gs.append(grad if g_whole else grad.index_select(-1, g_index))
        # Per-step health: without tol, "value + Σgrad is finite" stands for "both are finite".
        gnorms.append(value + grad.sum(-1) if full_grad else torch.linalg.vector_norm(grad, dim=-1))
        last = k == steps
        if last or (k + 1 - checked) >= sync_every:
            if k == checked and B == 1:  # the common CPU case: plain floats, no reductions
                h = float(gnorms[-1])
                running = math.isfinite(h) and (full_grad or (math.isfinite(float(value)) and (tol is None or h > tol)))
            else:
                window_loss = torch.stack(losses[checked:])
                window_gnorm = torch.stack(gnorms[checked:])
                running = _all_running(window_loss, window_gnorm, tol)
            if not running:
                if k == checked and B == 1:
                    window_loss, window_gnorm = losses[-1].unsqueeze(0), gnorms[-1].unsqueeze(0)
                first, why = _first_stop(window_loss, window_gnorm, tol)
                newly = (stop < 0) & (first >= 0)
                stop = torch.where(newly, first + checked, stop)
                code = torch.where(newly, why, code)
                # Where x is recorded in full the final point is read from the records below;
                # otherwise it is the point at this check (≤ sync_every − 1 steps late on a GPU).
                x_final = torch.where(newly.unsqueeze(-1), x_k, x_final)
                frozen = stop >= 0
                if bool(frozen.all()):
                    break
            checked = k + 1
            if progress is not None:
                progress(k, float(value[0]))
        if last:
            break
        saved = p.detach().clone() if frozen is not None else None
        p.grad = grad
        if closure:
            optimizer.step(evaluate)
        else:
            optimizer.step()
        if frozen is not None:
            with torch.no_grad():
                p.copy_(torch.where(frozen.unsqueeze(-1), saved, p))

    with torch.no_grad():
        running = stop < 0
        stop = torch.where(running, torch.full_like(stop, k), stop)
        x_final = torch.where(running.unsqueeze(-1), problem.assemble(p.detach(), base), x_final)
        K = int(stop.max()) + 1
        rec_x = torch.stack(xs[:K])
        if len(x_coords) == problem.dim:
            x_final = rec_x[stop, torch.arange(B, device=device)]
        # Blank out what a row recorded after its own final step (rows stop at different steps).
        after = torch.arange(K, device=device).unsqueeze(1) > stop.unsqueeze(0)
        nan = math.nan
        loss = torch.stack(losses[:K]).masked_fill(after, nan)
        rec_g = torch.stack(gs[:K])
        gnorm = torch.linalg.vector_norm(rec_g, dim=-1) if full_grad else torch.stack(gnorms[:K])
        gnorm = gnorm.masked_fill(after, nan)
        rec_x = rec_x.masked_fill(after.unsqueeze(-1), nan)
        rec_g = rec_g.masked_fill(after.unsqueeze(-1), nan)
    return Trajectory(
        loss=loss.cpu().numpy(),
        grad_norm=gnorm.cpu().numpy(),
        x=rec_x.cpu().numpy(),
        grad=rec_g.cpu().numpy(),
        x_coords=x_coords,
        grad_coords=g_coords,
        final_step=stop.cpu().numpy(),
        outcome=[OUTCOMES[c] for c in code.cpu().tolist()],
        x_final=x_final.detach().cpu().numpy(),
        seconds=time.perf_counter() - start,
    )
