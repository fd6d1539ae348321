"""A shared tracking server, for real: ``python -m runner.serve --store postgresql://…`` behind MLflow's
basic auth (the ``shared_server`` fixture, tests/served_fixtures.py), with a 16-job joblib sweep
through it (every run and every metric point arrives), what it binds, who may write, and how it
stops. The SLURM sweeps that log through the same server are in tests/test_slurm.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, run_cli
from infra._proc import is_alive, wait_for, wait_gone
from sweep_helpers import summary_table, sweep_runs

from runner.tracking.serving import redact, store_problem

METRICS = ("loss", "grad_norm", "x/x", "grad/x")  # of the 1-D objective f


# -- the command's checks (no server) -----------------------------------------------------------------
def test_redact_hides_the_password():
    assert redact("postgresql://runner:s3cret@db:5432/mlflow") == "postgresql://runner:***@db:5432/mlflow"
    assert redact("postgresql+psycopg2://u:p%40ss@127.0.0.1/x") == "postgresql+psycopg2://u:***@127.0.0.1/x"
    assert redact("sqlite:///outputs/mlflow.db") == "sqlite:///outputs/mlflow.db"
    assert redact("postgresql://runner@db/mlflow") == "postgresql://runner@db/mlflow"


def test_serve_refuses_what_cannot_start(tmp_path):
    """A driver that is not installed, an auth file that is not there: one line, exit 2, no password."""
    assert store_problem("postgresql://u:p@h/db") is None  # psycopg 3 comes with the server extra
    cases = {
        ("--store", "postgresql+pg8000://runner:s3cret@127.0.0.1:1/mlflow"): "needs the pg8000 driver",
        ("--app-name", "basic-auth", "--auth-config", str(tmp_path / "missing.ini")): "no such readable file",
        ("--auth-config", str(tmp_path / "missing.ini")): "--auth-config is for --app-name basic-auth",
    }
    for args, expected in cases.items():
        res = subprocess.run([sys.executable, "-m", "runner.serve", "--port", "1", *args], cwd=tmp_path, capture_output=True,
                             text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert res.returncode == 2, (args, res.stderr)
        assert res.stdout == "" and len(res.stderr.splitlines()) == 1 and expected in res.stderr, res.stderr
        assert "s3cret" not in res.stderr and "Traceback" not in res.stderr
    assert not list(tmp_path.iterdir())  # nothing created


# -- the shared server ------------------------------------------------------------------------------
def listening_addresses(port: int) -> set[str]:
    """The local addresses of sockets listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # little-endian words
                found.add(socket.inet_ntop(socket.AF_INET if width == 8 else socket.AF_INET6, words))
    return found


def other_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback (``hostname -I``)."""
    res = subprocess.run(["hostname", "-I"], capture_output=True, text=True)
    return [a for a in res.stdout.split() if "." in a and not a.startswith("127.")]


@pytest.mark.slow
def test_serve_listens_on_loopback_only(shared_server):
    assert listening_addresses(shared_server.port) == {"127.0.0.1"}
    for address in other_addresses():  # not reachable from another interface
        with pytest.raises(OSError):
            socket.create_connection((address, shared_server.port), timeout=2).close()


def as_admin(server, monkeypatch) -> None:
    for key, value in server.credentials_env().items():
        monkeypatch.setenv(key, value)


@pytest.mark.slow
def test_joblib_sweep_through_postgres_loses_nothing(shared_server, postgres, tmp_path, monkeypatch):
    """16 jobs on 2 joblib workers through runner.serve into PostgreSQL: 16 FINISHED children, each
    with all four metrics at all 51 steps, 3264 points, all of them rows in PostgreSQL. (No artifacts:
    what is counted is runs and points; tests/test_slurm.py's jobs upload theirs through this server.)"""
    from mlflow import MlflowClient

    started = time.monotonic()
    result = run_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "objective=f", "optimizer=sgd,adam",
                     "lr=0.01,0.02,0.03,0.05,0.1,0.2,0.3,0.5", "steps=50", "tracking.artifacts=false", "tracking.experiment=joblib16",
                     cwd=tmp_path, env=shared_server.credentials_env())
    print(f"16-job joblib sweep through runner.serve on PostgreSQL: {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stderr[-3000:]
    as_admin(shared_server, monkeypatch)
    client = MlflowClient(tracking_uri=shared_server.url)
    parent, children = sweep_runs(client, "joblib16")
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep.outcome"] == "completed"
    assert len(children) == 16 and {c.info.status for c in children} == {"FINISHED"}
    assert len({c.info.run_name for c in children}) == 16
    points = 0
    for child in children:
        for key in METRICS:
            steps = sorted(m.step for m in client.get_metric_history(child.info.run_id, key))
            assert steps == list(range(51)), (child.info.run_name, key)
            points += len(steps)
    assert points == 16 * 4 * 51
    ids = ",".join(f"'{c.info.run_id}'" for c in children)
    assert int(postgres.psql(f"SELECT count(*) FROM metrics WHERE run_uuid IN ({ids})", "shared")) == points
    assert len(summary_table(client, parent.info.run_id)) == 16


@pytest.mark.slow
def test_auth_refuses_the_unauthenticated_and_the_runner_records_with_credentials(shared_server, tmp_path, monkeypatch):
    from mlflow import MlflowClient
    from mlflow.server import get_app_client

    as_admin(shared_server, monkeypatch)
    get_app_client("basic-auth", tracking_uri=shared_server.url).create_user("alice", "alice-password-1")
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(key)
    # Without credentials: the runner stops before its descent, naming the server; nothing is recorded.
    refused = run_cli("objective=g", "tracking.experiment=alices", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": shared_server.url})
    print(f"the runner without credentials: exit {refused.returncode}, {refused.stderr.strip()!r}")
    assert refused.returncode != 0
    assert shared_server.url in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
    as_admin(shared_server, monkeypatch)
    assert MlflowClient(tracking_uri=shared_server.url).get_experiment_by_name("alices") is None
    # With alice's: her run, complete.
    alice = shared_server.credentials_env("alice", "alice-password-1")
    result = run_cli("objective=g", "optimizer=sgd", "lr=0.1", "tracking.experiment=alices", cwd=tmp_path, env=alice)
    assert result.returncode == 0, result.stderr
    for key, value in alice.items():
        monkeypatch.setenv(key, value)
    client = MlflowClient(tracking_uri=shared_server.url)
    experiment_id = client.get_experiment_by_name("alices").experiment_id
    (run,) = client.search_runs([experiment_id])
    assert (run.info.status, run.info.run_name) == ("FINISHED", "g-sgd-lr0.1")
    assert [m.step for m in sorted(client.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)] == list(range(101))
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"config.yaml", "trajectory.csv", "plots"}
    # Her run created the experiment, so she manages it (the server's default for others: READ).
    as_admin(shared_server, monkeypatch)
    permission = get_app_client("basic-auth", tracking_uri=shared_server.url).get_user_permission("alice", "experiment", experiment_id)
    assert permission.permission == "MANAGE"


@pytest.mark.slow
def test_serve_on_postgres_stops_with_its_children(postgres, tmp_path):
    """SIGTERM to ``runner.serve``'s process (not its group): the server, its workers and their
    database sessions are gone, the port is closed."""
    from served_fixtures import runner_serve

    postgres.psql("CREATE DATABASE stopping")
    with runner_serve(postgres.url(database="stopping"), tmp_path) as server:
        pids = server.processes()
        assert len(pids) >= 2  # runner.serve's mlflow server and its uvicorn worker
        assert int(postgres.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'stopping'")) >= 1
        started = time.monotonic()
        os.kill(server.pid, signal.SIGTERM)
        assert server._proc.wait(timeout=30) is not None
        left = wait_gone(pids, 15)
        print(f"runner.serve on PostgreSQL: all {len(pids)} processes gone {time.monotonic() - started:.1f} s after SIGTERM")
        assert left == [] and not any(is_alive(p) for p in pids)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
        wait_for(lambda: int(postgres.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'stopping'")) == 0,
                 10, "the server's database sessions to end")
