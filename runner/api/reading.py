"""Reading runs back from the store, through MLflow's client: tables of runs, trajectories, results.

The store is the one a run would use: ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else
``sqlite:///outputs/mlflow.db`` under the current folder.
"""

from __future__ import annotations

import io
import math
from typing import Any

from runner.api.compose import RunnerError
from runner.api.results import RunResult
from runner.tracking.naming import JOB_TAG
from runner.tracking.recorded import artifact_text, recorded_config


def client_for(tracking_uri: str | None):
    from mlflow import MlflowClient

    from runner.api.store import absolute
    from runner.tracking.store import quiet_mlflow_logs, resolve_uri

    quiet_mlflow_logs()
    # absolute: MLflow caches one engine per URI string, so a relative sqlite URI read again after
    # a chdir (another notebook folder, another test) would reach the first folder's database
    return MlflowClient(tracking_uri=absolute(resolve_uri(tracking_uri)))


def search(client, experiment: str, parent: str | None) -> list:
    """Every run of the experiment, oldest first; or the children of the sweep ``parent``, in the
    order of its jobs (their ``sweep.job`` tag; a batched sweep's children all start at the same
    millisecond, so their start time cannot order them)."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise RunnerError(f"tracking.experiment: no experiment {experiment!r} in {client.tracking_uri}")
    where = f"tags.`mlflow.parentRunId` = '{parent}'" if parent else ""
    runs, token = [], None
    while True:
        page = client.search_runs([found.experiment_id], filter_string=where, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    if parent:
        return sorted(runs, key=lambda r: (_job_number(r), r.info.start_time))
    return sorted(runs, key=lambda r: (r.info.start_time, _job_number(r)))


def _job_number(run) -> float:
    number = run.data.tags.get(JOB_TAG, "")
    return int(number) if number.isdigit() else math.inf


def runs_frame(experiment: str, parent: str | None, tracking_uri: str | None):
    """One row per run: ``run_id``, ``run_name``, ``status``, then ``params.*``, ``metrics.*`` (the
    last value) and ``tags.*`` (MLflow's own ``mlflow.*`` tags left out)."""
    import pandas as pd

    rows = []
    for r in search(client_for(tracking_uri), experiment, parent):
        row: dict[str, Any] = {"run_id": r.info.run_id, "run_name": r.info.run_name, "status": r.info.status}
        row.update({f"params.{k}": v for k, v in r.data.params.items()})
        row.update({f"metrics.{k}": v for k, v in r.data.metrics.items()})
        row.update({f"tags.{k}": v for k, v in r.data.tags.items() if not k.startswith("mlflow.")})
        rows.append(row)
    return pd.DataFrame(rows)


def trajectory_frame(run_id: str, tracking_uri: str | None):
    """The run's ``trajectory.csv`` (every step), else its metric histories, indexed by step."""
    import pandas as pd

    client = client_for(tracking_uri)
    text = artifact_text(client, run_id, "trajectory.csv")
    if text is not None:
        return pd.read_csv(io.StringIO(text)).set_index("step")
    run = client.get_run(run_id)
    keys = [k for k in run.data.metrics if k in ("loss", "grad_norm", "lr") or k.startswith(("x/", "grad/"))]
    columns = {k: {m.step: m.value for m in client.get_metric_history(run_id, k)} for k in keys}
    frame = pd.DataFrame(columns).sort_index()
    frame.index.name = "step"
    return frame


def child_results(tracking_uri: str, parent: str) -> list[RunResult]:
    """Each child of a sweep as a :class:`RunResult`, in the order of its jobs."""
    client = client_for(tracking_uri)
    parent_run = client.get_run(parent)
    experiment = client.get_experiment(parent_run.info.experiment_id).name
    return [result_of(client, run) for run in search(client, experiment, parent)]


def result_of(client, run) -> RunResult:
    """A recorded descent read back: outcome and final step from its tags, the trajectory from its
    metric samples, the config from its ``config.yaml`` when it has one (else its params)."""
    frame = trajectory_frame(run.info.run_id, client.tracking_uri)
    tags = run.data.tags
    final = int(tags.get("final_step", frame.index.max()))
    loss = frame["loss"].to_numpy(dtype=float)
    xs = {c[2:]: frame[c].to_numpy(dtype=float) for c in frame.columns if c.startswith("x/")}
    return RunResult(
        name=run.info.run_name,
        run_id=run.info.run_id,
        outcome=tags.get("outcome", run.info.status.lower()),
        final_step=final,
        final_loss=float(frame["loss"].get(final, math.inf)),
        x_final={n: float(v[-1]) for n, v in xs.items()},
        steps=frame.index.to_numpy(),
        loss=loss,
        grad_norm=frame["grad_norm"].to_numpy(dtype=float),
        x=xs,
        grad={c[5:]: frame[c].to_numpy(dtype=float) for c in frame.columns if c.startswith("grad/")},
        config=recorded_config(client, run),
    )
