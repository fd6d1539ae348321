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
import urllib.parse
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from runner.tracking import faults, unsent
from runner.tracking.records import param_text

DEFAULT_URI = "sqlite:///outputs/mlflow.db"
HTTP_RETRIES = 2  # tracking.http_retries's default, unless $MLFLOW_HTTP_REQUEST_MAX_RETRIES says otherwise
BATCH = 1000  # MLflow's limit of metrics per log_batch call
# Experiments the runner makes are of MLflow's "Machine learning" kind (see runner.tracking.links).
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


class StoreError(Exception):
    """The tracking store cannot be used; the message is one line and names the URI."""


class StoreFault(StoreError):
    """The disk under the store failed (full, read-only); the message names the path. Not the
    user's input: the process exits 1, not 2."""

    exit_status = 1


def is_fault(exc: BaseException) -> bool:
    return isinstance(exc, StoreFault) or faults.describe(exc) is not None


def resolve_uri(uri: str | None) -> str:
    """``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else the project's SQLite store."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative to the working directory), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :])


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def http_settings(retries: int | None = None) -> None:
    """MLflow's HTTP retries for this process: ``retries`` per request (``tracking.http_retries``;
    None: ``$MLFLOW_HTTP_REQUEST_MAX_RETRIES``, else 2), with MLflow's backoff
    (``$MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`` x 2^n s, the first retry at once) and a 30 s timeout per
    try unless ``$MLFLOW_HTTP_REQUEST_TIMEOUT`` says otherwise."""
    if retries is None:
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(HTTP_RETRIES))
    else:
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(retries)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def check_reachable(uri: str, timeout: float = 3.0) -> None:
    """Fail within seconds, naming the URI, when the store cannot be reached or created."""
    if is_server(uri):
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
    are noise on a runner's stderr. Call it after importing mlflow too: the import resets levels.

    MLflow also logs every database error with its whole traceback (``mlflow.store.db.utils``)
    before raising it; the runner reports the error it raises, in one line, so those go too.
    Against a tracking server MLflow also prints "🏃 View run … / 🧪 View experiment at: …" on
    stdout whenever a run ends (``_log_url``, after one more request for the run), with links to the
    GenAI view; the runner prints its own links (:mod:`runner.tracking.links`) and turns those off."""
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for name in ("alembic", "mlflow", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


@contextmanager
def creation_lock(uri: str):
    """Hold ``<database>.lock`` (an exclusive ``flock``) around opening a SQLite store.

    MLflow creates a new store's tables and runs its migrations when it first opens it, without a
    lock between processes: two runs or sweeps started together on a new store race through the
    migrations (``table experiments already exists``, ``duplicate column name``) and one fails.
    Opening under this lock, the second process waits until the first has created the store, then
    finds it complete. Opening an existing store takes the lock for a few milliseconds."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    import fcntl

    try:
        handle = open(path.parent / f"{path.name}.lock", "a")
    except OSError:  # a folder we may not write: nothing to serialise against (nor to create)
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def preimport() -> None:
    """Import what opening a store and logging will need (the writer does this while it waits)."""
    quiet_mlflow_logs()
    import mlflow.tracking  # noqa: F401

    quiet_mlflow_logs()
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.figure  # noqa: F401
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401


RESERVE_BYTES = 256 * 1024


def reserve_path(uri: str) -> Path | None:
    db = sqlite_path(uri)
    return None if db is None else db.parent / f"{db.name}.reserve"


def make_reserve(uri: str) -> None:
    """Keep ``<database>.reserve``, 256 KB of zeros beside a SQLite store, if there is room.

    When the disk fills up mid-run, SQLite cannot write the run's end (its journal needs a few
    pages), and the run would stay RUNNING. The store then deletes this file
    (:func:`release_reserve`) and writes the end with the space it frees: the run ends FAILED,
    saying why. The next run that opens the store makes a new reserve if there is room."""
    path = reserve_path(uri)
    if path is None or path.exists():
        return
    try:
        with open(path, "xb") as reserve:
            reserve.write(bytes(RESERVE_BYTES))  # written, not sparse: the blocks are taken
    except FileExistsError:
        pass
    except OSError:  # no room even for that: nothing to keep
        path.unlink(missing_ok=True)


def release_reserve(uri: str) -> bool:
    """Delete the store's reserve; whether there was one to free."""
    path = reserve_path(uri)
    try:
        path.unlink()
    except (OSError, AttributeError):
        return False
    return True


@dataclass
class OpenRun:
    """A run this store started and nobody has ended yet (see :meth:`MlflowStore.end_open_runs`)."""

    name: str
    guarded: bool = False  # a sweep's parent run: its guard ends it (runner.sweeps.guard)
    last_step: int = -1  # the last step of ``loss`` logged
    files: dict[str, str] = field(default_factory=dict)  # artifacts to log if it is ended here


# Methods whose first argument is a run: their failure marks the run's record as incomplete.
RUN_METHODS = {"log_metrics", "set_tags", "log_files", "log_run_artifacts", "keep_file"}


class MlflowStore:
    """One tracking store and one experiment, opened once, used for many runs.

    It knows the runs it started and has not ended (``open_runs``) and the runs whose record could
    not be written completely (``failures``): such a run ends FAILED, never FINISHED, and the runs
    left open when the process that drives the store is interrupted or dies are ended by
    :meth:`end_open_runs`, so none stays RUNNING while the store can still take a write.
    """

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
        self.open_runs: dict[str, OpenRun] = {}
        self.failures: dict[str, str] = {}  # run id -> the first error writing its record
        # A tracking server that stopped answering (why, in a few words): the rest of each run goes
        # to its spill folder instead (runner.tracking.unsent).
        self.gone: str | None = None
        self.names: dict[str, str] = {}  # run id -> run name (for the lines that name a run)
        self.folders: dict[str, str] = {}  # run id -> its job's output folder (where it spills)
        self.spills: dict[str, unsent.Spill] = {}
        self.unsent: dict[str, str] = {}  # run id -> the spill folder of a run whose end was not sent
        self.quiet_ends: set[str] = set()  # runs whose unsent end the caller reports (a batched sweep's children)
        self._gone_checked = 0.0  # when a gone server was last asked whether it is back (time.monotonic)
        self.loss_sent: dict[str, int] = {}  # run id -> loss points a tracking server acknowledged

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
    def open(self, uri: str, experiment: str, http_retries: int | None = None) -> str:
        """Open the store at ``uri`` (creating a SQLite one) and the experiment; its id. Opening the
        one already open does nothing (every job of a sweep asks; ~12 ms each otherwise).
        ``http_retries``: see :func:`http_settings`."""
        http_settings(http_retries)
        if self.client is not None and (uri, experiment) == (self.uri, self._experiment_name):
            return self.experiment_id
        check_reachable(uri)
        quiet_mlflow_logs()
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        quiet_mlflow_logs()
        try:
            with creation_lock(uri):
                self._open_experiment(MlflowClient(tracking_uri=uri), uri, experiment)
                make_reserve(uri)
        except MlflowException as exc:
            line = faults.describe(exc, sqlite_path(uri)) or str(exc).splitlines()[0]
            raise StoreError(f"tracking.uri: cannot use the MLflow store at {uri} ({line})") from None
        self.uri, self._experiment_name = uri, experiment
        return self.experiment_id

    def _open_experiment(self, client, uri: str, experiment: str) -> None:
        """The client's first call (MLflow creates a new store's tables then) and the experiment."""
        from mlflow.exceptions import MlflowException

        self.client = client
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            self.experiment_id = found.experiment_id
            if EXPERIMENT_KIND_TAG not in found.tags:  # made by an older runner: say what it holds
                client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            return
        db = sqlite_path(uri)
        location = (db.parent.resolve() / "mlartifacts").as_uri() if db is not None else None
        try:
            self.experiment_id = client.create_experiment(experiment, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException as exc:  # another process created it first, or MLflow refuses the name
            found = client.get_experiment_by_name(experiment)
            if found is None:
                raise StoreError(f"tracking.experiment: MLflow cannot create experiment {experiment!r} ({str(exc).splitlines()[0]})") from None
            self.experiment_id = found.experiment_id

    # -- runs -------------------------------------------------------------------------------
    def start_run(
        self,
        run_name: str,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
        parent_run_id: str | None = None,
        description: str | None = None,
        handle: str | None = None,
        guarded: bool = False,
        folder: str | None = None,
        files: Mapping[str, Any] | None = None,
    ) -> str:
        """Create a run with its params and tags in one batch; its id. With ``handle``, later calls
        may name the run by that handle (the caller did not wait for the id). ``guarded``: a sweep's
        parent, which its guard ends if the sweep cannot (:meth:`end_open_runs` leaves it).
        ``folder``: the job's output folder, where what a server that goes away misses is kept.
        ``files``: artifacts logged at once over a tracking server (:meth:`_check_artifacts`)."""
        from mlflow.entities import Param

        all_tags = dict(tags)
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = self.run_id(parent_run_id)
        if description:
            all_tags["mlflow.note.content"] = description
        run_id = self._create(run_name, all_tags, int(time.time() * 1000), folder)
        self.open_runs[run_id] = OpenRun(run_name, guarded)
        if handle:
            self._handles[handle] = run_id
        items = [Param(k, param_text(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            chunk = items[i : i + 100]
            self._send(run_id, lambda: self.client.log_batch(run_id, params=chunk, synchronous=True),
                       lambda spill: spill.params({p.key: p.value for p in chunk}))
        if files and is_server(self.uri):
            self._check_artifacts(run_id, files)
        return run_id

    def _check_artifacts(self, run_id: str, files: Mapping[str, Any]) -> None:
        """Log ``files`` now (the run's config): a tracking server whose artifact store cannot take
        them fails the run before its descent, not after it. The run then ends FAILED, saying why."""
        try:
            self.log_files(run_id, files)
        except StoreError as exc:
            why = unsent.reason(exc.__context__) if exc.__context__ is not None else str(exc)
            line = f"tracking: the MLflow server at {self.uri} cannot store the artifacts of run {self.run_name(run_id)} ({why})"
            self.end_run(run_id, "FAILED", {"outcome": "failed", "error": line[:500]})
            raise StoreError(f"{line}; the run ended FAILED before its descent") from None

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
            chunk = metrics[i : i + BATCH]
            if self._send(run_id, lambda: self.client.log_batch(run_id, metrics=chunk, synchronous=True),
                          lambda spill: spill.metrics([(m.key, m.value, m.timestamp, m.step) for m in chunk])):
                self.loss_sent[run_id] = self.loss_sent.get(run_id, 0) + sum(m.key == "loss" for m in chunk)
        if "loss" in series and run_id in self.open_runs and len(series["loss"][0]):
            last = int(np.max(series["loss"][0]))
            self.open_runs[run_id].last_step = max(self.open_runs[run_id].last_step, last)
        return len(metrics)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        run_id = self.run_id(run_id)
        self._send(run_id, lambda: self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()], synchronous=True),
                   lambda spill: spill.tags(tags))

    def keep_file(self, run_id: str, name: str, path: str) -> None:
        """A file the run writes as it goes (its trajectory.csv): logged as artifact ``name`` if the
        run is ended by :meth:`end_open_runs` (the job that writes it could not log it)."""
        run_id = self.run_id(run_id)
        if run_id in self.open_runs:
            self.open_runs[run_id].files[name] = str(path)

    def end_run(self, run_id: str, status: str = "FINISHED", tags: Mapping[str, str] | None = None, _wait: bool = True) -> str | None:
        """Set the final tags and the run's status (``_wait`` matters only through the writer).

        A run whose record could not be written completely (``failures``) ends FAILED, not
        FINISHED, tagged with the first error (``error``, or ``record_error`` beside the error it
        ends on: what came after it is missing from the store), which is returned. On a full disk the store's reserve is given up to
        write the end (see :func:`make_reserve`)."""
        run_id = self.run_id(run_id)
        if status == "FINISHED" and run_id in self.failures:
            status, tags = "FAILED", {**(tags or {}), "outcome": "failed", "error": self.failures[run_id][:500]}
        elif run_id in self.failures:  # it failed for another reason too: say what is missing
            tags = {**(tags or {}), "record_error": self.failures[run_id][:500]}
        if run_id in self._plots_pending:  # ended by plots_done, once its figures are logged
            self.open_runs.pop(run_id, None)
            self._deferred_end[run_id] = (status, tags)
            return None
        try:
            self._set_end(run_id, status, tags)
        except Exception as exc:
            if not (faults.disk_full(exc) and release_reserve(self.uri)):
                raise
            self._set_end(run_id, status, tags)
        self.open_runs.pop(run_id, None)
        return self.failures.get(run_id)

    def _set_end(self, run_id: str, status: str, tags: Mapping[str, str] | None) -> None:
        if run_id in self.quiet_ends:
            self._end_child(run_id, status, tags)
            return
        if run_id in self.spills or self.gone is not None:
            self._resend(run_id)
            run_id = self.run_id(run_id)
        if run_id in self.spills:  # the server is still gone: the end joins what the run kept
            self._end_unsent(self.spills[run_id], status, tags)
            return
        if status == "FINISHED":
            tags = self._say_missing_points(run_id, tags)
        if tags:
            self.set_tags(run_id, tags)
        self._send(run_id, lambda: self.client.set_terminated(run_id, status=status),
                   lambda spill: self._end_unsent(spill, status, tags))

    def _say_missing_points(self, run_id: str, tags: Mapping[str, str] | None) -> Mapping[str, str] | None:
        """Over a tracking server, before a FINISHED end: count the run's ``loss`` points the server
        holds against those it acknowledged. A run that lacks some still ends FINISHED (its descent
        did), but tagged ``record.incomplete=true`` and ``record.missing``, with a line on stderr."""
        sent = self.loss_sent.get(run_id, 0)
        if not (is_server(self.uri) and sent):
            return tags
        try:
            held = len(self.client.get_metric_history(run_id, "loss"))
        except Exception as exc:
            if not unsent.server_gone(exc):
                raise
            return tags  # the end goes to the spill folder; the upload sends every point again
        if held >= sent:
            return tags
        line = f"{sent - held} of the {sent} loss points the server acknowledged for run {self.run_name(run_id)} are not in it"
        print(f"warning: tracking: {line} (tagged record.incomplete=true)", file=sys.stderr)
        return {**(tags or {}), "record.incomplete": "true", "record.missing": line}

    # -- a tracking server that goes away (runner.tracking.unsent) -------------------------------
    def _send(self, run_id: str, send, spill) -> bool:
        """``send()`` to the store; while a tracking server is gone, or if it goes during the call
        (MLflow's retries spent), ``spill(the run's Spill)`` instead. Then no later call waits for
        the server: a run whose server went away ends as soon as its descent does. A run that has
        spilled keeps spilling (its records stay in order) until its end sends them (:meth:`_resend`).
        Whether it was sent."""
        if self.gone is None and run_id not in self.spills:
            try:
                send()
                return True
            except Exception as exc:
                if not self._is_gone(exc):
                    raise
                self._went(exc, run_id)
        spill(self._spill(run_id))
        return False

    def _is_gone(self, exc: BaseException) -> bool:
        """Whether ``exc`` means that the tracking server is gone: the call could not reach it, and
        neither can a plain health check now (a server that answers with errors, e.g. HTTP 500 from
        an artifact store it cannot write, is there: that error is the run's)."""
        return is_server(self.uri) and unsent.server_gone(exc) and not self._answers()

    def _answers(self) -> bool:
        """Whether the tracking server's ``/health`` answers within 2 s."""
        try:
            check_reachable(self.uri, timeout=2.0)
        except StoreError:
            return False
        return True

    def _went(self, exc: BaseException, run_id: str) -> None:
        """The server stopped answering during a call for ``run_id``: say so, once, and where the
        rest goes."""
        self.gone = unsent.reason(exc)
        where = (f"the sweep's next runs are kept in their job folders ({unsent.FOLDER}/)" if run_id in self.quiet_ends
                 else f"the rest of run {self.run_name(run_id)} goes to {self._spill(run_id).folder}")
        print(f"warning: tracking: the MLflow server at {self.uri} stopped answering ({self.gone}); {where}", file=sys.stderr)

    def run_name(self, run_id: str) -> str:
        return self.names.get(run_id, run_id)

    def _spill(self, run_id: str) -> unsent.Spill:
        """The run's spill folder: ``<job folder>/unsent`` (``outputs/unsent/<run id>`` without one)."""
        if run_id not in self.spills:
            job = self.folders.get(run_id)
            folder = Path(job, unsent.FOLDER) if job else Path("outputs", unsent.FOLDER, run_id)
            if unsent.folders(folder) and unsent.load(unsent.folders(folder)[0]).run["run_id"] != run_id:
                folder = folder.with_name(f"{unsent.FOLDER}-{run_id}")  # an earlier run's, not uploaded
            self.spills[run_id] = unsent.Spill(folder.resolve(), self.uri, run_id, self.run_name(run_id))
        return self.spills[run_id]

    def _end_unsent(self, spill: unsent.Spill, status: str, tags: Mapping[str, str] | None) -> None:
        """The run's end goes to its spill folder too; one line says where and how to send it."""
        spill.set_end(status, tags)
        self.unsent[spill.run_id] = str(spill.folder)
        print(f"error: {spill.line()}", file=sys.stderr)
        sys.stderr.flush()

    def _resend(self, run_id: str) -> None:
        """Before a run's end: if the server answers again, send what the run spilled, and the
        server is no longer gone. If it does not answer, nothing changes (the end spills too)."""
        try:
            check_reachable(self.uri, timeout=2.0)
        except StoreError as exc:
            self.gone = self.gone or str(exc)
            return
        spill = self.spills.get(run_id)
        if spill is not None and (spill.folder / "run.json").exists():
            try:
                sent = unsent.replay(self.client, unsent.load(spill.folder), end=False)
            except Exception as exc:
                if not unsent.server_gone(exc):
                    raise
                return
            import shutil

            shutil.rmtree(spill.folder, ignore_errors=True)
            del self.spills[run_id]
            if sent["run_id"] != run_id:  # created just now: its stand-in id names it from here on
                self._handles[run_id] = sent["run_id"]
        self.gone = None

    def unsent_runs(self) -> dict[str, str]:
        """Runs whose end did not reach the server: run id -> the folder to upload."""
        return dict(self.unsent)

    def server_gone(self, ask: bool = False) -> str | None:
        """Why the tracking server counts as gone (None: it answers, or the store is no server);
        ``ask``: ask the server now, even if no call has found it gone yet."""
        if ask and self.gone is None and is_server(self.uri):
            if not self._answers():
                self.gone = "no answer to /health"
        elif self.gone is not None and self._back():
            self.gone = None
        return self.gone

    def _back(self, every: float = 10.0) -> bool:
        """Whether a gone server answers again; asked at most every ``every`` seconds (a sweep's
        next children go to disk meanwhile, without waiting on a server that does not answer)."""
        if time.monotonic() - self._gone_checked < every:
            return False
        self._gone_checked = time.monotonic()
        return self._answers()

    def create_child_run(self, run_name: str, tags: Mapping[str, str], start_ms: int, folder: str | None) -> str:
        """Create a run whose end its caller reports (a batched sweep's child): :meth:`_create`."""
        return self._create(run_name, tags, start_ms, folder, quiet=True)

    def _create(self, run_name: str, tags: Mapping[str, str], start_ms: int, folder: str | None, quiet: bool = False) -> str:
        """Create a run (``quiet``: its end is reported by the caller, see :meth:`_end_child`); its id. While the tracking server is gone, or if it goes now, the run is
        kept in ``<folder>/unsent`` with what ``python -m runner.upload`` needs to create it (the
        experiment, start time and tags), and a stand-in id (``unsent-…``) names it here."""
        went = None
        if self.gone is None or self._back():
            self.gone = None
            try:
                created = self.client.create_run(self.experiment_id, run_name=run_name, tags=dict(tags), start_time=start_ms)
                return self._named(created.info.run_id, run_name, folder, quiet)
            except Exception as exc:
                if not self._is_gone(exc):
                    raise
                went = exc
        run_id = self._named(f"unsent-{uuid.uuid4().hex}", run_name, folder, quiet)
        self._spill(run_id).keep_creation({"experiment_id": self.experiment_id, "start_time": start_ms, "tags": dict(tags)})
        if went is not None:
            self._went(went, run_id)
        return run_id

    def _named(self, run_id: str, run_name: str, folder: str | None, quiet: bool) -> str:
        self.names[run_id] = run_name
        if quiet:
            self.quiet_ends.add(run_id)
        if folder:
            self.folders[run_id] = folder
        return run_id

    def log_batch(self, run_id: str, metrics: list, params: list) -> None:
        """Metrics and params of a run in one call (the client splits what exceeds MLflow's limits)."""
        self._send(run_id, lambda: self.client.log_batch(run_id, metrics=metrics, params=params, synchronous=True),
                   lambda spill: (spill.params({p.key: p.value for p in params}),
                                  spill.metrics([(m.key, m.value, m.timestamp, m.step) for m in metrics])))

    def _end_child(self, run_id: str, status: str, tags: Mapping[str, str] | None) -> None:
        """End a run created by :meth:`create_child_run`; an end the server did not take is kept
        with the run's other records, without a line (the caller counts them: :meth:`unsent_runs`)."""
        self.quiet_ends.discard(run_id)

        def keep(spill: unsent.Spill) -> None:
            spill.set_end(status, tags)
            self.unsent[run_id] = str(spill.folder)

        if tags:
            self.set_tags(run_id, tags)
        self._send(run_id, lambda: self.client.set_terminated(run_id, status=status), keep)

    def keep_sweep_end(self, parent: str, ended: str) -> str:
        """The tracking server is gone as a sweep ends: its parent's end (a summary of the sweep,
        as :func:`runner.sweeps.summary.finish_sweep` makes it) is kept for ``python -m
        runner.upload``, beside what the parent did not send; the folder."""
        spill = self._spill(self.run_id(parent))
        spill.set_sweep_end(ended)
        self.open_runs.pop(spill.run_id, None)
        self.unsent[spill.run_id] = str(spill.folder)
        return str(spill.folder)

    def note_failure(self, method: str, args: tuple, line: str) -> None:
        """Remember that writing a run's record failed (see ``failures``)."""
        run = args[0][0] if method == "plots_done" and args else (args[0] if method in RUN_METHODS and args else None)
        if isinstance(run, str):
            self.failures.setdefault(self.run_id(run), line)

    def end_open_runs(self, status: str, tags: Mapping[str, str], guarded: bool = False) -> list[dict[str, Any]]:
        """End every run started here and not ended (not a sweep's parent unless ``guarded``) with
        ``status`` and ``tags``, logging the files it was writing; what was ended: name, run id,
        last step of ``loss`` (-1: none) and the error if the store could not take the write.

        The writer calls it when the process that drives it is interrupted or dies, so that no run
        stays RUNNING while the store can still take the write."""
        ended = []
        for run_id, run in list(self.open_runs.items()):
            if run.guarded and not guarded:
                continue
            entry = {"name": run.name, "run_id": run_id, "last_step": run.last_step, "error": None}
            try:
                if run.files:
                    self.log_files(run_id, {name: _CompleteLines(path) for name, path in run.files.items()})
                    entry["last_step"] = max(run.last_step, last_table_step(run.files.get("trajectory.csv")))
            except Exception as exc:  # noqa: BLE001 - the run is ended all the same
                entry["error"] = error_line("log_files", exc, self.uri)
            step = entry["last_step"]
            try:
                self.end_run(run_id, status, {**tags, "final_step": str(step)} if step >= 0 else dict(tags))
            except Exception as exc:  # noqa: BLE001 - reported, one line
                entry["error"] = error_line("end_run", exc, self.uri)
                self.open_runs.pop(run_id, None)
            entry["unsent"] = self.unsent.get(run_id)
            ended.append(entry)
        return ended

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
        except Exception as exc:
            self.note_failure("log_files", (run_id,), error_line("log_files", exc, self.uri))
            raise
        finally:
            if run_id in self._deferred_end:
                self.end_run(run_id, *self._deferred_end.pop(run_id))

    # -- artifacts --------------------------------------------------------------------------
    def log_files(self, run_id: str, files: Mapping[str, Any]) -> None:
        """Log ``{relative path: content}`` as the run's artifacts, in one call: bytes and text are
        written to a temporary folder, a :class:`~pathlib.Path` is copied from where it is.

        If the copy into the artifact store fails half-way (a full disk), the files it left
        truncated there are removed: an artifact is whole or absent."""
        run_id = self.run_id(run_id)
        with tempfile.TemporaryDirectory(prefix="runner-artifacts-") as tmp:
            try:
                for rel, content in files.items():
                    _write_file(Path(tmp, rel), content)
            except OSError as exc:
                kind = StoreFault if faults.describe(exc) else StoreError
                raise kind(f"tracking: cannot stage the artifacts of run {run_id} ({faults.describe(exc, tmp) or exc})") from None
            try:
                self.send_files(run_id, Path(tmp))
            except Exception as exc:
                kind = StoreFault if faults.describe(exc) else StoreError
                raise kind(self._artifacts_failed(run_id, Path(tmp), exc)) from None

    def send_files(self, run_id: str, staged: Path) -> None:
        """Log the files under ``staged`` as the run's artifacts, at their paths below it (kept in the
        run's spill folder while the tracking server is gone)."""
        self._send(run_id, lambda: self.client.log_artifacts(run_id, str(staged)), lambda spill: spill.files(staged))

    def _artifacts_failed(self, run_id: str, staged: Path, exc: Exception) -> str:
        """Remove the truncated copies ``log_artifacts`` left in a local artifact store; the line."""
        dest = self._local_artifact_dir(run_id)
        removed = _remove_partial_copies(staged, dest) if dest is not None else []
        what = faults.describe(exc, dest) or error_line("log_artifacts", exc, self.uri)
        note = f"; removed the partial {', '.join(removed)}" if removed else ""
        return f"tracking: cannot write the artifacts of run {run_id}: {what}{note}"

    def _local_artifact_dir(self, run_id: str) -> Path | None:
        try:
            uri = self.client.get_run(run_id).info.artifact_uri
        except Exception:  # noqa: BLE001 - the store itself is failing: nothing to clean up there
            return None
        if uri.startswith("file:"):
            return Path(urllib.parse.unquote(urllib.parse.urlparse(uri).path))
        return Path(uri) if uri.startswith("/") else None

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

    # -- resuming (runner.tracking.reuse) -------------------------------------------------------
    def find_finished(self, fingerprint: str, device: str) -> dict[str, Any] | None:
        """The newest FINISHED run of this experiment with this fingerprint and kind of device."""
        from runner.tracking.reuse import find_finished

        return find_finished(self.client, self.experiment_id, fingerprint, device)

    def done_keys(self) -> set[tuple[str, str]]:
        """``(fingerprint, device type)`` of every FINISHED run of this experiment."""
        from runner.tracking.reuse import done_keys

        return done_keys(self.client, self.experiment_id)

    def mark_reused(self, run_id: str, parent_run_id: str) -> None:
        """Link a reused run to the sweep that reused it (``reused_by.<parent id>``)."""
        from runner.tracking.reuse import REUSED_BY

        self.client.set_tag(run_id, REUSED_BY + self.run_id(parent_run_id), "true")

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


class _CompleteLines:
    """A text file another process was writing when it stopped: only its complete lines are logged."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)


def _write_file(path: Path, content: Any) -> None:
    """Stage one artifact: bytes or text, a file copied, or a file's complete lines."""
    import shutil

    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, _CompleteLines):
        shutil.copyfile(content.path, path)
        truncate_to_last_line(path)
    elif isinstance(content, Path):
        shutil.copyfile(content, path)
    else:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())


def truncate_to_last_line(path: Path, block: int = 1 << 16) -> None:
    """Cut a text file after its last newline (a row half-written when its writer stopped)."""
    with open(path, "r+b") as out:
        end = out.seek(0, os.SEEK_END)
        while end > 0:
            start = max(0, end - block)
            out.seek(start)
            found = out.read(end - start).rfind(b"\n")
            if found >= 0:
                out.truncate(start + found + 1)
                return
            end = start
        out.truncate(0)


def last_table_step(path: str | None) -> int:
    """The step of the last whole row of a trajectory.csv (its first column), -1 if none."""
    if not path or not Path(path).exists():
        return -1
    with open(path, "rb") as table:
        end = table.seek(0, os.SEEK_END)
        table.seek(max(0, end - (1 << 16)))
        rows = table.read().split(b"\n")[:-1]  # the part after the last newline is not whole
    try:
        return int(rows[-1].split(b",", 1)[0]) if rows else -1
    except ValueError:  # the header: no row yet
        return -1


def _remove_partial_copies(staged: Path, dest: Path) -> list[str]:
    """Delete the files under ``dest`` whose size differs from their staged original."""
    removed = []
    for src in staged.rglob("*"):
        if not src.is_file():
            continue
        rel = src.relative_to(staged)
        copy = dest / rel
        try:
            if copy.exists() and copy.stat().st_size != src.stat().st_size:
                copy.unlink()
                removed.append(str(rel))
        except OSError:
            pass
    return removed


def error_line(method: str, exc: BaseException, uri: str = "") -> str:
    """One line for an exception of a store call: a fault of the disk names the path (the file the
    OS names, else the SQLite database), anything else its type and first line."""
    if isinstance(exc, StoreError):
        return str(exc)
    if is_server(uri) and unsent.server_gone(exc):
        why = unsent.reason(exc)
        answer = "answers with errors" if why.startswith("it answered HTTP") else "does not answer"
        return f"tracking: {method} failed: the MLflow server at {uri} {answer} ({why})"
    path = None if faults.os_error(exc) is not None else sqlite_path(uri)
    fault = faults.describe(exc, path.resolve() if path is not None else None)
    if fault is not None:
        return f"tracking: {method} failed: {fault}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"tracking: {method} failed: {type(exc).__name__}: {text}"
