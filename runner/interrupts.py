"""SIGINT and SIGTERM: the exception a run ends on, in every process that runs jobs.

A terminal's Ctrl-C sends SIGINT; a scheduler (SLURM's ``scancel``), ``timeout``, ``kill`` and a
container's stop send SIGTERM; a closed terminal SIGHUP. Each becomes :class:`Interrupted` (a
``KeyboardInterrupt``, so ``except Exception`` passes it by), raised in the main thread wherever it
is: the job that catches it ends its run KILLED with what it recorded, and the process exits
``128 + signal`` (130, 143, 129). A SIGHUP that is ignored (``nohup``) stays ignored.

- Only the first signal raises. Later ones, while the process is ending its run, are noted and
  ignored: a second Ctrl-C must not cut the record short (ending takes a few seconds at most).
- :func:`deferred` holds the exception back across a few lines that must not be cut in half (a row
  of ``trajectory.csv``); it is raised when the block ends.
- :func:`on_interrupt` hooks run in the handler before the exception is raised: a sweep tells its
  guard, and forwards the signal to the worker processes running its jobs so that their runs end
  KILLED too, before the launcher kills them.
- Once the process is ending (:func:`hold`), a signal is only noted.
- In a launcher's worker, a signal that arrives between jobs (:func:`job` marks one) ends the
  process at once: there is no run to end.

Only the standard library: every process imports this before anything heavy.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # SIGHUP: the terminal closed (unless nohup)


class Interrupted(KeyboardInterrupt):
    """A SIGINT or SIGTERM arrived; ``exit_status`` is the shell's ``128 + signal number``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class _State:
    installed_by: str | None = None  # "main" (python -m runner) or "worker" (a launcher's process)
    received: int | None = None  # the first signal
    depth = 0  # nesting of deferred() blocks
    pending = False  # a signal arrived inside deferred(): raise when the block ends
    holding = False  # the process is ending: signals are noted, not raised
    jobs = 0  # jobs running in this (worker) process
    hooks: list[Callable[[int], None]] = []


def install(main: bool = False) -> None:
    """Turn SIGINT and SIGTERM into :class:`Interrupted` in this process (main thread only; once).

    ``main``: this is ``python -m runner``'s own process; otherwise a process a launcher started to
    run jobs (a joblib worker, a submitit task), which exits once its run is ended."""
    if _State.installed_by is not None or threading.current_thread() is not threading.main_thread():
        return
    for signum in SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _handler)
    _State.installed_by = "main" if main else "worker"


def in_worker() -> bool:
    """Whether this process runs jobs for a launcher (not ``python -m runner`` itself)."""
    return _State.installed_by == "worker"


def received() -> int | None:
    """The first SIGINT or SIGTERM this process received, if any."""
    return _State.received


def on_interrupt(hook: Callable[[int], None]) -> Callable[[], None]:
    """Call ``hook(signum)`` when the first signal arrives (before the exception is raised); the
    function that removes it."""
    _State.hooks.append(hook)
    return lambda: _State.hooks.remove(hook) if hook in _State.hooks else None


def hold() -> None:
    """From now on a signal is noted (:func:`received`) and not raised: the process is ending."""
    _State.holding = True


@contextmanager
def job():
    """A job runs in this process (a worker between jobs exits on a signal)."""
    _State.jobs += 1
    try:
        yield
    finally:
        _State.jobs -= 1


@contextmanager
def deferred():
    """A block a signal does not cut: an :class:`Interrupted` arriving inside is raised at its end."""
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
        if _State.depth == 0 and _State.pending:
            _State.pending = False
            raise Interrupted(_State.received)


def _handler(signum: int, frame) -> None:
    if _State.received is not None:
        return  # already ending: let that finish
    _State.received = signum
    for hook in list(_State.hooks):
        try:
            hook(signum)
        except Exception as exc:  # noqa: BLE001 - a hook must not stop the run from ending
            print(f"warning: while stopping on {signal.Signals(signum).name}: {type(exc).__name__}: {exc}", file=sys.stderr)
    if _State.holding:
        return
    if _State.installed_by == "worker" and not _State.jobs:
        sys.stderr.flush()
        os._exit(128 + signum)
    if _State.depth:
        _State.pending = True
        return
    raise Interrupted(signum)


@contextmanager
def blocked_for_children():
    """Start child processes in this block with SIGINT, SIGTERM and SIGHUP blocked: a helper that
    ignores them (the writer) cannot be killed by one that arrives while it starts (a Ctrl-C reaches
    the whole process group). A signal to this process in the block is delivered at its end."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def ignore_in_helper() -> None:
    """In a helper process started by :func:`blocked_for_children`: ignore the signals, unblock them."""
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (Linux: /proc; elsewhere kill(pid, 0))."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
