"""The writer process: runs :class:`runner.tracking.store.MlflowStore` on calls sent over a pipe.

Started by :class:`runner.tracking.writer.StoreProcess` as ``python -m runner.tracking.writer_process
READ_FD WRITE_FD``. It imports MLflow and matplotlib (never torch, never the descent code), opens the
store, and executes calls until the pipe closes; see :func:`serve` for the order in which it does so.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from collections import deque
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any

from runner.processes import GC_THRESHOLD
from runner.tracking.writer import BARRIER, CLOSE, IMMEDIATE


def serve(read_fd: int, write_fd: int) -> None:
    """The writer's life: pre-import, then execute calls until the pipe closes, then exit."""
    from runner import interrupts
    from runner.tracking import plot_pool
    from runner.tracking import store as store_module

    # Ctrl-C in a terminal reaches every process of the group, and so do `timeout`'s or SLURM's
    # SIGTERM and a hang-up. The main process handles them (its run ends KILLED) and then closes
    # the pipe; the writer must outlive that to finish what it was sent, so it ignores them (they
    # were blocked since it was started; its figure helper inherits this). It exits when the pipe
    # closes.
    interrupts.ignore_in_helper()
    gc.set_threshold(*GC_THRESHOLD)  # MLflow's imports and SQLAlchemy's objects
    inbox = Connection(read_fd, writable=False)
    outbox = Connection(write_fd, readable=False)
    # Keep MLflow's own prints away from anything the parent reads: stdout goes to stderr.
    sys.stdout = sys.stderr
    store_module.preimport()
    # MLflow, SQLAlchemy and matplotlib leave ~1e6 objects behind; every full garbage collection would
    # walk them all again (~0.1 s each, several per run on the dev box). They live as long as we do.
    gc.freeze()
    pool = plot_pool.start(close_in_helper=(inbox, outbox))
    loop = WriterLoop(inbox, outbox, store_module.MlflowStore(pool=pool), pool)
    loop.run()
    if not loop.closed:
        loop.end_orphaned_runs()
    if os.environ.get("RUNNER_WRITER_REPORT"):  # tests: prove the writer stayed free of torch
        descent = any(name.startswith("runner.descent") for name in sys.modules)
        sys.stderr.write(f"writer: torch imported: {'torch' in sys.modules}; descent imported: {descent}\n")
    sys.stderr.flush()
    os._exit(0)  # skip finalising MLflow's modules: everything has been written


def reports_earlier_errors(method: str, args: tuple) -> bool:
    """Whether the answer to this call carries the first error of the calls nobody waited for.

    Not the end of a run that fails anyway (FAILED, KILLED: its answer says whether that end was
    written; the earlier failure is on the run as ``record_error``), nor :meth:`end_open_runs`."""
    if method == "end_open_runs":
        return False
    return not (method == "end_run" and len(args) > 1 and args[1] != "FINISHED")


class WriterLoop:
    """Executes the calls that arrive on ``inbox`` on ``store``, answering on ``outbox``.

    Calls that need no answer (metrics, artifacts, an ``end_run`` nobody waits for) go to a backlog,
    done in order whenever no request is waiting: so a sweep's next ``start_run`` is answered at once
    while the previous run's plots are still being drawn. ``open`` runs as soon as it arrives;
    ``end_run``, ``call`` and ``flush`` that wait first finish the backlog and the figures being
    drawn, so what was sent before them is in the store when they answer. Figures are drawn by
    :mod:`runner.tracking.plot_pool`: by a forked helper, and here whenever there is nothing else to do.
    Everything is finished before the loop returns.
    """

    def __init__(self, inbox: Connection, outbox: Connection, store: Any, pool: Any) -> None:
        self.inbox, self.outbox, self.store, self.pool = inbox, outbox, store, pool
        self.backlog: deque = deque()
        self.first_error: list[tuple[str, str]] = []  # ("error" or "fault", line)
        self.closed = False  # the main process said it ends properly (CLOSE)
        self.parent_pid = os.getppid()
        self.profile = Profile() if os.environ.get("RUNNER_WRITER_PROFILE") else None

    def run(self) -> None:
        """Serve until the pipe closes; then finish the backlog and the figures."""
        while True:
            self.pool.collect_helper()
            self.log_finished_figures()
            if not self.message_waiting():
                self.idle_step()
                continue
            try:
                message = self.inbox.recv()
            except (EOFError, OSError):
                break
            self.handle(*message)
        self.drain()
        self.pool.close()
        if self.profile is not None:
            self.profile.report()

    def message_waiting(self) -> bool:
        """Block until a message or a figure arrives, unless there is work to do meanwhile."""
        from multiprocessing.connection import wait

        idle_work = bool(self.backlog or self.pool.queue)
        ready = wait([self.inbox, *self.pool.waitables()], timeout=0 if idle_work else None)
        return bool(ready) and self.inbox.poll(0)

    def idle_step(self) -> None:
        """One piece of background work: a backlog call, else a queued figure drawn here."""
        if self.backlog:
            self.execute_quietly(*self.backlog.popleft())
        elif self.pool.queue:
            with self.timed("figures drawn here"):
                self.pool.draw_one_here()

    def handle(self, method: str, args: tuple, kwargs: dict, wants_answer: bool) -> None:
        if method == CLOSE:
            self.closed = True
            return
        if not wants_answer:
            if method in IMMEDIATE:
                self.execute_quietly(method, args, kwargs)
            else:
                self.backlog.append((method, args, kwargs))
            return
        if method in BARRIER:
            self.drain()
        answer = self.execute(method, args, kwargs)
        if self.first_error and reports_earlier_errors(method, args):  # the first failure is the one to report
            answer = self.first_error.pop()
        self.outbox.send(answer)

    def execute(self, method: str, args: tuple, kwargs: dict) -> tuple[str, Any]:
        """``("ok", result)``, or ``("error", one line)`` (``"fault"`` for a fault of the disk); a
        failure writing a run's record marks the run (it will not end FINISHED)."""
        from runner.tracking.store import error_line, is_fault

        with self.timed(args[0] if method == "run_function" else method):
            try:
                return ("ok", getattr(self.store, method)(*args, **kwargs))
            except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
                line = error_line(method, exc, getattr(self.store, "uri", ""))
                self.store.note_failure(method, args, line)
                return ("fault" if is_fault(exc) else "error", line)

    def end_orphaned_runs(self) -> None:
        """The pipe closed without CLOSE: the main process died (SIGKILL, a crash of the
        interpreter). What it sent is in the store; the runs it had not ended end FAILED, with the
        files they were writing (their complete lines), and a line says so."""
        tags = {"outcome": "failed", "error": f"the main process (pid {self.parent_pid}) died before ending the run"}
        for run in self.store.end_open_runs("FAILED", tags):
            step = f"at step {run['last_step']}" if run["last_step"] >= 0 else "before its first step"
            fault = f"; {run['error']}" if run["error"] else ""
            where = f" in {run['unsent']}, for the upload above" if run.get("unsent") else ""
            kept = "kept" if run.get("unsent") else "recorded"
            sys.stderr.write(f"writer: the main process died; run {run['name']} {kept} as FAILED {step}{where}{fault}\n")

    def execute_quietly(self, method: str, args: tuple, kwargs: dict) -> None:
        """Execute a call nobody waits for; its error, if the first, goes to the next answer."""
        status, value = self.execute(method, args, kwargs)
        if status != "ok" and not self.first_error:
            self.first_error.append((status, value))

    def log_finished_figures(self) -> None:
        while self.pool.done:
            self.execute_quietly("plots_done", self.pool.done.popleft(), {})

    def drain(self) -> None:
        """Finish the backlog and every figure in flight."""
        while self.backlog or self.pool.busy():
            if self.backlog:
                self.execute_quietly(*self.backlog.popleft())
            else:
                with self.timed("figures, before a call that waits"):
                    self.pool.step()
            self.log_finished_figures()

    @contextmanager
    def timed(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            if self.profile is not None:
                self.profile.add(name, time.perf_counter() - started)


class Profile:
    """``RUNNER_WRITER_PROFILE=1``: where the writer's time went, printed to stderr when it exits
    (calls, seconds per method), and how long it lived after its imports."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.calls: dict[str, list] = {}

    def add(self, name: str, seconds: float) -> None:
        entry = self.calls.setdefault(name, [0, 0.0])
        entry[0] += 1
        entry[1] += seconds

    def report(self) -> None:
        busy = sum(seconds for _, seconds in self.calls.values())
        import resource

        cpu = resource.getrusage(resource.RUSAGE_SELF)
        helper = resource.getrusage(resource.RUSAGE_CHILDREN)
        lines = [
            f"writer: {time.perf_counter() - self.started:.2f} s after its imports, {busy:.2f} s of it busy; "
            f"CPU {cpu.ru_utime + cpu.ru_stime:.2f} s (figure helper {helper.ru_utime + helper.ru_stime:.2f} s)"
        ]
        for name, (count, seconds) in sorted(self.calls.items(), key=lambda item: -item[1][1]):
            lines.append(f"  {name}: {count} calls, {seconds:.3f} s")
        sys.stderr.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
