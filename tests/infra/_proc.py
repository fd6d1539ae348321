"""Process helpers shared by the service fixtures: free ports, waiting, stopping by pid, and finding
every process a fixture started (including grandchildren that left its process group).

Each fixture puts a unique marker ``RUNNER_INFRA_TAG=<tag>`` in the environment of the processes it
starts; children inherit it, so ``/proc/*/environ`` tells which processes are ours even after they
were re-parented (slurmstepd, postgres backends, a server's workers). Everything is stopped by pid.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

TAG_VAR = "RUNNER_INFRA_TAG"
T = TypeVar("T")


def new_tag(kind: str) -> str:
    """A marker unique to one service instance: ``<kind>-<our pid>-<random>``."""
    return f"{kind}-{os.getpid()}-{uuid.uuid4().hex[:10]}"


def free_ports(count: int = 1, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports free on ``host`` right now (held open together so they differ)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgrp) of a process from /proc, or None if it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rfind(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[2])


def is_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped by its parent) counts as gone."""
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def _all_pids() -> Iterable[int]:
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


def pids_tagged(tag: str) -> list[int]:
    """Live processes whose environment carries ``RUNNER_INFRA_TAG=<tag>`` (not this process)."""
    needle = f"{TAG_VAR}={tag}".encode()
    found = []
    me = os.getpid()
    for pid in _all_pids():
        if pid == me:
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if needle in env.split(b"\0") and is_alive(pid):
            found.append(pid)
    return found


def pids_in_group(pgid: int) -> list[int]:
    """Live processes of process group ``pgid``."""
    out = []
    for pid in _all_pids():
        st = _stat(pid)
        if st is not None and st[2] == pgid and st[0] not in ("Z", "X"):
            out.append(pid)
    return out


def descendants(pid: int) -> list[int]:
    """Live children, grandchildren ... of ``pid`` (not those already re-parented elsewhere)."""
    children: dict[int, list[int]] = {}
    for p in _all_pids():
        st = _stat(p)
        if st is not None and st[0] not in ("Z", "X"):
            children.setdefault(st[1], []).append(p)
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def kill_pids(pids: Iterable[int], timeout: float = 5.0) -> list[int]:
    """SIGKILL the given processes that are still alive; the pids that were (raises if any survives)."""
    alive = [p for p in pids if is_alive(p)]
    for pid in alive:
        _signal(pid, signal.SIGKILL)
    left = wait_gone(alive, timeout)
    if left:
        raise RuntimeError(f"processes {left} survived SIGKILL")
    return alive


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Call ``check`` until it returns something truthy (returned), or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait until none of ``pids`` is alive; the ones still alive after ``timeout``."""
    pids = list(pids)
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in pids if is_alive(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop_process(proc: subprocess.Popen | None, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to the child ``proc`` by its pid, wait for it (reaping it), SIGKILL after ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    _signal(proc.pid, sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _signal(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def stop_group(pgid: int, timeout: float = 10.0) -> list[int]:
    """SIGTERM a whole process group, SIGKILL what is left after ``timeout``; the pids that survived."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return []
    left = wait_gone(pids_in_group(pgid), timeout)
    if left:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        left = wait_gone(left, 5)
    return left


def kill_tagged(tag: str, timeout: float = 5.0) -> list[int]:
    """SIGKILL every live process carrying ``tag``; the pids found (empty when nothing was left)."""
    found = pids_tagged(tag)
    for pid in found:
        _signal(pid, signal.SIGKILL)
    left = wait_gone(found, timeout)
    if left:
        raise RuntimeError(f"processes {left} carrying {TAG_VAR}={tag} survived SIGKILL")
    return found


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return Path(path).read_text(errors="replace")[-chars:]
    except OSError as e:
        return f"<{path}: {e}>"
