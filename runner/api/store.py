"""The API's MLflow store: opened in this process, kept for the next call.

A script or a notebook that makes many runs should not start a writer process for each (a second
interpreter importing MLflow, ~2-3 s); nor leave one running between calls. So the API's calls
record through one :class:`runner.tracking.store.MlflowStore` of this process, made on first use;
MLflow keeps one database engine per store URI, so repeated calls open nothing new. A relative
SQLite URI (the default ``sqlite:///outputs/mlflow.db``) is made absolute against the working folder
of the call, so a notebook that changes folders between calls records where the command line would.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

_STORE = None


def absolute(uri: str) -> str:
    """``sqlite:///outputs/mlflow.db`` → ``sqlite:////now/here/outputs/mlflow.db``; others unchanged."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        return prefix + os.path.abspath(uri[len(prefix):])
    return uri


def _store():
    import warnings

    with warnings.catch_warnings():  # tqdm's "IProgress not found" when MLflow imports it in a notebook
        warnings.simplefilter("ignore")
        import mlflow.tracking  # noqa: F401

    from runner.tracking.store import MlflowStore, quiet_mlflow_logs

    class InProcessStore(MlflowStore):
        """The writer's store, in this process, opening SQLite files by absolute path."""

        def open(self, uri: str, experiment: str, **settings) -> str:
            return super().open(absolute(uri), experiment, **settings)

    quiet_mlflow_logs()
    return InProcessStore()


@contextmanager
def in_process_store() -> Iterator[None]:
    """Run the enclosed job against this process's store instead of a writer process."""
    global _STORE
    from runner.tracking import writer

    if _STORE is None:
        _STORE = _store()
    with writer.using(_STORE):
        yield
