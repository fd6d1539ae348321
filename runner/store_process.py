"""Run :class:`runner.store.MlflowStore` in a second process, talking to it over a pipe.

Why: on this kind of machine a run's time goes mostly to imports (torch ~2 s, MLflow ~1.5 s), opening
the SQLite store (~0.8 s), the first plot (~0.7 s) and interpreter shutdown, not to the descent. The
main process starts the writer first thing; the writer imports MLflow and matplotlib and opens the
store on the second core while the main process imports torch and Hydra and descends. Metric
batches and artifacts are sent without waiting; calls that return something (``open``,
``start_run``) and ``end_run`` wait for the answer, so a run is complete in the store before the
job returns, and an error of any earlier call is raised there.

Protocol: ``(method, args, kwargs, wants_answer)`` tuples, pickled over a
:class:`multiprocessing.connection.Connection`; answers are ``("ok", value)`` or ``("error", text)``.
The writer exits when the pipe closes (so it never outlives a killed parent).
"""

from __future__ import annotations

import gc
import os
import queue
import subprocess
import sys
import threading
import time
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

# Calls whose answer the caller waits for; every other call is sent and forgotten.
# ``open`` is not among them: the caller goes on (imports torch.optim, say) while the store opens,
# and an error in opening is raised by the next call that waits. ``end_run(..., _wait=False)``
# does not wait either (an in-process sweep: the process's last flush waits for it).
SYNC = {"start_run", "end_run", "call", "flush", "run_function", "get_experiment_id", "resolve"}
IMMEDIATE = {"open"}  # executed on arrival even though nobody waits
BARRIER = {"end_run", "call", "flush", "run_function", "resolve"}  # wait for everything sent before them


class StoreProcess:
    """Client of the writer process; has the methods of :class:`runner.store.MlflowStore`."""

    def __init__(self) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runner.store_process", str(to_child_r), str(from_child_w)],
            pass_fds=(to_child_r, from_child_w),
            stdin=subprocess.DEVNULL,
            cwd=os.getcwd(),
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._send = Connection(to_child_w, readable=False)
        self._recv = Connection(from_child_r, writable=False)
        # Messages go out through a thread: a write blocks while the writer is busy and the pipe is
        # full (64 KB), and a blocked write releases the GIL, so the job goes on meanwhile.
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._broken = False
        self._used = False  # nothing sent yet: closing may simply stop the process
        self._sender = threading.Thread(target=self._send_loop, name="mlflow-writer-pipe", daemon=True)
        self._sender.start()

    def _send_loop(self) -> None:
        while True:
            message = self._outbox.get()
            if message is None:
                break
            try:
                self._send.send(message)
            except (OSError, BrokenPipeError, ValueError):
                self._broken = True
                break
        try:
            self._send.close()
        except OSError:
            pass

    def _request(self, method: str, *args, **kwargs) -> Any:
        from runner.store import StoreError

        self._used = True
        wait = method in SYNC and kwargs.pop("_wait", True)
        if self._broken:
            raise StoreError("tracking: the MLflow writer process stopped unexpectedly")
        self._outbox.put((method, args, kwargs, wait))
        if not wait:
            return None
        try:
            status, value = self._recv.recv()
        except (EOFError, OSError, BrokenPipeError):
            raise StoreError("tracking: the MLflow writer process stopped unexpectedly") from None
        if status == "error":
            raise StoreError(value)
        return value

    def __getattr__(self, method: str):
        if method.startswith("_"):
            raise AttributeError(method)
        return lambda *args, **kwargs: self._request(method, *args, **kwargs)

    def close(self, timeout: float = 60.0) -> None:
        """Finish every queued call, then let the writer exit (at once if it was never used)."""
        if not self._used:
            self.kill()
            return
        self._outbox.put(None)  # the sender thread closes the pipe after the last message
        self._sender.join(timeout)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._recv.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._outbox.put(None)
        self._recv.close()


def serve(read_fd: int, write_fd: int) -> None:
    """The writer's loop: pre-import, then execute calls until the pipe closes.

    Calls that need no answer (metrics, artifacts, an ``end_run`` nobody waits for) go to a backlog,
    done in order whenever no request is waiting: so a sweep's next ``start_run`` is answered at once
    while the previous run's plots are still being drawn. ``open`` runs as soon as it arrives;
    ``end_run``, ``call`` and ``flush`` that wait first finish the backlog and the figures being
    drawn, so what was sent before them is in the store when they answer. Figures are drawn by
    :mod:`runner.plot_pool`: by a forked helper, and here whenever there is nothing else to do.
    Everything is finished before the writer exits.
    """
    import signal
    from multiprocessing.connection import wait

    from runner import plot_pool
    from runner import store as store_module
    from runner.__main__ import GC_THRESHOLD  # (runner/__main__.py imports only os and sys)

    # Ctrl-C in a terminal reaches every process of the group. The main process handles it (the
    # sweep's parent run ends KILLED) and then closes the pipe; the writer must outlive that to
    # finish what it was sent, so it ignores SIGINT (its figure helper inherits this).
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    gc.set_threshold(*GC_THRESHOLD)  # MLflow's imports and SQLAlchemy's objects: see runner.__main__
    inbox = Connection(read_fd, writable=False)
    outbox = Connection(write_fd, readable=False)
    # Keep MLflow's own prints away from anything the parent reads: stdout goes to stderr.
    sys.stdout = sys.stderr
    store_module.preimport()
    # MLflow, SQLAlchemy and matplotlib leave ~1e6 objects behind; every full garbage collection would
    # walk them all again (~0.1 s each, several per run on the dev box). They live as long as we do.
    gc.freeze()
    pool = plot_pool.start(close_in_helper=(inbox, outbox))
    store = store_module.MlflowStore(pool=pool)
    backlog: deque = deque()
    first_error: list[str] = []
    profile = Profile() if os.environ.get("RUNNER_WRITER_PROFILE") else None

    def execute(method: str, args, kwargs) -> tuple[str, Any]:
        started = time.perf_counter()
        try:
            return ("ok", getattr(store, method)(*args, **kwargs))
        except store_module.StoreError as exc:
            return ("error", str(exc))
        except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
            text = str(exc).splitlines()[0] if str(exc) else ""
            return ("error", f"tracking: {method} failed: {type(exc).__name__}: {text}")
        finally:
            if profile is not None:
                profile.add(args[0] if method == "run_function" else method, time.perf_counter() - started)

    def execute_quietly(method: str, args, kwargs) -> None:
        status, value = execute(method, args, kwargs)
        if status == "error" and not first_error:
            first_error.append(value)

    def log_finished_figures() -> None:
        while pool.done:
            execute_quietly("plots_done", pool.done.popleft(), {})

    def drain() -> None:
        while backlog or pool.busy():
            if backlog:
                execute_quietly(*backlog.popleft())
            else:
                drawn = time.perf_counter()
                pool.step()
                if profile is not None:
                    profile.add("figures, before a call that waits", time.perf_counter() - drawn)
            log_finished_figures()

    while True:
        pool.collect_helper()
        log_finished_figures()
        idle_work = bool(backlog or pool.queue)
        if not wait([inbox, *pool.waitables()], timeout=0 if idle_work else None) or not inbox.poll(0):
            if backlog:
                execute_quietly(*backlog.popleft())
            elif pool.queue:
                drawn = time.perf_counter()
                pool.draw_one_here()
                if profile is not None:
                    profile.add("figures drawn here", time.perf_counter() - drawn)
            continue
        try:
            method, args, kwargs, wants_answer = inbox.recv()
        except (EOFError, OSError):
            break
        if not wants_answer:
            if method in IMMEDIATE:
                execute_quietly(method, args, kwargs)
            else:
                backlog.append((method, args, kwargs))
            continue
        if method in BARRIER:
            drain()
        answer = execute(method, args, kwargs)
        if first_error:  # the first failure is the one to report
            answer = ("error", first_error.pop())
        outbox.send(answer)
    drain()
    pool.close()
    if profile is not None:
        profile.report()
    if os.environ.get("RUNNER_WRITER_REPORT"):  # tests: prove the writer stayed free of torch
        sys.stderr.write(f"writer: torch imported: {'torch' in sys.modules}\n")
    sys.stderr.flush()
    os._exit(0)  # skip finalising MLflow's modules: everything has been written


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
