"""``python -m runner`` as a real subprocess that tests send real signals to, and what it left behind.

:class:`Runner` starts the CLI in its own session (so that a test can signal its whole process group,
as a terminal's Ctrl-C or ``timeout`` would), with its output in files, and marks every process it
starts with ``RUNNER_INFRA_TAG`` so that :meth:`Runner.leftovers` finds any that outlived it (the
writer, the guard, joblib's workers, submitit's jobs) wherever they were re-parented. The milestones a
test waits for are things it can observe from outside: the writer process exists, a run is in the
store, the trajectory file has rows, the process is blocked waiting. :class:`Pause` is a Hydra callback
(configured on the command line, Hydra's public extension point) that holds the process at a phase of
Hydra's run so that a signal lands there.
"""

from __future__ import annotations

import glob
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback

from tests.infra._proc import TAG_VAR, descendants, is_alive, kill_tagged, new_tag, pids_tagged, wait_for, wait_gone

REPO = Path(__file__).resolve().parents[2]
WRITER = "runner.tracking.writer_process"


class Runner:
    """One ``python -m runner ARGS`` in ``workdir``."""

    def __init__(self, workdir: Path, *args: str, env: dict | None = None) -> None:
        self.workdir = Path(workdir)
        self.tag = new_tag("runner")
        full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        full_env["PYTHONPATH"] = os.pathsep.join([str(REPO), full_env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        full_env[TAG_VAR] = self.tag
        full_env.update(env or {})
        self.out_path, self.err_path = self.workdir / "runner.out", self.workdir / "runner.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=self.workdir, env=full_env,
                                         stdout=out, stderr=err, start_new_session=True)
        self.pid = self.proc.pid

    # -- signals ------------------------------------------------------------------------------------
    def signal(self, sig: int, group: bool = False) -> None:
        """``sig`` to the main process, or to its whole process group (a terminal's Ctrl-C)."""
        if group:
            os.killpg(self.pid, sig)
        else:
            os.kill(self.pid, sig)

    def wait(self, timeout: float = 300) -> int:
        return self.proc.wait(timeout=timeout)

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    # -- milestones ---------------------------------------------------------------------------------
    def writer_pid(self) -> int | None:
        """The main process's writer process, once started."""
        for pid in descendants(self.pid):
            if WRITER in _cmdline(pid) and _parent(pid) == self.pid:
                return pid
        return None

    def runs(self) -> list[tuple[str, str]]:
        """(name, status) of the runs in ``outputs/mlflow.db`` (read-only, straight from SQLite)."""
        try:
            with sqlite3.connect(f"file:{self.workdir / 'outputs' / 'mlflow.db'}?mode=ro", uri=True, timeout=10) as db:
                return db.execute("select name, status from runs").fetchall()
        except sqlite3.Error:
            return []

    def loss_points(self, name: str) -> int:
        """``loss`` values of the runs named ``name`` in the store."""
        try:
            with sqlite3.connect(f"file:{self.workdir / 'outputs' / 'mlflow.db'}?mode=ro", uri=True, timeout=10) as db:
                return db.execute("select count(*) from metrics m join runs r on m.run_uuid = r.run_uuid "
                                  "where r.name = ? and m.key = 'loss'", (name,)).fetchone()[0]
        except sqlite3.Error:
            return 0

    def trajectory_rows(self, pattern: str = "outputs/*/*/*/trajectory.csv") -> list[int]:
        """Rows (without the header) of each trajectory.csv the run(s) are writing."""
        return [max(0, _lines(Path(p)) - 1) for p in sorted(glob.glob(str(self.workdir / pattern)))]

    def job_started(self) -> bool:
        """Hydra composed the config and the job began (its .hydra/config.yaml is written)."""
        return bool(glob.glob(str(self.workdir / "outputs/hydra/*/*/.hydra/config.yaml")))

    def blocked(self, seconds: float = 1.0) -> bool:
        """The main process sleeps and used no CPU for ``seconds`` (it waits for its writer)."""
        before = _cpu(self.pid)
        time.sleep(seconds)
        return before is not None and _cpu(self.pid) == before and _state(self.pid) == "S"

    def wait_for(self, check, what: str, timeout: float = 240):
        """Wait until ``check()`` is truthy; fail naming ``what`` and the process's stderr if it ends first."""
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"runner exited ({self.proc.returncode}) before {what}:\n{self.stderr[-3000:]}")
            return check()
        return wait_for(ready, timeout, what, interval=0.02)

    # -- afterwards ---------------------------------------------------------------------------------
    def leftovers(self, timeout: float = 90) -> list[str]:
        """Processes started by this run still alive after ``timeout`` s (their command lines)."""
        left = wait_gone(pids_tagged(self.tag), timeout)
        return [f"{pid}: {_cmdline(pid)}" for pid in left if is_alive(pid)]

    def cleanup(self) -> None:
        """Stop whatever is left (a failed test must not leave processes behind)."""
        for pid in pids_tagged(self.tag):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        kill_tagged(self.tag)


class Pause(Callback):
    """Hold Hydra's run at a phase (``run_start``: composed, before the job; ``job_end``: the job
    returned) until a signal comes: write ``marker`` and sleep. Configured with
    ``+hydra.callbacks.pause._target_=tests.infra.runner_proc.Pause +hydra.callbacks.pause.at=...``."""

    def __init__(self, at: str, marker: str, seconds: float = 120.0) -> None:
        self.at, self.marker, self.seconds = at, marker, seconds

    def _hold(self, phase: str) -> None:
        if phase == self.at:
            Path(self.marker).write_text(phase)
            time.sleep(self.seconds)

    def on_run_start(self, config, **kwargs) -> None:
        self._hold("run_start")

    def on_job_end(self, config, job_return, **kwargs) -> None:
        self._hold("job_end")


def pause_args(at: str, marker: Path) -> list[str]:
    return ["+hydra.callbacks.pause._target_=tests.infra.runner_proc.Pause", f"+hydra.callbacks.pause.at={at}",
            f"+hydra.callbacks.pause.marker={marker}"]


def _lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except OSError:
        return 0


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2:].split()


def _cpu(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[11]) + int(fields[12])  # utime + stime


def _state(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return None if fields is None else fields[0]


def _parent(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[1])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
