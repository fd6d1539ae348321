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


def param_text(value: Any) -> str:
    """A param's value as MLflow stores it: its text, cut to MLflow's 6,000 characters."""
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


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


def metric_series(traj, row: int, x_names: list[str], g_names: list[str], stride: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The contract's per-step metrics of one trajectory row at its sampled steps (every
    ``stride``-th step and its final step; the trajectory must have kept them)."""
    wanted = sampled_steps(int(traj.final_step[row]), stride)
    at = np.searchsorted(traj.steps, wanted)
    if not np.array_equal(traj.steps[np.minimum(at, len(traj.steps) - 1)], wanted):
        raise KeyError(f"the trajectory did not keep every {stride}-th step of row {row}")
    return _series(traj.steps[at], traj.loss[at, row], traj.grad_norm[at, row], traj.x[at, row], traj.grad[at, row], x_names, g_names)


def window_rows(lo: int, count: int, final: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """For a window of ``count`` steps from ``lo`` and a row whose final step is ``final`` (-1: not
    known yet): the positions of the row's own steps, and of those that are metric samples."""
    steps = lo + np.arange(count)
    own = steps <= final if final >= 0 else np.ones(count, dtype=bool)
    sampled = own & (((steps % stride) == 0) | (steps == final))
    return np.flatnonzero(own), np.flatnonzero(sampled)


def window_series(lo: int, records: Mapping[str, np.ndarray], row: int, x_names, g_names, at: np.ndarray):
    """The metrics of one row at positions ``at`` of a window of records from step ``lo`` (and
    ``lr``, the lr in effect, when a schedule recorded it)."""
    series = _series(lo + at, records["loss"][at, row], records["grad_norm"][at, row], records["x"][at, row],
                     records["grad"][at, row], x_names, g_names)
    if "lr" in records:
        lr = records["lr"]
        series["lr"] = (lo + at, lr[at] if lr.ndim == 1 else lr[at, row])
    return series


def _series(steps, loss, grad_norm, x, grad, x_names, g_names) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    series = {"loss": (steps, loss), "grad_norm": (steps, grad_norm)}
    for j, name in enumerate(x_names):
        series[f"x/{name}"] = (steps, x[:, j])
    for j, name in enumerate(g_names):
        series[f"grad/{name}"] = (steps, grad[:, j])
    return series


def table_header(x_names: list[str], g_names: list[str]) -> list[str]:
    """The columns of ``trajectory.csv``: step, loss, grad_norm, x/<var>…, grad/<var>…."""
    return ["step", "loss", "grad_norm"] + [f"x/{n}" for n in x_names] + [f"grad/{n}" for n in g_names]


def table_rows(lo: int, records: Mapping[str, np.ndarray], row: int, at: np.ndarray) -> np.ndarray:
    """Rows of ``trajectory.csv`` for positions ``at`` of a window of records from step ``lo``."""
    return np.column_stack([lo + at, records["loss"][at, row], records["grad_norm"][at, row], records["x"][at, row], records["grad"][at, row]])


def write_csv_rows(out, rows: np.ndarray) -> None:
    """CSV lines with full float precision (``%.17g``), integers for the step column.

    The bytes ``np.savetxt(out, rows, delimiter=",", fmt=["%d"] + ["%.17g"] * …)`` writes, formatted
    in one ``%`` operation over the whole window (savetxt formats row by row, from numpy scalars:
    ~6 µs a row of f against ~2 µs, in the main process, at every step of a run)."""
    line = ",".join(["%d"] + ["%.17g"] * (rows.shape[1] - 1)) + "\n"
    out.write((line * len(rows)) % tuple(rows.ravel().tolist()))
