"""Real signals to real ``python -m runner`` processes, at each phase of a run and of a sweep.

SIGTERM goes to the main process (``kill``, a container's stop), SIGINT to the whole process group (a
terminal's Ctrl-C), SIGKILL to the main process or its group. What is checked, read back through
MlflowClient and the files: the exit status (130, 143), exactly one line on stderr and no traceback,
the run's status and tags, that its metrics, ``final_step`` and ``trajectory.csv`` end at the same
step k named by the line, that every recorded loss is f(x) at the recorded x, that nothing stays
RUNNING, and that no process the command started outlives it.

Phases of one run: ``writer`` (the writer process was just started), ``compose`` (Hydra composed the
config; a :class:`~tests.infra.runner_proc.Pause` callback holds the run there), ``job`` (the job
began: importing torch, building the problem), ``created`` (waiting for the run to be created: the
writer is stopped with SIGSTOP so that the main process waits on it), ``descent``, ``artifacts``
(the descent is over, the run's end and artifacts are being written: the writer is stopped again),
``ended`` (the run ended; a Pause callback holds the process after the job).
"""

from __future__ import annotations

import csv
import signal
from pathlib import Path

import pytest

from tests.infra.runner_proc import Runner, pause_args
from tests.sweep_helpers import client_for, loss_history, make_workdir, sweep_runs, wait_until_ended

pytestmark = pytest.mark.slow

F_ARGS = ["objective=f", "lr=0.01", "progress=false"]
NAME = "f-manual-lr0.01"
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


def f(x: float) -> float:
    """The objective f = 3x² + 2x − 1, evaluated independently of the runner."""
    return 3.0 * x * x + 2.0 * x - 1.0


@pytest.fixture
def runner_in(tmp_path, empty_store):
    """Start runners in a workdir with a migrated store; stop whatever a failed test left."""
    started: list[Runner] = []

    def start(*args: str) -> Runner:
        started.append(Runner(make_workdir(tmp_path, empty_store), *args))
        return started[-1]

    yield start
    for r in started:
        r.cleanup()


def stop_writer(r: Runner) -> int:
    pid = r.wait_for(r.writer_pid, "the writer process")
    __import__("os").kill(pid, signal.SIGSTOP)
    return pid


def reach(phase: str, r: Runner, marker: Path):
    """Wait until the run is at ``phase``; a function to call once the signal is sent."""
    cont = lambda: None  # noqa: E731
    if phase == "writer":
        r.wait_for(r.writer_pid, "the writer process")
    elif phase in ("compose", "ended"):
        r.wait_for(marker.exists, f"Hydra's {phase} pause")
    elif phase == "job":
        r.wait_for(r.job_started, "the job's .hydra folder")
    elif phase == "created":
        writer = stop_writer(r)
        r.wait_for(lambda: r.job_started() and r.blocked(), "the main process waiting for its run")
        cont = lambda: __import__("os").kill(writer, signal.SIGCONT)  # noqa: E731
    elif phase == "descent":
        r.wait_for(lambda: r.trajectory_rows("outputs/hydra/*/*/trajectory.csv") and
                   r.trajectory_rows("outputs/hydra/*/*/trajectory.csv")[0] >= 3000 and r.runs(), "3000 steps")
    elif phase == "artifacts":
        r.wait_for(lambda: r.trajectory_rows("outputs/hydra/*/*/trajectory.csv"), "the first steps")
        writer = stop_writer(r)
        r.wait_for(lambda: r.trajectory_rows("outputs/hydra/*/*/trajectory.csv")[0] == 1001 and r.blocked(),
                   "the end of the descent, waiting for the writer")
        cont = lambda: __import__("os").kill(writer, signal.SIGCONT)  # noqa: E731
    return cont


def run_args(phase: str, marker: Path) -> list[str]:
    steps = "steps=1000" if phase in ("artifacts", "ended") else "steps=3000000"
    pause = pause_args({"compose": "run_start", "ended": "job_end"}[phase], marker) if phase in ("compose", "ended") else []
    return [*F_ARGS, steps, *pause]


def read_table(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as table:
        return list(csv.DictReader(table))


def check_record(client, run, k: int) -> None:
    """The run's metrics, final_step and trajectory.csv end at step k; every loss is f(x)."""
    assert run.data.tags["final_step"] == str(k)
    history = sorted(client.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)
    assert history[-1].step == k
    rows = read_table(client.download_artifacts(run.info.run_id, "trajectory.csv"))
    assert [int(row["step"]) for row in rows] == list(range(k + 1))
    for row in rows[:: max(1, len(rows) // 500)] + rows[-1:]:
        assert float(row["loss"]) == pytest.approx(f(float(row["x/x"])), rel=1e-12, abs=1e-15)
    by_step = {int(row["step"]): float(row["loss"]) for row in rows}
    assert all(m.value == by_step[m.step] for m in history)


CASES = [(phase, signal.SIGTERM) for phase in ("writer", "compose", "job", "created", "descent", "artifacts", "ended")]
CASES += [(phase, signal.SIGINT) for phase in ("writer", "created", "descent", "artifacts")]


@pytest.mark.parametrize("phase,sig", CASES, ids=[f"{p}-{s.name}" for p, s in CASES])
def test_a_signal_at_each_phase_ends_the_run_with_its_record(runner_in, tmp_path, phase, sig):
    marker = tmp_path / "paused"
    r = runner_in(*run_args(phase, marker))
    resume = reach(phase, r, marker)
    r.signal(sig, group=sig == signal.SIGINT)
    resume()
    assert r.wait() == EXIT[sig], r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.leftovers() == []
    client = client_for(r.workdir)
    exp = client.get_experiment_by_name("runner")
    runs = client.search_runs([exp.experiment_id]) if exp is not None else []
    if phase in ("writer", "compose", "job"):
        assert lines == ["interrupted: no run was recorded"]
        assert runs == []
        return
    (run,) = runs
    assert run.info.run_name == NAME
    if phase == "ended":
        assert lines == [f"interrupted: run {NAME} recorded as FINISHED at step 1000"]
        assert (run.info.status, run.data.tags["outcome"]) == ("FINISHED", "max_steps")
        check_record(client, run, 1000)
        return
    assert (run.info.status, run.data.tags["outcome"], run.data.tags["signal"]) == ("KILLED", "interrupted", sig.name)
    if phase == "created":
        assert lines == [f"interrupted: run {NAME} recorded as KILLED before its first step"]
        assert "final_step" not in run.data.tags and loss_history(client, run.info.run_id) == []
        return
    k = int(run.data.tags["final_step"])
    assert lines == [f"interrupted: run {NAME} recorded as KILLED at step {k}"]
    check_record(client, run, k)
    if phase == "artifacts":
        assert k == 1000
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"config.yaml", "trajectory.csv", "plots"}
    else:
        assert k >= 3000


def test_sigkill_of_the_main_process_the_writer_ends_the_run_failed(runner_in):
    r = runner_in(*F_ARGS, "steps=3000000")
    r.wait_for(lambda: r.trajectory_rows("outputs/hydra/*/*/trajectory.csv") and
               r.trajectory_rows("outputs/hydra/*/*/trajectory.csv")[0] >= 5000 and r.runs(), "5000 steps")
    r.signal(signal.SIGKILL)
    assert r.wait() == -signal.SIGKILL
    assert r.leftovers() == []  # the writer ended the run, then exited
    client = client_for(r.workdir)
    (run,) = client.search_runs([client.get_experiment_by_name("runner").experiment_id])
    assert (run.info.status, run.data.tags["outcome"]) == ("FAILED", "failed")
    assert "main process" in run.data.tags["error"] and "died" in run.data.tags["error"]
    k = int(run.data.tags["final_step"])
    assert k >= 5000
    rows = read_table(client.download_artifacts(run.info.run_id, "trajectory.csv"))  # its whole rows
    assert [int(row["step"]) for row in rows] == list(range(k + 1))
    assert float(rows[-1]["loss"]) == pytest.approx(f(float(rows[-1]["x/x"])), rel=1e-12)
    for m in client.get_metric_history(run.info.run_id, "loss"):  # what reached the writer
        assert m.value == float(rows[m.step]["loss"])
    assert f"writer: the main process died; run {NAME} recorded as FAILED at step {k}" in r.stderr


# -- sweeps ---------------------------------------------------------------------------------------------
SWEEP_CSV = "outputs/multirun/*/*/*/trajectory.csv"


def running_rows(r: Runner, jobs: int, rows: int):
    """All ``jobs`` children exist and each long one has written ``rows`` steps."""
    found = r.runs()
    if len(found) < jobs + 1:
        return False
    long = [n for n in r.trajectory_rows(SWEEP_CSV) if n != 51]
    return len(long) >= jobs - 1 and all(n >= rows for n in long)


def children_by_steps(client):
    parent, children = sweep_runs(client)
    return parent, {c.data.params["steps"]: c for c in children}


def check_interrupted_sweep(r: Runner, sig, killed_jobs: int, finished: bool = True) -> None:
    assert r.wait() == EXIT[sig], r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert r.leftovers() == []  # the guard ended the parent and exited; no worker is left
    client = client_for(r.workdir)
    parent, children = sweep_runs(client)
    parent = wait_until_ended(client, parent.info.run_id)
    assert (parent.info.status, parent.data.tags["sweep.outcome"]) == ("KILLED", "interrupted")
    assert r.stderr.splitlines()[0].startswith("interrupted: ")
    statuses = sorted((c.data.params["steps"], c.info.status, c.data.tags.get("outcome")) for c in children)
    expected = [("3000000", "KILLED", "interrupted")] * killed_jobs
    if finished:
        expected = [("50", "FINISHED", "max_steps")] + expected
    assert statuses == sorted(expected)
    for c in children:
        if c.info.status == "KILLED":
            check_record(client, c, int(c.data.tags["final_step"]))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT-group"])
def test_basic_sweep_interrupted(runner_in, sig):
    r = runner_in("-m", *F_ARGS, "steps=50,3000000", "hydra/launcher=cached")  # job by job
    r.wait_for(lambda: running_rows(r, 2, 1000), "the second job's first 1000 steps")
    r.signal(sig, group=sig == signal.SIGINT)
    check_interrupted_sweep(r, sig, killed_jobs=1)
    line = r.stderr.splitlines()[0]
    assert line.startswith(f"interrupted: run {NAME}-steps3000000 recorded as KILLED at step ")
    assert line.endswith("; the sweep's guard ends its parent run KILLED")


@pytest.mark.parametrize("group", [False, True], ids=["main", "group"])
def test_basic_sweep_killed(runner_in, group):
    """SIGKILL of the sweep's process (``group``: and of its writer): the running child ends FAILED
    (by the writer, or by the guard when the writer died too), the parent FAILED. Killed with its
    writer, the sweep loses what the writer had not yet written: the test waits until the first
    child's end and the second's first metrics are in the store."""
    r = runner_in("-m", *F_ARGS, "steps=50,3000000", "hydra/launcher=cached")  # job by job
    r.wait_for(lambda: running_rows(r, 2, 1000) and (f"{NAME}-steps50", "FINISHED") in r.runs()
               and r.loss_points(f"{NAME}-steps3000000"), "the first child's end, the second's first metrics")
    r.signal(signal.SIGKILL, group=group)
    r.wait()
    assert r.leftovers() == []
    client = client_for(r.workdir)
    parent, children = children_by_steps(client)
    parent = wait_until_ended(client, parent.info.run_id)
    assert (parent.info.status, parent.data.tags["sweep.outcome"]) == ("FAILED", "failed_jobs")
    assert children["50"].info.status == "FINISHED"
    killed = client.get_run(children["3000000"].info.run_id)
    assert (killed.info.status, killed.data.tags["outcome"]) == ("FAILED", "failed")
    assert ("guard" if group else "main process") in killed.data.tags["error"]


def test_joblib_sweep_sigterm_ends_running_jobs_killed_and_no_worker_outlives_it(runner_in):
    r = runner_in("-m", "hydra/launcher=joblib", *F_ARGS, "steps=50,3000000,3000000")
    r.wait_for(lambda: running_rows(r, 3, 1000), "both long jobs' first 1000 steps")
    r.signal(signal.SIGTERM)
    check_interrupted_sweep(r, signal.SIGTERM, killed_jobs=2)


def test_submitit_sweep_sigterm_ends_running_jobs_killed(runner_in):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    r = runner_in("-m", "hydra/launcher=submitit_local", *F_ARGS, "steps=50,3000000")
    r.wait_for(lambda: running_rows(r, 2, 1000) and ("f-manual-lr0.01-steps50", "FINISHED") in r.runs(),
               "the short job's end and the long job's first 1000 steps")
    r.signal(signal.SIGTERM)
    check_interrupted_sweep(r, signal.SIGTERM, killed_jobs=1)
