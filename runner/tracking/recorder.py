"""One run in the store, as a job sees it: start it, log its metrics, end it however the job ends.

Both tasks (descent and derivatives) record through this, so a run is created, tagged and ended the
same way whatever made it: params are the resolved config flattened with dotted keys, a run of a
multirun is a child of the sweep's parent (``$RUNNER_PARENT_RUN_ID``), and a run whose job raises is
ended KILLED (an interrupt) or FAILED with ``outcome=failed`` and the error, never left RUNNING.
"""

from __future__ import annotations

import os
import time
from typing import Any, Mapping

from runner.tracking import writer as writer_module
from runner.tracking.naming import PARENT_ENV
from runner.tracking.records import flatten
from runner.tracking.store import resolve_uri


def open_store(tracking_cfg: Any) -> Any:
    """This process's writer with the configured store and experiment opening (does not wait)."""
    store = writer_module.writer()
    store.open(resolve_uri(tracking_cfg.uri), tracking_cfg.experiment)
    return store


class RunRecorder:
    """A run being recorded: its store, its id (or the writer's handle for it) and its start time."""

    def __init__(self, store: Any, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self.started_ms = int(time.time() * 1000)

    @classmethod
    def start(cls, store: Any, name: str, config: Mapping[str, Any], tags: Mapping[str, str], wait: bool = True) -> "RunRecorder":
        """Create the run with its params and tags. ``wait=False`` (jobs of an in-process sweep):
        do not wait for MLflow's id; the writer maps a handle to it and the sweep's end waits."""
        params = flatten(config)
        parent = os.environ.get(PARENT_ENV) or None
        if wait:
            return cls(store, store.start_run(name, params, tags, parent_run_id=parent))
        handle = writer_module.new_handle()
        store.start_run(name, params, tags, parent_run_id=parent, handle=handle, _wait=False)
        return cls(store, handle)

    @property
    def known_id(self) -> str | None:
        """MLflow's id of the run, or None while only the writer's handle is known."""
        return None if writer_module.is_handle(self.run_id) else self.run_id

    def log_metrics(self, series: Mapping[str, Any]) -> None:
        self.store.log_metrics(self.run_id, series, self.started_ms)

    def log_files(self, files: Mapping[str, Any]) -> None:
        self.store.log_files(self.run_id, files)

    def log_run_artifacts(self, bundle: Mapping[str, Any]) -> None:
        self.store.log_run_artifacts(self.run_id, bundle)

    def finish(self, tags: Mapping[str, str], wait: bool = True) -> None:
        """End the run FINISHED with its final tags (``wait=False``: the sweep's end waits)."""
        self.store.end_run(self.run_id, "FINISHED", dict(tags), _wait=wait)

    def fail(self, exc: BaseException, files: Mapping[str, Any] | None = None) -> None:
        """End the run KILLED (an interrupt) or FAILED, saying why, with ``files`` (what the job
        recorded so far, e.g. the trajectory) as artifacts."""
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        if files:
            self.store.log_files(self.run_id, files)
        self.store.end_run(self.run_id, status, {"outcome": "failed", "error": f"{type(exc).__name__}: {exc}"[:500]})
