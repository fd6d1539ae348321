"""Reproduce and resume: what a run records about itself, its config fingerprint, making a run again
from the store (runner.rerun), and a sweep that resumes where an interrupted one stopped."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from importlib import metadata

import pytest
from conftest import REPO, run_cli, runs_of
from sweep_helpers import summary_table

from runner.tracking.fingerprint import canonical, fingerprint

PINNED = {"lr": 0.1, "steps": 100, "objective": {"name": "g", "init": [2.0, 3.0]}, "tracking": {"uri": None}, "progress": "auto", "seed": 0, "tol": None}


# -- the fingerprint --------------------------------------------------------------------------------
def test_the_fingerprint_of_a_pinned_config():
    assert canonical(PINNED) == '{"lr":0.1,"objective":{"init":[2.0,3.0],"name":"g"},"seed":0,"steps":100,"tol":null}'
    assert fingerprint(PINNED) == "73c35b01147887036bef1efdf4630eb74b54e9b087ce49a6c19db8071a11d9ec"
    assert fingerprint(PINNED) == hashlib.sha256(canonical(PINNED).encode()).hexdigest()


def test_what_cannot_change_the_numbers_does_not_change_the_fingerprint():
    moved = {"tol": None, "seed": 0, "objective": {"init": [2.0, 3.0], "name": "g"}, "steps": 100, "lr": 0.1}  # key order
    assert fingerprint(moved) == fingerprint(PINNED)
    for key, value in (("tracking", {"uri": "http://elsewhere", "log_every": 7}), ("progress", True), ("resume", True)):
        assert fingerprint({**PINNED, key: value}) == fingerprint(PINNED), key


@pytest.mark.parametrize("change", [{"lr": 0.1000000001}, {"objective": {"name": "g", "init": [2.0, 3.5]}}, {"optimizer": {"momentum": 0.9}}, {"backend": {"dtype": "float32"}}, {"seed": 1}])
def test_what_can_change_the_numbers_changes_the_fingerprint(change):
    assert fingerprint({**PINNED, **change}) != fingerprint(PINNED)


def test_a_composed_config_hashes_its_canonical_json():
    from runner.composition import compose
    from runner.job import config_fingerprint

    cfg = compose(["objective=g", "optimizer=sgd", "lr=0.1"])
    from omegaconf import OmegaConf

    text = json.dumps({k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in ("tracking", "progress", "resume")},
                      sort_keys=True, separators=(",", ":"))
    assert config_fingerprint(cfg) == hashlib.sha256(text.encode()).hexdigest()
    assert config_fingerprint(compose(["objective=g", "optimizer=sgd", "lr=0.1", "tracking.log_every=5", "progress=false"])) == config_fingerprint(cfg)
    assert config_fingerprint(compose(["objective=g", "optimizer=sgd", "lr=0.1", "optimizer.momentum=0.5"])) != config_fingerprint(cfg)


# -- what a run records -----------------------------------------------------------------------------
@pytest.mark.slow
def test_a_run_records_its_command_versions_source_device_and_fingerprint(workdir, client):
    done = run_cli("objective=g", "optimizer=sgd", "lr=0.1", "steps=5", cwd=workdir)
    assert done.returncode == 0, done.stderr
    (run,) = runs_of(client)
    tags = run.data.tags
    assert tags["runner.command"] == "python -m runner objective=g optimizer=sgd lr=0.1 steps=5"
    import platform

    assert tags["versions.python"] == platform.python_version()
    for name, distribution in (("torch", "torch"), ("mlflow", "mlflow"), ("hydra", "hydra-core"), ("numpy", "numpy")):
        assert tags[f"versions.{name}"] == metadata.version(distribution), name
    from runner import __version__

    assert tags["runner.version"] == __version__ and tags["seed"] == "0"
    if (REPO / ".git").exists():
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        assert tags["mlflow.source.git.commit"] == head and tags["runner.git_dirty"] in ("true", "false")
    assert tags["device"] == "cpu" and tags["device.name"]
    from runner.composition import compose
    from runner.job import config_fingerprint

    assert tags["runner.fingerprint"] == config_fingerprint(compose(["objective=g", "optimizer=sgd", "lr=0.1", "steps=5"]))


# -- rerun ------------------------------------------------------------------------------------------
def rerun(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "runner.rerun", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["objective=g", "optimizer=sgd", "lr=0.1"],
        ["objective=rosenbrock", "optimizer=adam", "lr=0.05", "steps=200"],
        ["objective=custom", "objective.expr='(a-1)**2 + 3*(b+2)**2'", "steps=50", "tracking.artifacts=false"],
        ["objective=himmelblau", "backend=finite_diff", "lr=0.01", "steps=50", "schedule=cosine"],
    ],
    ids=["g-sgd", "rosenbrock-adam", "custom-expression", "finite-diff"],
)
def test_a_rerun_from_the_store_gives_the_same_numbers(workdir, client, args):
    done = run_cli(*args, cwd=workdir)
    assert done.returncode == 0, done.stderr
    (original,) = runs_of(client)
    again = rerun(original.info.run_id, cwd=workdir)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == f"rerun of {original.info.run_id}: identical final loss and final point"
    new = next(r for r in runs_of(client) if r.info.run_id != original.info.run_id)
    assert new.data.tags["rerun_of"] == original.info.run_id and new.info.status == "FINISHED"
    assert new.data.tags["runner.fingerprint"] == original.data.tags["runner.fingerprint"]
    assert new.data.metrics == original.data.metrics  # every final metric value, exactly
    assert new.info.run_name == original.info.run_name


@pytest.mark.slow
def test_a_rerun_with_a_change_says_how_much_it_differs(workdir, client):
    assert run_cli("objective=f", "lr=0.1", "steps=3", cwd=workdir).returncode == 0
    (original,) = runs_of(client)
    again = rerun(original.info.run_id, "lr=0.05", cwd=workdir)
    assert again.returncode == 0, again.stderr
    # f from 0: x_k = −(1 − (1 − 6·lr)^k)/3; at k = 3: −0.3253… (lr 0.1) against −0.2710 (lr 0.05).
    line = again.stdout.strip().splitlines()[-1]
    assert line.startswith(f"rerun of {original.info.run_id}: differs; largest difference ")
    new = next(r for r in runs_of(client) if r.info.run_id != original.info.run_id)
    assert new.data.params["lr"] == "0.05" and new.data.params["optimizer.lr"] == "0.05"  # the change reaches the optimizer
    assert new.data.metrics["x/x"] == pytest.approx(-(1 - 0.7**3) / 3, rel=1e-12)


@pytest.mark.slow
def test_a_rerun_of_what_is_not_there_is_one_line(workdir):
    for args, line in ((["0" * 32], f"error: run {'0' * 32}: no such run in sqlite:///outputs/mlflow.db"),
                       ([], "error: usage: python -m runner.rerun RUN_ID [KEY=VALUE ...]")):
        done = rerun(*args, cwd=workdir)
        assert done.returncode == 2 and done.stderr.strip() == line, done.stderr


# -- resume -----------------------------------------------------------------------------------------
SWEEP = ["objective=rosenbrock", "optimizer=sgd", "lr=0.0005,0.001,0.0015,0.002", "objective.init=[-1.2,1.0],[0.0,0.0],[1.5,1.5]", "steps=3000", "tracking.artifacts=false"]


def start_sweep(cwd, *extra):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen([sys.executable, "-m", "runner", "-m", *SWEEP, *extra], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished_children(client) -> list:
    experiment = client.get_experiment_by_name("runner")
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED' and tags.`mlflow.parentRunId` != ''")


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_with_exactly_the_missing_jobs(workdir, client, tmp_path):
    """Interrupted job by job (the cached launcher), resumed and run whole under the default (batched)."""
    sweep = start_sweep(workdir, "hydra/launcher=cached")
    deadline = time.time() + 300
    while len(finished_children(client)) < 6 and time.time() < deadline:
        time.sleep(0.2)
    sweep.send_signal(signal.SIGINT)
    sweep.communicate(timeout=120)
    done_before = {r.info.run_name for r in finished_children(client)}
    runs_before = {r.info.run_id for r in client.search_runs([client.get_experiment_by_name("runner").experiment_id])}
    assert 6 <= len(done_before) < 12

    resumed = start_sweep(workdir, "resume=true")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert f"resume: {len(done_before)} of 12 jobs already done, running {12 - len(done_before)}" in out
    experiment = client.get_experiment_by_name("runner").experiment_id
    new = [r for r in client.search_runs([experiment]) if r.info.run_id not in runs_before]
    parents = [r for r in new if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(new) == 1 + 12 - len(done_before)  # exactly the missing jobs ran
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep.outcome"] == "completed"
    table = summary_table(client, parent.info.run_id)
    assert len(table) == 12 and sum(row["reused"] for row in table) == len(done_before)
    assert {row["run_name"] for row in table if row["reused"]} == done_before

    # Every child's numbers equal an uninterrupted sweep's.
    fresh = tmp_path / "fresh"
    (fresh / "outputs").mkdir(parents=True)
    whole = start_sweep(fresh)
    assert whole.communicate(timeout=600) and whole.returncode == 0
    from sweep_helpers import client_for

    reference = {r["run_name"]: r["final_loss"] for r in summary_table(client_for(fresh), _parent_id(client_for(fresh)))}
    assert {row["run_name"]: row["final_loss"] for row in table} == reference


def _parent_id(client) -> str:
    experiment = client.get_experiment_by_name("runner").experiment_id
    return next(r.info.run_id for r in client.search_runs([experiment]) if "mlflow.parentRunId" not in r.data.tags)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], ["hydra/launcher=submitit_local"]], ids=["joblib", "submitit"])
def test_resume_works_with_other_launchers(workdir, client, launcher):
    first = run_cli("-m", "objective=f", "lr=0.01,0.1", "steps=20", *launcher, cwd=workdir)
    assert first.returncode == 0, first.stderr
    again = run_cli("-m", "objective=f", "lr=0.01,0.1,0.2", "steps=20", "resume=true", *launcher, cwd=workdir)
    assert again.returncode == 0, again.stderr
    assert "resume: 2 of 3 jobs already done, running 1" in again.stdout
    runs = client.search_runs([client.get_experiment_by_name("runner").experiment_id])
    assert len(runs) == 2 + 2 + 1  # two parents, the first two children, one new child
    parent = max((r for r in runs if "mlflow.parentRunId" not in r.data.tags), key=lambda r: r.info.start_time)
    table = summary_table(client, parent.info.run_id)
    assert sorted((row["run_name"], row["reused"]) for row in table) == [("f-manual-lr0.01", True), ("f-manual-lr0.1", True), ("f-manual-lr0.2", False)]
