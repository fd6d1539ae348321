"""The MLflow side of tracking: everything that talks to the store, and nothing that needs torch.

:class:`MlflowStore` wraps :class:`mlflow.MlflowClient` with what a run of the runner needs: open
(and check) the store, start a run, log metric batches, write artifacts and plots, end the run.
It runs inside the writer process (:mod:`runner.tracking.writer`), so that importing MLflow, opening
the SQLite store and drawing plots happen on the second core while the main process imports torch
and descends; it can also run in-process (``MlflowStore`` used directly).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from runner.tracking.records import param_text

DEFAULT_URI = "sqlite:///outputs/mlflow.db"
BATCH = 1000  # MLflow's limit of metrics per log_batch call


class StoreError(Exception):
    """The tracking store cannot be used; the message is one line and names the URI."""


def resolve_uri(uri: str | None) -> str:
    """``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else the project's SQLite store."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative to the working directory), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :])


def check_reachable(uri: str, timeout: float = 3.0) -> None:
    """Fail within seconds, naming the URI, when the store cannot be reached or created."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as answer:
                answer.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise StoreError(f"tracking.uri: cannot reach the MLflow server at {uri} ({reason})") from None
        return
    path = sqlite_path(uri)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"tracking.uri: cannot create the folder of {uri} ({exc.strerror})") from None
        if not os.access(path.parent, os.W_OK):
            raise StoreError(f"tracking.uri: the folder of {uri} is not writable")
        return
    if uri.startswith(("file:", "/", ".")) or "://" not in uri:
        raise StoreError(
            f"tracking.uri: {uri!r} is a file store, which MLflow 3 refuses; "
            "use sqlite:///path/to/mlflow.db or http://host:port"
        )


def enable_wal(uri: str) -> None:
    """Switch a SQLite store to write-ahead logging: parallel jobs then write while others read.

    The mode is stored in the database file and persists; MLflow's 20 s busy timeout handles the
    remaining single-writer waits.
    """
    path = sqlite_path(uri)
    if path is None or not path.exists():
        return
    import sqlite3
    from contextlib import closing

    try:
        with closing(sqlite3.connect(path, timeout=20)) as db:
            db.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as exc:  # e.g. a file system without shared memory: keep the rollback journal
        print(f"warning: {uri}: cannot switch to write-ahead logging ({exc}); parallel jobs will wait longer", file=sys.stderr)


def quiet_mlflow_logs() -> None:
    """MLflow's, alembic's and SQLAlchemy's INFO lines ("Creating initial MLflow database tables…")
    are noise on a runner's stderr. Call it after importing mlflow too: the import resets levels."""
    for name in ("alembic", "mlflow", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.WARNING)


def preimport() -> None:
    """Import what opening a store and logging will need (the writer does this while it waits)."""
    quiet_mlflow_logs()
    import mlflow.tracking  # noqa: F401

    quiet_mlflow_logs()
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.figure  # noqa: F401
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401


class MlflowStore:
    """One tracking store and one experiment, opened once, used for many runs."""

    def __init__(self, pool=None) -> None:
        self.client = None
        self.uri = ""
        self.experiment_id = ""
        self._experiment_name = ""
        self._handles: dict[str, str] = {}  # caller's names for runs started without waiting
        # With a plot pool (the writer's, :mod:`runner.tracking.plot_pool`), a run's figures are drawn while
        # other calls go on; its end_run waits (deferred) until they are logged, so a run that
        # reads FINISHED has all of its artifacts.
        self.pool = pool
        self._plots_pending: dict[str, dict[str, Any]] = {}  # run id -> files so far, figures left
        self._deferred_end: dict[str, tuple[str, Mapping[str, str] | None]] = {}

    def run_id(self, run: str) -> str:
        """The MLflow run id of ``run``: a run id, or a handle given to :meth:`start_run`."""
        return self._handles.get(run, run)

    def resolve(self, run: str) -> str:
        """:meth:`run_id`, as a call that waits (through the writer: for every call sent before)."""
        return self.run_id(run)

    def flush(self) -> None:
        """Nothing to do here: through the writer, answering it means everything before is done."""

    def get_experiment_id(self) -> str:
        return self.experiment_id

    def run_function(self, target: str, *args, **kwargs) -> Any:
        """Call ``pkg.module:function(*args, **kwargs)`` here (in the writer: MLflow and matplotlib
        are imported already), e.g. the sweep's summary; its result must pickle without torch."""
        import importlib

        module, _, name = target.partition(":")
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    # -- store and experiment ---------------------------------------------------------------
    def open(self, uri: str, experiment: str) -> str:
        """Open the store at ``uri`` (creating a SQLite one) and the experiment; its id. Opening the
        one already open does nothing (every job of a sweep asks; ~12 ms each otherwise)."""
        if self.client is not None and (uri, experiment) == (self.uri, self._experiment_name):
            return self.experiment_id
        check_reachable(uri)
        quiet_mlflow_logs()
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        quiet_mlflow_logs()
        try:
            self.client = MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                location = None
                db = sqlite_path(uri)
                if db is not None:
                    location = (db.parent.resolve() / "mlartifacts").as_uri()
                try:
                    self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
                except MlflowException:  # another process created it first
                    self.experiment_id = self.client.get_experiment_by_name(experiment).experiment_id
            else:
                self.experiment_id = found.experiment_id
        except MlflowException as exc:
            raise StoreError(f"tracking.uri: cannot use the MLflow store at {uri} ({str(exc).splitlines()[0]})") from None
        self.uri, self._experiment_name = uri, experiment
        return self.experiment_id

    # -- runs -------------------------------------------------------------------------------
    def start_run(
        self,
        run_name: str,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
        parent_run_id: str | None = None,
        description: str | None = None,
        handle: str | None = None,
    ) -> str:
        """Create a run with its params and tags in one batch; its id. With ``handle``, later calls
        may name the run by that handle (the caller did not wait for the id)."""
        from mlflow.entities import Param

        all_tags = dict(tags)
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = self.run_id(parent_run_id)
        if description:
            all_tags["mlflow.note.content"] = description
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
        run_id = run.info.run_id
        if handle:
            self._handles[handle] = run_id
        items = [Param(k, param_text(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run_id, params=items[i : i + 100], synchronous=True)
        return run_id

    def log_metrics(self, run_id: str, series: Mapping[str, tuple[np.ndarray, np.ndarray]], timestamp_ms: int | None = None) -> int:
        """Log whole metric histories, ``{key: (steps, values)}``, in batches of 1000; the count.

        Non-finite values are skipped (MLflow stores them, but the UI's charts cannot draw them).
        """
        from mlflow.entities import Metric

        run_id = self.run_id(run_id)
        now = timestamp_ms or int(time.time() * 1000)
        metrics = []
        for key, (steps, values) in series.items():
            for s, v in zip(np.asarray(steps).tolist(), np.asarray(values, dtype=float).tolist()):
                if math.isfinite(v):
                    metrics.append(Metric(key, v, now, int(s)))
        for i in range(0, len(metrics), BATCH):
            self.client.log_batch(run_id, metrics=metrics[i : i + BATCH], synchronous=True)
        return len(metrics)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id(run_id), tags=[RunTag(k, str(v)) for k, v in tags.items()], synchronous=True)

    def end_run(self, run_id: str, status: str = "FINISHED", tags: Mapping[str, str] | None = None, _wait: bool = True) -> None:
        """Set the final tags and the run's status (``_wait`` matters only through the writer)."""
        run_id = self.run_id(run_id)
        if run_id in self._plots_pending:  # ended by plots_done, once its figures are logged
            self._deferred_end[run_id] = (status, tags)
            return
        if tags:
            self.set_tags(run_id, tags)
        self.client.set_terminated(run_id, status=status)

    def plots_done(self, key: tuple[str, str], files: Mapping[str, bytes], error: str | None) -> None:
        """One figure of a run, drawn by the pool. With the run's last figure, log all of its
        artifacts in one call and end the run if its end_run came meanwhile. A figure that failed
        is left out with a warning: the run and its other artifacts stand."""
        run_id, _ = key
        pending = self._plots_pending[run_id]
        pending["files"].update(files)
        pending["left"] -= 1
        if error:
            print(f"warning: tracking: run {run_id}: {error}", file=sys.stderr)
        if pending["left"] > 0:
            return
        del self._plots_pending[run_id]
        try:
            self.log_files(run_id, pending["files"])
        finally:
            if run_id in self._deferred_end:
                self.end_run(run_id, *self._deferred_end.pop(run_id))

    # -- artifacts --------------------------------------------------------------------------
    def log_files(self, run_id: str, files: Mapping[str, bytes | str | Path]) -> None:
        """Log ``{relative path: content}`` as the run's artifacts, in one call: bytes and text are
        written to a temporary folder, a :class:`~pathlib.Path` is copied from where it is."""
        import shutil

        with tempfile.TemporaryDirectory(prefix="runner-artifacts-") as tmp:
            for rel, content in files.items():
                path = Path(tmp, rel)
                path.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, Path):
                    shutil.copyfile(content, path)
                else:
                    path.write_bytes(content if isinstance(content, bytes) else content.encode())
            self.client.log_artifacts(self.run_id(run_id), tmp)

    def log_run_artifacts(self, run_id: str, bundle: Mapping[str, Any]) -> None:
        """The artifacts of one descent: config, trajectory table and plots.

        ``bundle`` holds ``config`` (YAML text), ``trajectory`` (the path of the run's trajectory.csv,
        written by the job as it descended), ``title`` and
        ``plots`` (the arguments of :func:`runner.tracking.plots.run_figure_jobs`, computed by the main
        process). With a plot pool the figures are drawn meanwhile; :meth:`plots_done` logs them
        together with the config and the table, in one call.
        """
        from runner.tracking import plot_pool, plots

        run_id = self.run_id(run_id)
        files: dict[str, Any] = {"config.yaml": bundle["config"]}
        if bundle.get("trajectory"):
            files["trajectory.csv"] = Path(bundle["trajectory"])
        figures = plots.run_figure_jobs(bundle["title"], **bundle["plots"])
        if self.pool is None:
            drawn, error = plot_pool.draw_job(figures)
            if error:
                print(f"warning: tracking: run {run_id}: {error}", file=sys.stderr)
            self.log_files(run_id, {**files, **drawn})
            return
        # One job per figure, so that both workers can share even a single run's figures.
        self._plots_pending[run_id] = {"files": files, "left": len(figures)}
        for figure in figures:
            self.pool.submit((run_id, figure[0]), [figure])

    def call(self, method: str, *args, **kwargs) -> Any:
        """Any other MlflowClient method (log_table, log_figure, search_runs …)."""
        return getattr(self.client, method)(*args, **kwargs)

    # -- many children at once (the batched launcher; :mod:`runner.tracking.bulk`) ---------------
    def log_children(self, parent: str | None, children: list, token: str) -> list[str]:
        """Create, log and end each child run in one call; their ids."""
        from runner.tracking import bulk

        return bulk.log_children(self, parent, children, token)

    def children_written(self, token: str) -> int:
        """How many children the calls with ``token`` have written so far (a progress bar asks)."""
        from runner.tracking import bulk

        return bulk.children_written(token)

    def cancel_children(self, token: str) -> None:
        """Drop the children of ``token`` not written yet (an interrupted sweep ends promptly)."""
        from runner.tracking import bulk

        bulk.cancel_children(token)

    def log_trajectory_table(self, parent: str, artifact_file: str, columns: Mapping[str, Any], names: Mapping[int, str]) -> None:
        """The parent's table of every trajectory (Parquet), with each line's child run id."""
        from runner.tracking import bulk

        bulk.log_trajectory_table(self, parent, artifact_file, columns, names)
