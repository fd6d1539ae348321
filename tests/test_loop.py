"""The descent loop: batches, stopping rules, frozen rows, chunked checks, sampled coordinates."""

from __future__ import annotations

import math

import numpy as np
import torch
from conftest import make_problem as problem

from runner.descent.backends import Autograd, FiniteDifference
from runner.descent.loop import descend, sample_coords
from runner.descent.optimizers import ManualDescent

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
