"""What a run records in MLflow, built in the main process and handed to the store writer.

The record (see the README's "What MLflow records"): params are the resolved config flattened with dotted keys;
metrics at k = 0 … steps are ``loss``, ``grad_norm``, ``x/<var>``, ``grad/<var>``; tags
``objective``, ``backend``, ``optimizer``, ``device``, ``outcome``; artifacts are the resolved config,
the whole trajectory as a table, and plots.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np


def flatten(node: Any, prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}} -> {"a.b": "1"}``; lists stay whole (``objective.init: [2.0, 3.0]``)."""
    out: dict[str, str] = {}
    if isinstance(node, Mapping):
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    out[prefix[:-1]] = "null" if node is None else str(node)
    return out


def log_stride(steps: int, log_every: Any) -> int:
    """Metric stride: every step up to 1000 steps, then about 1000 points (``tracking.log_every``).

    ``steps`` is the run's configured number of steps, known before it starts, so that a long run's
    metrics can be logged while it goes on; a run that stops early keeps that stride."""
    if log_every in (None, "auto"):
        return max(1, math.ceil(steps / 1000))
    return max(1, int(log_every))


def sampled_steps(final_step: int, stride: int, start: int = 0) -> np.ndarray:
    """0, stride, 2·stride, … and always the final step; only those ≥ ``start``."""
    steps = np.arange(0, final_step + 1, stride)
    if steps[-1] != final_step:
        steps = np.append(steps, final_step)
    return steps[steps >= start]


def metric_series(
    traj, row: int, x_names: list[str], g_names: list[str], stride: int, start: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The contract's per-step metrics of one trajectory row, sampled every ``stride`` steps
    (from step ``start`` on: what was streamed during the descent is not sent again)."""
    steps = sampled_steps(int(traj.final_step[row]), stride, start)
    return _series(steps, traj.loss[steps, row], traj.grad_norm[steps, row], traj.x[steps, row], traj.grad[steps, row], x_names, g_names)


def window_series(lo: int, records: dict[str, np.ndarray], row: int, x_names, g_names, stride: int):
    """:func:`metric_series` of the records of steps lo, lo + 1, … streamed by the loop."""
    index = np.flatnonzero((np.arange(lo, lo + len(records["loss"])) % stride) == 0)
    steps = lo + index
    return _series(steps, records["loss"][index, row], records["grad_norm"][index, row], records["x"][index, row],
                   records["grad"][index, row], x_names, g_names)


def _series(steps, loss, grad_norm, x, grad, x_names, g_names) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    series = {"loss": (steps, loss), "grad_norm": (steps, grad_norm)}
    for j, name in enumerate(x_names):
        series[f"x/{name}"] = (steps, x[:, j])
    for j, name in enumerate(g_names):
        series[f"grad/{name}"] = (steps, grad[:, j])
    return series


def trajectory_table(traj, row: int, x_names: list[str], g_names: list[str]) -> tuple[list[str], np.ndarray]:
    """Every recorded step of one row: step, loss, grad_norm, x/<var>…, grad/<var>…."""
    last = int(traj.final_step[row]) + 1
    header = ["step", "loss", "grad_norm"] + [f"x/{n}" for n in x_names] + [f"grad/{n}" for n in g_names]
    rows = np.column_stack(
        [np.arange(last), traj.loss[:last, row], traj.grad_norm[:last, row], traj.x[:last, row, :], traj.grad[:last, row, :]]
    )
    return header, rows
