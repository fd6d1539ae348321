"""Draw figures on both cores: in the writer process and in one helper forked from it.

Why: matplotlib takes ~70 ms for a loss curve and ~200 ms for a path over a contour on the 2-core dev
box, and a 16-job sweep draws 24 of them plus 5 summary figures: ~5 s, more than all of its MLflow
writes. The writer used to draw them one after another while the main process sat idle waiting for
it. Now figure *jobs* (a function of :mod:`runner.tracking.plots` or :mod:`runner.sweeps.summary` that returns a
figure, its arguments, and the PNG file name) go into a queue, and whichever of two workers is free
takes the next one: the helper, or the writer itself when it has no MLflow call to make. Results
come back as PNG bytes.

The helper is forked from the writer once matplotlib is imported (``os.fork``: no second import, no
second interpreter start; the writer has a single thread then, so forking is safe). It reads jobs
from a pipe, one at a time, and exits when the pipe closes, i.e. with the writer. Where forking is not
possible, or the helper dies, the writer draws everything itself: slower, never wrong.

A job is ``(key, [(file name, "pkg.module:function", args), ...])``: all the figures of one key (a
run) are drawn by one worker and come back together as ``(key, {file name: png bytes}, error)``.
"""

from __future__ import annotations

import io
import os
import sys
from collections import deque
from multiprocessing.connection import Connection
from typing import Any, Iterable

Figures = list  # [(file name, "module:function", args tuple)]

_POOL: "PlotPool | None" = None  # the writer's pool, once started


def current() -> "PlotPool | None":
    return _POOL


def draw_job(figures: Figures) -> tuple[dict[str, bytes], str | None]:
    """Draw one job's figures here: ``{file name: PNG bytes}`` and the first error (or None).
    A figure that fails is left out; the others are still drawn."""
    import importlib

    import numpy as np

    from runner.tracking import plots

    files: dict[str, bytes] = {}
    error = None
    for name, target, args in figures:
        module, _, function = target.partition(":")
        try:
            # Values near float's limit (a diverging run) overflow inside matplotlib's scale
            # transforms; the figure is right all the same, so the warnings would only be noise.
            with np.errstate(all="ignore"):
                fig = getattr(importlib.import_module(module), function)(*args)
                buffer = io.BytesIO()
                plots.save_figure(fig, buffer)
            files[name] = buffer.getvalue()
        except Exception as exc:  # noqa: BLE001 - reported with the result, one line
            text = str(exc).splitlines()[0] if str(exc) else ""
            error = error or f"figure {name} failed: {type(exc).__name__}: {text}"
    return files, error


def _helper_loop(jobs: Connection, results: Connection) -> None:
    while True:
        try:
            key, figures = jobs.recv()
        except (EOFError, OSError):
            break
        files, error = draw_job(figures)
        try:
            results.send((key, files, error))
        except (OSError, BrokenPipeError):
            break


class PlotPool:
    """A queue of figure jobs drawn by a forked helper and by this process, whichever is free."""

    def __init__(self, helper: bool = True, close_in_helper: Iterable[Any] = ()) -> None:
        self.queue: deque = deque()  # (key, figures) not yet handed to anyone
        self.done: deque = deque()  # (key, files, error) finished, not yet collected
        self.outstanding: tuple | None = None  # the job the helper is drawing
        self._jobs: Connection | None = None
        self._results: Connection | None = None
        self.pid = 0
        if helper and hasattr(os, "fork"):
            self._fork(close_in_helper)

    def _fork(self, close_in_helper: Iterable[Any]) -> None:
        jobs_r, jobs_w = os.pipe()
        results_r, results_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the helper
            try:
                os.close(jobs_w)
                os.close(results_r)
                for conn in close_in_helper:  # the writer's pipes: the main process must see them close
                    conn.close()
                _helper_loop(Connection(jobs_r, writable=False), Connection(results_w, readable=False))
            finally:
                os._exit(0)
        os.close(jobs_r)
        os.close(results_w)
        self.pid = pid
        self._jobs = Connection(jobs_w, readable=False)
        self._results = Connection(results_r, writable=False)

    # -- the writer's side -------------------------------------------------------------------------
    def submit(self, key: Any, figures: Figures) -> None:
        self.queue.append((key, figures))
        self._feed()

    def busy(self) -> bool:
        return bool(self.queue or self.outstanding)

    def waitables(self) -> list:
        """What to include in a ``multiprocessing.connection.wait``: the helper's results."""
        return [self._results] if self._results is not None and self.outstanding else []

    def _feed(self) -> None:
        """Hand the next job to the helper if it is idle."""
        if self.outstanding is None and self.queue and self._jobs is not None:
            job = self.queue.popleft()
            try:
                self._jobs.send(job)
                self.outstanding = job
            except (OSError, BrokenPipeError):
                self.queue.appendleft(job)
                self._lose_helper()

    def _lose_helper(self) -> None:
        """The helper is gone: its job goes back to the queue, this process draws from now on."""
        if self.outstanding is not None:
            self.queue.appendleft(self.outstanding)
            self.outstanding = None
        for conn in (self._jobs, self._results):
            if conn is not None:
                conn.close()
        self._jobs = self._results = None

    def collect_helper(self, block: bool = False) -> None:
        """Move the helper's finished job (if any; waiting for it with ``block``) to ``done``."""
        if self._results is None or self.outstanding is None:
            return
        if not block and not self._results.poll(0):
            return
        try:
            result = self._results.recv()
        except (EOFError, OSError):
            self._lose_helper()
            return
        self.outstanding = None
        self.done.append(result)
        self._feed()

    def draw_one_here(self) -> bool:
        """Draw the next queued job in this process; whether there was one."""
        if not self.queue:
            return False
        key, figures = self.queue.popleft()
        files, error = draw_job(figures)
        self.done.append((key, files, error))
        return True

    def step(self) -> None:
        """One unit of progress on the queue: collect the helper's result, feed it, and draw one
        job here if any is left; with nothing left to draw here, wait for the helper."""
        self.collect_helper()
        self._feed()
        if not self.draw_one_here():
            self.collect_helper(block=True)

    def draw_all(self, jobs: list[tuple[Any, Figures]]) -> dict[Any, tuple[dict[str, bytes], str | None]]:
        """Draw these jobs now, on both workers; ``{key: (files, error)}``. Results of other keys
        that finish meanwhile stay in ``done`` for their owner."""
        keys = {key for key, _ in jobs}
        for key, figures in jobs:
            self.submit(key, figures)
        out: dict[Any, tuple[dict[str, bytes], str | None]] = {}
        while len(out) < len(keys):
            self.step()
            for _ in range(len(self.done)):
                key, files, error = self.done.popleft()
                if key in keys:
                    out[key] = (files, error)
                else:
                    self.done.append((key, files, error))
        return out

    def close(self) -> None:
        for conn in (self._jobs, self._results):
            if conn is not None:
                conn.close()
        self._jobs = self._results = None
        if self.pid:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.pid = 0


def start(close_in_helper: Iterable[Any] = ()) -> PlotPool:
    """The writer's pool (forks the helper); call once matplotlib is imported."""
    global _POOL
    _POOL = PlotPool(helper=True, close_in_helper=close_in_helper)
    return _POOL


def draw_all(jobs: list[tuple[Any, Figures]]) -> dict[Any, tuple[dict[str, bytes], str | None]]:
    """Draw jobs on the writer's pool when there is one, else here, one after another."""
    if _POOL is not None:
        return _POOL.draw_all(jobs)
    return {key: draw_job(figures) for key, figures in jobs}
