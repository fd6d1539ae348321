"""The tutorial's numbers (docs/tutorial.md), reproduced by the runner's pieces."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_problem as problem

from runner.descent.backends import Autograd, FiniteDifference
from runner.descent.loop import descend
from runner.descent.optimizers import ManualDescent

F64 = torch.float64


def test_central_difference_of_f_at_1_is_8():
    f = problem("f")
    value, grad = FiniteDifference(eps=1e-3).value_and_grad(f.fn, torch.tensor([[1.0]], dtype=F64))
    assert float(value) == 4.0  # 3 + 2 - 1
    assert abs(float(grad) - 8.0) < 1e-6


def test_central_difference_of_g_at_2_3_is_9_42():
    g = problem("g")
    _, grad = FiniteDifference(eps=1e-3).value_and_grad(g.fn, g.x0.unsqueeze(0))
    assert grad.shape == (1, 2)
    assert abs(float(grad[0, 0]) - 9.0) < 1e-6
    assert abs(float(grad[0, 1]) - 42.0) < 1e-6


def test_autograd_gradient_of_g_is_exactly_9_42():
    g = problem("g")
    value, grad = Autograd().value_and_grad(g.fn, g.x0.unsqueeze(0))
    assert float(value) == 63.0  # (2 + 5)·3²
    assert grad.tolist() == [[9.0, 42.0]]


def test_watched_variables_only_x2_gets_a_gradient():
    """The tutorial's tape.watch: with wrt=[x2], x1 is a constant and only dg/dx2 = 42 exists."""
    g = problem("g", wrt=["x2"])
    base = g.x0.unsqueeze(0)
    value, grad = Autograd().value_and_grad(g.loss(base), g.params(base))
    assert float(value) == 63.0
    assert grad.tolist() == [[42.0]]


def test_gradient_of_a_list_of_targets_is_their_sum():
    """d/dx [3x, x²] at x = 5 is 13; separately 3 and 10."""
    p = problem("custom", expr=["3*x", "x**2"], init=[5.0])
    x = p.x0.unsqueeze(0)
    _, grad = Autograd().value_and_grad(p.fn, x)
    assert grad.tolist() == [[13.0]]
    each = []
    for target in range(2):
        _, g_t = Autograd().value_and_grad(lambda q, t=target: p.targets(q)[t], x)
        each.append(float(g_t))
    assert each == [3.0, 10.0]


@pytest.mark.parametrize("steps, lr", [(100, 0.1)])
def test_descent_on_f_by_hand_and_with_sgd_reaches_minus_one_third_on_identical_paths(steps, lr):
    f = problem("f")
    by_hand = descend(f, Autograd(), lambda params: ManualDescent(params, lr), steps=steps)
    with_sgd = descend(f, Autograd(), lambda params: torch.optim.SGD(params, lr=lr), steps=steps)
    assert abs(float(by_hand.x_final[0, 0]) + 1.0 / 3.0) < 1e-6
    assert abs(by_hand.final_loss() + 4.0 / 3.0) < 1e-12
    assert (by_hand.x == with_sgd.x).all()  # bit-for-bit the same path
    assert (by_hand.loss == with_sgd.loss).all()
    # The path is the closed form x_k = −1/3 + (1/3)(1 − 6·lr)^k of x ← x − lr(6x + 2), from 0.
    expected = [-1 / 3 + (1 / 3) * (1 - 6 * lr) ** k for k in range(steps + 1)]
    assert max(abs(a - b) for a, b in zip(by_hand.x[:, 0, 0].tolist(), expected)) < 1e-12


def test_lr_one_sixth_lands_on_the_minimum_in_one_step_and_lr_one_diverges():
    f = problem("f")
    one_step = descend(f, Autograd(), lambda params: ManualDescent(params, 1 / 6), steps=1)
    assert abs(float(one_step.x_final[0, 0]) + 1 / 3) < 1e-15
    blown = descend(f, Autograd(), lambda params: ManualDescent(params, 1.0), steps=2000)
    assert blown.outcome == ["diverged"]
    k = int(blown.final_step[0])
    assert not math.isfinite(blown.loss[k, 0])
    assert all(math.isfinite(v) for v in blown.loss[:k, 0])  # everything before it is kept
