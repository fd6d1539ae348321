"""One run in the store, as a job sees it: start it, log its metrics, end it however the job ends.

Both tasks (descent and derivatives) record through this, so a run is created, tagged and ended the
same way whatever made it: params are the resolved config flattened with dotted keys, a run of a
multirun is a child of the sweep's parent (``$RUNNER_PARENT_RUN_ID``), and a run whose job raises is
ended KILLED (a signal, ``outcome=interrupted``) or FAILED (``outcome=failed`` and the error), never
left RUNNING.
"""

from __future__ import annotations

import os
import time
from typing import Any, Mapping

from runner.tracking import writer as writer_module
from runner.tracking.naming import PARENT_ENV
from runner.tracking.records import flatten
from runner.tracking.store import StoreError, resolve_uri


def open_store(tracking_cfg: Any) -> Any:
    """This process's writer with the configured store and experiment opening (does not wait)."""
    store = writer_module.writer()
    store.open(resolve_uri(tracking_cfg.uri), tracking_cfg.experiment, http_retries=tracking_cfg.get("http_retries"))
    return store


class RunRecorder:
    """A run being recorded: its store, its id (or the writer's handle for it), its name, where its
    record stands (``status``: RUNNING, ENDING while its end is being written, then FINISHED,
    KILLED or FAILED) and the last step it recorded."""

    def __init__(self, store: Any, run_id: str, name: str = "") -> None:
        self.store = store
        self.run_id = run_id
        self.name = name
        self.status = "RUNNING"
        self.last_step = -1
        self.end_error: str | None = None  # why the store could not take the run's end
        self.kept: dict[str, str] = {}  # files the run writes as it goes (its trajectory.csv)
        self.record_error: str | None = None  # a write of its record that failed (the rest is missing)
        self.started_ms = int(time.time() * 1000)
        global _CURRENT
        _CURRENT = self

    @classmethod
    def start(cls, store: Any, name: str, config: Mapping[str, Any], tags: Mapping[str, str], wait: bool = True,
              folder: str | None = None, files: Mapping[str, Any] | None = None) -> "RunRecorder":
        """Create the run with its params and tags. ``wait=False`` (jobs of an in-process sweep):
        do not wait for MLflow's id; the writer maps a handle to it and the sweep's end waits.
        ``folder``: the job's output folder (what a tracking server that goes away misses goes there).
        ``files``: artifacts a tracking server must take before the descent (the config)."""
        params = flatten(config)
        parent = os.environ.get(PARENT_ENV) or None
        if wait:
            return cls(store, store.start_run(name, params, tags, parent_run_id=parent, folder=folder, files=files), name)
        handle = writer_module.new_handle()
        store.start_run(name, params, tags, parent_run_id=parent, handle=handle, _wait=False, folder=folder, files=files)
        return cls(store, handle, name)

    @property
    def known_id(self) -> str | None:
        """MLflow's id of the run, or None while only the writer's handle is known."""
        return None if writer_module.is_handle(self.run_id) else self.run_id

    def log_metrics(self, series: Mapping[str, Any]) -> None:
        self.store.log_metrics(self.run_id, series, self.started_ms)

    def log_files(self, files: Mapping[str, Any]) -> None:
        self.store.log_files(self.run_id, files)

    def keep_file(self, name: str, path: Any) -> None:
        """A file the run writes as it goes: the writer logs it if the run is ended there."""
        self.kept[name] = str(path)
        self.store.keep_file(self.run_id, name, str(path))

    def log_run_artifacts(self, bundle: Mapping[str, Any]) -> None:
        self.store.log_run_artifacts(self.run_id, bundle)

    def finish(self, tags: Mapping[str, str], wait: bool = True) -> None:
        """End the run FINISHED with its final tags (``wait=False``: the sweep's end waits)."""
        self.status = "ENDING"
        self.store.end_run(self.run_id, "FINISHED", dict(tags), _wait=wait)
        self.status = "FINISHED"

    def fail(self, exc: BaseException, files: Mapping[str, Any] | None = None) -> None:
        """End the run KILLED (a signal: ``outcome=interrupted``) or FAILED (``outcome=failed``),
        saying why, at ``last_step``, with ``files`` (what it recorded so far, e.g. the trajectory)
        as artifacts. A run already ended stays as it is; one whose end was being written (a signal
        while its figures were drawn) ends KILLED with the artifacts already sent."""
        if self.status not in ("RUNNING", "ENDING"):
            return
        if isinstance(exc, KeyboardInterrupt):
            status, tags = "KILLED", {"outcome": "interrupted", "signal": str(exc) or "SIGINT"}
        else:
            text = str(exc) if isinstance(exc, StoreError) else f"{type(exc).__name__}: {exc}"
            status, tags = "FAILED", {"outcome": "failed", "error": text[:500]}
        if self.last_step >= 0:
            tags["final_step"] = str(self.last_step)
        if files and self.status == "RUNNING":
            self.store.log_files(self.run_id, files)
        self.status = "ENDING"
        self.record_error = self.store.end_run(self.run_id, status, tags)
        self.status = status


_CURRENT: RunRecorder | None = None  # the run this process recorded last


def current_run() -> RunRecorder | None:
    """The run this process started last (what an interrupt reports on), or None."""
    return _CURRENT


def forget_current_run() -> None:
    """A new job begins: the last run is no longer the one an interrupt would stop."""
    global _CURRENT
    _CURRENT = None
