"""The batched update rules against ``torch.optim`` run row by row: every row of a ``(B, 2)`` batch, each
with its own lr and hyperparameters (the edge options included), follows the path that the
``torch.optim`` class takes for that row alone, at every step, in float64, to 1e-12 relative.

The objective is the 2-D Rosenbrock function (curved valley: the updates do not commute with
rounding); the gradient is autograd's, row by row for torch.optim and for the whole batch here.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.descent import batched_optimizers as bo
from runner.descent.optimizers import ManualDescent

STEPS = 200
START = (-1.2, 1.0)


def rosenbrock(x: torch.Tensor) -> torch.Tensor:
    return (1 - x[..., 0]) ** 2 + 100 * (x[..., 1] - x[..., 0] ** 2) ** 2


def gradient(p: torch.Tensor) -> torch.Tensor:
    q = p.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(rosenbrock(q).sum(), q)
    return g


def torch_path(cls, lr: float, kwargs: dict, steps: int = STEPS) -> torch.Tensor:
    """``(steps + 1, 2)``: the class's path for one row, on a ``(1, 2)`` parameter."""
    p = torch.tensor([START], dtype=torch.float64, requires_grad=True)
    return walk(p, cls([p], lr=lr, **kwargs), steps)[:, 0, :]


def walk(p: torch.Tensor, opt, steps: int) -> torch.Tensor:
    """``(steps + 1, B, 2)``: p at every step of ``opt`` on the Rosenbrock function."""
    path = [p.detach().clone()]
    for _ in range(steps):
        p.grad = gradient(p)
        opt.step()
        path.append(p.detach().clone())
    return torch.stack(path)


def batched_path(cls, lrs: list[float], rows: list[dict], steps: int = STEPS) -> torch.Tensor:
    """``(steps + 1, B, 2)``: the batched rule's paths, every row from the same start."""
    options = []
    for kwargs in rows:
        hyper, why = bo.hyperparameters(cls, kwargs)
        assert why is None, why
        options.append(hyper)
    rule = bo.rule_for(cls)
    p = torch.tensor([START] * len(rows), dtype=torch.float64, requires_grad=True)
    h = bo.hyper_tensors(rule, options, torch.float64, p.device)
    opt = bo.BatchedOptimizer([p], rule, h, torch.tensor(lrs, dtype=torch.float64).reshape(-1, 1))
    return walk(p, opt, steps)


def assert_rows_match(cls, lrs, rows, tol=1e-12):
    batched = batched_path(cls, lrs, rows)
    for b, (lr, kwargs) in enumerate(zip(lrs, rows)):
        expected = torch_path(cls, lr, kwargs)
        got = batched[:, b, :]
        finite = torch.isfinite(expected)
        assert torch.equal(torch.isfinite(got), finite), (cls.__name__, lr, kwargs)  # diverges alike
        error = ((got - expected).abs() / expected.abs().clamp_min(1e-300))[finite].max().item()
        assert error <= tol, (cls.__name__, lr, kwargs, error)


CASES = {
    "manual": (ManualDescent, [1e-4, 5e-4, 1e-3], [{}, {}, {}]),
    "sgd": (torch.optim.SGD, [1e-4, 5e-4, 1e-3, 2e-4, 3e-4, 1e-4], [
        {}, {"momentum": 0.9}, {"momentum": 0.5, "dampening": 0.3}, {"momentum": 0.8, "nesterov": True},
        {"weight_decay": 0.1}, {"momentum": 0.0, "dampening": 0.5, "weight_decay": 0.01},
    ]),
    "adam": (torch.optim.Adam, [1e-3, 1e-2, 3e-3, 1e-2, 5e-3], [
        {}, {"betas": (0.8, 0.99)}, {"eps": 1e-4, "weight_decay": 0.1}, {"amsgrad": True},
        {"betas": (0.5, 0.9), "amsgrad": True, "weight_decay": 0.01},
    ]),
    "adamw": (torch.optim.AdamW, [1e-3, 1e-2, 3e-3, 1e-2], [
        {}, {"weight_decay": 0.0}, {"weight_decay": 0.5, "amsgrad": True}, {"betas": (0.7, 0.95), "eps": 1e-6},
    ]),
    "rmsprop": (torch.optim.RMSprop, [1e-3, 1e-3, 5e-4, 2e-4, 1e-3, 5e-4], [
        {}, {"alpha": 0.9}, {"centered": True}, {"momentum": 0.9}, {"momentum": 0.5, "centered": True, "eps": 1e-6},
        {"weight_decay": 0.1, "alpha": 0.5},
    ]),
    "adagrad": (torch.optim.Adagrad, [0.1, 0.05, 0.2, 0.1, 0.3], [
        {}, {"lr_decay": 0.01}, {"initial_accumulator_value": 0.5}, {"weight_decay": 0.1, "eps": 1e-6},
        {"lr_decay": 0.1, "initial_accumulator_value": 1.0, "weight_decay": 0.01},
    ]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_row_follows_torch_optim(name):
    cls, lrs, rows = CASES[name]
    assert_rows_match(cls, lrs, rows)


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.floats(1e-4, 3e-3), st.floats(0.0, 0.95), st.floats(0.0, 0.5), st.booleans(), st.floats(0.0, 0.2)
        ),
        min_size=1, max_size=6,
    )
)
def test_random_sgd_rows_follow_torch_optim(rows):
    """Any mix of momentum, dampening, nesterov and weight decay across rows (nesterov only where
    torch allows it: momentum > 0, no dampening)."""
    lrs, options = [], []
    for lr, momentum, dampening, nesterov, decay in rows:
        nesterov = nesterov and momentum > 0
        options.append({"momentum": momentum, "dampening": 0.0 if nesterov else dampening,
                        "nesterov": nesterov, "weight_decay": decay})
        lrs.append(lr)
    assert_rows_match(torch.optim.SGD, lrs, options)


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.floats(1e-4, 2e-2), st.floats(0.0, 0.99), st.floats(0.5, 0.9999), st.booleans(),
                  st.floats(0.0, 0.5), st.sampled_from([1e-8, 1e-6, 1e-3])),
        min_size=1, max_size=6,
    )
)
def test_random_adam_rows_follow_torch_optim(rows):
    lrs = [r[0] for r in rows]
    options = [{"betas": (b1, b2), "amsgrad": ams, "weight_decay": wd, "eps": eps} for _, b1, b2, ams, wd, eps in rows]
    assert_rows_match(torch.optim.Adam, lrs, options)
    assert_rows_match(torch.optim.AdamW, lrs, options)


def test_what_does_not_batch_says_why():
    assert bo.hyperparameters(torch.optim.SGD, {"lr": 0.1, "maximize": True}) == (None, "optimizer.maximize=True is not batched")
    assert bo.hyperparameters(torch.optim.SGD, {"lr": 0.1, "maximize": False, "foreach": None})[1] is None
    assert bo.hyperparameters(torch.optim.LBFGS, {"lr": 0.1})[1] == "optimizer torch.optim.lbfgs.LBFGS has no batched rule"
    hyper, _ = bo.hyperparameters(torch.optim.Adam, {"lr": 0.1, "betas": [0.5, 0.6]})
    assert (hyper["beta1"], hyper["beta2"], hyper["eps"], hyper["decoupled_weight_decay"]) == (0.5, 0.6, 1e-8, False)
    assert bo.hyperparameters(torch.optim.AdamW, {})[0]["weight_decay"] == 0.01


def test_a_schedule_multiplies_the_rows_lr():
    """Step t uses lr·schedule(t): with a factor of 0.5 from step 2 on, the second step of manual
    descent moves half as far as without it."""
    p = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    lr = torch.tensor([[0.1], [0.2]], dtype=torch.float64)
    opt = bo.BatchedOptimizer([p], bo.MANUAL, {}, lr, schedule=lambda t: 1.0 if t == 1 else 0.5)
    for expected in ([[0.9, 1.8], [2.4, 3.2]], [[0.855, 1.71], [2.16, 2.88]]):
        p.grad = p.detach().clone()  # the gradient of ‖p‖²/2
        opt.step()
        assert torch.allclose(p.detach(), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-15)
    assert math.isclose(float(opt.lr[1, 0]), 0.2)
