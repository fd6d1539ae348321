"""Run :class:`runner.tracking.store.MlflowStore` in a second process, talking to it over a pipe.

Why: on this kind of machine a run's time goes mostly to imports (torch ~2 s, MLflow ~1.5 s), opening
the SQLite store (~0.8 s), the first plot (~0.7 s) and interpreter shutdown, not to the descent. The
main process starts the writer first thing; the writer imports MLflow and matplotlib and opens the
store on the second core while the main process imports torch and Hydra and descends. Metric
batches and artifacts are sent without waiting; calls that return something (``open``,
``start_run``) and ``end_run`` wait for the answer, so a run is complete in the store before the
job returns, and an error of any earlier call is raised there.

Protocol: ``(method, args, kwargs, wants_answer)`` tuples, pickled over a
:class:`multiprocessing.connection.Connection`; answers are ``("ok", value)`` or ``("error", text)``,
in the order of the calls. The last message of a process that ends properly is ``close``. The writer
exits when the pipe closes (so it never outlives a killed parent); if it closes without ``close``
(the process was killed), the writer first ends the runs it started and nobody ended, FAILED.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from collections import deque
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any, Iterator

from runner import interrupts
from runner.processes import child_env

# Calls whose answer the caller waits for; every other call is sent and forgotten.
# ``open`` is not among them: the caller goes on (imports torch.optim, say) while the store opens,
# and an error in opening is raised by the next call that waits. ``end_run(..., _wait=False)``
# does not wait either (an in-process sweep: the process's last flush waits for it).
SYNC = {"start_run", "end_run", "call", "flush", "run_function", "get_experiment_id", "resolve", "find_finished", "done_keys",
        "end_open_runs", "children_written", "unsent_runs", "server_gone", "keep_sweep_end"}
IMMEDIATE = {"open", "cancel_children"}  # executed on arrival even though nobody waits
BARRIER = {"end_run", "call", "flush", "run_function", "resolve", "end_open_runs", "unsent_runs", "server_gone", "keep_sweep_end"}  # wait for everything sent before them


class _Slot:
    """Where the answer to one waiting call arrives (filled by the receiving thread)."""

    __slots__ = ("event", "answer")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.answer: tuple[str, Any] = ("error", STOPPED)


STOPPED = "tracking: the MLflow writer process stopped unexpectedly"
CLOSE = "close"  # the last message of a main process that ends properly (see writer_process)
# Launchers that run a sweep's jobs in this process (Hydra's basic and the runner's cached and batched).
IN_PROCESS_LAUNCHERS = ("BasicLauncher", "BatchedLauncher")


class StoreProcess:
    """Client of the writer process; has the methods of :class:`runner.tracking.store.MlflowStore`.

    Two threads own the pipe: one sends, one receives. The main thread only queues a call and, if it
    waits, waits for its answer on an event, so a signal (:mod:`runner.interrupts`) can stop the wait
    at any moment without cutting a message in half or leaving an answer to be read by the wrong
    call."""

    def __init__(self) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        with interrupts.blocked_for_children():  # it ignores them once it runs (writer_process)
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "runner.tracking.writer_process", str(to_child_r), str(from_child_w)],
                pass_fds=(to_child_r, from_child_w),
                stdin=subprocess.DEVNULL,
                cwd=os.getcwd(),
                env=child_env(),
            )
        os.close(to_child_r)
        os.close(from_child_w)
        self._send = Connection(to_child_w, readable=False)
        self._recv = Connection(from_child_r, writable=False)
        # Messages go out through a thread: a write blocks while the writer is busy and the pipe is
        # full (64 KB), and a blocked write releases the GIL, so the job goes on meanwhile.
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._waiting: deque[_Slot] = deque()  # slots of the calls sent, in order, not yet answered
        self._broken = False
        self._used = False  # nothing sent yet: closing may simply stop the process
        self.runs_started = 0  # start_run calls sent
        self._sender = threading.Thread(target=self._send_loop, name="mlflow-writer-pipe", daemon=True)
        self._receiver = threading.Thread(target=self._receive_loop, name="mlflow-writer-answers", daemon=True)
        self._sender.start()
        self._receiver.start()

    def _send_loop(self) -> None:
        while True:
            item = self._outbox.get()
            if item is None:
                break
            message, slot = item
            if slot is not None:
                self._waiting.append(slot)  # before sending: the answer may come at once
            try:
                self._send.send(message)
            except (OSError, BrokenPipeError, ValueError):
                self._broken = True
                self._fail_waiting()
                break
        try:
            self._send.close()
        except OSError:
            pass

    def _receive_loop(self) -> None:
        while True:
            try:
                answer = self._recv.recv()
            except (EOFError, OSError):
                break
            if self._waiting:
                slot = self._waiting.popleft()
                slot.answer = answer
                slot.event.set()
        self._broken = True
        self._fail_waiting()

    def _fail_waiting(self) -> None:
        while self._waiting:
            self._waiting.popleft().event.set()  # its answer stays ("error", STOPPED)

    def _request(self, method: str, *args, **kwargs) -> Any:
        from runner.tracking.store import StoreError, StoreFault

        self._used = True
        wait = method in SYNC and kwargs.pop("_wait", True)
        if self._broken:
            raise StoreError(STOPPED)
        if method == "start_run":
            self.runs_started += 1
        slot = _Slot() if wait else None
        self._outbox.put(((method, args, kwargs, wait), slot))
        if slot is None:
            return None
        slot.event.wait()  # a signal raises here; the answer then arrives to nobody
        status, value = slot.answer
        if status == "fault":
            raise StoreFault(value)
        if status == "error":
            raise StoreError(value)
        return value

    def __getattr__(self, method: str):
        if method.startswith("_"):
            raise AttributeError(method)
        return lambda *args, **kwargs: self._request(method, *args, **kwargs)

    def close(self, timeout: float = 60.0) -> None:
        """Finish every queued call, then let the writer exit (at once if it was never used). The
        last message says that this process ends properly: a writer whose pipe closes without it
        ends the runs it started as FAILED (see :mod:`runner.tracking.writer_process`)."""
        if not self._used:
            self.kill()
            return
        self._outbox.put(((CLOSE, (), {}, False), None))
        self._outbox.put(None)  # the sender thread closes the pipe after the last message
        self._sender.join(timeout)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._receiver.join(5)
        self._recv.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._outbox.put(None)
        self._receiver.join(5)
        self._recv.close()


# -- this process's writer -----------------------------------------------------------------------
_WRITER = None  # the process-wide store writer (StoreProcess or MlflowStore)


def start_writer() -> None:
    """Start the writer process now, so that it imports MLflow while this process imports torch."""
    global _WRITER
    if _WRITER is None:
        _WRITER = StoreProcess()


def writer():
    """The process-wide writer, started on first use."""
    start_writer()
    return _WRITER


def current():
    """The process-wide writer if it was started, else None."""
    return _WRITER


_HANDLES = iter(range(1, 1 << 62))


def new_handle() -> str:
    """A name for a run whose MLflow id this process does not wait for (see ``MlflowStore.run_id``)."""
    return f"pending-run-{next(_HANDLES)}"


def is_handle(run_id: str) -> bool:
    return run_id.startswith("pending-run-")


def in_process_sweep() -> bool:
    """Whether this job is one of a multirun whose jobs all run in this process (the basic
    launcher): its runs may then be finished in the background, the sweep's end flushes them."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except Exception:
        return False
    return hc.mode == RunMode.MULTIRUN and str(hc.launcher.get("_target_", "")).endswith(IN_PROCESS_LAUNCHERS)


def close_writer() -> None:
    """Wait for the writer to finish everything queued, then stop it."""
    global _WRITER
    if _WRITER is not None:
        _WRITER.close()
        _WRITER = None


@contextmanager
def using(store) -> Iterator[None]:
    """Make ``store`` this process's writer for the duration (the Python API runs an in-process
    :class:`~runner.tracking.store.MlflowStore` instead of a writer process); the previous one after."""
    global _WRITER
    previous, _WRITER = _WRITER, store
    try:
        yield
    finally:
        _WRITER = previous
