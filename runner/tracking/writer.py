"""Run :class:`runner.tracking.store.MlflowStore` in a second process, talking to it over a pipe.

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

import os
import queue
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

from runner.processes import child_env

# Calls whose answer the caller waits for; every other call is sent and forgotten.
# ``open`` is not among them: the caller goes on (imports torch.optim, say) while the store opens,
# and an error in opening is raised by the next call that waits. ``end_run(..., _wait=False)``
# does not wait either (an in-process sweep: the process's last flush waits for it).
SYNC = {"start_run", "end_run", "call", "flush", "run_function", "get_experiment_id", "resolve", "children_written"}
IMMEDIATE = {"open", "cancel_children"}  # executed on arrival even though nobody waits
BARRIER = {"end_run", "call", "flush", "run_function", "resolve"}  # wait for everything sent before them
# Launchers that run a sweep's jobs in this process (Hydra's basic and the runner's cached and batched).
IN_PROCESS_LAUNCHERS = ("BasicLauncher", "BatchedLauncher")


class StoreProcess:
    """Client of the writer process; has the methods of :class:`runner.tracking.store.MlflowStore`."""

    def __init__(self) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
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
        from runner.tracking.store import StoreError

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
