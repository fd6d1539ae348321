"""A run under a batch scheduler (SLURM): the tags that name its job, and ending its runs for it.

A run that a SLURM job records carries ``slurm.job_id``: the id the job has in ``squeue`` and in
submitit, ``<array job>_<task>`` for a task of an array (``$SLURM_ARRAY_JOB_ID``,
``$SLURM_ARRAY_TASK_ID``), else ``$SLURM_JOB_ID``. When the scheduler ends the job before the job
ends its run (``scancel``, a time limit: SIGTERM, then SIGKILL after ``KillWait``; a preemption, a
node failure), the process that submitted it finds the run by that tag and ends it for it
(:func:`end_job_runs`): KILLED when the scheduler stopped it, FAILED otherwise, with the job's
SLURM state in ``slurm.state``. Nothing here imports torch: it runs in the writer process.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

JOB_TAG = "slurm.job_id"
STATE_TAG = "slurm.state"
# The scheduler stopped the job (the run's own code did not fail): the run ends KILLED.
KILLED_STATES = frozenset({"CANCELLED", "TIMEOUT", "PREEMPTED", "DEADLINE"})


def slurm_job_id(environ: Mapping[str, str] = os.environ) -> str | None:
    """The job's id as ``squeue`` and submitit show it (``12_3`` for task 3 of array 12), or None
    outside a SLURM job."""
    array_job, task = environ.get("SLURM_ARRAY_JOB_ID"), environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return environ.get("SLURM_JOB_ID") or None


def scheduler_tags(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Tags naming the scheduler's job that records this run (empty outside one)."""
    job_id = slurm_job_id(environ)
    if job_id is None:
        return {}
    tags = {JOB_TAG: job_id}
    if environ.get("SLURMD_NODENAME"):
        tags["slurm.node"] = environ["SLURMD_NODENAME"]
    return tags


def status_for(state: str) -> str:
    """MLflow's end status for a job that ended in SLURM state ``state`` without ending its run."""
    return "KILLED" if state in KILLED_STATES else "FAILED"


def end_job_runs(uri: str, experiment: str, job_id: str, state: str, reason: str,
                 files: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """End the runs that SLURM job ``job_id`` left RUNNING, and tag its runs that did not finish.

    Every run of ``experiment`` tagged ``slurm.job_id = job_id`` that is not FINISHED gets
    ``slurm.state``; one still RUNNING (its process was killed) also gets ``outcome`` (``killed`` or
    ``failed``), ``error`` = ``reason`` and the files in ``files`` (``{artifact name: path}``, e.g. the
    trajectory.csv the job streamed to its folder), and is ended KILLED for a state in
    :data:`KILLED_STATES`, else FAILED. Returns ``[(run id, status)]`` of the runs it looked at.
    """
    from pathlib import Path

    from mlflow import MlflowClient
    from mlflow.entities import RunTag

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs([found.experiment_id], filter_string=f"tags.`{JOB_TAG}` = '{job_id}'", max_results=100)
    ended = []
    for run in runs:
        if run.info.status == "FINISHED":
            continue
        tags = {STATE_TAG: state}
        status = run.info.status
        if status == "RUNNING":
            status = status_for(state)
            tags.update(outcome=status.lower(), error=reason[:500])
            _log_files(client, run.info.run_id, {k: Path(v) for k, v in (files or {}).items() if Path(v).is_file()})
        client.log_batch(run.info.run_id, tags=[RunTag(k, v) for k, v in tags.items()], synchronous=True)
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, status=status)
        ended.append((run.info.run_id, status))
    return ended


def _log_files(client: Any, run_id: str, files: Mapping[str, Any]) -> None:
    """Log ``{artifact name: path}`` as the run's artifacts (copied under those names first)."""
    if not files:
        return
    import shutil
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="runner-job-files-") as tmp:
        for name, path in files.items():
            shutil.copyfile(path, Path(tmp) / name)
        client.log_artifacts(run_id, tmp)
