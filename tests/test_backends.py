"""Gradient backends: exact autograd, finite differences in one batched call, step choice."""

from __future__ import annotations

import pytest
import torch

import objectives
from runner.descent.backends import Autograd, FiniteDifference, auto_step, resolve_device, resolve_dtype
from runner.errors import UserError

F64 = torch.float64


class CountingLoss:
    """Wraps a batch-first loss and records the shape of every call."""

    def __init__(self, fn):
        self.fn, self.shapes = fn, []

    def __call__(self, x):
        self.shapes.append(tuple(x.shape))
        return self.fn(x)


def rosenbrock_grad(x):
    """The chained Rosenbrock gradient written out by hand."""
    g = torch.zeros_like(x)
    head, tail = x[:-1], x[1:]
    g[:-1] += -400.0 * head * (tail - head**2) - 2.0 * (1.0 - head)
    g[1:] += 200.0 * (tail - head**2)
    return g


def test_autograd_matches_the_hand_written_rosenbrock_gradient_on_a_batch():
    x = torch.randn(5, 8, dtype=F64, generator=torch.Generator().manual_seed(0))
    value, grad = Autograd().value_and_grad(objectives.get("rosenbrock").fn, x)
    assert value.shape == (5,)
    expected = torch.stack([rosenbrock_grad(row) for row in x])
    assert torch.allclose(grad, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("scheme, rtol", [("central", 1e-7), ("forward", 1e-5)])
def test_finite_differences_evaluate_every_point_in_one_call(scheme, rtol):
    x = torch.randn(3, 16, dtype=F64, generator=torch.Generator().manual_seed(1))
    loss = CountingLoss(objectives.get("rosenbrock").fn)
    value, grad = FiniteDifference(scheme=scheme).value_and_grad(loss, x)
    k = 16
    assert loss.shapes == [(3, 1 + (2 if scheme == "central" else 1) * k, k)]  # one call, no loop
    expected = torch.stack([rosenbrock_grad(row) for row in x])
    # Relative to max(1, |∂ᵢL|): central differences keep ~2/3 of float64's digits, forward ~1/2.
    assert float(((grad - expected).abs() / (expected.abs() + 1)).max()) < rtol
    assert torch.equal(value, objectives.get("rosenbrock").fn(x))


def test_richardson_extrapolation_is_more_accurate_and_estimates_its_error():
    x = torch.tensor([[0.7, -1.3, 2.1]], dtype=F64)
    fn = lambda q: (torch.sin(q) * torch.exp(q)).sum(-1)  # noqa: E731
    exact = torch.exp(x) * (torch.sin(x) + torch.cos(x))
    plain = FiniteDifference(eps=1e-2).value_and_grad(fn, x)[1]
    loss = CountingLoss(fn)
    _, rich, err = FiniteDifference(eps=1e-2, richardson=True).estimate(loss, x)
    assert loss.shapes == [(1, 1 + 4 * 3, 3)]
    assert (rich - exact).abs().max() < (plain - exact).abs().max() / 1000
    # The estimate |D(h/2) − D(h)| bounds the error of the plain estimate D(h/2) in size: with
    # D(h) = ∂L + c·h² + O(h⁴), D(h) − D(h/2) = ¾·c·h² while D(h/2) − ∂L = ¼·c·h², three times less.
    half = FiniteDifference(eps=5e-3).value_and_grad(fn, x)[1]
    assert (err / (half - exact).abs()).flatten().tolist() == pytest.approx([3.0, 3.0, 3.0], rel=1e-3)


def test_auto_step_follows_the_dtype_and_the_size_of_x():
    x = torch.tensor([0.5, 10.0, -1000.0], dtype=F64)
    eps64 = torch.finfo(F64).eps
    assert torch.allclose(auto_step(x, 1, "central"), eps64 ** (1 / 3) * torch.tensor([1.0, 10.0, 1000.0], dtype=F64))
    assert torch.allclose(auto_step(x, 1, "forward"), eps64 ** (1 / 2) * torch.tensor([1.0, 10.0, 1000.0], dtype=F64))
    assert torch.allclose(auto_step(x, 2), eps64 ** (1 / 4) * torch.tensor([1.0, 10.0, 1000.0], dtype=F64))
    x32 = x.float()
    assert float(auto_step(x32, 1)[0]) == pytest.approx(torch.finfo(torch.float32).eps ** (1 / 3), rel=1e-6)


def test_float32_finite_differences_stay_accurate_with_the_auto_step():
    g = objectives.get("g").fn
    _, grad = FiniteDifference().value_and_grad(g, torch.tensor([[2.0, 3.0]]))
    assert grad.dtype == torch.float32
    assert torch.allclose(grad, torch.tensor([[9.0, 42.0]]), rtol=1e-3)


def test_a_loss_that_does_not_depend_on_p_has_zero_gradient():
    value, grad = Autograd().value_and_grad(lambda q: torch.full(q.shape[:-1], 3.0, dtype=q.dtype), torch.ones(2, 3, dtype=F64))
    assert value.tolist() == [3.0, 3.0] and grad.tolist() == [[0.0] * 3] * 2


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: FiniteDifference(scheme="backward"), "backend.scheme: 'backward' is not allowed; choose central or forward"),
        (lambda: FiniteDifference(eps=-1.0), "backend.eps: -1.0 is not allowed"),
        (lambda: FiniteDifference(eps="tiny"), "backend.eps: 'tiny' is not allowed"),
        (lambda: FiniteDifference(scheme="forward", richardson=True), "backend.richardson=true needs backend.scheme=central"),
        (lambda: resolve_dtype("float16"), "backend.dtype: 'float16' is not allowed; choose float32 or float64"),
        (lambda: resolve_device("tpu", 1), "backend.device: 'tpu' is not allowed; choose auto, cpu or cuda"),
    ],
)
def test_bad_backend_settings(make, message):
    with pytest.raises(UserError) as err:
        make()
    assert message in str(err.value)


def test_auto_device_keeps_small_problems_on_the_cpu():
    assert resolve_device("auto", 2).type == "cpu"
    assert resolve_device("cpu", 10**9).type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(UserError, match="no CUDA device is available here"):
        resolve_device("cuda", 2)
