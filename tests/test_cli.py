"""``python -m runner`` end to end, into a temporary SQLite store read back with MlflowClient."""

from __future__ import annotations

import csv
import io
import math

import pytest
import yaml
from conftest import run_cli, runs_of

pytestmark = pytest.mark.slow


def history(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


@pytest.fixture(scope="module")
def single_run(tmp_path_factory, empty_store):
    """One run of the README's main command, shared by the tests below."""
    import shutil

    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("single")
    (folder / "outputs").mkdir()
    shutil.copy(empty_store, folder / "outputs" / "mlflow.db")
    result = run_cli("objective=g", "optimizer=sgd", "lr=0.01", "steps=100", cwd=folder)
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'outputs' / 'mlflow.db'}")
    return result, client, runs_of(client)


def test_the_run_succeeds_and_prints_a_summary(single_run):
    result, _, runs = single_run
    assert result.returncode == 0, result.stderr
    assert len(runs) == 1
    run = runs[0]
    assert result.stdout.splitlines()[0].startswith("g-sgd-lr0.01: max_steps at step 100, loss 63 -> ")
    assert f"mlflow run {run.info.run_id} in experiment 'runner' at sqlite:///outputs/mlflow.db" in result.stdout


def test_params_are_the_flattened_resolved_config(single_run):
    _, _, (run,) = single_run
    params = run.data.params
    assert run.info.run_name == "g-sgd-lr0.01"
    assert params["lr"] == "0.01" and params["steps"] == "100" and params["task"] == "optimize"
    assert params["objective.name"] == "g" and params["objective.init"] == "[2.0, 3.0]"
    assert params["optimizer._target_"] == "torch.optim.SGD" and params["optimizer.lr"] == "0.01"
    assert params["optimizer.momentum"] == "0.0"
    assert params["backend.name"] == "autograd" and params["backend.dtype"] == "float64"
    assert params["tracking.experiment"] == "runner"


def test_tags_name_what_ran_and_how_it_ended(single_run):
    _, _, (run,) = single_run
    tags = run.data.tags
    assert {k: tags[k] for k in ("objective", "backend", "optimizer", "device", "outcome")} == {
        "objective": "g",
        "backend": "autograd",
        "optimizer": "sgd",
        "device": "cpu",
        "outcome": "max_steps",
    }
    assert run.info.status == "FINISHED"


def test_every_metric_has_its_full_history_and_matches_the_math(single_run):
    _, client, (run,) = single_run
    keys = ["loss", "grad_norm", "x/x1", "x/x2", "grad/x1", "grad/x2"]
    assert set(run.data.metrics) == set(keys)
    hist = {k: history(client, run.info.run_id, k) for k in keys}
    for key in keys:
        assert [s for s, _ in hist[key]] == list(range(101)), key
    # k = 0 is the start point (2, 3): g = 63, ∇g = (9, 42).
    assert hist["loss"][0][1] == 63.0
    assert (hist["x/x1"][0][1], hist["x/x2"][0][1]) == (2.0, 3.0)
    assert (hist["grad/x1"][0][1], hist["grad/x2"][0][1]) == (9.0, 42.0)
    assert hist["grad_norm"][0][1] == math.hypot(9.0, 42.0)
    # Each step is x ← x − 0.01·∇g, with ∇g = (x2², 2(x1 + 5)x2), and loss = g(x).
    for k in range(100):
        x1, x2 = hist["x/x1"][k][1], hist["x/x2"][k][1]
        assert hist["x/x1"][k + 1][1] == pytest.approx(x1 - 0.01 * x2**2, rel=1e-12, abs=1e-300)
        assert hist["x/x2"][k + 1][1] == pytest.approx(x2 - 0.01 * 2 * (x1 + 5) * x2, rel=1e-12, abs=1e-300)
        assert hist["loss"][k][1] == pytest.approx((x1 + 5) * x2**2, rel=1e-12, abs=1e-300)


def test_artifacts_hold_the_config_the_whole_trajectory_and_plots(single_run, tmp_path):
    _, client, (run,) = single_run
    rid = run.info.run_id
    assert sorted(a.path for a in client.list_artifacts(rid)) == ["config.yaml", "plots", "trajectory.csv"]
    assert sorted(a.path for a in client.list_artifacts(rid, "plots")) == ["plots/loss.png", "plots/path.png"]
    folder = client.download_artifacts(rid, "", str(tmp_path))
    config = yaml.safe_load(open(f"{folder}/config.yaml"))
    assert config["lr"] == 0.01 and config["objective"]["name"] == "g" and config["optimizer"]["lr"] == 0.01
    rows = list(csv.DictReader(io.StringIO(open(f"{folder}/trajectory.csv").read())))
    assert list(rows[0]) == ["step", "loss", "grad_norm", "x/x1", "x/x2", "grad/x1", "grad/x2"]
    assert len(rows) == 101
    loss = history(client, rid, "loss")
    assert [float(r["loss"]) for r in rows] == [v for _, v in loss]  # full precision, same numbers
    for png in ("loss.png", "path.png"):
        assert open(f"{folder}/plots/{png}", "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_multirun_records_one_named_run_per_job(workdir, client):
    result = run_cli("-m", "objective=f,g", "optimizer=manual,sgd", "lr=0.01,0.1", "steps=20", cwd=workdir)
    assert result.returncode == 0, result.stderr
    runs = [r for r in runs_of(client) if "mlflow.parentRunId" in r.data.tags]  # the jobs, not the sweep's parent
    names = sorted(r.info.run_name for r in runs)
    assert names == sorted(f"{o}-{p}-lr{lr}" for o in "fg" for p in ("manual", "sgd") for lr in ("0.01", "0.1"))
    for run in runs:
        objective, optimizer, lr = run.info.run_name.split("-")
        assert run.data.params["objective.name"] == objective
        assert run.data.params["optimizer.name"] == optimizer
        assert run.data.params["lr"] == lr[2:]
        assert run.data.tags["optimizer"] == optimizer and run.info.status == "FINISHED"
        assert len(client.get_metric_history(run.info.run_id, "loss")) == 21
    # Manual descent and SGD without momentum take bit-identical paths.
    by_name = {r.info.run_name: r for r in runs}
    for objective in "fg":
        for lr in ("0.01", "0.1"):
            a, b = by_name[f"{objective}-manual-lr{lr}"], by_name[f"{objective}-sgd-lr{lr}"]
            assert history(client, a.info.run_id, "loss") == history(client, b.info.run_id, "loss")
    f_runs = [r for r in runs if r.info.run_name == "f-manual-lr0.1"]
    assert abs(f_runs[0].data.metrics["x/x"] - (-1 / 3 + (1 / 3) * 0.4**20)) < 1e-12


def test_tracking_uri_env_var_experiment_and_run_name(workdir, tmp_path):
    from mlflow import MlflowClient

    other = tmp_path / "elsewhere" / "store.db"
    result = run_cli(
        "objective=custom",
        "objective.expr=[3*x,x**2]",
        "objective.init=[5.0]",
        "steps=0",
        "tracking.experiment=tape",
        "tracking.run_name=targets",
        cwd=workdir,
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{other}"},
    )
    assert result.returncode == 0, result.stderr
    run = runs_of(MlflowClient(tracking_uri=f"sqlite:///{other}"), "tape")[0]
    assert run.info.run_name == "targets"
    assert run.data.metrics["grad/x"] == 13.0 and run.data.metrics["loss"] == 40.0
    assert run.data.params["objective.expr"] == "['3*x', 'x**2']"


def test_a_diverging_run_keeps_its_data_and_exits_zero(workdir, client):
    result = run_cli("objective=f", "lr=1.0", "steps=1000", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "warning: lr=1 exceeds the stable step 2/λ_max = 0.333333" in result.stderr
    (run,) = runs_of(client)
    assert run.data.tags["outcome"] == "diverged"
    # By hand, in floats: x ← x − (6x + 2) from 0, i.e. x_k = −1/3 + (−5)^k/3, until f or f' overflows.
    xs, losses = [0.0], []
    while math.isfinite(3 * xs[-1] ** 2 + 2 * xs[-1] - 1) and math.isfinite(6 * xs[-1] + 2):
        losses.append(3 * xs[-1] ** 2 + 2 * xs[-1] - 1)
        xs.append(xs[-1] - (6 * xs[-1] + 2))
    assert int(run.data.tags["diverged_step"]) == len(losses) == 221
    # Every finite value is there: the loss up to the step before, x up to the diverged step.
    loss = history(client, run.info.run_id, "loss")
    assert [s for s, _ in loss] == list(range(221))
    assert [v for _, v in loss] == pytest.approx(losses, rel=1e-12)
    assert [v for _, v in history(client, run.info.run_id, "x/x")] == pytest.approx(xs, rel=1e-12)
    assert run.info.status == "FINISHED"


def test_the_writer_process_never_imports_torch(workdir):
    """Its point is to work beside torch's import; unpickling a torch-backed object would undo it."""
    result = run_cli("objective=rosenbrock", "steps=5", cwd=workdir, env={"RUNNER_WRITER_REPORT": "1"})
    assert result.returncode == 0, result.stderr
    assert "writer: torch imported: False; descent imported: False" in result.stderr
