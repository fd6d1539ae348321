"""The service fixtures of ``tests/infra`` against the real services: a one-node SLURM cluster
(sbatch, scancel, time limits, sacct without accounting, submitit through it), a throwaway
PostgreSQL behind ``mlflow server``, and MLflow's basic auth. What they found is written down in
the modules' docstrings (tests/infra/slurm.py, postgres.py, mlflow_server.py).

Each fixture skips only when its software is not installed (see .ci/run for the packages).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import pytest
from infra._proc import is_alive, pids_tagged, wait_for
from infra.postgres import missing as postgres_missing
from infra.postgres import postgres_server

pytestmark = pytest.mark.slow


# --- SLURM ----------------------------------------------------------------------------------------


def test_sbatch_runs_a_job(slurm, tmp_path):
    out = tmp_path / "hi.txt"
    started = time.monotonic()
    job = slurm.sbatch("-o", str(out), "--wrap", "echo hi")
    slurm.wait_left_queue(job, timeout=15)
    print(f"sbatch --wrap 'echo hi': out of squeue {time.monotonic() - started:.2f} s after submission")
    assert out.read_text() == "hi\n"
    wait_for(lambda: slurm.final_state(job), 5, "the job-completion record")
    assert slurm.final_state(job) == "COMPLETED"


def test_scancel_ends_a_running_job(slurm):
    job = slurm.sbatch("-o", "/dev/null", "--wrap", "sleep 300")
    wait_for(lambda: slurm.queue_state(job) == "RUNNING", 15, f"job {job} to run")
    sleeper = wait_for(lambda: [p for p in pids_tagged(slurm.tag) if _cmdline(p) == "sleep 300"], 5, "the sleep")
    slurm.run("scancel", job)
    took = slurm.wait_left_queue(job, timeout=10)
    print(f"scancel: job out of squeue after {took:.2f} s")
    assert took < 5
    assert slurm.job_state(job) == "CANCELLED"  # scontrol still knows it, until MinJobAge
    assert not [p for p in sleeper if is_alive(p)], "the job's process survived scancel"
    wait_for(lambda: slurm.final_state(job), 5, "the job-completion record")
    assert slurm.final_state(job) == "CANCELLED"


def test_time_limits_are_whole_minutes(slurm):
    """``--time=0:01`` (0 min 1 s) and ``--time=0:00:30`` both become a 1-minute limit, the shortest
    (a job held so it never runs; the kill itself comes 60-90 s after the start: not tested here)."""
    for spec in ("0:01", "0:00:30", "1"):
        job = slurm.sbatch("--hold", f"--time={spec}", "-o", "/dev/null", "--wrap", "true")
        shown = slurm.run("scontrol", "show", "job", job).stdout
        slurm.run("scancel", job)
        assert "TimeLimit=00:01:00" in shown, (spec, shown)


def test_sacct_without_accounting(slurm):
    res = slurm.run("sacct", "-o", "JobID,State,NodeList", "--parsable2", "-j", "1", check=False)
    assert (res.returncode, res.stdout, res.stderr.strip()) == (1, "", "Slurm accounting storage is disabled")


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


SUBMITIT_SCRIPT = """
import json, sys, threading, time, subprocess
import submitit

def add(a, b):
    return a + b

def slow():
    time.sleep(300)

mode, folder, partition = sys.argv[1:4]
ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
ex.update_parameters(slurm_partition=partition, timeout_min=5, cpus_per_task=1, slurm_mem="256M")
out = {}
t0 = time.monotonic()
if mode == "result":
    job = ex.submit(add, 2, 3)
    out["state_submitted"] = job.state
    out["result"] = job.result()
    out["seconds"] = time.monotonic() - t0
    out["state_after"] = job.state
else:  # cancel, then see whether submitit notices
    job = ex.submit(slow)
    while "Loading pickle" not in (job.stdout() or ""):  # the function has started
        time.sleep(0.2)
    job.cancel()
    while subprocess.run(["squeue", "-h", "-j", job.job_id], capture_output=True, text=True).stdout.strip():
        time.sleep(0.2)
    out["left_queue_after"] = time.monotonic() - t0
    out["state"] = job.state
    out["done_forced"] = job.done(force_check=True)
    waiter = threading.Thread(target=job.result, daemon=True)
    waiter.start()
    waiter.join(float(sys.argv[4]))
    out["result_still_waiting"] = waiter.is_alive()
    out["stderr_log"] = job.stderr() or ""
out["sacct_calls"] = job.watcher.num_calls
print("RESULT " + json.dumps(out), flush=True)
"""


def _run_submitit(slurm, tmp_path, *args: str, timeout: float = 120) -> dict:
    script = tmp_path / "submitit_job.py"
    script.write_text(textwrap.dedent(SUBMITIT_SCRIPT))
    res = subprocess.run([sys.executable, str(script), args[0], str(tmp_path / "submitit"), slurm.partition, *args[1:]],
                         env=slurm.env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return {**json.loads(line[7:]), "stderr": res.stderr}


def test_submitit_through_the_cluster(slurm, tmp_path):
    out = _run_submitit(slurm, tmp_path, "result")
    print(f"submitit: submit -> result {out['seconds']:.2f} s")
    assert out["result"] == 5
    # Without accounting, sacct fails; submitit shrugs and never learns a state.
    assert out["state_submitted"] == out["state_after"] == "UNKNOWN"
    assert "Bypassing sacct error" in out["stderr"]


def test_submitit_never_sees_a_cancelled_job_end(slurm, tmp_path):
    """Records submitit's behaviour without sacct: a cancelled job is never done, result() waits on."""
    out = _run_submitit(slurm, tmp_path, "cancel", "3")
    print(f"submitit job cancelled; out of squeue {out['left_queue_after']:.1f} s after submission")
    assert out["state"] == "UNKNOWN"
    assert out["done_forced"] is False
    assert out["result_still_waiting"] is True
    assert "CANCELLED" in out["stderr_log"]


# --- PostgreSQL -----------------------------------------------------------------------------------


@pytest.mark.skipif(postgres_missing() is not None, reason=str(postgres_missing()))
def test_postgres_starts_and_stops_cleanly(tmp_path):
    with postgres_server(tmp_path) as pg:
        assert pg.psql("SELECT current_user, current_database()", "mlflow").strip() == "runner|mlflow"
        pid, port = pg.pid, pg.port
    print(f"postgres fixture: start {pg.start_seconds:.2f} s, stop {pg.stop_seconds:.2f} s")
    assert not is_alive(pid) and not pg.leftovers and not pg.root.exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
    assert (tmp_path / "postgres.log").exists()


def test_postgres_drivers(postgres):
    """psycopg2-binary works with an explicit ``postgresql+psycopg2://``; a plain ``postgresql://``
    means psycopg 3 to SQLAlchemy 2.1."""
    import sqlalchemy

    drivers = [d for d in ("psycopg", "psycopg2") if importlib.util.find_spec(d)]
    if not drivers:
        pytest.skip('no PostgreSQL driver (pip install -e ".[server]")')
    for driver in drivers:
        engine = sqlalchemy.create_engine(postgres.url(driver))
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT current_database()")).scalar() == "mlflow"
        engine.dispose()
    from packaging.version import Version

    default = "psycopg" if Version(sqlalchemy.__version__) >= Version("2.1") else "psycopg2"
    assert sqlalchemy.create_engine(postgres.uri).dialect.driver == default


def test_mlflow_server_on_postgres(auth_server, postgres, monkeypatch):
    """1000 metric points through ``mlflow server`` into PostgreSQL and back (as the admin)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    print(f"mlflow server (basic auth) on postgres: /health after {auth_server.start_seconds:.1f} s")
    assert len(auth_server.processes()) >= 2  # mlflow's CLI and its uvicorn worker, in one group
    for key, value in auth_server.credentials_env().items():
        monkeypatch.setenv(key, value)
    client = MlflowClient(tracking_uri=auth_server.url)
    exp = client.create_experiment("pg-roundtrip")
    run = client.create_run(exp)
    now = int(time.time() * 1000)
    started = time.monotonic()
    client.log_batch(run.info.run_id, metrics=[Metric("loss", 1.0 / (i + 1), now + i, i) for i in range(1000)])
    client.set_terminated(run.info.run_id)
    history = client.get_metric_history(run.info.run_id, "loss")
    print(f"log_batch of 1000 points and reading them back: {time.monotonic() - started:.2f} s")
    assert sorted(m.step for m in history) == list(range(1000))
    assert {m.step: m.value for m in history}[999] == pytest.approx(1e-3)
    # They are in PostgreSQL.
    assert postgres.psql(f"SELECT count(*) FROM metrics WHERE run_uuid = '{run.info.run_id}'", "mlflow").strip() == "1000"


# --- MLflow basic auth ----------------------------------------------------------------------------


def _post(url: str, path: str, body: dict, user: str | None = None, password: str | None = None):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    if user is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=30) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def test_auth_refuses_the_unauthenticated(auth_server, monkeypatch):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    status, text = _post(auth_server.url, "/api/2.0/mlflow/runs/create", {"experiment_id": "0"})
    assert status == 401 and "not authenticated" in text
    status, _ = _post(auth_server.url, "/api/2.0/mlflow/experiments/create", {"name": "x"},
                      auth_server.auth.admin_username, "wrong-password")
    assert status == 401
    with pytest.raises(MlflowException, match="401|not authenticated"):
        MlflowClient(tracking_uri=auth_server.url).create_run("0")


def test_auth_user_logs_with_credentials(auth_server, monkeypatch):
    from mlflow import MlflowClient
    from mlflow.entities import Metric
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    admin = auth_server.auth
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", admin.admin_username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin.admin_password)
    get_app_client("basic-auth", tracking_uri=auth_server.url).create_user("alice", "alice-password-1")
    admins_exp = MlflowClient(tracking_uri=auth_server.url).create_experiment("made-by-admin")

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "alice-password-1")
    client = MlflowClient(tracking_uri=auth_server.url)
    # Her own experiment: its creator gets MANAGE, so default_permission READ is enough.
    exp = client.create_experiment("alices")
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "loss", 0.5, step=1)
    client.log_batch(run.info.run_id, metrics=[Metric("x", float(i), 0, i) for i in range(10)])
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [0.5]
    assert len(client.get_metric_history(run.info.run_id, "x")) == 10
    # Someone else's experiment: READ (the default here) cannot create runs ...
    with pytest.raises(MlflowException, match="PERMISSION_DENIED|Permission denied|403"):
        client.create_run(admins_exp)
    # ... until she is granted EDIT there (or the server's default_permission is EDIT).
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", admin.admin_username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin.admin_password)
    get_app_client("basic-auth", tracking_uri=auth_server.url).grant_user_permission("alice", "experiment", admins_exp, "EDIT")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "alice-password-1")
    assert client.create_run(admins_exp).info.experiment_id == admins_exp
