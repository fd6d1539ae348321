"""Many child runs in few calls (the batched launcher's records), and the parent's trajectory table.

Runs in the writer process, on :class:`runner.tracking.store.MlflowStore`'s client, through MLflow's
public client API only. Each child costs three store transactions, the fewest MLflow's API allows:
``create_run`` with every tag (the end tags are known: the descent is over), one ``log_batch`` with
its params and metric points (the client splits what exceeds MLflow's limits), and
``set_terminated``. A child whose artifacts include plots is ended once its figures are logged
(:meth:`MlflowStore.end_run` defers it), as a job's run is.

What was logged stays readable here without asking the store again: the sweep's summary reads each
child's histories (``loss``, ``x/<var>``) from :data:`HISTORIES` (:func:`logged_history`), ~30 ms a
history on SQLite on the dev box, ~90 s for a 1,000-child sweep otherwise.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

HISTORIES: dict[str, dict[str, tuple[list[int], list[float]]]] = {}  # run id -> key -> logged points
RUN_IDS: dict[tuple[str, int], str] = {}  # (parent run id, job number) -> child run id
WRITTEN: dict[str, int] = {}  # progress token -> children written so far
CANCELLED: set[str] = set()  # tokens whose children not yet written are dropped (an interrupted sweep)


def log_children(store: Any, parent: str | None, children: list[Mapping[str, Any]], token: str) -> list[str]:
    """Create, log and end each child (see :mod:`runner.batched.children` for a child's fields);
    their run ids. ``parent``: the parent's run id or the writer's handle for it."""
    parent_id = store.run_id(parent) if parent else None
    ids = []
    for child in children:
        if token in CANCELLED:
            break
        run_id = _log_child(store, parent_id, child)
        if parent_id:
            RUN_IDS[(parent_id, int(child["key"]))] = run_id
        WRITTEN[token] = WRITTEN.get(token, 0) + 1
        ids.append(run_id)
    return ids


def _log_child(store: Any, parent_id: str | None, child: Mapping[str, Any]) -> str:
    """One child: created, logged and ended. While the tracking server is gone, all of it goes to
    ``<job folder>/unsent`` instead (:meth:`MlflowStore.create_child_run`), for ``runner.upload``."""
    from mlflow.entities import Metric, Param

    from runner.tracking.records import param_text

    tags = dict(child["tags"])
    if parent_id:
        tags["mlflow.parentRunId"] = parent_id
    stamp = int(child["timestamp_ms"])
    run_id = store.create_child_run(child["name"], tags, stamp, child.get("folder"))
    try:
        metrics, logged = [], {}
        for key, (steps, values) in child["metrics"].items():
            points = [(int(s), float(v)) for s, v in zip(steps.tolist(), values.tolist()) if math.isfinite(v)]
            logged[key] = ([s for s, _ in points], [v for _, v in points])
            metrics += [Metric(key, v, stamp, s) for s, v in points]
        store.log_batch(run_id, metrics, [Param(k, param_text(v)) for k, v in child["params"].items()])
        HISTORIES[run_id] = logged
        if child.get("bundle"):
            store.log_run_artifacts(run_id, child["bundle"])
        store.end_run(run_id, "FINISHED")  # deferred until its figures are logged
    except BaseException as exc:  # the run must not stay RUNNING; the error goes on to the caller
        store.end_run(run_id, "FAILED", {"error": f"{type(exc).__name__}: {exc}"[:500]})
        raise
    return run_id


def children_written(token: str) -> int:
    return WRITTEN.get(token, 0)


def cancel_children(token: str) -> None:
    """Drop the children of ``token`` not written yet (the child being written is finished)."""
    CANCELLED.add(token)


def logged_history(run_id: str, key: str) -> tuple[list[int], list[float]] | None:
    """The points of ``key`` this process logged for ``run_id`` (None: it logged none)."""
    return HISTORIES.get(run_id, {}).get(key)


def log_trajectory_table(store: Any, parent: str, artifact_file: str, columns: Mapping[str, Any],
                         names: Mapping[int, str]) -> None:
    """The parent's table of every trajectory, as Parquet at ``artifact_file``: the ``columns``
    (``job``, ``step``, ``loss``, …; one line per job and step) and each line's ``run_name`` and
    ``run_id`` (dictionary-encoded; for a child the server never saw, its stand-in ``unsent-…``,
    which ``runner.upload`` replaces with the id it creates), the children having been logged by
    :func:`log_children`."""
    import tempfile
    from pathlib import Path

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    parent_id = store.run_id(parent)
    jobs = np.asarray(columns["job"])
    known, codes = np.unique(jobs, return_inverse=True)
    run_ids = [RUN_IDS.get((parent_id, int(j)), "") for j in known]
    table = {"job": pa.array(jobs, pa.int32()),
             "run_name": pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array([names[int(j)] for j in known])),
             "run_id": pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(run_ids))}
    for name, values in columns.items():
        if name != "job":
            table[name] = pa.array(np.asarray(values))
    with tempfile.TemporaryDirectory(prefix="runner-table-") as tmp:
        Path(tmp, artifact_file).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(table), Path(tmp, artifact_file))
        store.send_files(parent_id, Path(tmp))
