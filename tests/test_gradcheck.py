"""check_grad: autograd against the finite-difference reference, the dtype-derived tolerance, a wrong gradient
caught, and the run's metrics and tags in MLflow."""

from __future__ import annotations

import math
import os

import pytest
import torch
from conftest import REPO, run_cli, runs_of
from omegaconf import OmegaConf

import objectives
from runner.config import ObjectiveConf
from runner.curvature.gradcheck import GradChecker, tolerance
from runner.curvature.hessian import fd_gradient
from runner.descent.problem import build_problem
from runner.errors import UserError

F64, F32 = torch.float64, torch.float32
HELPERS_ENV = {"PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}


def problem_of(name: str, dtype=F64, **fields):
    cfg = OmegaConf.structured(ObjectiveConf(name=name, **fields))
    return build_problem(cfg, dtype=dtype, device=torch.device("cpu"))


def backend_cfg(dtype: str = "float64", **kw):
    return OmegaConf.create({"name": "autograd", "dtype": dtype, "eps": "auto", "scheme": "central", "richardson": False, **kw})


def check_at(problem, cfg, x=None, k: int = 0) -> GradChecker:
    checker = GradChecker(problem, cfg)
    checker(k, (problem.x0 if x is None else x).reshape(-1, problem.dim))
    return checker


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", objectives.names())
def test_correct_gradients_pass_at_every_start(name, dtype):
    problem = problem_of(name, dtype=F64 if dtype == "float64" else F32)
    checker = check_at(problem, backend_cfg(dtype))
    assert not checker.failed(), checker.message()
    assert checker.worst_ratio < 0.5  # a margin: correct gradients stay well inside the tolerance
    assert checker.tags() == {"grad_check": "passed", "grad_check.checks": "1", "grad_check.worst_ratio": f"{checker.worst_ratio:.3g}"}


@pytest.mark.parametrize("scheme,richardson", [("forward", False), ("central", True)])
def test_other_schemes_pass_on_rosenbrock(scheme, richardson):
    for dtype, torch_dtype in (("float64", F64), ("float32", F32)):
        problem = problem_of("rosenbrock", dtype=torch_dtype, dim=4)
        checker = check_at(problem, backend_cfg(dtype, scheme=scheme, richardson=richardson, name="finite_diff"))
        assert not checker.failed(), checker.message()


def test_the_tolerance_on_g_holds_the_true_gradient_and_catches_a_1e_8_error():
    """g at (2, 3) in float64, whose gradient is (x2², 2(x1 + 5)x2) = (9, 42) exactly: the
    finite-difference estimate is within a tenth of the tolerance of it (the safety margin C = 10),
    and the tolerance is below 1e-8 of it (a gradient wrong by that much fails)."""
    problem = problem_of("g")
    p = problem.x0.unsqueeze(0)
    ref = fd_gradient(problem.fn, p)
    tol = tolerance(ref.estimate, ref.error, F64)
    exact = torch.tensor([[9.0, 42.0]], dtype=F64)
    assert ((ref.estimate - exact).abs() <= tol / 10).all(), (ref.estimate - exact, tol)
    assert (tol < 1e-8 * exact).all(), tol
    checker = check_at(problem, backend_cfg())
    assert checker.max_abs == [pytest.approx(float((ref.estimate - torch.tensor([9.0, 42.0], dtype=F64)).abs().max()))]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_wrong_gradient_fails_with_the_worst_coordinate(dtype):
    """bad_square = Σx² with backward 3x: at (1, 2) autograd says (3, 6), the truth is (2, 4)."""
    problem = problem_of("custom", dtype=F64 if dtype == "float64" else F32, target="gradcheck_helpers.wrong_grad:bad_square", init=[1.0, 2.0])
    checker = check_at(problem, backend_cfg(dtype))
    assert checker.failed()
    assert checker.max_abs[0] == pytest.approx(2.0, rel=1e-3)  # |6 − 4|
    assert checker.max_rel[0] == pytest.approx(2.0 / 6.0, rel=1e-3)  # relative to the largest entry, 6
    tags = checker.tags()
    assert tags["grad_check"] == "failed"
    assert (tags["grad_check.coord"], tags["grad_check.step"], float(tags["grad_check.autograd"])) == ("x2", "0", 6.0)
    assert float(tags["grad_check.finite_diff"]) == pytest.approx(4.0, rel=1e-3)
    message = checker.message()
    assert "\n" not in message
    assert message.startswith("gradient check failed: worst x2 at step 0: autograd 6 vs finite_diff 4")
    if dtype == "float32":
        assert "(float32: machine ε = 1.2e-07, so finite differences are only accurate to about ε^2/3 = 2.4e-05" in message
        assert "use backend.dtype=float64 for a sharper check" in message
    else:
        assert "float32" not in message
    control = check_at(problem_of("custom", target="gradcheck_helpers.wrong_grad:good_square", init=[1.0, 2.0]), backend_cfg())
    assert not control.failed()


def test_series_over_steps_and_a_batch_and_the_worst_row():
    problem = problem_of("custom", target="gradcheck_helpers.wrong_grad:bad_square", init=[1.0, 2.0])
    checker = GradChecker(problem, backend_cfg())
    for k, scale in ((0, 1.0), (10, 0.5), (20, 0.25)):
        checker(k, torch.tensor([[1.0, 2.0], [30.0, -1.0]], dtype=F64) * scale)  # B = 2
    steps, values = checker.series()["grad_check/max_abs_err"]
    assert steps.tolist() == [0, 10, 20]
    assert values == pytest.approx([30.0, 15.0, 7.5], rel=1e-6)  # |3x − 2x| = |x|, largest at row 1, x1
    w = checker.worst
    assert (w["step"], w["row"], w["coord"]) == (0, 1, "x1")
    assert "worst x1 at step 0 (row 1)" in checker.message()


def test_wrt_checks_only_the_moving_coordinates():
    problem = problem_of("g", wrt=["x2"])
    checker = check_at(problem, backend_cfg())
    assert not checker.failed() and checker.worst["coord"] == "x2"
    assert checker.max_abs[0] < 1e-8


def test_nonfinite_points_are_skipped_not_failed():
    problem = problem_of("f")
    checker = GradChecker(problem, backend_cfg())
    checker(0, torch.tensor([[math.inf]], dtype=F64))
    assert not checker.failed() and math.isnan(checker.max_abs[0])
    checker(10, torch.tensor([[0.5]], dtype=F64))
    assert not checker.failed() and checker.series()["grad_check/max_abs_err"][0].tolist() == [0, 10]


def test_bad_settings_are_one_line_user_errors():
    with pytest.raises(UserError, match=r"^backend.scheme: 'backward' is not allowed; choose central or forward$"):
        GradChecker(problem_of("f"), backend_cfg(scheme="backward"))
    opaque = problem_of("custom", target="gradcheck_helpers.opaque:numpy_square", init=[1.0])
    with pytest.raises(UserError, match=r"^check_grad=true: autograd cannot differentiate custom \(.*\); use check_grad=false$"):
        check_at(opaque, backend_cfg())


# ------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_cli_check_grad_passes_on_rosenbrock_in_float32(workdir, client):
    result = run_cli(
        "objective=rosenbrock", "optimizer=sgd", "lr=0.001", "steps=20", "check_grad=true", "check_grad_every=5",
        "backend.dtype=float32", "tracking.artifacts=false", cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    assert "gradient check" not in result.stderr
    (run,) = runs_of(client)
    assert run.data.tags["grad_check"] == "passed" and run.data.tags["grad_check.checks"] == "5"
    history = client.get_metric_history(run.info.run_id, "grad_check/max_abs_err")
    assert [h.step for h in history] == [0, 5, 10, 15, 20]
    # at the start (−1.2, 1): the gradient is (−215.6, −88); float32 central differences are off by ~1e-2
    assert 0 < history[0].value < 0.1
    rel = client.get_metric_history(run.info.run_id, "grad_check/max_rel_err")
    assert 0 < rel[0].value < 1e-3


@pytest.mark.slow
def test_cli_check_grad_catches_a_wrong_gradient(workdir, client):
    result = run_cli(
        "objective=custom", "objective.target=gradcheck_helpers.wrong_grad:bad_square", "objective.init=[1.0,2.0]",
        "steps=10", "check_grad=true", "check_grad_every=5", "tracking.artifacts=false",
        cwd=workdir, env=HELPERS_ENV,
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: gradient check")]
    assert len(warnings) == 1
    assert warnings[0].startswith("warning: gradient check failed: worst x2 at step 0: autograd 6 vs finite_diff 4")
    (run,) = runs_of(client)
    tags = run.data.tags
    assert (tags["grad_check"], tags["grad_check.coord"], tags["grad_check.step"]) == ("failed", "x2", "0")
    assert tags["grad_check.message"] == warnings[0].removeprefix("warning: ")
    history = client.get_metric_history(run.info.run_id, "grad_check/max_abs_err")
    assert [h.step for h in history] == [0, 5, 10]
    # manual descent with the wrong gradient 3x: x ← 0.7x, so the error |x2| shrinks by 0.7 per step
    assert [h.value for h in history] == pytest.approx([2.0, 2.0 * 0.7**5, 2.0 * 0.7**10], rel=1e-6)
