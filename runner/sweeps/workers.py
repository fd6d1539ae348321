"""The processes a sweep's launcher runs its jobs in, and how they stop with the sweep.

joblib's launcher runs jobs in loky worker processes (``joblib.externals.loky.backend.popen_loky_posix``),
submitit's local launcher in a controller process per job (``submitit.local._local``) that runs the
job in a task process; both are children of the sweep's process. When the sweep gets SIGINT or
SIGTERM, joblib kills its workers with SIGKILL as the exception passes through it, which would leave
their runs RUNNING. So the sweep first sends them SIGTERM (:func:`forward`, an
:func:`runner.interrupts.on_interrupt` hook): each job ends its run KILLED and its process exits
(a submitit controller passes SIGTERM on to its task and exits with it); the sweep waits for that,
a few seconds, and :func:`kill_leftovers` kills whatever is left before the sweep's process exits. Linux only (``/proc``); elsewhere nothing is found and nothing is done.
"""

from __future__ import annotations

import os
import signal
import time

from runner.interrupts import pid_alive

MARKERS = ("joblib.externals.loky.backend.popen_loky_posix", "submitit.local._local")


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux's ``/proc/PID/task/*/children``)."""
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as listing:
                found += [int(p) for p in listing.read().split()]
        except OSError:
            continue
    return found


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as text:
            return text.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def job_processes(pid: int | None = None) -> list[int]:
    """The live children of ``pid`` (default: this process) that run a launcher's jobs."""
    return [c for c in children(pid or os.getpid()) if pid_alive(c) and any(m in cmdline(c) for m in MARKERS)]


def descendants(pid: int, skip: str | None = None) -> list[int]:
    """Every process below ``pid``, leaving out those whose command line contains ``skip`` and
    everything below them."""
    out, todo = [], [pid]
    while todo:
        for child in children(todo.pop()):
            if skip is None or skip not in cmdline(child):
                out.append(child)
                todo.append(child)
    return out


def forward(signum: int, timeout: float = 20.0) -> None:
    """SIGTERM to every job process; wait (at most ``timeout`` s) until they have exited."""
    procs = job_processes()
    for pid in procs:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.05)


WRITER = "runner.tracking.writer_process"


def kill_leftovers() -> None:
    """SIGKILL every job process still alive, and its descendants but the jobs' writers: a writer
    whose process is killed ends the run it had open FAILED, then exits."""
    for pid in job_processes():
        for each in [pid, *descendants(pid, skip=WRITER)]:
            try:
                os.kill(each, signal.SIGKILL)
            except ProcessLookupError:
                pass
