"""Runs and sweeps started at the same moment on one new SQLite store all succeed.

MLflow creates a new store's tables and runs its migrations on first open, with no lock between
processes; without :func:`runner.tracking.store.creation_lock` two processes race through them
(``table experiments already exists``, ``duplicate column name: step``, ``Online migration expected
to match one row``) and one loses its jobs. Each case starts its processes together on a folder with
no store, three times, and reads every run back through MlflowClient.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.sweep_helpers import _env, client_for

pytestmark = pytest.mark.slow


def start_together(workdir: Path, commands: list[list[str]]) -> list[subprocess.CompletedProcess]:
    """Start every ``python -m runner`` command at once in ``workdir``; their results."""
    env = _env()
    procs = [subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=workdir, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for args in commands]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=600), *p.communicate()) for p in procs]


@pytest.mark.parametrize("repetition", range(3))
def test_four_runs_started_together_on_a_new_store(tmp_path, repetition):
    lrs = ["0.01", "0.02", "0.03", "0.04"]
    results = start_together(tmp_path, [["objective=f", f"lr={lr}", "steps=20", "progress=false"] for lr in lrs])
    for result in results:
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
    client = client_for(tmp_path)
    runs = client.search_runs([client.get_experiment_by_name("runner").experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"f-manual-lr{lr}" for lr in lrs]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert len(client.get_metric_history(run.info.run_id, "loss")) == 21
    assert (tmp_path / "outputs" / "mlflow.db.lock").exists()


@pytest.mark.parametrize("repetition", range(3))
def test_two_sweeps_started_together_on_a_new_store(tmp_path, repetition):
    sweeps = {"f": ["-m", "objective=f", "lr=0.01,0.02,0.03", "steps=20"],
              "g": ["-m", "objective=g", "optimizer=sgd", "lr=0.001,0.002,0.003", "steps=20"]}
    results = start_together(tmp_path, [args + ["progress=false"] for args in sweeps.values()])
    for result in results:
        assert result.returncode == 0, result.stderr
    client = client_for(tmp_path)
    runs = client.search_runs([client.get_experiment_by_name("runner").experiment_id], max_results=100)
    parents = {r.info.run_id: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    assert sorted(p.info.run_name for p in parents.values()) == ["sweep-f-manual-lr{0.01,0.02,0.03}",
                                                                 "sweep-g-sgd-lr{0.001,0.002,0.003}"]
    for parent in parents.values():
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert len(children) == 3 and all(c.info.status == "FINISHED" for c in children)
        assert (parent.info.status, parent.data.tags["sweep.children"]) == ("FINISHED", "3")
    assert len(runs) == 8
