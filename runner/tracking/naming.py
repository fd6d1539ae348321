"""How runs are named, and how a sweep tells its jobs which parent and keys they belong to.

A run's name says what it is: ``<objective>-<optimizer>-lr<lr>`` (``g-sgd-lr0.1``), then the backend
when it is not autograd (``f-manual-lr0.1-finite_diff``), and in a multirun ``-<key><value>`` for
every other key the sweep varies (``g-sgd-lr0.1-momentum0.9``). A custom objective is named with a
short stable tag of its expression or target (``custom-9c1b1e-manual-lr0.1``), so that two different
expressions never share a name; the expression itself is the param ``objective.expr``. The sweep
callback (:mod:`runner.sweeps.callback`) runs in the launching process and hands the jobs, wherever
they run, two environment variables: the parent run and the swept keys.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Mapping

PARENT_ENV = "RUNNER_PARENT_RUN_ID"  # set by the sweep callback: the multirun's parent run
SWEPT_ENV = "RUNNER_SWEPT_KEYS"  # set by the sweep callback: comma-separated keys the sweep varies
# Keys every name already shows (the expression and target through the objective's tag).
NAMED = ("objective", "optimizer", "lr", "schedule", "backend", "objective.expr", "objective.target")
JOB_TAG = "sweep.job"  # on a sweep's child: its job's number (hydra.job.num)
TAG_DIGITS = 6  # hex digits of a custom objective's tag: 16.7 million tags


def swept_extras(cfg: Any) -> dict[str, Any]:
    """In a multirun, the overridden keys that the base run name does not already show.

    With the sweep callback, only the keys the sweep varies (``$RUNNER_SWEPT_KEYS``); without it,
    every task override of the job.
    """
    hc = _multirun_hydra_config()
    return {} if hc is None else extras_of(list(hc.overrides.task), os.environ.get(SWEPT_ENV))


def multirun_job_number() -> int | None:
    """Hydra's number of this job (``hydra.job.num``) in a multirun, else None. Its runs carry it as
    ``JOB_TAG``, so that a sweep's children read back in the order of its jobs (the batched
    launcher's children all start at the same millisecond)."""
    hc = _multirun_hydra_config()
    return None if hc is None else int(hc.job.num)


def _multirun_hydra_config() -> Any:
    """This job's ``HydraConfig`` when it is a job of a multirun, else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except Exception:  # not under Hydra (the API's single runs, tests calling run_job directly)
        return None
    return hc if hc.mode == RunMode.MULTIRUN else None


def extras_of(task_overrides: list[str], swept: str | None) -> dict[str, Any]:
    """:func:`swept_extras` of a multirun job whose ``hydra.overrides.task`` is ``task_overrides``
    (``swept``: the value of ``$RUNNER_SWEPT_KEYS``, or None)."""
    extras = {}
    for item in task_overrides:
        key, _, value = item.lstrip("+~").partition("=")
        if key in NAMED or key.startswith(("tracking", "hydra", "progress")):
            continue
        if swept is not None and key not in swept.split(","):
            continue
        extras[key] = value
    return extras


def format_number(value: float) -> str:
    """Short, exact-looking numbers for names: 0.1 -> '0.1', 1e-05 -> '1e-05', 3.0 -> '3'."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def objective_label(objective: Mapping[str, Any]) -> str:
    """The objective as names show it: ``objective.name``, and for ``custom`` a tag of its expression
    (or target): the first 6 hex digits of the SHA-1 of its text without spaces (``custom-9c1b1e``).
    ``objective`` is the objective's config, or its params as MLflow keeps them (``expr`` the text of
    the value, ``null`` for none): both give the same tag."""
    name = str(objective.get("name"))
    if name != "custom":
        return name
    source = next((str(v) for v in (objective.get("expr"), objective.get("target")) if v not in (None, "null")), None)
    if source is None:
        return name
    digest = hashlib.sha1("".join(source.split()).encode()).hexdigest()
    return f"{name}-{digest[:TAG_DIGITS]}"


def run_name(objective: str, optimizer: str, lr: float, extras: Mapping[str, Any] = (), backend: str = "autograd",
             schedule: str | None = None) -> str:
    """``g-sgd-lr0.1``, then the schedule when the lr is not constant (``g-sgd-lr0.1-cosine``), the
    backend unless autograd, then ``-<key><value>`` for other swept keys."""
    parts = [objective, optimizer, f"lr{format_number(lr)}"] + ([schedule] if schedule else []) + ([backend] if backend != "autograd" else [])
    for key, value in dict(extras).items():
        parts.append(f"{key.rsplit('.', 1)[-1]}{format_number(value) if isinstance(value, float) else value}")
    return "-".join(parts)
