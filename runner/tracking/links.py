"""Where to look at runs: addresses in the MLflow UI's model-training views, and how to open them.

MLflow 3's UI has two workflows, GenAI (traces, evaluations) and model training (runs, metrics,
charts). Version 3.17 picks one from the address's ``workflowType`` parameter, else from the choice
the browser remembers, and defaults to GenAI: a first visit to the UI's root, or to an experiment,
lands on "Traces 0, No data available" with no run in sight (in its built JS, the experiment page
takes the experiment kind from the current workflow type before the tag ``mlflow.experimentKind``).
So every address the runner prints is a deep link into the runs with
``workflowType=machine_learning``: an experiment's runs table (``#/experiments/<id>/runs``) or one
run (``#/experiments/<id>/runs/<run id>``, a sweep's parent among them). The store also tags the
experiments it creates (or opens without the tag) ``mlflow.experimentKind=custom_model_development``
(:data:`runner.tracking.store.EXPERIMENT_KIND_TAG`; the UI's "Machine learning" kind), which the experiments list shows and
a UI without the workflow switch reads.

The links point at a tracking server: the store's own address when it is one, else
``python -m runner.serve`` (a server over the local SQLite store) on 127.0.0.1:5000.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing

from runner.tracking.store import DEFAULT_URI, sqlite_path

VIEW = "workflowType=machine_learning"  # the UI's model-training workflow
SERVE_HOST, SERVE_PORT = "127.0.0.1", 5000  # python -m runner.serve's defaults


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def server_url(uri: str) -> str:
    """The UI's address for a store: the server itself, or where ``runner.serve`` serves a local one."""
    return uri.rstrip("/") if is_server(uri) else f"http://{SERVE_HOST}:{SERVE_PORT}"


def runs_page(server: str, experiment_id: str) -> str:
    """The experiment's runs table in the model-training view."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?{VIEW}"


def run_page(server: str, experiment_id: str, run_id: str) -> str:
    """One run's page (a sweep's parent lists its children) in the model-training view."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{VIEW}"


def experiments_page(server: str) -> str:
    """The list of experiments in the model-training view (when the experiment does not exist yet)."""
    return f"{server.rstrip('/')}/#/experiments?{VIEW}"


def how_to_open(uri: str, page: str) -> str:
    """``open <page>`` for a server; for a local store, the command that serves it first."""
    if is_server(uri):
        return f"open {page}"
    serve = "python -m runner.serve" + ("" if uri == DEFAULT_URI else f" --store {uri}")
    return f"{serve}, then open {page}"


def run_lines(uri: str, experiment: str, experiment_id: str, run_id: str) -> str:
    """The two lines after a run's result: where it is recorded, and how to look at it."""
    page = run_page(server_url(uri), experiment_id, run_id)
    return f"  mlflow run {run_id} in experiment '{experiment}' at {uri}\n  look at it: {how_to_open(uri, page)}"


def serve_lines(store: str, server: str, experiment: str) -> str:
    """What ``runner.serve`` prints at start: the store, the page to open (the experiment's runs, or
    the experiments while it does not exist yet) and how to log to the server."""
    found = experiment_id_in(store, experiment)
    page = runs_page(server, found) if found else experiments_page(server)
    where = f"the runs of experiment '{experiment}'" if found else f"the experiments (no '{experiment}' yet: it appears with the first run)"
    from runner.tracking.serving import redact

    return (f"MLflow UI and tracking server for {redact(store)}\n  open {where}: {page}\n"
            f"  log sweeps to it with: python -m runner -m ... tracking.uri={server}")


def experiment_id_in(store: str, name: str) -> str | None:
    """The id of experiment ``name`` in a local SQLite store, read with sqlite3 (milliseconds, no
    MLflow import); None when the file, the table or the experiment is not there, or for other stores."""
    path = sqlite_path(store)
    if path is None or not path.is_file():
        return None
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            row = db.execute(
                "SELECT experiment_id FROM experiments WHERE name = ? AND lifecycle_stage = 'active'", (name,)
            ).fetchone()
    except sqlite3.Error:
        return None
    return None if row is None else str(row[0])
