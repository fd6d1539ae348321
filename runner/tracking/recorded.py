"""A recorded run read back: its resolved config, its final loss and final point.

The config is the run's ``config.yaml`` artifact (the resolved config, as the job saw it), or, when
the run kept no artifacts, rebuilt from its params (each a dotted key whose value is YAML text). The
final point is the last row of its ``trajectory.csv`` (written with 17 significant digits, so it reads
back as the same doubles), or the last values of its ``x/<var>`` metrics.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from contextlib import contextmanager
from typing import Any, Iterator


@contextmanager
def quiet_downloads() -> Iterator[None]:
    """No MLflow progress bar while artifacts download (noise on a terminal and in a notebook)."""
    before = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        yield
    finally:
        if before is None:
            del os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"]
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = before


def artifact_text(client, run_id: str, path: str) -> str | None:
    """The text of one of the run's artifacts, or None when it has no such file."""
    if path not in {a.path for a in client.list_artifacts(run_id, os.path.dirname(path) or None)}:
        return None
    with tempfile.TemporaryDirectory(prefix="runner-recorded-") as tmp, quiet_downloads():
        with open(client.download_artifacts(run_id, path, tmp), encoding="utf-8") as file:
            return file.read()


def recorded_config(client, run) -> dict[str, Any]:
    """The run's resolved config: its ``config.yaml``, else rebuilt from its params."""
    import yaml

    text = artifact_text(client, run.info.run_id, "config.yaml")
    if text is not None:
        return yaml.safe_load(text)
    config: dict[str, Any] = {}
    for key, value in run.data.params.items():
        node = config
        *path, leaf = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return config


def recorded_end(client, run) -> tuple[float, dict[str, float]]:
    """(final loss, {variable: final value}) as recorded: inf loss for a diverged run."""
    text = artifact_text(client, run.info.run_id, "trajectory.csv")
    if text is not None:
        rows = list(csv.DictReader(text.splitlines()))
        last = rows[-1]
        point = {k[2:]: float(v) for k, v in last.items() if k.startswith("x/")}
        return float(last["loss"]), point
    point = {k[2:]: v for k, v in run.data.metrics.items() if k.startswith("x/")}
    loss = math.inf if run.data.tags.get("outcome") == "diverged" else run.data.metrics.get("loss", math.nan)
    return loss, point
