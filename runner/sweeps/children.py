"""A sweep's children as the summary reads them back from MLflow, and their grouping by objective.

Children that descend the same function (equal ``objective.*`` params, the start point and ``wrt``
aside) form one group, named as run names name the objective (``f``, ``custom-9c1b1e``; when two groups
would share a name, the params that tell them apart are appended: ``rosenbrock-dim10``). Losses compare
only within a group: the summary ranks and plots each group on its own.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Sequence

from runner.tracking.naming import objective_label
from runner.tracking.reuse import REUSED_BY

PARENT_TAG = "mlflow.parentRunId"
MIN_VALUE_TAG = "objective.min_value"  # set by the job when the objective's minimum value is known


@dataclass
class Child:
    """What the summary needs of one child run."""

    run_id: str
    name: str
    status: str
    outcome: str
    steps: int | None
    params: dict[str, str]
    tags: dict[str, str]
    start_time: int
    metrics: set[str] = field(default_factory=set)
    loss_steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    reused: bool = False  # an earlier run that a resumed sweep stood in for its job

    @property
    def final_loss(self) -> float:
        if self.outcome == "diverged":
            return math.inf
        return self.loss[-1] if self.loss else math.nan

    @property
    def min_value(self) -> float | None:
        """The objective's minimum value, when the job knew it (tag ``objective.min_value``)."""
        text = self.tags.get(MIN_VALUE_TAG)
        return float(text) if text else None

    def loss_curve(self) -> tuple[list[int], list[float]]:
        """(steps, loss) as the figures take it: a diverged child's history (MLflow keeps only
        finite points) ends with inf at the step where it diverged."""
        diverged = self.tags.get("diverged_step", "")
        if self.outcome == "diverged" and diverged.isdigit():
            return self.loss_steps + [int(diverged)], self.loss + [math.inf]
        return self.loss_steps, self.loss


# -- reading ---------------------------------------------------------------------------------------
def search_children(client, parent) -> list:
    """The parent's children: the runs tagged with its id, and the earlier runs a resumed sweep
    reused (tagged ``reused_by.<its id>``, see :mod:`runner.tracking.reuse`)."""
    own = _search(client, parent, f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
    return own + _search(client, parent, f"tags.`{REUSED_BY}{parent.info.run_id}` = 'true'")


def _search(client, parent, where: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([parent.info.experiment_id], filter_string=where, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def history(client, run_id: str, key: str) -> tuple[list[int], list[float]]:
    """A child's metric history; from memory when this process logged it in bulk (the batched
    launcher's children: :func:`runner.tracking.bulk.logged_history`), else from the store."""
    from runner.tracking.bulk import logged_history

    logged = logged_history(run_id, key)
    if logged is not None:
        return list(logged[0]), list(logged[1])
    points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return [m.step for m in points], [m.value for m in points]


def read_children(client, parent) -> list[Child]:
    """The children with their loss histories, ordered by their swept values, then start time."""
    children = []
    for run in search_children(client, parent):
        tags = dict(run.data.tags)
        final_step = tags.get("final_step")
        child = Child(
            run_id=run.info.run_id,
            name=run.info.run_name or run.info.run_id,
            status=run.info.status,
            outcome=tags.get("outcome", "failed" if run.info.status == "FAILED" else "unknown"),
            steps=int(final_step) if final_step and final_step.isdigit() else None,
            params=dict(run.data.params),
            tags=tags,
            start_time=run.info.start_time or 0,
            metrics=set(run.data.metrics),
            reused=tags.get(PARENT_TAG) != parent.info.run_id,
        )
        if "loss" in run.data.metrics:
            child.loss_steps, child.loss = history(client, child.run_id, "loss")
        children.append(child)
    swept = swept_keys_of(parent)
    children.sort(key=lambda c: (tuple(_sort_key(swept_value(c, k)) for k in swept), c.start_time))
    return children


def swept_keys_of(parent) -> list[str]:
    text = parent.data.tags.get("sweep.swept", "")
    return [k for k in text.split(",") if k]


def swept_value(child: Child, key: str) -> str:
    """The child's value of a swept key: its param, or for a config group the choice's name."""
    if key in child.params:
        return child.params[key]
    if f"{key}.name" in child.params:
        return child.params[f"{key}.name"]
    return child.tags.get(key, "")


def _sort_key(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


# -- objectives ------------------------------------------------------------------------------------
def objective_key(child: Child) -> tuple:
    """Children with equal keys descend the same function: the objective's label (its expression's tag
    for a custom one, whatever its spaces) and its other params, the start point and wrt aside."""
    params = {k.split(".", 1)[1]: v for k, v in child.params.items() if k.startswith("objective.")}
    rest = sorted((k, v) for k, v in params.items() if k not in ("name", "expr", "target", "init", "wrt"))
    return (objective_label(params), *rest)


def groups_by_objective(children: Sequence[Child]) -> dict[str, list[Child]]:
    """``{objective label: children}``, in the children's order (module docstring)."""
    by_key: dict[tuple, list[Child]] = {}
    for c in children:
        by_key.setdefault(objective_key(c), []).append(c)
    labels = {key: key[0] for key in by_key}
    for label in set(labels.values()):
        same = [key for key in by_key if labels[key] == label]
        if len(same) > 1:  # e.g. rosenbrock at two dims: name the params that differ
            rests = [dict(key[1:]) for key in same]
            differ = sorted({k for rest in rests for k in rest if len({r.get(k) for r in rests}) > 1})
            for key, rest in zip(same, rests):
                labels[key] = label + "".join(f"-{k}{rest.get(k)}" for k in differ)
    return {safe(labels[key]): group for key, group in by_key.items()}


def safe(text: str) -> str:
    """``text`` with every character but letters, digits and ``._-`` replaced by ``_`` (file names,
    tag keys)."""
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in text)


def warn(message: str) -> None:
    print(f"warning: sweep summary: {message}", file=sys.stderr)
