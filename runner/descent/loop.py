"""The descent loop: a batch of trajectories ``(B, k)`` moved by one optimizer, every step recorded.

At each step k = 0 … steps the loop evaluates the loss and its gradient at x_k, records them (k = 0
is the start point, before any update), and then updates. A row stops at the first step whose loss
or gradient is not finite (``diverged``), or whose gradient norm is ≤ ``tol`` (``converged``);
otherwise it runs all steps (``max_steps``). Stopped rows are frozen while the others go on.

Records stay on the run's device for a *window* of ``sync_every`` steps; then the stopping test
reads them back (on a GPU each read waits for the device; on the CPU a per-step test costs more
Python than the step itself) and finds each row's first stopping step in the window, so the outcome,
the records and the final point are the same as with a test at every step. A row that stopped inside
a window takes its remaining steps of the window before it is frozen; what it did then is discarded.

Memory does not grow with the steps beyond what is kept: after its test, a window is handed to
``on_window`` (a run streams its metrics and its trajectory file from there) and the
:class:`Trajectory` keeps only the steps ``0, record_every, 2·record_every, …`` and each row's final
step; the window's tensors are then dropped.
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
# on_window(lo, records, final_step): records of steps lo, lo + 1, … as numpy (``loss``,
# ``grad_norm`` (T, B); ``x``, ``grad`` (T, B, ·)); final_step (B,): each row's final step when
# known by the end of this window, else -1. Records past a row's final step are not its own.
WindowSink = Callable[[int, dict, np.ndarray], None]


@dataclass
class Trajectory:
    """What a descent did, on the host, as numpy arrays, at the kept steps.

    Attributes:
        steps: ``(S,)`` the kept steps, increasing: every ``record_every``-th step and each row's
            final step (every step when ``record_every`` is 1, so that ``loss[k]`` is step k).
        loss, grad_norm: ``(S, B)``; nan after a row's final step.
        x: ``(S, B, m)`` the recorded coordinates ``x_coords`` of x.
        grad: ``(S, B, n)`` the recorded coordinates ``grad_coords`` of the gradient (indices into
            the moving variables).
        final_step: ``(B,)`` each row's last recorded step.
        outcome: each row's outcome, one of :data:`OUTCOMES`.
        x_final: ``(B, d)`` each row's final point, all coordinates.
        seconds: wall time of the loop.
        record_every: the stride of the kept steps.
        lr: ``(S,)`` the lr in effect at each kept step, with a schedule (else None).
    """

    steps: np.ndarray
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
    record_every: int = 1
    lr: np.ndarray | None = None

    def index(self, step: int) -> int:
        """The position of a kept step in ``steps``."""
        i = int(np.searchsorted(self.steps, step))
        if i >= len(self.steps) or self.steps[i] != step:
            raise KeyError(f"step {step} was not kept (every {self.record_every} steps and the final ones)")
        return i

    def row_positions(self, row: int) -> np.ndarray:
        """Positions of one row's own kept steps: its multiples of ``record_every`` up to its final
        step, and the final step (other rows' final steps are left out)."""
        final = int(self.final_step[row])
        own = ((self.steps % self.record_every) == 0) | (self.steps == final)
        return np.flatnonzero(own & (self.steps <= final))

    def final_loss(self, row: int = 0) -> float:
        return float(self.loss[self.index(int(self.final_step[row])), row])


def sample_coords(n: int, limit: int) -> list[int]:
    """All of range(n) when n ≤ limit, else ``limit`` evenly spaced indices (first and last kept)."""
    if n <= limit:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, limit).round().astype(int).tolist()))


def _first_stop(loss: torch.Tensor, gnorm: torch.Tensor, tol: float | torch.Tensor | None,
                limit: torch.Tensor | None = None):
    """For records ``(T, B)``: the first index where each row stops (-1: it does not), and why.

    A row diverges at the first non-finite loss or gradient norm, converges at the first finite
    gradient norm ≤ tol (a float, or one per row, ``(B,)``; NaN: never); codes index
    :data:`OUTCOMES`. ``limit`` ``(B,)``: the index of each row's own last step in this window (≥ T:
    beyond it); a row that gets there first stops there with ``max_steps``, after the other tests.
    """
    bad = ~(torch.isfinite(loss) & torch.isfinite(gnorm))
    event = bad if tol is None else bad | (gnorm <= tol)
    T = loss.shape[0]
    idx = torch.arange(T, device=loss.device).unsqueeze(1).expand_as(event)
    first = torch.where(event, idx, T).min(dim=0).values  # (B,)
    was_bad = bad.gather(0, first.clamp(max=T - 1).unsqueeze(0)).squeeze(0)
    code = torch.where(was_bad, 2, 1)
    if limit is not None:
        capped = limit < first
        first = torch.where(capped, limit, first)
        code = torch.where(capped, 0, code)
    hit = first < T
    return torch.where(hit, first, -1), torch.where(hit, code, 0)


def _all_running(loss: torch.Tensor, gnorm: torch.Tensor, tol: float | torch.Tensor | None,
                 stopped: torch.Tensor | None = None) -> bool:
    """The cheap test made at every check: no stopping event in the window, in any row that has not
    stopped before it (``stopped`` (B,)). Per row: the sums over the window are finite (a NaN or an
    infinity propagates; a sum that overflows only sends the window to the exact test) and no
    gradient norm is ≤ tol. Much cheaper than testing every record on the CPU."""
    ok = torch.isfinite(loss.sum(dim=0) + gnorm.sum(dim=0))
    if tol is not None:
        ok = ok & ~(gnorm.amin(dim=0) <= tol)
    if stopped is not None:
        ok = ok | stopped
    return bool(ok.all())


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
        # The loss of an expression such as ``x`` or ``-x`` can be a view of p, which the optimizer
        # updates in place: the recorded loss must be the value at x_k, so it is copied.
        value = value.detach().clone()
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


class _Window:
    """The records of the steps since the last stopping test, on the device (one tensor per step)."""

    def __init__(self) -> None:
        self.lo = 0
        self.handed = False
        self.losses: list[torch.Tensor] = []  # per step, (B,)
        self.norms: list[torch.Tensor | None] = []  # per step ‖∇L‖ (B,), or None: taken in bulk
        self.xs: list[torch.Tensor] = []  # per step, (B, m)
        self.gs: list[torch.Tensor] = []  # per step, (B, n)
        self.lrs: list[float] = []  # per step, the lr in effect (with a schedule)

    def __len__(self) -> int:
        return len(self.losses)

    def add(self, value, norm, x_rec, g_rec) -> None:
        self.losses.append(value)
        self.norms.append(norm)
        self.xs.append(x_rec)
        self.gs.append(g_rec)

    def stacked(self, out: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """``loss``, ``grad_norm`` ``(T, B)``, ``x``, ``grad`` ``(T, B, ·)``, and ``lr`` ``(T,)`` with
        a schedule; written into ``out`` (tensors of those shapes) when given."""
        out = out or {}
        gs = torch.stack(self.gs, out=out.get("grad"))
        if self.norms[0] is None:
            norms = torch.linalg.vector_norm(gs, dim=-1, out=out.get("grad_norm"))
        else:
            norms = torch.stack(self.norms, out=out.get("grad_norm"))
        records = {"loss": torch.stack(self.losses, out=out.get("loss")), "grad_norm": norms,
                   "x": torch.stack(self.xs, out=out.get("x")), "grad": gs}
        if self.lrs:
            lrs = torch.tensor(self.lrs, dtype=torch.float64, device=gs.device)
            records["lr"] = out["lr"].copy_(lrs) if "lr" in out else lrs
        return records

    def restart(self, lo: int) -> None:
        self.lo = lo
        self.losses, self.norms, self.xs, self.gs, self.lrs = [], [], [], [], []
        self.handed = False  # whether on_window has had these steps

    def trim(self) -> None:
        """Keep the steps whose records all arrived (an interrupt may cut an ``add``)."""
        n = min(len(self.losses), len(self.norms), len(self.xs), len(self.gs))
        if self.lrs:
            n = min(n, len(self.lrs))
        self.losses, self.norms, self.xs, self.gs = self.losses[:n], self.norms[:n], self.xs[:n], self.gs[:n]
        self.lrs = self.lrs[:n]


class _Stops:
    """Each row's final step (-1 while it runs), why it stopped, and its final point.

    ``row_steps`` ``(B,)``: each row's own number of steps (rows then stop at different steps with
    ``max_steps``); None: every row runs the loop's ``steps``."""

    def __init__(self, base: torch.Tensor, row_steps: torch.Tensor | None = None) -> None:
        B, device = base.shape[0], base.device
        self.step = torch.full((B,), -1, dtype=torch.long, device=device)
        self.code = torch.zeros((B,), dtype=torch.long, device=device)
        self.x_final = base.clone()
        self.frozen: torch.Tensor | None = None  # rows that no longer move; None while all run
        self.row_steps = None if row_steps is None else row_steps.to(device=device, dtype=torch.long)
        self.limits = None if row_steps is None else set(self.row_steps.tolist())  # on the host

    def _limit(self, lo: int, T: int) -> torch.Tensor | None:
        """Each row's own last step as an index into the window from ``lo`` (None: none falls in it)."""
        if self.limits is None or not any(lo <= s < lo + T for s in self.limits):
            return None
        at = self.row_steps - lo
        return torch.where(at >= 0, at, T)

    def test(self, lo: int, window: dict[str, torch.Tensor], x_k: torch.Tensor, tol: float | torch.Tensor | None) -> bool:
        """Find the rows that stopped in this window; whether every row is still running."""
        limit = self._limit(lo, window["loss"].shape[0])
        if limit is None and _all_running(window["loss"], window["grad_norm"], tol, self.frozen):
            return self.frozen is None
        first, why = _first_stop(window["loss"], window["grad_norm"], tol, limit)
        newly = (self.step < 0) & (first >= 0)
        self.step = torch.where(newly, first + lo, self.step)
        self.code = torch.where(newly, why, self.code)
        # Where x is recorded in full the final point is read from the records at the end;
        # otherwise it is the point at this test (≤ sync_every − 1 steps late).
        self.x_final = torch.where(newly.unsqueeze(-1), x_k, self.x_final)
        self.frozen = self.step >= 0
        return False

    def end(self, k: int, x_now: torch.Tensor) -> None:
        """Rows still running at step k stop there (``max_steps``) at their current point."""
        running = self.step < 0
        self.step = torch.where(running, torch.full_like(self.step, k), self.step)
        self.x_final = torch.where(running.unsqueeze(-1), x_now, self.x_final)

    def all_stopped(self) -> bool:
        return self.frozen is not None and bool(self.frozen.all())


class _Kept:
    """The steps a :class:`Trajectory` keeps, on the host: every ``every``-th step and each row's
    final step, gathered from each window before it is dropped. With ``every`` = 1 (every step of a
    known number) the records go straight into arrays allocated once, as a hand-written loop would
    keep them; otherwise the kept steps of each window are kept as a chunk."""

    def __init__(self, every: int, steps: int) -> None:
        self.every = every
        self.total = steps + 1 if every == 1 else None
        self.arrays: dict[str, torch.Tensor] | None = None  # on the host, every step
        self.placed = -1  # the window (by its first step) stacked in place into ``arrays``
        self.filled = 0
        self.chunks: list[dict[str, np.ndarray]] = []

    def slots(self, window: _Window) -> dict[str, torch.Tensor] | None:
        """Where a window of a CPU run that keeps every step is stacked: its rows of the arrays
        (so the records are copied once, as into a hand-written loop's preallocated tensors)."""
        if self.total is None or window.losses[0].device.type != "cpu":
            return None
        if self.arrays is None:
            loss, x, g = window.losses[0], window.xs[0], window.gs[0]
            self.arrays = {
                "loss": loss.new_empty((self.total, *loss.shape)), "grad_norm": g.new_empty((self.total, g.shape[0])),
                "x": x.new_empty((self.total, *x.shape)), "grad": g.new_empty((self.total, *g.shape)),
            }
            if window.lrs:
                self.arrays["lr"] = torch.empty(self.total, dtype=torch.float64)
        self.placed = window.lo
        return {key: value[window.lo : window.lo + len(window)] for key, value in self.arrays.items()}

    def add(self, lo: int, window: dict[str, torch.Tensor], finals: np.ndarray | None) -> None:
        """``finals``: the rows' final steps known so far (None while every row runs)."""
        T = window["loss"].shape[0]
        if self.total is not None:
            if self.arrays is None:
                self.arrays = {key: torch.empty((self.total, *v.shape[1:]), dtype=v.dtype) for key, v in window.items()}
            if self.placed != lo:  # records on a device: copied to the host
                for key, value in window.items():
                    self.arrays[key][lo : lo + T] = value.cpu()
            self.filled = lo + T
            return
        steps = np.arange(lo, lo + T)
        keep = (steps % self.every) == 0
        if finals is not None:
            keep |= np.isin(steps, finals)
        if not keep.any():
            return
        index = np.flatnonzero(keep)
        if len(index) == T:
            chunk = {key: value.cpu().numpy() for key, value in window.items()}
        else:
            at = torch.as_tensor(index, device=window["loss"].device)
            chunk = {key: value.index_select(0, at).cpu().numpy() for key, value in window.items()}
        chunk["steps"] = steps[index]
        self.chunks.append(chunk)

    def _gathered(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        source = self.arrays if self.arrays is not None else self.chunks[0]
        keys = [key for key in ("loss", "grad_norm", "x", "grad", "lr") if key in source]
        if self.arrays is not None:
            return np.arange(self.filled), {key: self.arrays[key][: self.filled].numpy() for key in keys}
        steps = np.concatenate([c["steps"] for c in self.chunks])
        return steps, {key: np.concatenate([c[key] for c in self.chunks]) for key in keys}

    def trajectory(self, stops: _Stops, x_coords, g_coords, x_whole: bool, seconds: float) -> Trajectory:
        final = stops.step.cpu().numpy()
        steps, arrays = self._gathered()
        last = int(final.max())
        upto = int(np.searchsorted(steps, last, side="right"))  # steps are increasing
        steps = steps[:upto]
        arrays = {key: value[:upto] for key, value in arrays.items()}
        # Blank out what a row recorded after its own final step (rows stop at different steps).
        for row in np.flatnonzero(final < last):
            after = int(np.searchsorted(steps, final[row], side="right"))
            for value in arrays.values():
                if value.ndim > 1:  # not lr (T,): one per step, shared by the rows
                    value[after:, row] = math.nan
        x_final = stops.x_final.detach().cpu().numpy()
        if x_whole:  # the exact final point of every row, from the records at its final step
            at = np.searchsorted(steps, final)
            x_final = arrays["x"][at, np.arange(len(final))].copy()
        return Trajectory(
            steps=steps, loss=arrays["loss"], grad_norm=arrays["grad_norm"], x=arrays["x"], grad=arrays["grad"],
            x_coords=x_coords, grad_coords=g_coords, final_step=final,
            outcome=[OUTCOMES[c] for c in stops.code.cpu().tolist()], x_final=x_final, seconds=seconds,
            record_every=self.every, lr=arrays.get("lr"),
        )


def descend(
    problem: Problem,
    backend: Any,
    make_optimizer: Callable[[list[torch.Tensor]], Any],
    *,
    steps: int,
    tol: float | torch.Tensor | None = None,
    x0: torch.Tensor | None = None,
    max_coords: int = 64,
    closure: bool = False,
    sync_every: int | None = None,
    monitor: Monitor | None = None,
    monitor_every: int = 0,
    progress: Callable[[int, float], None] | None = None,
    fused_lr: float | None = None,
    record_every: int = 1,
    on_window: WindowSink | None = None,
    schedule: Callable[[Any], Callable[[int], float]] | None = None,
    row_steps: torch.Tensor | None = None,
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
        record_every: the Trajectory keeps every ``record_every``-th step and the final steps.
        on_window: called after each stopping test with the window's records (see
            :data:`WindowSink`): every step reaches it once, in order, and then is dropped.
        schedule: called with the optimizer, gives ``lr_at(k)``, called at every step k before its
            update; it sets the optimizer's lr and returns it (recorded as ``lr``). See
            :mod:`runner.descent.schedules`; not with ``fused_lr``.
        tol: a float, or ``(B,)`` one per row (NaN: that row never converges).
        row_steps: ``(B,)`` each row's own number of steps, ≤ ``steps`` (a row stops at its own with
            ``max_steps``, like a run of that many steps); None: ``steps`` for every row.
    """
    start = time.perf_counter()
    base = (problem.x0 if x0 is None else x0).reshape(-1, problem.dim).clone()
    x_coords = sample_coords(problem.dim, max_coords)
    g_coords = sample_coords(problem.wrt.numel(), max_coords)
    stepper = _stepper(problem, base, backend, make_optimizer, closure, fused_lr, x_coords, g_coords)
    window, stops, kept = _Window(), _Stops(base, row_steps), _Kept(max(1, int(record_every)), steps)
    if schedule is not None and fused_lr is not None:
        raise ValueError("a learning-rate schedule needs the optimizer's own step, not the fused compiled step")
    lr_at = schedule(stepper.optimizer) if schedule is not None else None
    sync_every = sync_every or SYNC_EVERY
    k = 0
    try:
        for k in range(steps + 1):
            x_k, value, norm, x_rec, g_rec = stepper.evaluate()
            if monitor is not None and monitor_every and k % monitor_every == 0:
                monitor(k, x_k)
            window.add(value, norm, x_rec, g_rec)
            if lr_at is not None:
                window.lrs.append(lr_at(k))
            last = k == steps
            if last or len(window) >= sync_every:
                records = window.stacked(kept.slots(window))
                running = stops.test(window.lo, records, x_k, tol)
                if last:
                    stops.end(k, stepper.current())
                finals = None if running and not last else stops.step.cpu().numpy()
                kept.add(window.lo, records, finals)
                if on_window is not None:
                    _hand(window, records, finals, base.shape[0], on_window)
                if progress is not None:
                    progress(k, float(value[0]))
                window.restart(k + 1)
                if stops.all_stopped() or last:
                    break
            stepper.advance(stops.frozen)
    except KeyboardInterrupt:  # a signal (runner.interrupts): the steps of this window go out too
        if on_window is not None and not window.handed:
            _hand_partial(window, stops, tol, base.shape[0], on_window)
        raise
    if not last:  # every row stopped before the last step
        stops.end(k, stepper.current())
    return kept.trajectory(stops, x_coords, g_coords, len(x_coords) == problem.dim, time.perf_counter() - start)


def _hand(window: "_Window", records: dict, finals: np.ndarray | None, rows: int, on_window: WindowSink) -> None:
    arrays = {key: v.cpu().numpy() for key, v in records.items()}
    window.handed = True
    on_window(window.lo, arrays, finals if finals is not None else np.full(rows, -1))


def _hand_partial(window: "_Window", stops: "_Stops", tol: float | None, rows: int, on_window: WindowSink) -> None:
    """The steps of a window cut short by an interrupt, with the stopping test made on them."""
    window.trim()
    if len(window):
        records = window.stacked()
        running = stops.test(window.lo, records, stops.x_final, tol)
        _hand(window, records, None if running else stops.step.cpu().numpy(), rows, on_window)


def _stepper(problem, base, backend, make_optimizer, closure, fused_lr, x_coords, g_coords):
    """The eager optimizer step, or the fused compiled step of plain descent."""
    device = base.device
    x_index = None if len(x_coords) == problem.dim else torch.tensor(x_coords, device=device)
    g_index = None if len(g_coords) == problem.wrt.numel() else torch.tensor(g_coords, device=device)
    if fused_lr is not None:
        return _FusedStepper(problem, base, backend, fused_lr, x_index, g_index, device)
    return _EagerStepper(problem, base, backend, make_optimizer, closure, x_index, g_index)
