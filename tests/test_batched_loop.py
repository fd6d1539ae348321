"""The loop's per-row limits (a batched sweep's rows differ in ``steps`` and ``tol``): each row of one
batch stops where it would stop alone, with the same outcome, records and final point."""

from __future__ import annotations

import math

import numpy as np
import torch
from conftest import make_problem as problem

from runner.descent.backends import Autograd
from runner.descent.loop import descend
from runner.descent.optimizers import ManualDescent

F64 = torch.float64


def manual(lr):
    return lambda params: ManualDescent(params, lr)


def assert_row_equals_alone(batch, row, alone):
    """Row ``row`` of ``batch`` recorded exactly what the single run ``alone`` recorded."""
    assert batch.outcome[row] == alone.outcome[0]
    assert int(batch.final_step[row]) == int(alone.final_step[0])
    at = batch.row_positions(row)
    assert np.array_equal(batch.steps[at], alone.steps[alone.row_positions(0)])
    for key in ("loss", "grad_norm", "x", "grad"):
        assert np.array_equal(getattr(batch, key)[at, row], getattr(alone, key)[:, 0]), key
    assert np.array_equal(batch.x_final[row], alone.x_final[0])


def test_each_row_stops_at_its_own_steps():
    """Steps 0, 1, 31, 32, 33, 64 and 100 (window edges at 32): max_steps at each, the same records."""
    p = problem("rosenbrock")
    own = [0, 1, 31, 32, 33, 64, 100]
    starts = torch.tensor([[-1.2, 1.0]] * len(own), dtype=F64) + torch.linspace(0, 0.3, len(own), dtype=F64)[:, None]
    batch = descend(p, Autograd(), manual(1e-3), steps=max(own), x0=starts, row_steps=torch.tensor(own))
    assert batch.outcome == ["max_steps"] * len(own) and batch.final_step.tolist() == own
    for row, steps in enumerate(own):
        alone = descend(p, Autograd(), manual(1e-3), steps=steps, x0=starts[row : row + 1])
        assert_row_equals_alone(batch, row, alone)


def test_each_row_has_its_own_tolerance_and_a_stop_beats_the_step_limit():
    """Rows of f converge at their own tol; a row whose tol is met at its very last step ends
    converged (the test at a step comes before the limit), as a single run of that many steps."""
    p = problem("f")
    starts = torch.tensor([[5.0], [5.0], [5.0], [5.0]], dtype=F64)
    tols = [1e-2, 1e-6, math.nan, 1e-6]
    alone_tol1 = descend(p, Autograd(), manual(0.1), steps=200, tol=1e-6, x0=starts[:1])
    k = int(alone_tol1.final_step[0])
    own = [200, 200, 50, k]
    batch = descend(p, Autograd(), manual(0.1), steps=200, x0=starts, tol=torch.tensor(tols, dtype=F64),
                    row_steps=torch.tensor(own))
    assert batch.outcome == ["converged", "converged", "max_steps", "converged"]
    assert int(batch.final_step[3]) == k
    for row, (tol, steps) in enumerate(zip(tols, own)):
        alone = descend(p, Autograd(), manual(0.1), steps=steps, tol=None if math.isnan(tol) else tol, x0=starts[row : row + 1])
        assert_row_equals_alone(batch, row, alone)


def test_a_diverging_row_among_rows_with_other_limits():
    p = problem("f")
    starts = torch.tensor([[0.0], [1e300], [1.0]], dtype=F64)
    batch = descend(p, Autograd(), manual(0.1), steps=40, x0=starts, row_steps=torch.tensor([40, 40, 7]))
    assert batch.outcome == ["max_steps", "diverged", "max_steps"]
    assert batch.final_step.tolist() == [40, 0, 7]
