"""Finding runs that were already made: what ``resume=true`` reuses instead of running again.

A run can stand in for a new job when it FINISHED, in the same experiment, with the same config
fingerprint (``runner.fingerprint``, see :mod:`runner.tracking.fingerprint`) and on the same kind of
device (the tag ``device``: ``cpu``, ``cuda:0`` … compared by type). Runs that failed or were killed
never stand in: their jobs run again. A reused run is linked to the new sweep by the tag
``reused_by.<parent run id>`` (a run keeps its own parent; the new sweep's summary lists it, marked
as reused). These functions run where MLflow is imported: the writer process, or the API's store.
"""

from __future__ import annotations

import math
from typing import Any

FINGERPRINT_TAG = "runner.fingerprint"
REUSED_BY = "reused_by."


def device_type(device: str) -> str:
    """``cuda:0`` → ``cuda``; ``cpu`` → ``cpu``."""
    return device.split(":", 1)[0]


def finished_runs(client, experiment_id: str, fingerprint: str | None = None) -> list:
    """FINISHED runs of the experiment that carry a fingerprint (or this one), newest first."""
    where = "attributes.status = 'FINISHED'"
    where += f" and tags.`{FINGERPRINT_TAG}` = '{fingerprint}'" if fingerprint else f" and tags.`{FINGERPRINT_TAG}` != ''"
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=where, max_results=1000, order_by=["attributes.start_time DESC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def describe(run) -> dict[str, Any]:
    """What a job needs of the run it reuses: its id, name, outcome, final step and the value the
    job returned (the final loss; inf when it diverged)."""
    tags = run.data.tags
    loss = run.data.metrics.get("loss", math.nan)
    return {
        "run_id": run.info.run_id,
        "name": run.info.run_name,
        "outcome": tags.get("outcome", ""),
        "final_step": tags.get("final_step", ""),
        "value": math.inf if tags.get("outcome") == "diverged" else loss,
    }


def find_finished(client, experiment_id: str, fingerprint: str, device: str) -> dict[str, Any] | None:
    """The newest FINISHED run with this fingerprint on this kind of device, or None."""
    for run in finished_runs(client, experiment_id, fingerprint):
        if device_type(run.data.tags.get("device", "")) == device_type(device):
            return describe(run)
    return None


def done_keys(client, experiment_id: str) -> set[tuple[str, str]]:
    """``(fingerprint, device type)`` of every FINISHED run of the experiment."""
    return {(r.data.tags[FINGERPRINT_TAG], device_type(r.data.tags.get("device", ""))) for r in finished_runs(client, experiment_id)}
