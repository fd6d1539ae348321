"""The recorded loss at step k is the objective at the recorded x_k, for any expression and optimizer.

The bug this guards against: for ``objective.expr='x'`` (also ``'a'``, ``'(((x)))'``, ``'-x'``) the
loss the loop recorded shared memory with the variable the optimizer updated in place, so every
step's loss showed the final x. Here hypothesis draws expressions of those shapes (a bare variable, its
negation, nested brackets, sums and scaled sums of variables, products) and an optimizer (the
hand-written update, SGD with and without momentum, Adam); the descent's records, as handed to the
record stream, are compared with the expression evaluated independently, in Python floats, at each
recorded point. One CLI run of the reported case is read back from MLflow too.
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_problem, run_cli, runs_of
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.descent.backends import Autograd
from runner.descent.loop import descend
from runner.descent.optimizers import ManualDescent

NAMES = ("x", "a", "y")

OPTIMIZERS = {
    "manual": lambda params: ManualDescent(params, 0.1),
    "sgd": lambda params: torch.optim.SGD(params, lr=0.1),
    "momentum": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
    "adam": lambda params: torch.optim.Adam(params, lr=0.1),
}


@st.composite
def expressions(draw):
    """``(text, evaluate)``: an expression and a Python function of a dict of floats giving its value."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True))
    terms = []
    for name in names:
        shape = draw(st.sampled_from(["bare", "neg", "nested", "scaled", "square"]))
        c = draw(st.sampled_from([1, 2, 3]))
        terms.append({
            "bare": (name, lambda v, n=name: v[n]),
            "neg": (f"-{name}", lambda v, n=name: -v[n]),
            "nested": (f"((({name})))", lambda v, n=name: v[n]),
            "scaled": (f"{c}*{name}", lambda v, n=name, c=c: c * v[n]),
            "square": (f"{name}**2", lambda v, n=name: v[n] ** 2),
        }[shape])
    text = " + ".join(t for t, _ in terms)
    return text, names, (lambda v: sum(f(v) for _, f in terms))


@settings(max_examples=60, deadline=None)
@given(expressions(), st.sampled_from(sorted(OPTIMIZERS)), st.lists(st.floats(-2, 2), min_size=3, max_size=3))
def test_every_recorded_loss_is_the_expression_at_the_recorded_point(expression, optimizer, start):
    text, names, evaluate = expression
    problem = make_problem("custom", expr=text, init=start[: len(names)])
    windows = []
    descend(problem, Autograd(), OPTIMIZERS[optimizer], steps=6, sync_every=4,
            on_window=lambda lo, records, finals: windows.append((lo, {k: v.copy() for k, v in records.items()})))
    steps = 0
    for lo, records in windows:
        for t in range(records["loss"].shape[0]):
            point = dict(zip(problem.var_names, (float(v) for v in records["x"][t, 0])))
            assert float(records["loss"][t, 0]) == pytest.approx(evaluate(point), rel=1e-12, abs=1e-12), (text, lo + t)
            steps += 1
    assert steps == 7


@pytest.mark.slow
def test_the_reported_case_through_the_cli_and_mlflow(workdir, client):
    """``objective.expr='x' objective.init=[0.0] steps=5`` under sgd: x goes 0, −0.1, −0.2, …, and the
    loss recorded at each step is that x (it was −0.5 at every step)."""
    done = run_cli("objective=custom", "objective.expr='x'", "objective.init=[0.0]", "optimizer=sgd", "steps=5",
                   "tracking.log_every=1", cwd=workdir)
    assert done.returncode == 0, done.stderr
    (run,) = runs_of(client)
    loss = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "loss")}
    x = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "x/x")}
    assert sorted(loss) == list(range(6))
    assert all(loss[k] == x[k] for k in loss)
    assert [x[k] for k in range(6)] == pytest.approx([-0.1 * k for k in range(6)], abs=1e-15)
