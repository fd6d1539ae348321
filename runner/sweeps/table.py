"""The parent run's table of every trajectory of a batched sweep (``trajectories/*.parquet``).

The batched launcher stores, on the sweep's parent run, one line per (job, step) of every child:
``job`` (Hydra's job number), ``run_name``, ``run_id``, ``step``, ``loss``, ``grad_norm``,
``x/<var>`` and ``grad/<var>`` (every step of every run, or each run's metric samples where every
step would not fit in memory), one Parquet file per launch. :func:`load` reads it back::

    from runner.sweeps.table import load
    df = load("3f2a…")                      # a parent run id (the default store), or
    df = load("3f2a…", "sqlite:///outputs/mlflow.db")
    df = load("path/to/trajectories")       # a downloaded folder or one .parquet file
    df[df.run_name == "rosenbrock-sgd-lr0.001-init[0,0]"].plot(x="step", y="loss")
"""

from __future__ import annotations

from pathlib import Path

FOLDER = "trajectories"


def load(source: str | Path, tracking_uri: str | None = None):
    """The table as a pandas DataFrame, sorted by job and step.

    Args:
        source: a parent run's id, or a path to a Parquet file or to a folder of them.
        tracking_uri: the store of the run (default: ``$MLFLOW_TRACKING_URI``, else the runner's
            ``sqlite:///outputs/mlflow.db``).
    """
    import pandas as pd
    import pyarrow.parquet as pq

    path = Path(source)
    if not path.exists():
        path = Path(_download(str(source), tracking_uri))
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"{source}: no trajectory table (the sweep ran with another launcher, or hydra.launcher.table=false)")
    frame = pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)
    return frame.sort_values(["job", "step"], kind="stable", ignore_index=True)


def _download(run_id: str, tracking_uri: str | None) -> str:
    from mlflow import MlflowClient

    from runner.tracking.store import resolve_uri

    client = MlflowClient(tracking_uri=resolve_uri(tracking_uri))
    if not any(a.path == FOLDER for a in client.list_artifacts(run_id)):
        raise FileNotFoundError(f"run {run_id} has no {FOLDER}/ (the sweep ran with another launcher, or hydra.launcher.table=false)")
    return client.download_artifacts(run_id, FOLDER)
