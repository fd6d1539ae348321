"""task=derivatives and runner.curvature.hessian: exact known values, finite-difference Hessians, structural zeros,
the table, the MLflow run, and the start-point stable-step warning."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, run_cli, runs_of
from omegaconf import OmegaConf

from runner.config import ObjectiveConf
from runner.curvature.hessian import (
    NOISE_POINTS,
    autograd_hessian,
    fd_gradient,
    fd_hessian,
    hessian_structure,
    stable_lr,
    stable_lr_warning,
)
from runner.curvature.task import compute_derivatives, format_table, metrics
from runner.descent.backends import Autograd, FiniteDifference
from runner.descent.problem import build_problem
from runner.errors import UserError

F64, F32 = torch.float64, torch.float32
SQRT85 = math.sqrt(85.0)
G_EIGS = [7.0 - SQRT85, 7.0 + SQRT85]
G_STABLE_LR = 2.0 / (7.0 + SQRT85)


def problem_of(name: str, dtype=F64, **fields):
    cfg = OmegaConf.structured(ObjectiveConf(name=name, **fields))
    return build_problem(cfg, dtype=dtype, device=torch.device("cpu"))


def fd_backend(**kw) -> FiniteDifference:
    return FiniteDifference(kw.get("scheme", "central"), kw.get("eps", "auto"), kw.get("richardson", False))


# ------------------------------------------------------------------------------ exact values


def test_g_autograd_exact_values_and_structural_zero():
    d = compute_derivatives(problem_of("g"), Autograd())
    assert d.value == 63.0
    assert d.grad.tolist() == [9.0, 42.0]
    assert d.hessian.tolist() == [[0.0, 6.0], [6.0, 14.0]]
    assert d.structural.tolist() == [[True, False], [False, False]]  # d²g/dx1²: TensorFlow's None
    assert d.structural_entries() == ["x1/x1"]
    assert d.eigenvalues.tolist() == pytest.approx(G_EIGS, rel=1e-15, abs=1e-15)
    assert d.stable_lr == pytest.approx(G_STABLE_LR, rel=1e-15)
    assert d.grad_err is None and d.hessian_err is None and d.notes == []


def test_g_finite_diff_matches_within_its_error_bars():
    d = compute_derivatives(problem_of("g"), fd_backend())
    assert d.value == 63.0
    exact_g, exact_h = np.array([9.0, 42.0]), np.array([[0.0, 6.0], [6.0, 14.0]])
    assert np.abs(d.grad - exact_g).max() < 1e-8
    assert (np.abs(d.grad - exact_g) <= d.grad_err).all()
    assert (np.abs(d.hessian - exact_h) <= d.hessian_err).all()
    assert (d.hessian_err < 1e-5).all()
    assert d.structural.tolist() == [[True, False], [False, False]]  # found by autograd, whatever the backend
    assert d.eigenvalues.tolist() == pytest.approx(G_EIGS, rel=1e-7)
    assert d.stable_lr == pytest.approx(G_STABLE_LR, rel=1e-7)
    # the gradient is exactly the backend's own estimate
    _, backend_grad, _ = fd_backend().estimate(problem_of("g").fn, torch.tensor([[2.0, 3.0]], dtype=F64))
    assert d.grad.tolist() == backend_grad[0].tolist()


@pytest.mark.parametrize("backend", [Autograd(), fd_backend(), fd_backend(richardson=True)], ids=["autograd", "fd", "fd-richardson"])
def test_f_second_derivative_is_6_and_stable_lr_one_third(backend):
    d = compute_derivatives(problem_of("f"), backend)
    assert d.value == -1.0 and d.names == ["x"]
    assert d.grad[0] == pytest.approx(2.0, abs=1e-9)
    assert d.hessian[0, 0] == pytest.approx(6.0, abs=1e-6)
    assert d.stable_lr == pytest.approx(1.0 / 3.0, rel=1e-7)
    if isinstance(backend, Autograd):
        assert d.hessian.tolist() == [[6.0]] and d.stable_lr == 1.0 / 3.0


@pytest.mark.parametrize("backend", [Autograd(), fd_backend(), fd_backend(richardson=True)], ids=["autograd", "fd", "fd-richardson"])
def test_rosenbrock_at_its_minimum(backend):
    d = compute_derivatives(problem_of("rosenbrock", init=[1.0, 1.0]), backend)
    assert d.value == 0.0
    exact = [[802.0, -400.0], [-400.0, 200.0]]
    if isinstance(backend, Autograd):
        assert d.grad.tolist() == [0.0, 0.0]
        assert d.hessian.tolist() == exact
        assert not d.structural.any()
    else:
        assert np.abs(d.grad).max() < 1e-7 and (np.abs(d.grad) <= d.grad_err).all()
        assert d.hessian == pytest.approx(np.array(exact), abs=1e-5)
        assert (np.abs(d.hessian - np.array(exact)) <= d.hessian_err).all()
    # λ = 501 ± √(301² + 400²) = 501 ± √250601
    assert d.eigenvalues.tolist() == pytest.approx([501 - math.sqrt(250601), 501 + math.sqrt(250601)], rel=1e-12, abs=1e-5)


def test_list_objective_reports_each_target_and_the_sum():
    """The tutorial's gradient of [3x, x²] at x = 5: 3 and 10, and 13 for the list."""
    problem = problem_of("custom", expr=["3*x", "x**2"], init=[5.0])
    for backend in (Autograd(), fd_backend()):
        d = compute_derivatives(problem, backend)
        assert [t.source for t in d.targets] == ["3*x", "x**2"]
        assert [t.value for t in d.targets] == [15.0, 25.0] and d.value == 40.0
        grads = [t.grad[0] for t in d.targets] + [d.grad[0]]
        if isinstance(backend, Autograd):
            assert grads == [3.0, 10.0, 13.0]
        else:
            assert grads == pytest.approx([3.0, 10.0, 13.0], abs=1e-9)
            assert all(t.grad_err is not None for t in d.targets)
    m = metrics(compute_derivatives(problem, Autograd()))
    assert (m["target/1/grad/x"], m["target/2/grad/x"], m["grad/x"]) == (3.0, 10.0, 13.0)
    assert (m["target/1/value"], m["target/2/value"], m["value"]) == (15.0, 25.0, 40.0)


def test_wrt_differentiates_only_the_watched_variable():
    d = compute_derivatives(problem_of("g", wrt=["x2"]), Autograd())
    assert d.names == ["x2"] and d.grad.tolist() == [42.0] and d.hessian.tolist() == [[14.0]]
    assert d.stable_lr == 2.0 / 14.0
    assert "differentiated with respect to x2 (x1 held constant)" in format_table(d)


def test_float32_g():
    d = compute_derivatives(problem_of("g", dtype=F32), Autograd())
    assert d.dtype == "float32"
    assert d.grad.tolist() == [9.0, 42.0] and d.hessian.tolist() == [[0.0, 6.0], [6.0, 14.0]]
    fd = compute_derivatives(problem_of("g", dtype=F32), fd_backend())
    assert (np.abs(fd.grad - [9.0, 42.0]) <= fd.grad_err).all()
    assert (np.abs(fd.hessian - [[0.0, 6.0], [6.0, 14.0]]) <= fd.hessian_err).all()
    assert fd.hessian_err.max() > 1e-4  # float32 second differences are far less accurate


# ------------------------------------------------------------------------------ curvature helpers


def test_fd_hessian_is_one_batched_call_of_1_plus_4k2_plus_noise_points():
    calls = []
    g = problem_of("rosenbrock", dim=3).fn

    def loss(x):
        calls.append(tuple(x.shape))
        return g(x)

    p = torch.tensor([[-1.2, 1.0, 0.5], [0.3, 0.2, 0.1]], dtype=F64)  # a batch of two points
    est = fd_hessian(loss, p)
    assert calls == [(2, 1 + 4 * 9 + NOISE_POINTS - 1, 3)]
    assert est.estimate.shape == (2, 3, 3)
    for row in range(2):
        exact = autograd_hessian(g, p[row])
        assert torch.equal(est.estimate[row], est.estimate[row].T)  # symmetric by construction
        assert ((est.estimate[row] - exact).abs() <= est.error[row]).all()
    # the step: ε^(1/4)·max(1, |x|), made representable
    assert est.step[0].tolist() == pytest.approx([1.2 * 2.0**-13, 2.0**-13, 2.0**-13], rel=1e-3)


def test_fd_gradient_equals_backend_estimate_and_richardson_is_sharper():
    fn = problem_of("custom", expr="sin(3*x) * exp(y/2)", init=[0.3, 0.7]).fn
    p = torch.tensor([[0.3, 0.7]], dtype=F64)
    q = p.clone().requires_grad_(True)
    (exact,) = torch.autograd.grad(fn(q).sum(), q)
    errors = {}
    for scheme, rich in (("forward", False), ("central", False), ("central", True)):
        est = fd_gradient(fn, p, scheme, "auto", rich)
        _, ref, _ = FiniteDifference(scheme, "auto", rich).estimate(fn, p)
        assert torch.equal(est.estimate, ref)
        actual = (est.estimate - exact).abs()
        assert (actual <= est.error).all(), (scheme, rich, actual, est.error)
        errors[(scheme, rich)] = float(actual.max())
    assert errors[("forward", False)] > errors[("central", False)] > errors[("central", True)]


def test_fixed_step_is_used_and_its_truncation_is_in_the_error_bar():
    """backend.eps=1e-3, the tutorial's step: f'(1) = 8 by central differences, exact for a parabola."""
    fn = problem_of("f").fn
    est = fd_gradient(fn, torch.tensor([[1.0]], dtype=F64), "central", 1e-3)
    assert est.estimate.item() == pytest.approx(8.0, abs=1e-10)
    assert est.step.item() == pytest.approx(1e-3, rel=1e-12)
    sine = problem_of("custom", expr="sin(x)", init=[1.0]).fn
    est = fd_hessian(sine, torch.tensor([[1.0]], dtype=F64), eps=1e-2)
    truncation = abs(est.estimate.item() + math.sin(1.0))  # ≈ h²/12·sin(1) ≈ 7e-6
    assert 1e-6 < truncation <= est.error.item() < 10 * truncation


def test_structure_tells_structural_from_computed_zeros():
    quad = problem_of("quadratic", dim=3)
    s = hessian_structure(quad.fn, quad.x0)
    assert s.tolist() == [[False, True, True], [True, False, True], [True, True, False]]
    # x*y*0 has a computed zero cross term: a path exists, so it is not structural
    prob = problem_of("custom", expr="x*y*0 + x**2 + sin(z)", init=[1.0, 2.0, 3.0])
    H = autograd_hessian(prob.fn, prob.x0)
    s = hessian_structure(prob.fn, prob.x0)
    assert H[0, 1] == 0 and not s[0, 1]
    assert s[0, 2] and s[1, 2] and s[1, 1]  # y appears only in the 0-weighted product: ∂L/∂y = x·0
    assert not s[2, 2]
    d = compute_derivatives(prob, Autograd())
    assert d.structural_entries() == ["x/z", "y/y", "y/z", "z/x", "z/y"]


def test_structure_unknown_for_functions_torch_func_cannot_transform():
    """A custom autograd.Function without setup_context: the Hessian by double backward, nothing marked."""
    prob = problem_of("custom", target="gradcheck_helpers.wrong_grad:bad_square", init=[1.0, 2.0])
    assert hessian_structure(prob.fn, prob.x0) is None
    d = compute_derivatives(prob, Autograd())
    assert d.hessian.tolist() == [[3.0, 0.0], [0.0, 3.0]]  # its (wrong) backward, differentiated
    assert d.structural is None and d.structural_entries() == []
    assert any("autograd cannot tell" in n for n in d.notes)


def test_stable_lr_bound():
    assert stable_lr(torch.tensor([6.0])) == 1.0 / 3.0
    assert stable_lr(torch.tensor([-1.0, 0.0])) == math.inf


def test_stable_lr_warning_unit():
    f = problem_of("f")
    assert stable_lr_warning(f, Autograd(), 0.5) == (
        "lr=0.5 exceeds the stable step 2/λ_max = 0.333333 at the start point (λ_max = 6); "
        "plain gradient descent may diverge"
    )
    assert stable_lr_warning(f, Autograd(), 0.3) is None
    assert stable_lr_warning(f, Autograd(), 1.0 / 3.0) is None  # at the bound: |1 − lr·λ| = 1, no growth
    big = problem_of("quadratic", dim=65)
    assert stable_lr_warning(big, Autograd(), 10.0) is None  # d > 64: not computed


def test_hessian_skipped_above_max_dim_with_a_note():
    d = compute_derivatives(problem_of("rosenbrock", dim=70), Autograd())
    assert d.hessian is None and d.stable_lr is None
    assert d.notes == ["Hessian skipped: 70 moving variables > 64; pick some with objective.wrt=[...]"]
    assert "hessian/x1/x1" not in metrics(d)


def test_autograd_on_a_function_autograd_cannot_see_is_one_line_user_error():
    prob = problem_of("custom", target="gradcheck_helpers.opaque:numpy_square", init=[1.0])
    with pytest.raises(UserError, match=r"^backend=autograd cannot differentiate custom \(.*\); use backend=finite_diff$"):
        compute_derivatives(prob, Autograd())
    d = compute_derivatives(prob, fd_backend())  # finite differences only need values
    assert d.grad[0] == pytest.approx(2.0, abs=1e-8)


# ------------------------------------------------------------------------------ the table

G_TABLE = """\
g at x1 = 2.0, x2 = 3.0
autograd · float64 · cpu

  value  63.0
  ∂/∂x1  9.0
  ∂/∂x2  42.0

Hessian
      x1              x2
  x1  0 (structural)  6.0
  x2  6.0             14.0

eigenvalues  -2.21954445729, 16.2195444573
stable_lr    0.123308025405 = 2/λ_max (plain gradient descent is stable for lr below it)

0 (structural): ∂L/∂x1 does not involve x1 (TensorFlow's None); other zeros are computed
"""


def test_table_for_g():
    assert format_table(compute_derivatives(problem_of("g"), Autograd())) == G_TABLE


LIST_FD_TABLE = """\
custom at x = 5.0
finite_diff (central, eps auto) · float64 · cpu

         3*x                      x**2            sum
  value  15.0                     25.0            40.0
  ∂/∂x   2.99999999997 ± 1.6e-10  10.0 ± 2.4e-10  12.9999999999 ± 3.5e-10
  (± estimated error; steps h = 3e-05)

Hessian (second central differences, ± estimated error)
     x
  x  2.0 ± 8.8e-08
  (steps h = 0.00061)

eigenvalues  2.0
stable_lr    1.0 = 2/λ_max (plain gradient descent is stable for lr below it)
"""


def test_table_for_a_list_objective_with_finite_differences():
    """Each target's column and the sum's; every finite-difference entry with its error bar."""
    problem = problem_of("custom", expr=["3*x", "x**2"], init=[5.0])
    assert format_table(compute_derivatives(problem, fd_backend())) == LIST_FD_TABLE


def test_run_derivatives_without_tracking_prints_and_returns_the_value(capsys):
    from runner.curvature.task import run_derivatives

    cfg = _compose("task=derivatives", "objective=f", "objective.init=[1.0]", "backend=finite_diff", "backend.eps=1e-3", "tracking.enabled=false")
    assert run_derivatives(cfg) == 4.0  # f(1) = 3 + 2 − 1
    out = capsys.readouterr().out
    assert out.startswith("f at x = 1.0\nfinite_diff (central, eps 0.001) · float64 · cpu\n")
    # the tutorial's central difference with eps = 1e-3 printed 7.999999999999119; with the step made
    # representable, (p + h) − p, a parabola's central difference is exact
    assert "  ∂/∂x   8.0 ± " in out
    assert "mlflow" not in out


def test_nonfinite_value_gets_a_note():
    d = compute_derivatives(problem_of("custom", expr="log(x)", init=[-1.0]), Autograd())
    assert d.notes[0].startswith("L = nan here")


# ------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_cli_derivatives_of_g_prints_the_table_and_records_it(workdir, client):
    result = run_cli("task=derivatives", "objective=g", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(G_TABLE)
    assert "mlflow run" in result.stdout.splitlines()[-2] and "look at it:" in result.stdout.splitlines()[-1]
    (run,) = runs_of(client)
    m, tags = run.data.metrics, run.data.tags
    assert run.info.run_name == "g-derivatives-autograd" and run.info.status == "FINISHED"
    assert (m["value"], m["grad/x1"], m["grad/x2"]) == (63.0, 9.0, 42.0)
    assert [m["hessian/x1/x1"], m["hessian/x1/x2"], m["hessian/x2/x1"], m["hessian/x2/x2"]] == [0.0, 6.0, 6.0, 14.0]
    assert [m["hessian_eig/0"], m["hessian_eig/1"]] == pytest.approx(G_EIGS, rel=1e-15)
    assert m["stable_lr"] == pytest.approx(G_STABLE_LR, rel=1e-15)
    assert [h.step for h in client.get_metric_history(run.info.run_id, "hessian/x2/x2")] == [0]
    assert tags["hessian_structural"] == "x1/x1"
    assert (tags["task"], tags["objective"], tags["backend"], tags["dtype"]) == ("derivatives", "g", "autograd", "float64")
    assert run.data.params["task"] == "derivatives" and run.data.params["objective.init"] == "[2.0, 3.0]"
    folder = Path(client.download_artifacts(run.info.run_id, "", str(workdir / "artifacts")))
    assert (folder / "derivatives.txt").read_text() == G_TABLE
    data = json.loads((folder / "derivatives.json").read_text())
    assert data["hessian"] == [[0.0, 6.0], [6.0, 14.0]] and data["hessian_structural"] == [[True, False], [False, False]]
    assert data["grad"] == [9.0, 42.0] and data["point"] == {"x1": 2.0, "x2": 3.0}


# ------------------------------------------------------------------------------ the stable-step warning


def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir

    from runner.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_stable_lr_warning_printed_once_and_tagged(workdir, client, monkeypatch, capfd):
    """lr = 0.5 > 1/3 on f: one warning on stderr, the run's ``warning`` tag; lr = 0.1: neither."""
    from runner.job import run_job
    from runner.tracking import writer

    monkeypatch.chdir(workdir)
    try:
        for lr in ("0.5", "0.1"):
            run_job(_compose("objective=f", "optimizer=manual", f"lr={lr}", "steps=5", "tracking.artifacts=false"))
    finally:
        writer.close_writer()
    err = capfd.readouterr().err
    expected = (
        "warning: lr=0.5 exceeds the stable step 2/λ_max = 0.333333 at the start point (λ_max = 6); "
        "plain gradient descent may diverge"
    )
    assert [line for line in err.splitlines() if line.startswith("warning:")] == [expected]
    runs = {r.data.params["lr"]: r for r in runs_of(client)}
    assert runs["0.5"].data.tags["warning"] == expected.removeprefix("warning: ")
    assert "warning" not in runs["0.1"].data.tags
    # |1 − 0.5·6| = 2: the error doubles every step (f(x) + 4/3 = 3(x + 1/3)² grows 4× per step)
    loss = [m.value for m in client.get_metric_history(runs["0.5"].info.run_id, "loss")]
    assert loss[1] + 4 / 3 == pytest.approx(4 * (loss[0] + 4 / 3))
