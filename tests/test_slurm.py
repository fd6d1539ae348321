"""Sweeps on a real SLURM cluster (the ``slurm`` fixture: Debian's slurmctld, slurmd and munge, one node
on localhost, no accounting), logging through the shared tracking server (``runner.serve`` on
PostgreSQL behind basic auth, the ``shared_server`` fixture):

- a 4-job sweep through hydra-submitit-launcher's ``submitit_slurm``: parent and children FINISHED,
  every metric point in the store, the summary;
- ``hydra/launcher=slurm`` (hydra_plugins/runner_plugins/slurm_launcher.py) when the scheduler stops a
  job: ``scancel`` (SIGTERM, which submitit ignores, then SIGKILL after KillWait) and a job past its
  1-minute time limit. The job leaves the queue without a result; the sweep ends (submitit_slurm would
  wait for ever: tests/test_infra.py), the job's run ends KILLED with ``slurm.state`` and what it
  streamed to its folder, and the parent FAILED with ``sweep.outcome=failed_jobs``.

The time-limited sweep takes 1.5-2 minutes (SLURM checks limits every 30 s), mostly waiting: it starts
with the module (an autouse fixture) and runs while the other tests do.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, run_cli
from infra._proc import wait_for
from sweep_helpers import summary_table, sweep_runs

pytestmark = pytest.mark.slow

METRICS = ("loss", "grad_norm", "x/x", "grad/x")  # of the 1-D objective f
SLOW_JOB = ("objective=custom", "objective.target=tests.slurm_helpers:slow_square", "objective.init=[1.0]")


def sweep_env(slurm, server) -> dict[str, str]:
    """The environment of a sweep: the cluster's client settings and the server's credentials."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(slurm.extra_env)
    env.update(server.credentials_env())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def our_launcher(slurm, timeout_min: int) -> tuple[str, ...]:
    return ("-m", "hydra/launcher=slurm", f"hydra.launcher.partition={slurm.partition}", f"hydra.launcher.timeout_min={timeout_min}",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.poll_s=1", "hydra.launcher.result_grace_s=3")


def start_sweep(args: tuple[str, ...], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def admin_client(server, monkeypatch):
    from mlflow import MlflowClient

    for key, value in server.credentials_env().items():
        monkeypatch.setenv(key, value)
    return MlflowClient(tracking_uri=server.url)


@pytest.fixture(scope="module", autouse=True)
def time_limited_sweep(slurm, shared_server, tmp_path_factory):
    """A one-job sweep whose job runs into its 1-minute limit, started with the module."""
    cwd = tmp_path_factory.mktemp("time-limited")
    args = our_launcher(slurm, 1) + SLOW_JOB + ("steps=100000", "tracking.experiment=slurm-timeout")
    proc = start_sweep(args, cwd, sweep_env(slurm, shared_server))
    yield proc, time.monotonic()
    if proc.poll() is None:  # its test did not run: stop the sweep we started
        proc.kill()
    proc.communicate()


def test_four_job_sweep_through_submitit_slurm(slurm, shared_server, tmp_path, monkeypatch):
    started = time.monotonic()
    result = run_cli("-m", "hydra/launcher=submitit_slurm", f"hydra.launcher.partition={slurm.partition}",
                     "hydra.launcher.timeout_min=5", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
                     "objective=f", "optimizer=sgd,adam", "lr=0.1,0.2", "steps=50", "tracking.experiment=slurm4",
                     cwd=tmp_path, env=sweep_env(slurm, shared_server))
    print(f"4-job submitit_slurm sweep through runner.serve on PostgreSQL: {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stderr[-3000:]
    client = admin_client(shared_server, monkeypatch)
    parent, children = sweep_runs(client, "slurm4")
    assert (parent.info.status, parent.data.tags["sweep.outcome"], parent.data.tags["sweep.launcher"]) == (
        "FINISHED", "completed", "submitit_slurm")
    assert sorted(c.info.run_name for c in children) == ["f-adam-lr0.1", "f-adam-lr0.2", "f-sgd-lr0.1", "f-sgd-lr0.2"]
    job_ids = {c.data.tags["slurm.job_id"] for c in children}
    assert len(job_ids) == 4 and all(re.fullmatch(r"\d+_[0-3]", j) for j in job_ids)  # one array, 4 tasks
    assert {c.data.tags["slurm.node"] for c in children} == {slurm.node}
    for child in children:
        assert child.info.status == "FINISHED"
        for key in METRICS:
            assert sorted(m.step for m in client.get_metric_history(child.info.run_id, key)) == list(range(51))
        assert child.info.artifact_uri.startswith("mlflow-artifacts:/")  # uploaded through the server
        assert {a.path for a in client.list_artifacts(child.info.run_id)} >= {"config.yaml", "trajectory.csv", "plots"}
    rows = summary_table(client, parent.info.run_id)
    assert sorted(r["run_name"] for r in rows) == sorted(c.info.run_name for c in children)
    assert parent.data.tags["best_child"] in {c.info.run_name for c in children}


def running_job(client, experiment: str, steps: str) -> str | None:
    """The SLURM job id of the RUNNING run with param ``steps`` in ``experiment``, once there is one."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.params.get("steps") == steps and r.info.status == "RUNNING"]
    return runs[0].data.tags.get("slurm.job_id") if runs else None


def streamed_rows(sweep_cwd: Path) -> int:
    """How many rows the long job (job 1) has streamed to its trajectory.csv so far."""
    tables = list(sweep_cwd.glob("outputs/multirun/*/*/1/trajectory.csv"))
    return len(tables[0].read_text().splitlines()) - 1 if tables else 0


def check_lost_child(client, child, state: str, job_id: str) -> None:
    """A child whose job SLURM stopped: KILLED, saying how (``slurm.state``), with the trajectory the
    job streamed."""
    tags = child.data.tags
    assert child.info.status == "KILLED", tags
    assert (tags["slurm.state"], tags["slurm.job_id"]) == (state, job_id)
    # SLURM sends SIGTERM first: the job ends its own run KILLED (outcome=interrupted, like any signal);
    # a job killed before it could (SIGKILL after KillWait) is ended by the launcher (outcome=killed).
    assert tags["outcome"] in ("interrupted", "killed"), tags
    if tags["outcome"] == "killed":
        assert tags["error"].startswith(f"SLURM job {job_id} was {state}: it ended without a result"), tags["error"]
    table = Path(client.download_artifacts(child.info.run_id, "trajectory.csv")).read_text().splitlines()
    assert table[0] == "step,loss,grad_norm,x/x1,grad/x1"
    rows = [[float(v) for v in line.split(",")] for line in (table[1:] if tags["outcome"] == "interrupted" else table[1:-1])]
    assert len(rows) >= 3 and [int(r[0]) for r in rows] == list(range(len(rows)))  # no step missing
    for step, loss, grad_norm, x, grad in rows[:1000]:  # slow_square: loss x², gradient 2x; lr 0.1 shrinks x by 0.8 a step
        assert (loss, grad, grad_norm, x) == pytest.approx((x * x, 2 * x, abs(2 * x), 0.8**step), rel=1e-12)
    if tags["outcome"] == "interrupted":  # the job ended its own run: its metrics end where its table does
        last = max(client.get_metric_history(child.info.run_id, "loss"), key=lambda m: m.step)
        assert (last.step, last.value) == (int(rows[-1][0]), pytest.approx(rows[-1][1], rel=1e-12))


def test_cancelled_job_ends_killed_and_the_sweep_ends(slurm, shared_server, tmp_path, monkeypatch):
    """Two jobs; the long one is cancelled mid-descent. submitit_slurm would wait for it for ever."""
    client = admin_client(shared_server, monkeypatch)
    proc = start_sweep(our_launcher(slurm, 5) + SLOW_JOB + ("steps=40,100000", "tracking.experiment=slurm-cancel"),
                       tmp_path, sweep_env(slurm, shared_server))
    try:
        job_id = wait_for(lambda: running_job(client, "slurm-cancel", "100000"), 240, "the long job's run")
        wait_for(lambda: streamed_rows(tmp_path) >= 3, 60, "its first rows")
        slurm.run("scancel", job_id)
        cancelled = time.monotonic()
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    print(f"scancel of job {job_id}: the sweep ended {time.monotonic() - cancelled:.1f} s later")
    assert proc.returncode != 0
    assert f"SLURM job {job_id} was CANCELLED" in err
    parent, children = sweep_runs(client, "slurm-cancel")
    by_steps = {c.data.params["steps"]: c for c in children}
    assert by_steps["40"].info.status == "FINISHED"
    check_lost_child(client, by_steps["100000"], "CANCELLED", job_id)
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FAILED"
    assert (parent.data.tags["sweep.outcome"], parent.data.tags["sweep.children"], parent.data.tags["sweep.failed"]) == (
        "failed_jobs", "2", "1")


def test_job_past_its_time_limit_ends_killed(time_limited_sweep, shared_server, monkeypatch):
    proc, started = time_limited_sweep
    out, err = proc.communicate(timeout=400)
    print(f"time-limited sweep (timeout_min=1): ended {time.monotonic() - started:.1f} s after it was started")
    assert proc.returncode != 0
    client = admin_client(shared_server, monkeypatch)
    parent, (child,) = sweep_runs(client, "slurm-timeout")
    job_id = child.data.tags["slurm.job_id"]
    assert f"SLURM job {job_id} was TIMEOUT" in err
    check_lost_child(client, child, "TIMEOUT", job_id)
    print(f"its run: started, then ended KILLED {(child.info.end_time - child.info.start_time) / 1000:.1f} s later")
    parent = client.get_run(parent.info.run_id)
    assert (parent.info.status, parent.data.tags["sweep.outcome"]) == ("FAILED", "failed_jobs")
