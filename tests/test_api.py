"""The Python API: the same runs as the command line, results as arrays and DataFrames, the same
one-line errors, nothing left behind between calls."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, run_cli, runs_of

pytestmark = pytest.mark.slow


@pytest.fixture
def in_workdir(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return workdir


def history(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def test_a_run_from_python_equals_the_command_lines(in_workdir, client):
    import runner

    result = runner.run("objective=g", "optimizer=sgd", lr=0.1)
    done = run_cli("objective=g", "optimizer=sgd", "lr=0.1", cwd=in_workdir)
    assert done.returncode == 0, done.stderr
    api_run, cli_run = sorted(runs_of(client), key=lambda r: r.info.run_id != result.run_id)
    assert api_run.info.run_id == result.run_id and api_run.info.status == "FINISHED"
    assert api_run.info.run_name == cli_run.info.run_name == result.name == "g-sgd-lr0.1"
    assert api_run.data.params == cli_run.data.params
    for key in ("loss", "grad_norm", "x/x1", "x/x2", "grad/x1", "grad/x2"):
        assert history(client, api_run.info.run_id, key) == history(client, cli_run.info.run_id, key), key
    # The result's own numbers are the recorded ones.
    assert result.outcome == "max_steps" and result.final_step == 100
    assert result.x_final["x1"] == history(client, cli_run.info.run_id, "x/x1")[-1][1]
    assert result.final_loss == history(client, cli_run.info.run_id, "loss")[-1][1]
    assert result.trajectory.loc[0, "loss"] == 63.0 and result.trajectory.loc[0, "grad/x2"] == 42.0
    recorded = runner.trajectory(result.run_id)
    assert np.array_equal(recorded["loss"].to_numpy(), result.loss)
    assert {a.path for a in client.list_artifacts(result.run_id)} >= {"config.yaml", "trajectory.csv", "plots"}


def test_figures_derivatives_and_an_untracked_run(in_workdir, client):
    import runner

    result = runner.run("objective=f", tracking__enabled=False, steps=100)
    assert result.run_id is None and abs(result.x_final["x"] + 1 / 3) < 1e-7  # the tutorial's −1/3
    assert client.get_experiment_by_name("runner") is None  # nothing recorded
    loss_figure, path_figure = runner.run("objective=rosenbrock", steps=20, lr=1e-3, tracking__enabled=False).plot()
    assert loss_figure.axes and path_figure.axes  # a 2-D objective has a path figure
    g = runner.derivatives("objective=g", tracking__enabled=False)
    assert (g.value, g.grad) == (63.0, {"x1": 9.0, "x2": 42.0})
    assert g.hessian_matrix() == [[None, 6.0], [6.0, 14.0]]  # the tutorial's structural None
    assert g.stable_lr == pytest.approx(2 / (7 + math.sqrt(85)), rel=1e-12)  # 2/λ_max of [[0, 6], [6, 14]]: λ = 7 ± √85
    targets = runner.derivatives(objective="custom", objective__expr=["3*x", "x**2"], objective__init=[5.0], tracking__enabled=False)
    assert targets.grad == {"x": 13.0} and [t["grad"]["x"] for t in targets.targets] == [3.0, 10.0]


@pytest.mark.parametrize(
    "args, kwargs, cli",
    [
        (("objective=nope",), {}, ["objective=nope"]),
        ((), {"lr": -0.1}, ["lr=-0.1"]),
        (("objective=g", "objective.init=[1.0,2.0,3.0]"), {}, ["objective=g", "objective.init=[1.0,2.0,3.0]"]),
        (("lrr=0.1",), {}, ["lrr=0.1"]),
        (("schedule=step",), {"schedule__gamma": -1}, ["schedule=step", "schedule.gamma=-1"]),
    ],
)
def test_a_bad_override_raises_what_the_command_line_prints(in_workdir, args, kwargs, cli):
    import runner

    with pytest.raises(runner.RunnerError) as raised:
        runner.run(*args, **kwargs)
    printed = run_cli(*cli, cwd=in_workdir)
    assert printed.returncode == 2
    assert printed.stderr.strip() == f"error: {raised.value}"


def test_a_multirun_returns_its_children_and_its_parent(in_workdir, client):
    import runner

    sweep = runner.multirun("objective=f", lr="0.01,0.1", steps=20)
    parent = client.get_run(sweep.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.info.run_name.startswith("sweep-f-manual-lr{0.01,0.1}")
    assert [c.name for c in sweep.children] == ["f-manual-lr0.01", "f-manual-lr0.1"]
    assert all(c.outcome == "max_steps" and c.final_step == 20 for c in sweep.children)
    table = runner.runs(parent=sweep.parent_run_id)
    assert sorted(table["params.lr"]) == ["0.01", "0.1"] and set(table["status"]) == {"FINISHED"}
    # lr = 0.1 from 0: x_k = −1/3 (1 − 0.4^k), the tutorial's descent in closed form.
    fast = sweep.children[1]
    assert fast.x_final["x"] == pytest.approx(-(1 - 0.4**20) / 3, rel=1e-12)


def test_a_sweeps_children_come_back_in_the_order_of_its_jobs(in_workdir, client):
    """The batched launcher starts all its children at the same millisecond, so their start time
    cannot order them: each carries its job's number (``sweep.job``), in an order that is neither
    sorted nor the store's."""
    import runner

    lrs = ["0.1", "0.001", "0.3", "0.01", "0.2", "0.003"]
    sweep = runner.multirun("objective=f", lr=",".join(lrs), steps=5)
    assert [c.config["lr"] for c in sweep.children] == [float(lr) for lr in lrs]
    tags = {r.info.run_id: r.data.tags for r in client.search_runs([client.get_run(sweep.parent_run_id).info.experiment_id])}
    assert [tags[c.run_id]["sweep.job"] for c in sweep.children] == ["0", "1", "2", "3", "4", "5"]
    assert len({client.get_run(c.run_id).info.start_time for c in sweep.children}) == 1  # one batch, one start
    assert list(runner.runs(parent=sweep.parent_run_id)["params.lr"]) == lrs


def test_fifty_calls_leave_nothing_behind(tmp_path):
    """In a fresh interpreter: threads, child processes and open files after the 50th call are those
    after the first; Hydra's global state is clear after every call. (The calls' times are printed
    for the record; speed is judged in benchmarks, not here.)"""
    script = r"""
import json, os, sys, threading, time
import runner
from hydra.core.global_hydra import GlobalHydra

def parent_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(") ", 1)[1].split()[1]
    except FileNotFoundError:  # the process ended while we looked
        return None

def state():
    children = [p for p in os.listdir("/proc") if p.isdigit() and parent_of(p) == str(os.getpid())]
    return {"threads": threading.active_count(), "children": len(children), "fds": len(os.listdir("/proc/self/fd"))}

times, states = [], []
for i in range(50):
    t = time.perf_counter()
    runner.run("objective=g", "optimizer=sgd", lr=0.1, steps=20, tracking__artifacts=(i % 2 == 0))
    times.append(time.perf_counter() - t)
    assert not GlobalHydra.instance().is_initialized()
    states.append(state())
print(json.dumps({"first": states[0], "last": states[-1], "times": times}))
"""
    (tmp_path / "outputs").mkdir()
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["last"] == report["first"], report
    assert report["first"]["children"] == 0  # no writer process: the API records in-process
    print("API call times (s): first", round(report["times"][0], 3), "median of the last 10", sorted(report["times"][-10:])[5])


def test_import_runner_imports_nothing_heavy():
    code = "import sys, runner; print(sorted(m for m in ('torch', 'hydra', 'mlflow', 'omegaconf', 'matplotlib', 'pandas') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
