"""The benchmark's yardsticks do what they claim (no timing is asserted here, ever).

* ``benchmarks/baseline_app``: one job records one FINISHED run with its params and, at every step
  k = 0 … steps, ``loss``, ``x/<var>`` and ``grad/<var>`` with the right values.
* ``benchmarks/bench.py``: the hand-written batched central difference is a gradient; the table and
  the summary line read right.
* ``benchmarks/bare_loop.py``: the bare loop descends f to its minimum.
"""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest
from conftest import REPO, runs_of

BENCH = REPO / "benchmarks"


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def g_by_hand(x1: float, x2: float, lr: float, steps: int) -> list[tuple[float, float, float, float, float]]:
    """(loss, x1, x2, ∂g/∂x1, ∂g/∂x2) at k = 0 … steps of x ← x − lr·∇g for g = (x1 + 5)·x2², in floats."""
    out = []
    for _ in range(steps + 1):
        g1, g2 = x2 * x2, 2 * (x1 + 5) * x2
        out.append(((x1 + 5) * x2 * x2, x1, x2, g1, g2))
        x1, x2 = x1 - lr * g1, x2 - lr * g2
    return out


@pytest.mark.parametrize("logging", ["per_value", "batch"])
def test_baseline_app_records_one_short_job(workdir, client, monkeypatch, logging):
    """In-process: the app's task function on g, 3 manual steps, every value logged (one call per
    value, or one log_batch per run: the same record)."""
    from hydra import compose, initialize_config_dir

    app = load(BENCH / "baseline_app" / "app.py", "baseline_app")
    uri = f"sqlite:///{workdir / 'outputs' / 'mlflow.db'}"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # restored after the test
    overrides = ["objective=g", "optimizer=manual", "lr=0.1", "steps=3", f"tracking_uri={uri}", f"logging={logging}"]
    # The app is not the runner: Hydra's ConfigStore must not hold the runner's groups while it composes
    # (another module's test on this xdist worker may have registered them; objective is a key here).
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    monkeypatch.setattr(store, "repo", {k: v for k, v in store.repo.items() if k in ("hydra", "_dummy_empty_config_.yaml")})
    with initialize_config_dir(config_dir=str(BENCH / "baseline_app" / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    final = app.run(cfg)

    (run,) = runs_of(client, "baseline")
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "g-manual-lr0.1"
    assert run.data.params == {"objective": "g", "optimizer": "manual", "lr": "0.1", "steps": "3"}
    assert set(run.data.metrics) == {"loss", "x/x1", "x/x2", "grad/x1", "grad/x2"}
    rid = run.info.run_id
    # g(x1, x2) = (x1 + 5)·x2² from (2, 3): ∇g = (x2², 2(x1 + 5)x2) = (9, 42); x ← x − 0.1·∇g
    assert [s for s, _ in history(client, rid, "loss")] == [0, 1, 2, 3]
    assert history(client, rid, "loss")[0] == (0, 63.0)
    assert history(client, rid, "grad/x1")[0] == (0, 9.0)
    assert history(client, rid, "grad/x2")[0] == (0, 42.0)
    assert history(client, rid, "x/x1")[:2] == [(0, 2.0), (1, pytest.approx(1.1))]
    assert history(client, rid, "x/x2")[:2] == [(0, 3.0), (1, pytest.approx(-1.2))]
    expected = g_by_hand(2.0, 3.0, 0.1, 3)
    for column, key in enumerate(["loss", "x/x1", "x/x2", "grad/x1", "grad/x2"]):
        assert [v for _, v in history(client, rid, key)] == pytest.approx([row[column] for row in expected], rel=1e-12), key
    assert final == pytest.approx(expected[3][0], rel=1e-12)


@pytest.mark.slow
def test_baseline_app_cli_sweep(workdir, client):
    """The app as the benchmark runs it: a Hydra multirun from the command line, one run per job."""
    import subprocess

    result = subprocess.run(
        [sys.executable, str(BENCH / "baseline_app" / "app.py"), "-m", "objective=f", "optimizer=sgd,manual", "lr=0.1", "steps=2"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in __import__("os").environ.items() if k != "MLFLOW_TRACKING_URI"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    runs = runs_of(client, "baseline")
    assert sorted(r.info.run_name for r in runs) == ["f-manual-lr0.1", "f-sgd-lr0.1"]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert set(run.data.metrics) == {"loss", "x/x", "grad/x"}
        # f(x) = 3x² + 2x − 1 from 0: f' = 2, so x1 = −0.2; f'(−0.2) = 0.8, so x2 = −0.28
        xs = history(client, run.info.run_id, "x/x")
        assert [s for s, _ in xs] == [0, 1, 2]
        assert [v for _, v in xs] == pytest.approx([0.0, -0.2, -0.28])
        assert [v for _, v in history(client, run.info.run_id, "grad/x")] == pytest.approx([2.0, 0.8, 0.32])


def test_bare_central_difference_is_the_gradient():
    import torch

    bench = load(BENCH / "bench.py", "bench_module")
    x = torch.tensor([-1.2, 1.0, 0.5, 2.0, -0.3], dtype=torch.float64)
    expected = torch.func.grad(lambda v: bench.rosenbrock(v))(x)
    assert torch.allclose(bench.bare_central_difference(x), expected, rtol=1e-7, atol=1e-6)


def test_bench_table_and_summary():
    bench = load(BENCH / "bench.py", "bench_module")
    rows = [
        bench.Row("(a)", "one run", runner=5.0, baseline=4.0, ratio=1.25, target=1.25),
        bench.Row("(b)", "sweep", runner=10.0, baseline=20.0, ratio=0.5, target=0.2),
        bench.Row("(d)", "gpu", status="SKIP", note="skipped: no CUDA"),
    ]
    for r in rows:
        r.judge()
    assert [r.status for r in rows] == ["PASS", "FAIL", "SKIP"]
    text = bench.table(rows)
    assert "1.25×" in text and "skipped: no CUDA" in text
    assert bench.summary(rows).startswith("summary: 1 of 2 measured targets met")


def test_bare_loop_does_the_runners_descent_and_reaches_the_minimum():
    """The yardstick of case (c) computes what the runner computes: the same records, step by step,
    as ``runner.descent.loop.descend`` (manual descent, autograd), ending at f's minimiser −1/3."""
    from conftest import make_problem

    from runner.descent.backends import Autograd
    from runner.descent.loop import descend
    from runner.descent.optimizers import ManualDescent

    bare = load(BENCH / "bare_loop.py", "bare_loop")
    _, records = bare.bare_loop(200, 0.1)
    runner = descend(make_problem("f"), Autograd(), lambda p: ManualDescent(p, 0.1), steps=200)
    assert runner.steps.tolist() == list(range(201))
    for key in ("loss", "x", "grad"):
        assert records[key].reshape(-1).tolist() == pytest.approx(runner.__dict__[key].reshape(-1).tolist(), rel=1e-12, abs=1e-15), key
    assert float(records["x"][-1, 0]) == pytest.approx(-1.0 / 3.0, abs=1e-15)


def test_step_cost_runner_side_writes_the_runs_trajectory(tmp_path):
    """Case (c)'s runner side (``benchmarks/step_cost.py``) runs the descent with its record stream,
    as a job does: its trajectory.csv holds every step, ending at f's minimiser −1/3 (this case
    once broke unnoticed when the stream began telling its recorder which file it writes)."""
    step_cost = load(BENCH / "step_cost.py", "step_cost")
    step_cost.runner_loop(200, 0.1, tmp_path)
    with open(tmp_path / "trajectory.csv", newline="") as table:
        rows = list(csv.DictReader(table))
    assert [int(row["step"]) for row in rows] == list(range(201))
    assert float(rows[-1]["x/x"]) == pytest.approx(-1.0 / 3.0, abs=1e-15)
