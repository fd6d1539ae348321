"""The descent loop: batches, stopping rules, frozen rows, chunked checks, sampled coordinates."""

from __future__ import annotations

import math
import signal
import sys
import time
from typing import Callable

import numpy as np
import pytest
import torch
from conftest import REPO
from conftest import make_problem as problem
from omegaconf import OmegaConf

from runner.descent.backends import Autograd, FiniteDifference
from runner.descent.loop import _Window, descend, sample_coords
from runner.descent.optimizers import ManualDescent
from runner.descent.schedules import schedule_factory

F64 = torch.float64


def manual(lr):
    return lambda params: ManualDescent(params, lr)


def test_step_zero_is_the_start_point_and_steps_zero_only_evaluates():
    traj = descend(problem("g"), Autograd(), manual(0.1), steps=0)
    assert traj.final_step.tolist() == [0]
    assert traj.loss[:, 0].tolist() == [63.0]
    assert traj.x[0, 0].tolist() == [2.0, 3.0] and traj.grad[0, 0].tolist() == [9.0, 42.0]
    assert traj.grad_norm[0, 0] == math.hypot(9.0, 42.0)


def test_a_batch_of_rows_equals_the_same_rows_run_alone():
    p = problem("rosenbrock")
    starts = torch.tensor([[-1.2, 1.0], [0.0, 0.0], [2.0, 2.0]], dtype=F64)
    batch = descend(p, Autograd(), manual(0.001), steps=50, x0=starts)
    for row in range(3):
        alone = descend(p, Autograd(), manual(0.001), steps=50, x0=starts[row : row + 1])
        assert np.array_equal(batch.x[:, row], alone.x[:, 0])
        assert np.array_equal(batch.loss[:, row], alone.loss[:, 0])


def test_converged_rows_stop_and_are_frozen_while_others_go_on():
    p = problem("f")
    starts = torch.tensor([[-1 / 3 + 1e-3], [5.0]], dtype=F64)
    traj = descend(p, Autograd(), manual(0.1), steps=200, tol=1e-8, x0=starts)
    assert traj.outcome == ["converged", "converged"]
    k0, k1 = traj.final_step.tolist()
    assert k0 < k1
    assert traj.grad_norm[k0, 0] <= 1e-8 < traj.grad_norm[k0 - 1, 0]
    assert np.isnan(traj.loss[k0 + 1 :, 0]).all()  # nothing recorded after a row's own stop
    assert abs(traj.x_final[0, 0] + 1 / 3) < 1e-8 and abs(traj.x_final[1, 0] + 1 / 3) < 1e-8


def test_a_diverging_row_stops_at_its_first_non_finite_value_and_the_others_finish():
    p = problem("f")
    starts = torch.tensor([[0.0], [1e300]], dtype=F64)  # 3x² overflows at once for the second
    traj = descend(p, Autograd(), manual(0.1), steps=20, x0=starts)
    assert traj.outcome == ["max_steps", "diverged"]
    assert traj.final_step.tolist() == [20, 0]


def test_checking_in_chunks_gives_the_same_result_as_every_step():
    """A GPU reads the stopping test back every sync_every steps; the outcome must not change."""
    p = problem("f")
    starts = torch.tensor([[0.0], [3.0], [1e300]], dtype=F64)
    every = descend(p, Autograd(), manual(0.1), steps=300, tol=1e-9, x0=starts, sync_every=1)
    chunked = descend(p, Autograd(), manual(0.1), steps=300, tol=1e-9, x0=starts, sync_every=64)
    assert every.outcome == chunked.outcome == ["converged", "converged", "diverged"]
    assert every.final_step.tolist() == chunked.final_step.tolist()
    assert np.array_equal(np.nan_to_num(every.loss, nan=7.0), np.nan_to_num(chunked.loss, nan=7.0))
    assert np.array_equal(every.x_final, chunked.x_final)


def test_wrt_moves_only_the_watched_variables():
    p = problem("g", wrt=["x2"])
    traj = descend(p, Autograd(), manual(0.01), steps=30)
    assert (traj.x[:, 0, 0] == 2.0).all()  # x1 is a constant
    assert traj.grad.shape == (31, 1, 1)  # a gradient for x2 only
    # dg/dx2 = 2(x1 + 5)x2 = 14·x2, so x2 ← x2(1 − 0.14) each step.
    assert traj.x[-1, 0, 1] == np.float64(3.0 * 0.86**30) or abs(traj.x[-1, 0, 1] - 3.0 * 0.86**30) < 1e-14


def test_finite_difference_descent_follows_the_autograd_path():
    p = problem("rosenbrock")
    exact = descend(p, Autograd(), manual(0.001), steps=100)
    approx = descend(p, FiniteDifference(), manual(0.001), steps=100)
    assert np.abs(exact.x - approx.x).max() < 1e-7


def test_large_problems_record_a_sample_of_coordinates():
    assert sample_coords(5, 64) == [0, 1, 2, 3, 4]
    picked = sample_coords(1000, 8)
    assert picked[0] == 0 and picked[-1] == 999 and len(picked) == 8
    p = problem("quadratic", dim=1000)
    traj = descend(p, Autograd(), manual(0.001), steps=5, max_coords=8)
    assert traj.x.shape == (6, 1, 8) and traj.grad.shape == (6, 1, 8)
    assert traj.x_coords == picked
    assert traj.x_final.shape == (1, 1000)
    # The norm is of the whole gradient, not of the sample: ‖(i·xᵢ)‖ at x = 1.
    assert abs(traj.grad_norm[0, 0] - math.sqrt(sum(i * i for i in range(1, 1001)))) < 1e-6


def test_lbfgs_gets_a_closure():
    p = problem("rosenbrock")
    make = lambda params: torch.optim.LBFGS(params, lr=1, max_iter=20, line_search_fn="strong_wolfe")  # noqa: E731
    traj = descend(p, Autograd(), make, steps=60, closure=True)
    assert np.abs(traj.x_final - 1.0).max() < 1e-4


def test_monitor_is_called_at_the_requested_steps():
    seen = []
    descend(problem("f"), Autograd(), manual(0.1), steps=25, monitor=lambda k, x: seen.append((k, x.shape)), monitor_every=10)
    assert seen == [(0, (1, 1)), (10, (1, 1)), (20, (1, 1))]


def f_path(x0: float, lr: float, k: int) -> float:
    """Plain descent on f(x) = 3x² + 2x − 1 in closed form: x_k = −1/3 + (x0 + 1/3)(1 − 6·lr)^k."""
    return -1 / 3 + (x0 + 1 / 3) * (1 - 6 * lr) ** k


def test_a_step_that_was_not_kept_is_a_key_error_that_says_so():
    """record_every = 4 keeps 0, 4, 8 and the final step 10; 3 and 11 were never kept."""
    traj = descend(problem("f"), Autograd(), manual(0.1), steps=10, record_every=4)
    assert traj.steps.tolist() == [0, 4, 8, 10] and traj.record_every == 4
    assert [traj.index(s) for s in (0, 4, 8, 10)] == [0, 1, 2, 3]
    for missing in (3, 11):
        with pytest.raises(KeyError, match=rf"step {missing} was not kept \(every 4 steps and the final ones\)"):
            traj.index(missing)
    assert traj.x[:, 0, 0].tolist() == pytest.approx([f_path(0.0, 0.1, k) for k in (0, 4, 8, 10)], abs=1e-15)
    # f(x) = 3(x + 1/3)² − 4/3, and x_10 + 1/3 = (1/3)·0.4¹⁰.
    assert traj.final_loss() == pytest.approx(0.4**20 / 3 - 4 / 3, abs=1e-15)
    # A last window of one step (32, after the window 0 … 31) that is kept whole.
    whole = descend(problem("f"), Autograd(), manual(0.1), steps=32, record_every=4)
    assert whole.steps.tolist() == list(range(0, 33, 4))


def test_a_gradient_norm_equal_to_tol_converges_and_the_descent_ends_with_that_window():
    """f'(0) = 2 exactly, so with tol = 2 the start point itself converges (the rule is ‖∇L‖ ≤ tol):
    the row stops at step 0 and the loop hands out that one window and goes no further. With lr = 0
    (SGD allows it) the norm is 2 at every step of the window: no smaller norm stands in for it."""
    windows = []
    traj = descend(problem("f"), Autograd(), lambda q: torch.optim.SGD(q, lr=0.0), steps=100, tol=2.0,
                   on_window=lambda lo, rec, finals: windows.append((lo, len(rec["loss"]), finals.tolist())))
    assert traj.outcome == ["converged"] and traj.final_step.tolist() == [0]
    assert windows == [(0, 32, [0])]
    assert traj.x_final.tolist() == [[0.0]] and traj.final_loss() == -1.0


def test_the_sink_is_told_a_rows_final_step_in_every_window_after_it():
    """Row 0 stops at its own step 5; the windows after that one pass the cheap test, and each still
    tells the sink that row 0 ended at 5 (row 1 ends at 100, in the last window)."""
    windows = []
    traj = descend(problem("f"), Autograd(), manual(0.1), steps=100, x0=torch.zeros(2, 1, dtype=F64),
                   row_steps=torch.tensor([5, 100]), on_window=lambda lo, rec, finals: windows.append((lo, finals.tolist())))
    assert windows == [(0, [5, -1]), (32, [5, -1]), (64, [5, -1]), (96, [5, 100])]
    assert traj.outcome == ["max_steps", "max_steps"] and traj.final_step.tolist() == [5, 100]
    assert abs(traj.x_final[0, 0] - f_path(0.0, 0.1, 5)) < 1e-15 and abs(traj.x_final[1, 0] - f_path(0.0, 0.1, 100)) < 1e-15


def test_rows_of_a_large_problem_record_their_own_gradient_norm_and_final_point():
    """½ Σ i·xᵢ² in d = 100 (more than max_coords): ∇ = (i·xᵢ), so ‖∇‖ = c·√(Σ i²) = c·√338350 at
    x = c·1; plain descent scales xᵢ by (1 − lr·i) per step. Row 0 stops at its own step 5."""
    d, lr = 100, 0.01
    starts = torch.tensor([[1.0] * d, [2.0] * d], dtype=F64)
    traj = descend(problem("quadratic", dim=d), Autograd(), manual(lr), steps=10, x0=starts, max_coords=8,
                   sync_every=1, row_steps=torch.tensor([5, 10]))
    assert traj.x_coords == traj.grad_coords == sample_coords(d, 8)
    assert traj.grad_norm[0].tolist() == pytest.approx([math.sqrt(338350), 2 * math.sqrt(338350)], rel=1e-14)
    for row, (c, k) in enumerate([(1.0, 5), (2.0, 10)]):
        expected = [c * (1 - lr * i) ** k for i in range(1, d + 1)]
        assert traj.x_final[row].tolist() == pytest.approx(expected, rel=1e-13)


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler (KeyboardInterrupt), whatever the process running the tests set
    (a mutmut or xdist parent may have its own); the previous one is put back."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def interrupt_at(step: int, then: Callable[[int], float | None] = lambda k: None) -> Callable[[int], float | None]:
    """``then(k)``, but at k = ``step`` a real SIGINT to this process first (Python's handler turns
    it into KeyboardInterrupt there, as at a user's Ctrl-C)."""

    def call(k, *args):
        if k == step:
            signal.raise_signal(signal.SIGINT)
        return then(k)

    return call


def test_an_interrupt_hands_out_its_window_cut_to_the_complete_steps_with_their_stopping_test(python_sigint):
    """SIGINT while the lr of step 40 is being set: step 40 has its loss but no lr, so the window
    handed out is steps 32 … 39, and its stopping test is made on them. Under lr_j = 0.1·0.5^⌊j/10⌋,
    f's descent is x_k + 1/3 = (x0 + 1/3)·P_k with P_k = Π_{j<k} (1 − 6·lr_j), and ‖∇‖ = 6|x_k + 1/3|;
    each row's tol is 1.02 times its norm at the step it is to converge at (33 from 0, 36 from 5)."""
    cfg = OmegaConf.load(REPO / "conf" / "schedule" / "step.yaml")
    cfg.update(step_size=10, gamma=0.5)
    lrs = [0.1 * 0.5 ** (j // 10) for j in range(40)]
    P = [math.prod(1 - 6 * lr for lr in lrs[:k]) for k in range(41)]
    tol = torch.tensor([1.02 * 2 * P[33], 1.02 * 32 * P[36]], dtype=F64)

    def schedule(optimizer):
        return interrupt_at(40, schedule_factory(cfg)(optimizer))

    windows = []
    with pytest.raises(KeyboardInterrupt):
        descend(problem("f"), Autograd(), manual(0.1), steps=100, x0=torch.tensor([[0.0], [5.0]], dtype=F64),
                tol=tol, schedule=schedule, on_window=lambda lo, rec, finals: windows.append((lo, rec, finals.tolist())))
    assert [(lo, len(rec["loss"]), finals) for lo, rec, finals in windows] == [(0, 32, [-1, -1]), (32, 8, [33, 36])]
    lo, rec, _ = windows[1]
    assert rec["lr"].tolist() == lrs[32:40]
    assert rec["x"][:, 1, 0].tolist() == pytest.approx([-1 / 3 + 16 / 3 * P[k] for k in range(32, 40)], abs=1e-15)


@pytest.mark.parametrize("where", ["monitor", "monitor, first window", "progress", "monitor, no sink"])
def test_an_interrupt_hands_out_each_step_once(where, python_sigint):
    """SIGINT at step 40 or 10, before its record (the monitor), or at step 31 just after the window 0 … 31
    was handed out (the progress report): every step up to it reaches the sink once, none twice, with
    both rows running (-1); without a sink the interrupt goes through as it is."""
    windows = []
    at = 10 if "first" in where else 40
    hook = dict(progress=interrupt_at(31)) if where == "progress" else dict(monitor=interrupt_at(at), monitor_every=1)
    sink = None if "no sink" in where else (lambda lo, rec, finals: windows.append((lo, len(rec["loss"]), finals.tolist())))
    with pytest.raises(KeyboardInterrupt):
        descend(problem("f"), Autograd(), manual(0.1), steps=100, x0=torch.zeros(2, 1, dtype=F64), **hook, on_window=sink)
    expected = {"monitor": [(0, 32, [-1, -1]), (32, 8, [-1, -1])], "monitor, first window": [(0, 10, [-1, -1])],
                "progress": [(0, 32, [-1, -1])], "monitor, no sink": []}
    assert windows == expected[where]


def test_each_step_evaluates_the_objective_once_and_the_loop_reports_its_own_wall_time(tmp_path, monkeypatch):
    """torch.optim.SGD calls a closure when it is given one; the loop gives none unless asked
    (closure=True, for L-BFGS), so steps 0 … 3 evaluate a counting objective 4 times. The wall time
    the loop reports lies within the wall time of the call."""
    (tmp_path / "counted.py").write_text("calls = []\n\ndef bowl(x):\n    calls.append(1)\n    return (x**2).sum(-1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        p = problem("custom", target="counted:bowl", init=[1.0, 2.0])
        calls = sys.modules["counted"].calls
        calls.clear()
        before = time.perf_counter()
        traj = descend(p, Autograd(), lambda q: torch.optim.SGD(q, lr=0.25), steps=3)
        elapsed = time.perf_counter() - before
    finally:
        sys.modules.pop("counted", None)
    assert len(calls) == 4
    assert traj.x[:, 0].tolist() == [[1.0, 2.0], [0.5, 1.0], [0.25, 0.5], [0.125, 0.25]]  # x ← x − 0.25·2x
    assert 0.0 < traj.seconds <= elapsed


def test_the_defaults_record_64_coordinates_and_call_no_monitor():
    """max_coords defaults to 64 (d = 64 is recorded whole, d = 65 as a sample of 64); a monitor
    without monitor_every is never called (monitor_every = 0: off)."""
    seen = []
    whole = descend(problem("quadratic", dim=64), Autograd(), manual(0.01), steps=1, monitor=lambda k, x: seen.append(k))
    sampled = descend(problem("quadratic", dim=65), Autograd(), manual(0.01), steps=1)
    assert whole.x_coords == list(range(64)) and sampled.x_coords == sample_coords(65, 64) != list(range(64))
    assert whole.x.shape == sampled.x.shape == (2, 1, 64) and seen == []


def test_progress_reports_row_zeros_loss_at_its_frozen_point():
    """progress(k, loss of row 0) after each window. Row 0 stops at its own step 5, takes the rest of
    its window and is frozen at x_31 (x_k + 1/3 = (1/3)·0.94^k at lr 0.01), so every report after
    the first window is f(x_31) = 0.94⁶²/3 − 4/3; row 1 goes on to step 100."""
    reports = []
    descend(problem("f"), Autograd(), manual(0.01), steps=100, x0=torch.tensor([[0.0], [5.0]], dtype=F64),
            row_steps=torch.tensor([5, 100]), progress=lambda k, loss: reports.append((k, loss)))
    assert [k for k, _ in reports] == [31, 63, 95, 100]
    assert [loss for _, loss in reports] == pytest.approx([0.94**62 / 3 - 4 / 3] * 4, abs=1e-15)


def test_a_schedule_with_the_fused_step_is_refused():
    with pytest.raises(ValueError, match="^a learning-rate schedule needs the optimizer's own step, not the fused compiled step$"):
        descend(problem("f"), Autograd(), None, steps=3, fused_lr=0.1, schedule=lambda optimizer: (lambda k: 0.1))


def test_a_sampled_trajectory_keeps_the_lr_of_each_kept_step_for_all_rows():
    """record_every = 4 with rows ending at 10 and 40: the kept steps are the multiples of 4 and 10;
    row 0 has no records after its step 10, and the lr (one per step, shared) is kept at every one."""
    cfg = OmegaConf.load(REPO / "conf" / "schedule" / "step.yaml")
    cfg.update(step_size=10, gamma=0.5)
    traj = descend(problem("f"), Autograd(), manual(0.1), steps=40, x0=torch.zeros(2, 1, dtype=F64), record_every=4,
                   row_steps=torch.tensor([10, 40]), schedule=schedule_factory(cfg))
    assert traj.steps.tolist() == [0, 4, 8, 10, 12, 16, 20, 24, 28, 32, 36, 40]
    assert traj.lr.tolist() == [0.1 * 0.5 ** (k // 10) for k in traj.steps]
    assert np.isnan(traj.loss[4:, 0]).all() and not np.isnan(traj.loss[:, 1]).any()
    # Each row's own kept steps: row 1's leave out step 10, which is kept only as row 0's final step.
    assert traj.steps[traj.row_positions(0)].tolist() == [0, 4, 8, 10]
    assert traj.steps[traj.row_positions(1)].tolist() == list(range(0, 41, 4))


def test_a_window_cut_inside_an_add_keeps_the_steps_whose_records_all_arrived():
    """add appends loss, norm, x and gradient in that order; an interrupt after the first three of
    step 2's leaves the window with steps 0 and 1, whose records stack as usual."""
    window = _Window()
    for k in range(2):
        window.add(torch.tensor([float(k)]), None, torch.tensor([[k, -k]], dtype=F64), torch.tensor([[3.0, 4.0]]))
    window.losses.append(torch.tensor([2.0]))
    window.norms.append(None)
    window.xs.append(torch.tensor([[2.0, -2.0]], dtype=F64))
    window.trim()
    assert len(window) == 2 and len(window.norms) == len(window.xs) == len(window.gs) == 2
    records = window.stacked()
    assert records["loss"].tolist() == [[0.0], [1.0]] and records["grad_norm"].tolist() == [[5.0], [5.0]]
