"""Property-based tests (hypothesis): random safe expressions at random points.

* autograd and finite differences agree within the documented tolerance
  (:func:`runner.curvature.gradcheck.tolerance`) in float64, for every scheme, and the gradient check passes;
* Hessians are symmetric (finite differences exactly, autograd to rounding);
* the autograd Hessian equals the finite-difference one within :func:`hessian_tolerance` below;
* entries marked structural are exactly zero, and the finite-difference Hessian agrees.

The expressions are smooth everywhere (no abs, min, max, division or log of a possibly negative
number): finite differences only approximate derivatives where the function is smooth within a step.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from objectives.expression import parse_expression
from runner.curvature.gradcheck import SAFETY, GradChecker, tolerance
from runner.curvature.hessian import autograd_hessian, fd_gradient, fd_hessian, hessian_structure
from runner.descent.backends import Autograd
from runner.descent.problem import Problem

F64 = torch.float64
VARS = ("x", "y", "z")
UNARY = ("sin({})", "cos({})", "tanh({})", "atan({})", "sigmoid({})", "sqrt(1 + ({})**2)", "log(1 + ({})**2)", "exp(sin({}))", "({})**2")
BINARY = ("({}) + ({})", "({}) - ({})", "({}) * ({})")

leaves = st.one_of(
    st.sampled_from(VARS),
    st.sampled_from(VARS).map(lambda v: f"{v}**3"),
    st.floats(min_value=-3, max_value=3, allow_nan=False).map(lambda c: f"{c:.3g}"),
)


def _extend(children):
    unary = st.tuples(st.sampled_from(UNARY), children).map(lambda t: t[0].format(t[1]))
    binary = st.tuples(st.sampled_from(BINARY), children, children).map(lambda t: t[0].format(t[1], t[2]))
    return unary | binary


expressions = st.recursive(leaves, _extend, max_leaves=8)
points = st.lists(st.floats(min_value=-2, max_value=2, allow_nan=False), min_size=3, max_size=3)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def hessian_tolerance(reference: torch.Tensor, error_bar: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tolᵢⱼ = C·(ε^(1/2)·(1 + |Hᵢⱼ|) + eᵢⱼ)`` for a finite-difference Hessian H with error bar e.

    Second central differences with h = ε^(1/4)·max(1, |x|) are accurate to about ε^(1/2) of the
    scale (truncation h² against rounding ε/h²); C and the error bar as in the gradient check's
    :func:`runner.curvature.gradcheck.tolerance`.
    """
    return SAFETY * (torch.finfo(dtype).eps ** 0.5 * (1.0 + reference.abs()) + error_bar)


def objective(text: str):
    return parse_expression(text, VARS)


def autograd_grad(fn, p: torch.Tensor) -> torch.Tensor:
    return Autograd().value_and_grad(fn, p)[1]


@SETTINGS
@given(text=expressions, point=points, scheme=st.sampled_from([("central", False), ("forward", False), ("central", True)]))
def test_autograd_and_finite_differences_agree_within_the_tolerance(text, point, scheme):
    fn = objective(text)
    p = torch.tensor([point], dtype=F64)
    exact = autograd_grad(fn, p)
    ref = fd_gradient(fn, p, scheme[0], "auto", scheme[1])
    tol = tolerance(ref.estimate, ref.error, F64, scheme[0])
    assert ((exact - ref.estimate).abs() <= tol).all(), (text, point, exact, ref.estimate, tol)
    problem = Problem("custom", fn, list(VARS), p[0], torch.arange(3))
    checker = GradChecker(problem, {"dtype": "float64", "scheme": scheme[0], "richardson": scheme[1]})
    checker(0, p)
    assert not checker.failed(), checker.message()


@SETTINGS
@given(text=expressions, point=points)
def test_hessians_are_symmetric_and_agree(text, point):
    fn = objective(text)
    p = torch.tensor(point, dtype=F64)
    H = autograd_hessian(fn, p)
    assert torch.allclose(H, H.T, rtol=1e-12, atol=1e-12 * (1 + float(H.abs().max())))
    est = fd_hessian(fn, p.unsqueeze(0))
    fd = est.estimate[0]
    assert torch.equal(fd, fd.T)
    tol = hessian_tolerance(fd, est.error[0], F64)
    assert ((H - fd).abs() <= tol).all(), (text, point, H, fd, tol)


@SETTINGS
@given(text=expressions, point=points)
def test_structural_entries_are_exact_zeros(text, point):
    fn = objective(text)
    p = torch.tensor(point, dtype=F64)
    s = hessian_structure(fn, p)
    assert s is not None and torch.equal(s, s.T)
    H = autograd_hessian(fn, p)
    assert (H[s] == 0).all(), (text, point, H, s)
    for j, v in enumerate(VARS):
        if v not in text:  # a variable that does not occur: its whole row and column are structural
            assert s[j].all() and s[:, j].all()


def test_structure_of_a_sum_of_one_variable_terms_is_diagonal():
    fn = objective("sin(x) + y**3 + exp(sin(z))")
    s = hessian_structure(fn, torch.tensor([0.3, -0.2, 1.1], dtype=F64))
    assert s.tolist() == [[False, True, True], [True, False, True], [True, True, False]]


@pytest.mark.parametrize("text", ["x*y*z", "(x - y)**2 * sin(z)", "sqrt(1 + (x*y)**2) - atan(z*x*y)"])
def test_known_expressions_have_no_structural_entries_where_all_pairs_interact(text):
    s = hessian_structure(objective(text), torch.tensor([0.7, -1.3, 0.4], dtype=F64))
    off = ~torch.eye(3, dtype=torch.bool)
    assert not s[off].any()
