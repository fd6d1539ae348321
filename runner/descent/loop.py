"""The descent loop: a batch of trajectories ``(B, k)`` moved by one optimizer, every step recorded.

At each step k = 0 … steps the loop evaluates the loss and its gradient at x_k, records them (k = 0
is the start point, before any update), and then updates. A row stops at the first step whose loss
or gradient is not finite (``diverged``), or whose gradient norm is ≤ ``tol`` (``converged``);
otherwise it runs all steps (``max_steps``). Stopped rows are frozen while the others go on.

Records stay on the run's device; the stopping test reads them back only every ``sync_every`` steps
(on a GPU each read waits for the device; on the CPU a per-step test costs more Python than the
step itself) and finds each row's first stopping step in the records, so the outcome, the records and
the final point are the same as with a test at every step. A row that stopped inside a window takes
its remaining steps of the window before it is frozen; what it did then is discarded.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from runner.descent.problem import Problem

OUTCOMES = ("max_steps", "converged", "diverged")
# Steps between stopping tests. The test reads the records back (a device sync on a GPU) and finds
# each row's first stopping step in them, so the outcome is the same for any value; per-step Python
# and tensor overhead is what a larger value saves (on the CPU too).
SYNC_EVERY = 32
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


class _EagerStepper:
    """The optimizer's own step: ``p.grad = ∇L(p)``, then ``optimizer.step()`` updates p in place."""

    def __init__(self, problem, base, backend, make_optimizer, closure, x_index, g_index):
        self.problem, self.base, self.backend = problem, base, backend
        self.loss = problem.loss(base)
        self.p = problem.params(base).clone().requires_grad_(True)
        self.optimizer = make_optimizer([self.p])
        self.closure, self.x_index, self.g_index = closure, x_index, g_index
        self.x_whole = x_index is None
        self.g_whole = g_index is None
        self.grad = None

    def evaluate(self):
        """``(x_k, L, ‖∇L‖ or None, x record, grad record)``: the norm is None when the whole
        gradient is recorded, since the loop then takes norms of the records in bulk."""
        value, grad = self.backend.value_and_grad(self.loss, self.p)
        self.grad = grad
        x_k = self.problem.assemble(self.p.detach(), self.base)
        norm = None if self.g_whole else torch.linalg.vector_norm(grad, dim=-1)
        # Copies of x: the optimizer updates p in place. The gradient is a fresh tensor every
        # step, and no optimizer here writes into .grad, so it is kept as it is.
        x_rec = x_k.clone() if self.x_whole else x_k.index_select(-1, self.x_index)
        g_rec = grad if self.g_whole else grad.index_select(-1, self.g_index)
        return x_k, value, norm, x_rec, g_rec

    def _reevaluate(self):
        self.optimizer.zero_grad()
        value, grad = self.backend.value_and_grad(self.loss, self.p.detach())
        self.p.grad = grad
        return value.sum()

    def advance(self, frozen: torch.Tensor | None) -> None:
        saved = self.p.detach().clone() if frozen is not None else None
        self.p.grad = self.grad
        if self.closure:
            self.optimizer.step(self._reevaluate)
        else:
            self.optimizer.step()
        if frozen is not None:
            with torch.no_grad():
                self.p.copy_(torch.where(frozen.unsqueeze(-1), saved, self.p))

    def current(self) -> torch.Tensor:
        return self.problem.assemble(self.p.detach(), self.base)


class _FusedStepper:
    """Plain descent as one compiled function (:func:`runner.descent.compiled.fused_descent_step`): the next
    point is a new tensor, so x is read once and written once per step."""

    def __init__(self, problem, base, backend, lr, x_index, g_index, device):
        from runner.descent.compiled import fused_descent_step

        self.problem, self.base = problem, base
        k = problem.wrt.numel()
        xi = x_index if x_index is not None else torch.arange(problem.dim, device=device)
        gi = g_index if g_index is not None else torch.arange(k, device=device)
        # The compiled step records p's coordinates; map the x sample onto p where all move.
        self.records_x_from_p = problem.moves_all
        fd = None if backend.name == "autograd" else backend
        self.step = fused_descent_step(problem.loss(base), lr, xi if problem.moves_all else gi, gi, fd)
        self.x_index = xi
        self.p = problem.params(base).clone()
        self.next = None

    def evaluate(self):
        self.next, value, gnorm, rec_a, g_rec = self.step(self.p)
        x_k = self.problem.assemble(self.p, self.base)
        x_rec = rec_a if self.records_x_from_p else x_k.index_select(-1, self.x_index)
        return x_k, value, gnorm, x_rec, g_rec

    def advance(self, frozen: torch.Tensor | None) -> None:
        self.p = self.next if frozen is None else torch.where(frozen.unsqueeze(-1), self.p, self.next)

    def current(self) -> torch.Tensor:
        return self.problem.assemble(self.p, self.base)


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
    fused_lr: float | None = None,
    stream: Callable[[int, int, dict[str, np.ndarray]], None] | None = None,
    stream_every: int = 2048,
) -> Trajectory:
    """Descend ``problem`` from ``x0`` (``(B, d)``; default: the problem's start, B = 1).

    Args:
        backend: has ``value_and_grad(loss, p) -> (value (B,), grad (B, k))``.
        make_optimizer: called with ``[p]``, p the ``(B, k)`` leaf of moving coordinates.
        closure: pass a closure to ``step`` (L-BFGS).
        monitor: called as ``monitor(k, x_k)`` at k = 0, monitor_every, … (gradient checks).
        progress: called as ``progress(k, loss_of_row_0)`` every so often.
        fused_lr: plain descent with this step as one compiled function (``backend.compile=true``);
            ``make_optimizer`` is then not used.
        stream: called as ``stream(lo, hi, records)`` with the records of steps lo … hi − 1 (numpy
            ``loss``, ``grad_norm`` ``(T, B)``, ``x``, ``grad`` ``(T, B, ·)``) once they are final:
            about every ``stream_every`` steps, at a stopping test that found every row running. A
            long run's metrics can then be logged while it goes on; the Trajectory still holds all.
    """
    start = time.perf_counter()
    base = (problem.x0 if x0 is None else x0).reshape(-1, problem.dim).clone()
    B, device = base.shape[0], base.device
    if sync_every is None:
        sync_every = SYNC_EVERY
    k_moving = problem.wrt.numel()
    x_coords = sample_coords(problem.dim, max_coords)
    g_coords = sample_coords(k_moving, max_coords)
    x_index = None if len(x_coords) == problem.dim else torch.tensor(x_coords, device=device)
    g_index = None if len(g_coords) == k_moving else torch.tensor(g_coords, device=device)
    if fused_lr is not None:
        stepper = _FusedStepper(problem, base, backend, fused_lr, x_index, g_index, device)
    else:
        stepper = _EagerStepper(problem, base, backend, make_optimizer, closure, x_index, g_index)

    losses: list[torch.Tensor] = []  # per step, (B,)
    norms: list[torch.Tensor | None] = []  # per step ‖∇L‖ (B,), or None: taken from gs in bulk
    xs: list[torch.Tensor] = []  # per step, (B, m)
    gs: list[torch.Tensor] = []

    def window_norms(lo: int, hi: int) -> torch.Tensor:
        if norms[lo] is None:
            return torch.linalg.vector_norm(torch.stack(gs[lo:hi]), dim=-1)
        return torch.stack(norms[lo:hi])

    stop = torch.full((B,), -1, dtype=torch.long, device=device)
    code = torch.zeros((B,), dtype=torch.long, device=device)
    x_final = base.clone()

    def records(lo: int, hi: int) -> dict[str, np.ndarray]:
        return {
            "loss": torch.stack(losses[lo:hi]).cpu().numpy(),
            "grad_norm": window_norms(lo, hi).cpu().numpy(),
            "x": torch.stack(xs[lo:hi]).cpu().numpy(),
            "grad": torch.stack(gs[lo:hi]).cpu().numpy(),
        }

    checked, k, frozen, streamed = 0, 0, None, 0
    for k in range(steps + 1):
        x_k, value, norm, x_rec, g_rec = stepper.evaluate()
        if monitor is not None and monitor_every and k % monitor_every == 0:
            monitor(k, x_k)
        losses.append(value)
        norms.append(norm)
        xs.append(x_rec)
        gs.append(g_rec)
        last = k == steps
        if last or (k + 1 - checked) >= sync_every:
            window_loss, window_norm = torch.stack(losses[checked:]), window_norms(checked, k + 1)
            running = _all_running(window_loss, window_norm, tol)
            if not running:
                first, why = _first_stop(window_loss, window_norm, tol)
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
            if stream is not None and running and frozen is None and checked - streamed >= stream_every and not last:
                stream(streamed, checked, records(streamed, checked))
                streamed = checked
            if progress is not None:
                progress(k, float(value[0]))
        if last:
            break
        stepper.advance(frozen)

    with torch.no_grad():
        running = stop < 0
        stop = torch.where(running, torch.full_like(stop, k), stop)
        x_final = torch.where(running.unsqueeze(-1), stepper.current(), x_final)
        K = int(stop.max()) + 1
        rec_x = torch.stack(xs[:K])
        if x_index is None:
            x_final = rec_x[stop, torch.arange(B, device=device)]
        # Blank out what a row recorded after its own final step (rows stop at different steps).
        after = torch.arange(K, device=device).unsqueeze(1) > stop.unsqueeze(0)
        nan = math.nan
        loss = torch.stack(losses[:K]).masked_fill(after, nan)
        rec_g = torch.stack(gs[:K])
        gnorm = window_norms(0, K)
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
