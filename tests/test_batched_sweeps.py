"""The batched launcher under Hydra and into MLflow: counts of runs, params and metric points read
back through MlflowClient, the parent's trajectory table, jobs that cannot be batched, a job with bad
input, the Optuna sweeper, and an interrupted sweep (a real SIGINT)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_cli
from omegaconf import OmegaConf
from sweep_helpers import _env, client_for, make_workdir, sweep_runs, wait_until_ended

from runner.sweeps import table
from runner.tracking.records import flatten, sampled_steps

pytestmark = pytest.mark.slow

METRICS = ("loss", "grad_norm", "x/x1", "x/x2", "grad/x1", "grad/x2")
COUNTED = ["-m", "hydra/launcher=batched", "objective=rosenbrock", "optimizer=sgd,adam", "lr=0.001,0.002,0.003",
           "objective.init=[-1.2,1.0],[0.5,0.5]", "steps=100", "tracking.log_every=7", "tracking.artifacts=false"]


@pytest.fixture(scope="module")
def counted(tmp_path_factory, empty_store):
    workdir = make_workdir(tmp_path_factory.mktemp("counted"), empty_store)
    result = run_cli(*COUNTED, cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    client = client_for(workdir)
    return result, client, *sweep_runs(client)


def test_runs_params_and_metric_points(counted):
    """12 children and their parent; every child has the params of its resolved config (read from its
    job folder) and 6 metrics at steps 0, 7, …, 98 and 100."""
    result, client, parent, children = counted
    exp = client.get_experiment_by_name("runner")
    assert len(client.search_runs([exp.experiment_id], max_results=100)) == 13
    assert len(children) == 12 and all(c.info.status == "FINISHED" for c in children)
    sweep_dir = Path(parent.data.tags["sweep.dir"])
    for num in range(12):
        cfg = OmegaConf.load(sweep_dir / str(num) / ".hydra" / "config.yaml")
        name = f"rosenbrock-{cfg.optimizer.name}-lr{cfg.lr:g}-init{list(cfg.objective.init)}".replace(" ", "")
        (child,) = [c for c in children if c.data.params["lr"] == str(cfg.lr) and c.data.params["optimizer.name"] == cfg.optimizer.name
                    and c.data.params["objective.init"] == str(list(cfg.objective.init))]
        assert child.data.params == flatten(OmegaConf.to_container(cfg, resolve=True))
        assert child.info.run_name.replace(" ", "") == name
    for child in children:
        assert set(child.data.metrics) == set(METRICS)
        for key in METRICS:
            steps = [m.step for m in client.get_metric_history(child.info.run_id, key)]
            assert sorted(steps) == sampled_steps(100, 7).tolist(), (child.info.run_name, key)
        assert child.data.tags["log_every"] == "7" and child.data.tags["final_step"] == "100"


def test_the_parent_table_holds_every_step_of_every_child(counted):
    result, client, parent, children = counted
    frame = table.load(parent.info.run_id, client.tracking_uri)
    assert len(frame) == 12 * 101
    assert sorted(frame["run_id"].unique()) == sorted(c.info.run_id for c in children)
    for child in children:
        rows = frame[frame["run_id"] == child.info.run_id]
        assert rows["step"].tolist() == list(range(101))
        assert (rows["run_name"] == child.info.run_name).all()
        for key in METRICS:
            logged = {m.step: m.value for m in client.get_metric_history(child.info.run_id, key)}
            at = rows.set_index("step").loc[list(logged), key].to_numpy()
            assert np.array_equal(at, np.array(list(logged.values()))), (child.info.run_name, key)


def test_one_line_per_descent_and_each_jobs_line(counted):
    result = counted[0]
    assert "batched: 6 jobs of rosenbrock-sgd as one (6, 2) descent on cpu: " in result.stdout
    assert "batched: 6 jobs of rosenbrock-adam as one (6, 2) descent on cpu: " in result.stdout
    assert sum(" at step 100, loss " in line for line in result.stdout.splitlines()) == 12


def test_jobs_that_cannot_batch_run_alone_and_the_launcher_says_why_once_and_max_batch_bounds_a_group(tmp_path, empty_store):
    workdir = make_workdir(tmp_path, empty_store)
    result = run_cli("-m", "hydra/launcher=batched", "hydra.launcher.max_batch=1", "objective=g", "optimizer=lbfgs,sgd",
                     "lr=0.1,0.2", "steps=5", "check_grad=false,true", "tracking.artifacts=false", cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    # The two sgd jobs without check_grad batch; max_batch=1 makes them two descents.
    assert result.stdout.count("batched: 1 job of g-sgd as one (1, 2) descent on cpu: ") == 2
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: batched launcher:")]
    assert notes == ["note: batched launcher: 2 job(s) run one by one: optimizer torch.optim.lbfgs.LBFGS has no batched rule",
                     "note: batched launcher: 4 job(s) run one by one: check_grad=true"]
    parent, children = sweep_runs(client_for(workdir))
    assert len(children) == 8 and all(c.info.status == "FINISHED" for c in children)
    assert parent.info.status == "FINISHED"


def test_a_job_with_bad_input_fails_alone_and_the_others_finish(tmp_path, empty_store):
    """``steps=-5`` is refused (one line naming the job, no traceback); the other jobs are recorded;
    the sweep then fails as a basic sweep does with a failed job, and its parent ends FAILED."""
    workdir = make_workdir(tmp_path, empty_store)
    result = run_cli("-m", "hydra/launcher=batched", "objective=g", "optimizer=sgd", "lr=0.01,0.1", "steps=20,-5",
                     "tracking.artifacts=false", cwd=workdir)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: job #")]
    assert errors == [f"error: job #{n} (objective=g optimizer=sgd lr={lr} steps=-5 tracking.artifacts=False): "
                      "steps: -5 is not allowed; use 0 (evaluate only) or more" for n, lr in ((1, 0.01), (3, 0.1))]
    assert "Traceback" not in result.stderr
    client = client_for(workdir)
    parent, children = sweep_runs(client)
    assert sorted(c.info.run_name for c in children) == ["g-sgd-lr0.01-steps20", "g-sgd-lr0.1-steps20"]
    assert all(c.info.status == "FINISHED" for c in children)
    parent = wait_until_ended(client, parent.info.run_id)
    assert parent.info.status == "FAILED"


def test_optuna_with_the_batched_launcher(tmp_path, empty_store):
    """Optuna (TPE, seed 0) over lr × steps, 3 trials a launch: the trial that draws steps=-5 fails on
    bad input (tolerated: max_failure_rate=1), the other five are recorded, and Optuna's best is the
    parent's best child."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    workdir = make_workdir(tmp_path, empty_store)
    result = run_cli("-m", "hydra/launcher=batched", "hydra/sweeper=optuna_lr", "hydra.sweeper.sampler.seed=0",
                     'hydra.sweeper.params.lr="choice(0.01,0.05,0.1)"', '+hydra.sweeper.params.steps="choice(20,-5)"',
                     "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=3", "hydra.sweeper.max_failure_rate=1.0",
                     "objective=g", "optimizer=sgd", "tracking.artifacts=false", cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: job #")]
    assert len(errors) == 1 and errors[0].endswith("steps: -5 is not allowed; use 0 (evaluate only) or more")
    assert result.stdout.count("Launching 3 jobs locally, batched") == 2
    client = client_for(workdir)
    parent, children = sweep_runs(client)
    assert len(children) == 5 and all(c.info.status == "FINISHED" and c.data.params["steps"] == "20" for c in children)
    assert parent.data.tags["sweep.launcher"] == "batched"
    results = OmegaConf.load(Path(parent.data.tags["sweep.dir"]) / "optimization_results.yaml")
    assert results.best_value == float(parent.data.tags["best_final_loss"])
    best = client.get_run(parent.data.tags["best_child_run_id"])
    assert float(best.data.params["lr"]) == results.best_params.lr and results.best_params.steps == 20


def test_an_interrupted_batched_sweep_leaves_no_run_running(tmp_path, empty_store):
    """SIGINT once the jobs' lines come (their runs being written): the writer drops what it has not
    written, says how many, every child it wrote is FINISHED and the parent ends KILLED."""
    workdir = make_workdir(tmp_path, empty_store)
    lrs = ",".join(f"{0.0001 * k:g}" for k in range(1, 21))
    inits = ",".join(f"[{x},{y}]" for x in (-1, 0, 1, 2) for y in (0, 1, 2, 3, 4))
    proc = subprocess.Popen([sys.executable, "-m", "runner", "-m", "hydra/launcher=batched", "objective=rosenbrock",
                             "optimizer=sgd", f"lr={lrs}", f"objective.init={inits}", "steps=50", "tracking.artifacts=false"],
                            cwd=workdir, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("rosenbrock-sgd-lr"):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in err
    (note,) = [line for line in err.splitlines() if line.startswith("interrupted: ") and "runs of this launch" in line]
    assert "interrupted: the sweep's guard ends its parent run KILLED" in err.splitlines()
    dropped = int(note.split()[1])
    assert note.endswith("of 400 runs of this launch were computed but not recorded; run the sweep again to record them")
    client = client_for(workdir)
    parent, children = sweep_runs(client)
    parent = wait_until_ended(client, parent.info.run_id)
    assert parent.info.status == "KILLED"
    assert {c.info.status for c in children} == {"FINISHED"}
    assert len(children) == 400 - dropped
    assert str(REPO)  # the run used this checkout (PYTHONPATH from _env)
