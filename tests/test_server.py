"""The tracking server: ``python -m runner.serve`` over the project's store, a sweep logged through it
over HTTP, and everything read back over HTTP (runs, metrics, the summary's artifacts)."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from conftest import run_cli
from sweep_helpers import final_loss_by_hand, make_workdir, mlflow_server, summary_table, sweep_runs

from runner import serve


def test_serve_command():
    args = serve.parse(["--port", "5123"])
    cmd = serve.command(args)
    assert cmd[1:4] == ["-m", "mlflow", "server"]
    joined = " ".join(cmd[4:])
    assert joined == (
        "--backend-store-uri sqlite:///outputs/mlflow.db --serve-artifacts --artifacts-destination outputs/mlartifacts "
        "--host 127.0.0.1 --port 5123 --workers 1"
    )
    shared = serve.command(serve.parse(["--host", "0.0.0.0", "--allowed-hosts", "login1:5000"]))
    assert shared[-2:] == ["--allowed-hosts", "login1:5000"]


@pytest.fixture(scope="module")
def served(tmp_path_factory, empty_store):
    """A server over a fresh project folder, and a sweep logged through it."""
    workdir = make_workdir(tmp_path_factory.mktemp("served"), empty_store)
    started = time.time()
    with mlflow_server(workdir) as url:
        print(f"mlflow server up in {time.time() - started:.1f} s")
        started = time.time()
        result = run_cli("-m", "objective=booth", "optimizer=sgd", "lr=0.01,0.05", f"tracking.uri={url}", cwd=workdir)
        print(f"sweep through the server, 2 jobs: {time.time() - started:.1f} s")
        assert result.returncode == 0, result.stderr
        from mlflow import MlflowClient

        yield workdir, url, MlflowClient(tracking_uri=url), result


@pytest.mark.slow
def test_sweep_through_the_server(served):
    workdir, url, client, result = served
    parent, children = sweep_runs(client)
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "sweep-booth-sgd-lr{0.01,0.05}"
    assert parent.data.params == {"objective": "booth", "optimizer": "sgd", "lr": "0.01,0.05", "tracking.uri": url}
    assert sorted(c.info.run_name for c in children) == ["booth-sgd-lr0.01", "booth-sgd-lr0.05"]
    for c in children:
        assert c.info.status == "FINISHED"
        assert c.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert c.data.params["tracking.uri"] == url
        for key in ("loss", "grad_norm", "x/x1", "x/x2", "grad/x1", "grad/x2"):
            assert [m.step for m in sorted(client.get_metric_history(c.info.run_id, key), key=lambda m: m.step)] == list(range(101))
        # Artifacts went through the server (proxied), into its --artifacts-destination.
        assert c.info.artifact_uri.startswith("mlflow-artifacts:/")
        assert {a.path for a in client.list_artifacts(c.info.run_id)} >= {"config.yaml", "trajectory.csv", "plots"}
    assert list((workdir / "outputs" / "mlartifacts").glob(f"*/{parent.info.run_id}/artifacts/summary_table.json"))
    assert f"at {url}" in result.stdout


@pytest.mark.slow
def test_summary_read_back_over_http(served):
    workdir, url, client, result = served
    parent, children = sweep_runs(client)
    rows = {r["run_name"]: r for r in summary_table(client, parent.info.run_id)}
    assert set(rows) == {c.info.run_name for c in children}
    finals = {c.info.run_name: final_loss_by_hand(c.data.params) for c in children}
    for name, row in rows.items():
        assert float(row["final_loss"]) == pytest.approx(finals[name], rel=1e-9), name
        assert row["lr"] == name.rsplit("lr", 1)[1]
    assert parent.data.tags["best_child"] == min(finals, key=finals.get)
    listed = {a.path for a in client.list_artifacts(parent.info.run_id)}
    # trajectories/: the batched launcher's table of every step of every child (the default launcher)
    # sweep.yaml: logged when the parent is created, so that a server that cannot store artifacts fails the sweep first
    assert listed == {"summary_table.json", "summary_loss.png", "summary_paths.png", "summary_final_loss_lr.png", "trajectories", "sweep.yaml"}


@pytest.mark.slow
def test_server_serves_artifacts_of_runs_logged_to_sqlite(served):
    """Runs logged straight into outputs/mlflow.db keep their artifacts under outputs/mlartifacts
    (a file:// location); the server lists and serves those too, as the UI needs."""
    workdir, url, client, result = served
    from runner.tracking.store import MlflowStore

    store = MlflowStore()
    store.open(f"sqlite:///{workdir / 'outputs' / 'mlflow.db'}", "local")
    run_id = store.start_run("local-run", {"lr": "0.1"}, {})
    store.log_files(run_id, {"notes/hello.txt": "hello from sqlite"})
    store.end_run(run_id)
    assert client.get_run(run_id).info.artifact_uri.startswith("file://")
    with urllib.request.urlopen(f"{url}/ajax-api/2.0/mlflow/artifacts/list?run_id={run_id}&path=notes", timeout=30) as answer:
        listing = json.load(answer)
    assert [f["path"] for f in listing["files"]] == ["notes/hello.txt"]
    with urllib.request.urlopen(f"{url}/get-artifact?path=notes/hello.txt&run_uuid={run_id}", timeout=30) as answer:
        assert answer.read() == b"hello from sqlite"


@pytest.mark.slow
def test_kill_9_of_runner_serve_leaves_no_server_behind(tmp_path):
    """``kill -9`` of ``python -m runner.serve`` (its own pid, not its group): the MLflow server and
    its uvicorn worker end too (they used to keep serving), and the port closes."""
    import os
    import signal

    from infra._proc import pids_in_group
    from served_fixtures import runner_serve

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with runner_serve(store, tmp_path / "serve") as server:
        assert len(server.processes()) >= 3  # runner.serve, mlflow server, its uvicorn worker
        os.kill(server.pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while pids_in_group(server.pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pids_in_group(server.pgid) == []
        with pytest.raises(OSError):
            urllib.request.urlopen(server.url + "/health", timeout=2)
