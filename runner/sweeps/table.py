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


def put_created_ids(client, parent_id: str) -> int:
    """Give the parent's table the ids of the children ``runner.upload`` created.

    A batched sweep's child that its tracking server never saw is named in the table by a stand-in
    id (``unsent-…``) until the upload creates it, tagged ``record.stand_in`` with that id
    (:func:`runner.tracking.unsent.create`). Each table that holds such ids is downloaded, its
    ``run_id`` dictionary mapped to the created ids (the rows themselves are not rewritten) and
    logged again at the same path. Returns how many ids it replaced; one whose child is not created
    yet stays, for a later upload."""
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    from runner.tracking.unsent import STAND_IN_TAG

    if not any(a.path == FOLDER for a in client.list_artifacts(parent_id)):
        return 0
    experiment = client.get_run(parent_id).info.experiment_id
    created = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent_id}' "
                                 f"and tags.`{STAND_IN_TAG}` LIKE 'unsent-%'", max_results=50000)
    ids = {run.data.tags[STAND_IN_TAG]: run.info.run_id for run in created}
    replaced = 0
    with tempfile.TemporaryDirectory(prefix="runner-table-") as tmp:
        for path in sorted(Path(client.download_artifacts(parent_id, FOLDER, tmp)).glob("*.parquet")):
            table = pq.read_table(path)
            column = table.column("run_id").combine_chunks()
            names = column.dictionary.to_pylist()
            found = sum(name in ids for name in names)
            if not found:
                continue
            mapped = pa.DictionaryArray.from_arrays(column.indices, pa.array([ids.get(n, n) for n in names]))
            pq.write_table(table.set_column(table.schema.get_field_index("run_id"), "run_id", mapped), path)
            client.log_artifact(parent_id, str(path), FOLDER)
            replaced += found
    return replaced
