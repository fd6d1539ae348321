"""A tracking server that goes away mid-run: a real ``mlflow server``, a real ``python -m runner``
logging to it over HTTP, the server stopped while the run descends.

To land the stop mid-run on a busy machine, the runner's main process is held with SIGSTOP while the
server stops (SIGTERM to its process group, as the fixture stops it) and let go with SIGCONT. What is
checked: the run ends on its own (exit 1, not a retry loop), the one ``error:`` line names
``python -m runner.upload FOLDER`` and the folder holds the rest of the run; after a restart over the
same backend store (same SQLite file, same artifact folder, same port) that command makes the run
whole and FINISHED: every one of its 1001 ``loss`` points, equal to its trajectory.csv, and its
artifacts, read back with MlflowClient. A server that comes back before the run ends gets the run
complete without any command. A writer left with a dead server and no main process exits too.
A batched sweep whose server stops while its children are written (or which is then interrupted)
keeps them and its parent's end for the same command, run on the sweep's folder; a server that
cannot store artifacts fails a run and a sweep before any descent.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from runner.sweeps.table import load as load_table
from tests.infra.mlflow_server import mlflow_server
from tests.infra.runner_proc import REPO, Runner

pytestmark = pytest.mark.slow

STEPS = 10000  # log_every auto: every 10th step, 1001 loss points; metrics go out every 2048 steps
STRIDE = 10
ARGS = ["objective=rosenbrock", "lr=0.001", f"steps={STEPS}", "progress=false", "tracking.http_retries=1"]
NAME = "rosenbrock-manual-lr0.001"
CSV = "outputs/hydra/*/*/trajectory.csv"


@pytest.fixture
def backend(tmp_path, empty_store):
    """The server's backend store (a migrated SQLite file) and its folder (artifacts, logs)."""
    base = tmp_path / "server"
    base.mkdir()
    shutil.copy(empty_store, base / "mlflow.db")
    return f"sqlite:///{base / 'mlflow.db'}", base


@pytest.fixture
def runner_in(tmp_path):
    started: list[Runner] = []

    def start(url: str, *extra: str, env: dict | None = None) -> Runner:
        workdir = tmp_path / "work"
        workdir.mkdir(exist_ok=True)
        started.append(Runner(workdir, *ARGS, f"tracking.uri={url}", *extra, env=env))
        return started[-1]

    yield start
    for r in started:
        r.cleanup()


@contextmanager
def held(r: Runner):
    """The runner's main process stopped (SIGSTOP) for the duration; SIGCONT after."""
    os.kill(r.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        try:
            os.kill(r.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def client(url: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=url)


def the_run(url: str):
    c = client(url)
    (run,) = c.search_runs([c.get_experiment_by_name("runner").experiment_id])
    return run


def rows_at_least(r: Runner, n: int) -> bool:
    rows = r.trajectory_rows(CSV)
    return bool(rows) and rows[0] >= n


def loss_points_sent(r: Runner, url: str) -> bool:
    """Some of the run's loss points reached the server (so the stop lands mid-run)."""
    if not rows_at_least(r, 2100):
        return False
    c = client(url)
    runs = c.search_runs([c.get_experiment_by_name("runner").experiment_id]) if c.get_experiment_by_name("runner") else []
    return bool(runs) and bool(c.get_metric_history(runs[0].info.run_id, "loss"))


def wait_for_points(r: Runner, url: str) -> None:
    r.wait_for(lambda: (time.sleep(0.3), loss_points_sent(r, url))[1], "the first loss points in the server", timeout=120)


def stop_mid_run(r: Runner, server) -> None:
    """Once some of the run's points are in the server, stop the server while the run is held."""
    wait_for_points(r, server.url)
    with held(r):
        server.stop()


def upload_command(stderr: str) -> Path:
    """The folder named by the one line that says how to upload the rest of the run."""
    lines = [line for line in stderr.splitlines() if "python -m runner.upload" in line]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: tracking: the MLflow server at ") and f"run {NAME} (" in lines[0]
    return Path(re.search(r"python -m runner\.upload (\S+)$", lines[0]).group(1))


def upload(folder: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "runner.upload", str(folder)], capture_output=True, text=True, env=env, timeout=120)


def check_complete(url: str, r: Runner) -> None:
    """FINISHED, every loss and x/x1 point 0, 10, …, 10000 equal to the trajectory.csv row, the artifacts."""
    c = client(url)
    run = the_run(url)
    assert (run.info.status, run.data.tags["outcome"], run.data.tags["final_step"]) == ("FINISHED", "max_steps", str(STEPS))
    history = sorted(c.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)
    assert [m.step for m in history] == list(range(0, STEPS + 1, STRIDE))
    with open(next(r.workdir.glob(CSV)), newline="") as table:
        rows = {int(row["step"]): row for row in csv.DictReader(table)}
    assert len(rows) == STEPS + 1
    assert all(m.value == float(rows[m.step]["loss"]) for m in history)
    x1 = c.get_metric_history(run.info.run_id, "x/x1")
    assert sorted(m.step for m in x1) == list(range(0, STEPS + 1, STRIDE))
    assert all(m.value == float(rows[m.step]["x/x1"]) for m in x1)
    assert {a.path for a in c.list_artifacts(run.info.run_id)} == {"config.yaml", "trajectory.csv", "plots"}
    assert len(c.list_artifacts(run.info.run_id, "plots")) >= 2


def test_server_gone_the_run_ends_and_runner_upload_makes_it_whole(backend, runner_in):
    store, base = backend
    with mlflow_server(store, base) as server:
        url, port = server.url, server.port
        r = runner_in(url)
        stop_mid_run(r, server)
        assert r.wait(timeout=120) == 1, r.stderr
    assert r.leftovers() == []  # the writer and the figure helper ended with the run
    assert "Traceback" not in r.stderr, r.stderr
    folder = upload_command(r.stderr)
    assert folder.parent == next(r.workdir.glob(CSV)).parent  # the job's output folder
    kept = json.loads((folder / "run.json").read_text())
    assert (kept["tracking_uri"], kept["name"], kept["end"]["status"]) == (url, NAME, "FINISHED")
    assert {p.name for p in (folder / "artifacts").iterdir()} == {"config.yaml", "trajectory.csv", "plots"}
    refused = upload(folder)  # the server is still gone: the folder stays for later
    assert refused.returncode == 1
    assert re.fullmatch(rf"error: tracking\.uri: cannot reach the MLflow server at {re.escape(url)} \(.*\); {re.escape(str(folder))} stays: "
                        r"run this again once the server answers\n", refused.stderr), refused.stderr
    assert (folder / "run.json").exists()

    with mlflow_server(store, base, port=port):
        run = the_run(url)
        assert run.info.status == "RUNNING"  # what the server had when it stopped
        assert 0 < len(client(url).get_metric_history(run.info.run_id, "loss")) < 1001
        done = upload(folder)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"uploaded run {NAME} ({run.info.run_id}) into {url}: ")
        assert done.stdout.rstrip().endswith("artifact files; it ends FINISHED")
        check_complete(url, r)
        assert "sent later by python -m runner.upload" in the_run(url).data.tags["record.uploaded"]
    assert not folder.exists()
    again = upload(folder)  # nothing is left to send: one line, exit 2
    assert again.returncode == 2 and again.stderr.startswith("error: ") and len(again.stderr.splitlines()) == 1


def test_a_server_back_before_the_run_ends_gets_the_whole_run(backend, runner_in):
    store, base = backend
    with mlflow_server(store, base) as server:
        url, port = server.url, server.port
        r = runner_in(url)
        stop_mid_run(r, server)
        r.wait_for(lambda: "stopped answering" in r.stderr, "the writer finding the server gone", timeout=120)
        os.kill(r.pid, signal.SIGSTOP)  # held while the server restarts (the runner's cleanup lets it go)
        with mlflow_server(store, base, port=port):
            os.kill(r.pid, signal.SIGCONT)
            assert r.wait(timeout=120) == 0, r.stderr
            check_complete(url, r)
            assert not {"record.uploaded", "record.incomplete"} & set(the_run(url).data.tags)
    assert r.leftovers() == []
    assert not list(r.workdir.glob("outputs/hydra/*/*/unsent"))
    assert "python -m runner.upload" not in r.stderr


def test_a_writer_with_a_dead_server_does_not_outlive_its_main_process(backend, runner_in):
    store, base = backend
    with mlflow_server(store, base) as server:
        r = runner_in(server.url)
        wait_for_points(r, server.url)
        assert r.writer_pid() is not None
        with held(r):
            server.stop()
            os.kill(r.pid, signal.SIGKILL)
        assert r.wait(timeout=30) == -signal.SIGKILL
    assert r.leftovers(timeout=60) == []  # the writer found the server gone, kept the run, exited
    folder = upload_command(r.stderr)
    kept = json.loads((folder / "run.json").read_text())
    assert kept["end"]["status"] == "FAILED" and "main process" in kept["end"]["tags"]["error"]
    k = kept["end"]["tags"]["final_step"]
    assert f"writer: the main process died; run {NAME} kept as FAILED at step {k} in {folder}, for the upload above" in r.stderr
    assert "trajectory.csv" in {p.name for p in (folder / "artifacts").iterdir()}


def test_a_finished_run_whose_server_lost_points_says_so(backend, runner_in):
    """The server acknowledged points it no longer holds (rows deleted from its store mid-run): the
    run still ends FINISHED, since its descent did, but tagged record.incomplete, with a line."""
    store, base = backend
    with mlflow_server(store, base) as server:
        r = runner_in(server.url)
        wait_for_points(r, server.url)
        with held(r), sqlite3.connect(base / "mlflow.db", timeout=30) as db:
            lost = db.execute("delete from metrics where key = 'loss' and step <= 200").rowcount
        assert lost == 21  # steps 0, 10, …, 200
        assert r.wait(timeout=120) == 0, r.stderr
        run = the_run(server.url)
    line = f"21 of the 1001 loss points the server acknowledged for run {NAME} are not in it"
    assert (run.info.status, run.data.tags["record.incomplete"], run.data.tags["record.missing"]) == ("FINISHED", "true", line)
    assert f"warning: tracking: {line} (tagged record.incomplete=true)" in r.stderr.splitlines()
    assert r.leftovers() == []


def test_a_server_that_hangs_counts_as_gone_after_its_timeouts(backend, runner_in):
    """The server's processes stopped (SIGSTOP: connections open, no answer): each try waits
    MLFLOW_HTTP_REQUEST_TIMEOUT, then the run goes on as with a server that went away."""
    store, base = backend
    with mlflow_server(store, base) as server:
        r = runner_in(server.url, env={"MLFLOW_HTTP_REQUEST_TIMEOUT": "2"})
        wait_for_points(r, server.url)
        os.killpg(server.pgid, signal.SIGSTOP)
        try:
            assert r.wait(timeout=120) == 1, r.stderr
        finally:
            os.killpg(server.pgid, signal.SIGCONT)
    assert r.leftovers() == []
    assert (f"warning: tracking: the MLflow server at {server.url} stopped answering (no answer within its read timeout, 2 s "
            "(MLFLOW_HTTP_REQUEST_TIMEOUT))") in r.stderr
    folder = upload_command(r.stderr)
    assert json.loads((folder / "run.json").read_text())["end"]["status"] == "FINISHED"


@pytest.mark.parametrize("value", ["11", "-1"])
def test_http_retries_out_of_range_is_one_line(tmp_path, value):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "runner", f"tracking.http_retries={value}"], cwd=tmp_path,
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert result.stderr == f"error: tracking.http_retries: {value} is not allowed; use 0 to 10 (MLflow's limit)\n"
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


# -- a batched sweep whose server goes away while its children are written ---------------------------
SWEEP_LRS = [str(round(0.0001 * (i + 1), 4)) for i in range(12)]  # as MLflow keeps the params
SWEEP_STEPS = 2000  # every other step: 1001 loss points a child


def sweep_complete(url: str, workdir: Path) -> None:
    """The parent FINISHED with its summary over 12 children, each FINISHED with every loss point of
    its job's trajectory.csv (steps 0, 2, …, 2000) and its artifacts."""
    c = client(url)
    runs = c.search_runs([c.get_experiment_by_name("runner").experiment_id], max_results=100)
    (parent,) = [run for run in runs if "sweep.token" in run.data.tags]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert (parent.info.status, parent.data.tags["sweep.outcome"], parent.data.tags["sweep.children"]) == ("FINISHED", "completed", "12")
    assert {"summary_table.json", "summary_loss.png", "trajectories"} <= {a.path for a in c.list_artifacts(parent.info.run_id)}
    assert sorted(run.data.params["lr"] for run in children) == SWEEP_LRS
    for run in children:
        assert run.info.status == "FINISHED" and run.data.tags["outcome"] == "max_steps"
        job = Path(parent.data.tags["sweep.dir"], str(SWEEP_LRS.index(run.data.params["lr"])))
        with open(job / "trajectory.csv", newline="") as table:
            rows = {int(row["step"]): float(row["loss"]) for row in csv.DictReader(table)}
        history = sorted(c.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)
        assert [(m.step, m.value) for m in history] == [(s, rows[s]) for s in range(0, SWEEP_STEPS + 1, 2)]
        assert {a.path for a in c.list_artifacts(run.info.run_id)} == {"config.yaml", "trajectory.csv", "plots"}


@contextmanager
def sweep_losing_its_server(server, workdir: Path, signum: int | None = None):
    """A 12-job batched sweep logging to ``server``; once its first child is in the server, the
    server stops while the writer is held (SIGSTOP), and ``signum`` goes to the sweep's process
    then. Yields the runner; cleans it up after."""
    r = Runner(workdir, "-m", "objective=rosenbrock", f"lr={','.join(SWEEP_LRS)}", f"steps={SWEEP_STEPS}", "progress=false",
               f"tracking.uri={server.url}", "tracking.http_retries=1")
    try:
        r.wait_for(lambda: (time.sleep(0.3), any(run.data.tags.get("mlflow.parentRunId") for run in the_runs(server.url)))[1],
                   "the first child in the server", timeout=180)
        writer = r.writer_pid()
        os.kill(writer, signal.SIGSTOP)
        try:
            server.stop()
            if signum is not None:
                r.signal(signum)
        finally:
            os.kill(writer, signal.SIGCONT)
        yield r
    finally:
        r.cleanup()


def test_a_batched_sweep_whose_server_goes_away_is_kept_and_uploaded_whole(backend, tmp_path):
    """The server stops after the first children reached it (the writer held meanwhile): the sweep
    ends within seconds, exit 1, one line naming ``python -m runner.upload <sweep folder>``; each
    child not yet complete in the server waits in its job's ``unsent/`` (those the server never saw,
    with what creates them), the parent's end in the sweep's. After a restart the upload makes every
    child complete and FINISHED under its parent and gives the parent the sweep's summary."""
    store, base = backend
    workdir = tmp_path / "work"
    workdir.mkdir()
    with mlflow_server(store, base) as server:
        url, port = server.url, server.port
        with sweep_losing_its_server(server, workdir) as r:
            started = time.monotonic()
            assert r.wait(timeout=120) == 1, r.stderr
            print(f"the sweep ended {time.monotonic() - started:.1f} s after the server stopped")
    assert r.leftovers() == [] and "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if "runner.upload" in line]
    assert len(lines) == 1 and lines[0].startswith(f"error: tracking: the MLflow server at {url} stopped answering; "), r.stderr
    sweep = Path(re.search(r"python -m runner\.upload (\S+)$", lines[0]).group(1))
    kept = [json.loads(p.read_text()) for p in sweep.rglob("unsent/run.json")]
    assert [k["sweep_end"] for k in kept if "sweep_end" in k] == ["completed"]
    assert f" {len(kept) - 1} runs of this sweep and its summary are kept in unsent/ folders under {sweep};" in lines[0]
    assert len(kept) > 1 and any(k["run_id"] is None and k["create"]["tags"]["mlflow.parentRunId"] for k in kept), kept

    stand_ins = {k["stand_in"] for k in kept if k.get("create")}
    with mlflow_server(store, base, port=port):
        done = upload(sweep)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert len(lines) == len(kept) + 1 and lines[-2].endswith("; it ends FINISHED")
        assert lines[-1].endswith(f" now names the {len(stand_ins)} runs created above by their ids"), lines[-1]
        sweep_complete(url, workdir)
        c = client(url)
        runs = the_runs(url)
        (parent,) = [run for run in runs if "sweep.token" in run.data.tags]
        children = {run.info.run_id: run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
        assert {run.data.tags.get("record.stand_in") for run in children.values()} - {None} == stand_ins
        with tempfile.TemporaryDirectory() as tmp:
            frame = load_table(c.download_artifacts(parent.info.run_id, "trajectories", tmp))
        assert set(frame["run_id"]) == set(children)  # every line names its child's real id, none a stand-in
        for run_id, rows in frame.groupby("run_id"):
            assert set(rows["run_name"]) == {children[run_id].info.run_name}
            assert int(rows["step"].max()) == SWEEP_STEPS
    assert not list(sweep.rglob("unsent"))


def the_runs(url: str) -> list:
    c = client(url)
    found = c.get_experiment_by_name("runner")
    return c.search_runs([found.experiment_id], max_results=100) if found else []


def test_a_server_that_cannot_store_artifacts_fails_the_run_before_its_descent(backend, tmp_path):
    """The server's artifact folder is a file (it cannot write there, even as root): a run, and a
    sweep's parent, end FAILED with one line before any descent; no job descends."""
    store, base = backend
    (base / "artifacts").write_text("not a folder\n")
    with mlflow_server(store, base) as server:
        url = server.url
        for name, args in (("rosenbrock-manual-lr0.001", ["objective=rosenbrock", "lr=0.001"]),
                           ("sweep-rosenbrock-manual-lr{0.001,0.002}", ["-m", "objective=rosenbrock", "lr=0.001,0.002"])):
            workdir = tmp_path / name[:5]
            workdir.mkdir()
            r = Runner(workdir, *args, "steps=20000", "progress=false", f"tracking.uri={url}", "tracking.http_retries=1")
            try:
                assert r.wait(timeout=120) == 2, r.stderr
            finally:
                r.cleanup()
            # The server either resets the connection while the upload streams or answers HTTP 500.
            line = (rf"error: tracking: the MLflow server at {re.escape(url)} cannot store the artifacts of run {re.escape(name)} "
                    r"\((Connection reset by peer|it answered HTTP 500 to every try)\); the run ended FAILED before its descent")
            errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
            assert len(errors) == 1 and re.fullmatch(line, errors[0]), r.stderr
            assert "Traceback" not in r.stderr and "batched:" not in r.stdout and not list(workdir.rglob("trajectory.csv"))
            assert r.leftovers() == []
        runs = {run.info.run_name: run for run in the_runs(url)}
        assert sorted(runs) == ["rosenbrock-manual-lr0.001", "sweep-rosenbrock-manual-lr{0.001,0.002}"]  # no child was created
        for run in runs.values():
            assert run.info.status == "FAILED" and "cannot store the artifacts" in run.data.tags["error"]
            assert not client(url).get_metric_history(run.info.run_id, "loss")


def test_a_sweep_interrupted_while_its_server_is_gone_keeps_its_parent_for_the_upload(backend, tmp_path):
    """Ctrl-C (SIGINT) of a batched sweep once its server is gone: the guard cannot end the parent,
    so it keeps the parent's end (interrupted) under the sweep's folder and says how to upload it;
    after a restart the upload ends every run, none RUNNING, the parent KILLED with its summary."""
    store, base = backend
    workdir = tmp_path / "work"
    workdir.mkdir()
    with mlflow_server(store, base) as server:
        url, port = server.url, server.port
        with sweep_losing_its_server(server, workdir, signal.SIGINT) as r:
            assert r.wait(timeout=120) == 130, r.stderr
        assert r.leftovers() == [], r.stderr
    lines = [line for line in r.stderr.splitlines() if "python -m runner.upload" in line]
    assert lines and "Traceback" not in r.stderr, r.stderr
    sweep = Path(re.search(r"python -m runner\.upload (\S+)$", lines[-1]).group(1))
    assert lines[-1].startswith(f"error: tracking: the MLflow server at {url} does not answer (") and "with its end (interrupted)" in lines[-1]
    parent_end = json.loads((sweep / "unsent" / "run.json").read_text())
    assert parent_end["sweep_end"] == "interrupted" and parent_end["token"]

    with mlflow_server(store, base, port=port):
        done = upload(sweep)
        assert done.returncode == 0, done.stderr
        runs = the_runs(url)
        (parent,) = [run for run in runs if "sweep.token" in run.data.tags]
        assert (parent.info.status, parent.data.tags["sweep.outcome"]) == ("KILLED", "interrupted")
        assert "summary_table.json" in {a.path for a in client(url).list_artifacts(parent.info.run_id)}
        assert [run.info.run_name for run in runs if run.info.status == "RUNNING"] == []
    assert not list(sweep.rglob("unsent"))


def test_a_job_by_job_sweep_whose_server_goes_away_keeps_each_run_for_the_upload(backend, tmp_path):
    """``hydra/launcher=cached`` (one job after another in one process): the server stops during the
    first job; that run and the two the server never saw are kept in their job folders (one line
    each), the parent's end in the sweep's; the upload creates the two, completes all three and
    summarises the sweep."""
    store, base = backend
    workdir = tmp_path / "work"
    workdir.mkdir()
    lrs = ["0.001", "0.0011", "0.0012"]
    with mlflow_server(store, base) as server:
        url, port = server.url, server.port
        r = Runner(workdir, "-m", "hydra/launcher=cached", "objective=rosenbrock", f"lr={','.join(lrs)}", f"steps={STEPS}",
                   "progress=false", f"tracking.uri={url}", "tracking.http_retries=1")
        try:
            first_job = "outputs/multirun/*/*/0/trajectory.csv"
            r.wait_for(lambda: (time.sleep(0.3), (r.trajectory_rows(first_job) or [0])[0] >= 2100)[1], "the first job's descent under way",
                       timeout=180)
            with held(r):
                server.stop()
            assert r.wait(timeout=240) == 1, r.stderr
        finally:
            r.cleanup()
    assert r.leftovers() == [] and "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if "python -m runner.upload" in line]
    assert [line.split("; what run ")[1].split(" did not send")[0] for line in lines[:3]] == [
        f"rosenbrock-manual-lr0.001 ({the_id(lines[0])})", "rosenbrock-manual-lr0.0011 (not in the server yet)",
        "rosenbrock-manual-lr0.0012 (not in the server yet)"]
    assert len(lines) == 4 and " 3 runs of this sweep and its summary are kept" in lines[3], r.stderr
    sweep = Path(re.search(r"python -m runner\.upload (\S+)$", lines[3]).group(1))

    with mlflow_server(store, base, port=port):
        done = upload(sweep)
        assert done.returncode == 0, done.stderr
        runs = the_runs(url)
        (parent,) = [run for run in runs if "sweep.token" in run.data.tags]
        assert (parent.info.status, parent.data.tags["sweep.children"], parent.data.tags["sweep.outcome"]) == ("FINISHED", "3", "completed")
        children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert sorted(run.data.params["lr"] for run in children) == lrs
        for run in children:
            assert run.info.status == "FINISHED"
            assert [m.step for m in sorted(client(url).get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)] == list(
                range(0, STEPS + 1, STRIDE))
    assert not list(sweep.rglob("unsent"))


def the_id(line: str) -> str:
    return re.search(r"\(([0-9a-f]{32})\)", line).group(1)
