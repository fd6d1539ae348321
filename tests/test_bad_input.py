"""Bad input: one line on stderr saying what is wrong and what is allowed, exit status 2, no
traceback, and no run recorded."""

from __future__ import annotations

import pytest
import torch
from conftest import run_cli

pytestmark = pytest.mark.slow

CASES = [
    # (arguments, the line's expected content)
    (["objective=nope"], "objective: unknown choice 'nope'; choose one of: ackley, beale, booth, custom, f, g, himmelblau, quadratic, rastrigin, rosenbrock"),
    (["optimizer=sgdd"], "optimizer: unknown choice 'sgdd' (did you mean 'sgd'?); choose one of: adagrad, adam, adamw, lbfgs, manual, rmsprop, sgd, torch_optim"),
    (["objective=rosenbrok"], "objective: unknown choice 'rosenbrok' (did you mean 'rosenbrock'?); choose one of: ackley,"),
    (["backend=jax"], "backend: unknown choice 'jax'; choose one of: autograd, finite_diff"),
    (["-m", "objective=f,nope"], "objective: unknown choice 'nope'"),
    (["lrr=0.1"], "unknown key 'lrr' (did you mean 'lr'?); top-level keys are: task, lr, steps, tol, seed"),
    (["init=[1.0]"], "unknown key 'init' (did you mean 'objective.init'?); top-level keys are:"),
    (["objective.inti=[1]"], "unknown key 'objective.inti' (did you mean 'objective.init'?); objective keys are: name, init, dim, expr, vars, target, wrt"),
    (["optimizer=sgd", "optimizer.momentom=0.9"], "optimizer.momentom: optimizer 'sgd' has no setting 'momentom' (did you mean 'momentum'?); it has: _target_, name, lr, momentum"),
    (["lr=abc"], "lr: expected a number like 0.1, got 'abc'"),
    (["steps=1.5"], "steps: expected a whole number like 100, got 1.5"),
    (["objective.init=2"], "objective.init: expected a list like [2.0, 3.0], got 2"),
    (["check_grad=maybe"], "check_grad: expected true or false, got 'maybe'"),
    (["--steps=10"], "write steps=10, not --steps=10: settings are KEY=VALUE, without dashes"),
    (["--steps", "10"], "write steps=10, not --steps 10"),
    (["steps", "10"], "'steps' needs a value: write steps=10 (KEY=VALUE, no spaces around =)"),
    (["stepz", "10"], "'stepz' is not KEY=VALUE (did you mean 'steps'?)"),
    (["--verbose"], "unknown option '--verbose'; the options are -m (a sweep), --help"),
    (["objective=g", "objective.init=[1.0,2.0,3.0]"], "objective.init: g takes 2 value(s) (x1, x2), got 3"),
    (["objective=g", "objective.wrt=[x3]"], "objective.wrt: unknown variable(s) x3; g's variables are: x1, x2"),
    (["lr=0"], "lr: 0.0 is not allowed; the learning rate must be a finite number > 0"),
    (["lr=-0.1"], "lr: -0.1 is not allowed"),
    (["lr=inf"], "lr: inf is not allowed"),
    (["lr=nan"], "lr: nan is not allowed"),
    (["steps=-1"], "steps: -1 is not allowed; use 0 (evaluate only) or more"),
    (["~lr"], "lr: every run needs it; do not delete it (~lr), set it instead (lr=...)"),
    (["task=train"], "task: 'train' is not allowed; choose one of: optimize, derivatives"),
    (["backend=finite_diff", "backend.scheme=backward"], "backend.scheme: 'backward' is not allowed; choose central or forward"),
    (["backend.dtype=float16"], "backend.dtype: 'float16' is not allowed; choose float32 or float64"),
    (["optimizer=adam", "optimizer.betas=[0.9,1.5]"], "optimizer: torch.optim.Adam: Invalid beta parameter at index 1: 1.5"),
    (["objective=custom", "objective.expr=(a-1)**2 +"], "cannot parse the command line: Error parsing override 'objective.expr=(a-1)**2 +' (quote values"),
    (["objective=custom", "objective.expr='(a-1)**2 +'"], "objective.expr: cannot parse '(a-1)**2 +'"),
    (["objective=custom", "objective.expr=\"__import__('os').system('id')\""], "objective.expr: attribute access is not allowed in \"__import__('os').system\""),
    (["objective=custom", "objective.expr=\"open('/etc/passwd').read()\""], "objective.expr: attribute access is not allowed"),
    (["objective=custom", "objective.expr=\"open('/etc/passwd')\""], "objective.expr: calling the function 'open' is not allowed"),
    (["objective=custom", "objective.expr='x.__class__.__bases__'"], "attribute access is not allowed"),
    (["objective=custom", "objective.expr='9**9**9**9'"], "objective.expr: constant power '9**9**9' is too large"),
    (["objective=custom", "objective.expr='(a-1)**2'", "objective.vars=[b]"], "objective.expr: unknown variables a (objective.vars is [b]; add them there)"),
    (["tracking.uri=http://127.0.0.1:9"], "tracking.uri: cannot reach the MLflow server at http://127.0.0.1:9"),
    (["tracking.uri=./mlruns"], "tracking.uri: './mlruns' is a file store, which MLflow 3 refuses"),
]
if not torch.cuda.is_available():
    CASES.append((["backend.device=cuda"], "backend.device=cuda: no CUDA device is available here; use backend.device=cpu or auto"))


@pytest.mark.parametrize("args, expected", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_one_clear_line(args, expected, workdir, client):
    result = run_cli(*args, cwd=workdir, timeout=60)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr
    assert result.stdout == ""
    # Nothing half-written: no run, and for the experiment not even a name in the store.
    experiment = client.get_experiment_by_name("runner")
    assert experiment is None or client.search_runs([experiment.experiment_id]) == []
