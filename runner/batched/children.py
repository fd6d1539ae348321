"""A group's rows as MLflow child runs, and the parent's table of every trajectory.

Each row becomes the record its job would have made alone (:mod:`runner.job`): the same name,
params (the resolved config, flattened), tags (the start tags and the end tags: ``outcome``,
``final_step``, ``log_every``, …), metrics at the same steps (every ``stride``-th step and the final
one) and, with ``tracking.artifacts``, the same artifacts (config, trajectory.csv in the job's
folder, plots). The records go to the writer process in chunks, which creates each child, logs it
in one batch and ends it in one call (:meth:`runner.tracking.store.MlflowStore.log_children`): a
child is never left RUNNING, even if the sweep is interrupted while they are written.

The parent's table (:func:`table_columns`) holds every step of every row (or, when that would not
fit in memory, each row's metric samples), one line per (job, step); the writer adds each job's run
id and stores it as Parquet under the parent's ``trajectories/`` (:mod:`runner.sweeps.table` reads it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from runner.batched.group import GroupRun
from runner.job import artifact_bundle, end_tags, start_tags
from runner.tracking import records
from runner.tracking.naming import JOB_TAG

CHUNK = 10  # children per call to the writer: the progress bar moves every ~0.5 s on the dev box


def child_records(run: GroupRun) -> Iterator[dict[str, Any]]:
    """The rows' records for :meth:`runner.tracking.store.MlflowStore.log_children`, in row order
    (rows whose job does not record are left out); writes each row's trajectory.csv when its job
    keeps artifacts."""
    traj, started_ms = run.traj, int(time.time() * 1000)
    for row, (job, plan) in enumerate(zip(run.group.jobs, run.plans)):
        if not job.cfg.tracking.enabled:
            continue
        bundle = None
        if job.cfg.tracking.artifacts:
            bundle = artifact_bundle(plan, traj, write_csv(run, row, job.output_dir / "trajectory.csv"), row)
        yield {
            "key": job.num,
            "name": plan.name,
            "params": records.flatten(job.values),
            "tags": {**start_tags(plan), JOB_TAG: str(job.num), **end_tags(plan, traj, row)},
            "metrics": records.metric_series(traj, row, plan.x_names, plan.g_names, plan.stride),
            "timestamp_ms": started_ms,
            "bundle": bundle,
            "folder": str(job.output_dir),  # where its records go if the tracking server goes away
        }


def write_csv(run: GroupRun, row: int, path: Path) -> Path:
    """Row ``row``'s every step as the job's trajectory.csv (the job-by-job path streams the same)."""
    traj, plan = run.traj, run.plans[row]
    at = traj.row_positions(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    window = {"loss": traj.loss[at], "grad_norm": traj.grad_norm[at], "x": traj.x[at], "grad": traj.grad[at]}
    with open(path, "w", encoding="ascii") as out:
        out.write(",".join(records.table_header(plan.x_names, plan.g_names)) + "\n")
        rows = records.table_rows(0, window, row, np.arange(len(at)))
        rows[:, 0] = traj.steps[at]
        records.write_csv_rows(out, rows)
    return path


def chunks(items: Iterator[dict], size: int = CHUNK) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def table_columns(run: GroupRun) -> dict[str, np.ndarray]:
    """One line per (job, step) of the rows' own steps (up to each row's final step; every step, or
    each row's metric samples when the group did not keep every step): ``job``, ``step``, ``loss``,
    ``grad_norm``, ``x/<var>``, ``grad/<var>``. Rows whose job does not record are left out."""
    traj = run.traj
    recorded = np.array([job.cfg.tracking.enabled for job in run.group.jobs])
    own = (traj.steps[:, None] <= traj.final_step[None, :]) & recorded[None, :]
    if not run.every_step:
        strides = np.array([plan.stride for plan in run.plans])
        own &= ((traj.steps[:, None] % strides[None, :]) == 0) | (traj.steps[:, None] == traj.final_step[None, :])
    rows, at = np.nonzero(own.T)  # grouped by row, steps in order
    nums = np.array([job.num for job in run.group.jobs])
    plan = run.plans[0]
    columns = {"job": nums[rows], "step": traj.steps[at], "loss": traj.loss[at, rows], "grad_norm": traj.grad_norm[at, rows]}
    for j, name in enumerate(plan.x_names):
        columns[f"x/{name}"] = traj.x[at, rows, j]
    for j, name in enumerate(plan.g_names):
        columns[f"grad/{name}"] = traj.grad[at, rows, j]
    return columns


def merge_columns(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The groups' tables as one (a column a group lacks, such as another objective's ``x/<var>``,
    is NaN in its lines)."""
    names: list[str] = []
    for part in parts:
        names += [n for n in part if n not in names]
    out = {}
    for name in names:
        pieces = [part[name] if name in part else np.full(len(part["job"]), np.nan) for part in parts]
        out[name] = np.concatenate(pieces)
    return out
