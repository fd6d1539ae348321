"""Sweeps: one parent run per multirun, its children, the summary, with the basic, joblib and
submitit_local launchers, failing and interrupted sweeps, and the Optuna sweeper where installed.

Each end-to-end sweep runs once per module (fixtures with module scope) and several tests read it
back through MlflowClient.
"""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, run_cli
from omegaconf import OmegaConf
from sweep_helpers import client_for, final_loss_by_hand, loss_history, make_workdir, summary_table, sweep_runs, wait_until_ended

from runner.sweeps import describe, guard, summary

METRICS = ("loss", "grad_norm", "x/x1", "x/x2", "grad/x1", "grad/x2")


# -- naming and counting, without running anything -------------------------------------------------
def fake_config(task: list[str], sweeper: dict | None = None) -> OmegaConf:
    hydra = {"overrides": {"task": task}, "sweeper": sweeper or {}}
    return OmegaConf.create({"hydra": hydra, "objective": {"name": "g"}, "optimizer": {"name": "manual"}, "lr": 0.1})


def test_sweep_names_params_and_job_counts():
    cfg = fake_config(["objective=rosenbrock", "optimizer=sgd,adam", "lr=0.001,0.01", "+optimizer.momentum=0.5,0.9"])
    assert describe.swept_keys(cfg) == ["optimizer", "lr", "optimizer.momentum"]
    assert describe.sweep_name(cfg) == "sweep-rosenbrock-{sgd,adam}-lr{0.001,0.01}-momentum{0.5,0.9}"
    assert describe.sweep_params(cfg) == {
        "objective": "rosenbrock", "optimizer": "sgd,adam", "lr": "0.001,0.01", "optimizer.momentum": "0.5,0.9"
    }
    assert describe.expected_jobs(cfg) == 8
    cfg = fake_config(["steps=range(10,40,10)"])
    assert describe.sweep_name(cfg) == "sweep-g-manual-lr0.1-steps{range(10,40,10)}"
    assert describe.expected_jobs(cfg) == 3
    optuna = fake_config(["objective=g"], {"params": {"lr": "tag(log, interval(0.0001, 1.0))"}, "n_trials": 5})
    assert describe.swept_keys(optuna) == ["lr"]
    assert describe.sweep_name(optuna) == "sweep-g-manual-lr{tag(log,interval(0.0001,1.0))}"
    assert describe.sweep_params(optuna) == {"objective": "g", "lr": "tag(log, interval(0.0001, 1.0))"}
    assert describe.expected_jobs(optuna) == 5


def child(name, status="FINISHED", outcome="max_steps", loss=(3.0, 1.0), **params):
    return summary.Child(run_id=name + "-id", name=name, status=status, outcome=outcome, steps=len(loss) - 1,
                         params=params, tags={}, start_time=0, loss_steps=list(range(len(loss))), loss=list(loss))


def test_verdict_best_child_and_table():
    ok, low, bad = child("a", lr="0.1", loss=(3.0, 0.5)), child("b", lr="0.2", loss=(3.0, 1e-30)), child("c", lr="0.4", outcome="diverged")
    assert summary.verdict([ok, low], "completed", 2) == ("FINISHED", "completed")
    assert summary.verdict([ok], "completed", 2) == ("FAILED", "missing_jobs")
    assert summary.verdict([ok, child("d", status="FAILED")], "aborted", 2) == ("FAILED", "failed_jobs")
    assert summary.verdict([ok], "aborted", 2) == ("FAILED", "aborted")
    assert summary.verdict([ok], "interrupted", 2) == ("KILLED", "interrupted")
    assert summary.best_child([ok, low, bad]) is low
    assert bad.final_loss == math.inf and child("e", loss=()).final_loss != child("e", loss=()).final_loss
    cols = summary.table([ok, low, bad], ["lr"])
    assert cols["run_name"] == ["a", "b", "c"] and cols["lr"] == ["0.1", "0.2", "0.4"]
    assert cols["final_loss"] == ["0.5", "1e-30", "inf"]  # exact: repr of the float


# -- helpers for the end-to-end sweeps -------------------------------------------------------------
def check_children(client, parent, children, expected_names, steps=100, metrics=METRICS):
    """Every child: FINISHED, its name, a child of the parent, every metric at every step."""
    assert sorted(c.info.run_name for c in children) == sorted(expected_names)
    for c in children:
        assert c.info.status == "FINISHED", c.info.run_name
        assert c.data.tags["mlflow.parentRunId"] == parent.info.run_id
        for key in metrics:
            points = client.get_metric_history(c.info.run_id, key)
            assert sorted(m.step for m in points) == list(range(steps + 1)), (c.info.run_name, key)
        # A run reads FINISHED only once all of its artifacts are in (figures are drawn meanwhile).
        files = {a.path for a in client.list_artifacts(c.info.run_id)} | {a.path for a in client.list_artifacts(c.info.run_id, "plots")}
        two_d = "x/x2" in metrics or "x/y" in metrics
        assert {"config.yaml", "trajectory.csv", "plots/loss.png"} | ({"plots/path.png"} if two_d else set()) <= files, c.info.run_name


def check_summary(client, parent, children, swept, figures):
    """The table's rows are the children (params, final loss = last point of the loss history and
    the final loss computed again by hand, outcome, steps, status); the best child is the one with the
    lowest final loss by hand; figures listed."""
    rows = {row["run_id"]: row for row in summary_table(client, parent.info.run_id)}
    assert set(rows) == {c.info.run_id for c in children}
    finals = {}
    for c in children:
        row = rows[c.info.run_id]
        finals[c.info.run_id] = final_loss_by_hand(c.data.params)
        assert row["run_name"] == c.info.run_name
        assert float(row["final_loss"]) == loss_history(client, c.info.run_id)[-1]
        assert float(row["final_loss"]) == pytest.approx(finals[c.info.run_id], rel=1e-9, abs=1e-300), c.info.run_name
        assert row["outcome"] == c.data.tags["outcome"]
        assert row["final_step"] == int(c.data.tags["final_step"])
        assert row["status"] == "FINISHED"
        for key in swept:
            assert row[key] == c.data.params.get(key, c.data.params.get(f"{key}.name")), key
    best = min(finals, key=finals.get)
    tags = parent.data.tags
    assert tags["best_child_run_id"] == best
    assert tags["best_child"] == client.get_run(best).info.run_name
    assert float(tags["best_final_loss"]) == pytest.approx(finals[best], rel=1e-9, abs=1e-300)
    listed = {a.path for a in client.list_artifacts(parent.info.run_id)}
    batched = parent.data.tags["sweep.launcher"] == "batched"  # it adds the table of every trajectory
    assert listed == {"summary_table.json", *figures} | ({"trajectories"} if batched else set())
    for name in figures:
        assert Path(client.download_artifacts(parent.info.run_id, name)).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- basic launcher ---------------------------------------------------------------------------------
BASIC = ["-m", "objective=rosenbrock", "optimizer=adam", "lr=0.001,0.01", "steps=50,100"]  # the default launcher: batched


def run_sweep(workdir: Path, what: str, *args: str, env: dict | None = None):
    """Run a sweep that must succeed; (result, client, parent, children)."""
    started = time.time()
    result = run_cli(*args, cwd=workdir, env=env)
    print(f"{what}: {time.time() - started:.1f} s")
    assert result.returncode == 0, result.stderr
    client = client_for(workdir)
    return result, client, *sweep_runs(client)


@pytest.fixture(scope="module")
def basic(tmp_path_factory, empty_store):
    workdir = make_workdir(tmp_path_factory.mktemp("basic"), empty_store)
    return run_sweep(workdir, "basic sweep, 4 jobs", *BASIC, env={"RUNNER_WRITER_REPORT": "1"})


@pytest.mark.slow
def test_basic_sweep_parent_and_children(basic):
    result, client, parent, children = basic
    assert parent.info.run_name == "sweep-rosenbrock-adam-lr{0.001,0.01}-steps{50,100}"
    assert parent.info.status == "FINISHED"
    assert parent.data.params == {"objective": "rosenbrock", "optimizer": "adam", "lr": "0.001,0.01", "steps": "50,100"}
    tags = parent.data.tags
    assert tags["mlflow.note.content"].startswith("Sweep: `python -m runner " + " ".join(BASIC) + "`")
    assert (tags["sweep.outcome"], tags["sweep.children"], tags["sweep.failed"], tags["sweep.jobs"]) == ("completed", "4", "0", "4")
    assert (tags["sweep.launcher"], tags["sweep.swept"]) == ("batched", "lr,steps")
    names = [f"rosenbrock-adam-lr{lr}-steps{s}" for lr in ("0.001", "0.01") for s in (50, 100)]
    for steps in (50, 100):
        check_children(client, parent, [c for c in children if c.data.params["steps"] == str(steps)],
                       [n for n in names if n.endswith(f"steps{steps}")], steps=steps)
    for c in children:  # the name is built from the run's own params
        assert c.info.run_name == f"rosenbrock-adam-lr{c.data.params['lr']}-steps{c.data.params['steps']}"
    assert f"sweep: parent run {parent.info.run_id} ended FINISHED (completed)" in result.stdout


@pytest.mark.slow
def test_basic_sweep_summary(basic):
    result, client, parent, children = basic
    check_summary(client, parent, children, ["lr", "steps"],
                  ["summary_loss.png", "summary_paths.png", "summary_final_loss_lr.png", "summary_final_loss_steps.png"])
    description = parent.data.tags["mlflow.note.content"]
    for c in children:
        assert f"| {c.info.run_name} |" in description
    assert f"best: `{parent.data.tags['best_child']}`" in description
    # The paths figure's contour was evaluated in the sweep's process, which has torch: not in the writer.
    assert "writer: torch imported: False; descent imported: False" in result.stderr


@pytest.mark.slow
def test_basic_sweep_does_not_wait_for_the_parent_run_id(basic):
    """With the basic launcher the jobs name the parent by the writer's handle; the id is printed
    (and the guard finds the run by its token) once the writer has made it."""
    result, client, parent, children = basic
    assert len(parent.data.tags["sweep.token"]) == 32
    lines = result.stdout.splitlines()
    announced = lines.index(f"sweep: parent run {parent.info.run_id} in experiment 'runner' at sqlite:///outputs/mlflow.db")
    assert announced > max(i for i, line in enumerate(lines) if line.startswith("rosenbrock-adam-lr"))
    assert guard.find_parent(client.tracking_uri, parent.data.tags["sweep.token"]) == parent.info.run_id
    assert guard.find_parent(client.tracking_uri, "0" * 32) is None


# -- joblib: 8 jobs on 2 workers, on a store the sweep creates ---------------------------------------
@pytest.fixture(scope="module")
def joblib_sweep(tmp_path_factory):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    workdir = make_workdir(tmp_path_factory.mktemp("joblib"), None)  # no store yet: the callback makes it
    return run_sweep(workdir, "joblib sweep, 8 jobs on 2 workers", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                     "objective=g", "optimizer=sgd,adam", "lr=0.001,0.003,0.01,0.03")


@pytest.mark.slow
def test_joblib_sweep_loses_no_run_and_no_point(joblib_sweep):
    result, client, parent, children = joblib_sweep
    names = [f"g-{o}-lr{lr}" for o in ("sgd", "adam") for lr in ("0.001", "0.003", "0.01", "0.03")]
    check_children(client, parent, children, names)
    assert "database is locked" not in result.stderr and "Traceback" not in result.stderr
    tags = parent.data.tags
    assert parent.info.status == "FINISHED"
    assert (tags["sweep.launcher"], tags["sweep.jobs"], tags["sweep.children"]) == ("joblib", "8", "8")
    pids = {c.data.params.get("optimizer.name") for c in children}
    assert pids == {"sgd", "adam"}


@pytest.mark.slow
def test_joblib_sweep_summary(joblib_sweep):
    result, client, parent, children = joblib_sweep
    check_summary(client, parent, children, ["optimizer", "lr"],
                  ["summary_loss.png", "summary_paths.png", "summary_final_loss_optimizer.png", "summary_final_loss_lr.png"])


# -- submitit_local -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_submitit_local_sweep(tmp_path, empty_store):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    workdir = make_workdir(tmp_path, empty_store)
    result, client, parent, children = run_sweep(workdir, "submitit_local sweep, 2 jobs", "-m",
                                                 "hydra/launcher=submitit_local", "objective=f", "lr=0.001,0.01")
    check_children(client, parent, children, ["f-manual-lr0.001", "f-manual-lr0.01"], metrics=("loss", "grad_norm", "x/x"))
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["sweep.launcher"] == "submitit_local"
    check_summary(client, parent, children, ["lr"], ["summary_loss.png", "summary_final_loss_lr.png"])


# -- sweeps that do not complete ----------------------------------------------------------------------
@pytest.mark.slow
def test_failing_job_ends_the_parent_failed(tmp_path, empty_store):
    workdir = make_workdir(tmp_path, empty_store)
    result = run_cli("-m", "objective=custom", "objective.target=tests.sweep_helpers:square_until_negative",
                     "objective.init=[1.0]", "optimizer=adam", "lr=0.6,0.001", cwd=workdir)
    assert result.returncode != 0
    client = client_for(workdir)
    parent, children = sweep_runs(client)
    parent = wait_until_ended(client, parent.info.run_id)
    assert parent.info.status == "FAILED"
    tags = parent.data.tags
    assert (tags["sweep.outcome"], tags["sweep.children"], tags["sweep.failed"]) == ("failed_jobs", "2", "1")
    by_name = {c.info.run_name: c for c in children}
    assert by_name["custom-203ac2-adam-lr0.6"].info.status == "FAILED"
    assert by_name["custom-203ac2-adam-lr0.001"].info.status == "FINISHED"
    assert tags["best_child"] == "custom-203ac2-adam-lr0.001"
    rows = {r["run_name"]: r for r in summary_table(client, parent.info.run_id)}
    assert rows["custom-203ac2-adam-lr0.6"]["status"] == "FAILED" and rows["custom-203ac2-adam-lr0.6"]["outcome"] == "failed"
    assert float(rows["custom-203ac2-adam-lr0.001"]["final_loss"]) == loss_history(client, by_name["custom-203ac2-adam-lr0.001"].info.run_id)[-1]
    assert f"parent run {parent.info.run_id} ended FAILED (failed_jobs)" in result.stderr


@pytest.mark.slow
def test_interrupted_sweep_ends_the_parent_killed(tmp_path, empty_store):
    workdir = make_workdir(tmp_path, empty_store)
    env = {k: v for k, v in __import__("os").environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(REPO)
    lrs = ",".join(str(0.0001 * k) for k in range(1, 9))
    # Job by job (hydra/launcher=cached): the interrupt comes between jobs. (A batched sweep's
    # interrupt: tests/test_batched_sweeps.py.)
    proc = subprocess.Popen([sys.executable, "-m", "runner", "-m", "hydra/launcher=cached", "objective=f", f"lr={lrs}", "steps=2000"],
                            cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # interrupt once the first job has reported its result
        if line.startswith("f-manual-lr"):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    client = client_for(workdir)
    parent, children = sweep_runs(client)
    parent = wait_until_ended(client, parent.info.run_id)
    assert parent.info.status == "KILLED"
    assert parent.data.tags["sweep.outcome"] == "interrupted"
    assert 1 <= len(children) < 8
    assert children[0].info.status == "FINISHED"
    assert int(parent.data.tags["sweep.children"]) == len(children)


# -- Optuna -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_optuna_searches_lr(tmp_path, empty_store):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="hydra-optuna-sweeper is not installed")
    workdir = make_workdir(tmp_path, empty_store)
    result = run_cli("-m", "hydra/sweeper=optuna_lr", "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.seed=0",
                     "objective=g", "optimizer=sgd", cwd=workdir)
    assert result.returncode == 0, result.stderr
    client = client_for(workdir)
    parent, children = sweep_runs(client)
    assert parent.info.status == "FINISHED", (parent.data.tags, [(c.info.run_name, c.info.status) for c in children], result.stderr[-3000:])
    assert parent.data.params == {"objective": "g", "optimizer": "sgd", "lr": "tag(log, interval(0.0001, 1.0))"}
    assert parent.info.run_name == "sweep-g-sgd-lr{tag(log,interval(0.0001,1.0))}"
    assert len(children) == 3
    for c in children:
        assert c.info.run_name == f"g-sgd-lr{float(c.data.params['lr']):g}"
    # Optuna minimised what the jobs returned: their final loss.
    results = OmegaConf.load(Path(parent.data.tags["sweep.dir"]) / "optimization_results.yaml")
    assert results.best_value == float(parent.data.tags["best_final_loss"])
    best = client.get_run(parent.data.tags["best_child_run_id"])
    assert float(best.data.params["lr"]) == pytest.approx(results.best_params.lr, rel=1e-12)
