"""What the API's calls return: plain objects with arrays, DataFrames and figures.

A :class:`RunResult` holds a run's outcome and its trajectory at the recorded steps (every step up
to 1,000 steps, about 1,000 points beyond: the run's metric samples, ``tracking.log_every``), whether
it ran in this process or is read back from the store. :class:`DerivativesResult` gives the
tutorial's objects: the gradient by variable and the Hessian with ``None`` for its structural zeros
(TensorFlow's answer for d²g/dx1², where dg/dx1 = x2² does not involve x1 at all).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class RunResult:
    """One run: its name, MLflow id (None untracked), outcome, final point and trajectory.

    Attributes:
        steps: ``(S,)`` the recorded steps (0 is the start point).
        loss, grad_norm: ``(S,)`` at those steps.
        x, grad: ``{variable: (S,) array}`` for the recorded coordinates.
        x_final: ``{variable: value}``, every coordinate of the final point.
        config: the resolved config, as a plain dict.
    """

    name: str
    run_id: str | None
    outcome: str
    final_step: int
    final_loss: float
    x_final: dict[str, float]
    steps: np.ndarray
    loss: np.ndarray
    grad_norm: np.ndarray
    x: dict[str, np.ndarray]
    grad: dict[str, np.ndarray]
    config: dict[str, Any] = field(repr=False)

    @property
    def value(self) -> float:
        """The final loss as sweepers take it: inf when the run diverged."""
        return self.final_loss if math.isfinite(self.final_loss) else math.inf

    @property
    def trajectory(self):
        """The recorded steps as a DataFrame: ``loss``, ``grad_norm``, ``x/<var>``, ``grad/<var>``
        (the columns of the run's ``trajectory.csv``), indexed by step."""
        import pandas as pd

        columns = {"loss": self.loss, "grad_norm": self.grad_norm}
        columns.update({f"x/{n}": v for n, v in self.x.items()})
        columns.update({f"grad/{n}": v for n, v in self.grad.items()})
        return pd.DataFrame(columns, index=pd.Index(self.steps, name="step"))

    def plot(self) -> tuple[Any, Any | None]:
        """The run's figures, as its MLflow record has them: the loss curve, and for a 2-D
        objective the path on a contour of the objective (else None)."""
        from runner.api.figures import run_figures

        return run_figures(self)

    def _repr_html_(self) -> str:
        where = f"<br>MLflow run <code>{self.run_id}</code>" if self.run_id else ""
        point = ", ".join(f"{k} = {v:.7g}" for k, v in list(self.x_final.items())[:8])
        return (
            f"<b>{self.name}</b>: {self.outcome} at step {self.final_step}, "
            f"loss {self.loss[0]:.7g} → {self.final_loss:.7g}, x = [{point}]{where}"
        )


@dataclass
class SweepResult:
    """A multirun: the parent run's id and each child's result, in job order."""

    parent_run_id: str
    children: list[RunResult]

    @property
    def table(self):
        """One row per child: name, outcome, final step and loss, and its swept settings."""
        import pandas as pd

        return pd.DataFrame(
            [{"run": c.name, "outcome": c.outcome, "final_step": c.final_step, "final_loss": c.final_loss,
              "lr": c.config.get("lr"), "run_id": c.run_id} for c in self.children]
        )


@dataclass
class DerivativesResult:
    """Value, gradient and Hessian at one point (``task=derivatives``).

    ``grad`` and ``hessian`` are keyed by the moving variables; a structural zero of the Hessian is
    ``None`` (as TensorFlow's tape answers), a computed zero is ``0.0``.
    """

    objective: str
    point: dict[str, float]
    value: float
    grad: dict[str, float]
    hessian: dict[str, dict[str, float | None]] | None
    eigenvalues: list[float] | None
    stable_lr: float | None
    targets: list[dict[str, Any]]
    run_id: str | None
    table: str = field(repr=False)

    def hessian_matrix(self) -> list[list[float | None]]:
        """The Hessian as nested lists, rows and columns in variable order (``[[None, 6.0], [6.0, 14.0]]``)."""
        if self.hessian is None:
            return []
        return [list(row.values()) for row in self.hessian.values()]

    def __str__(self) -> str:
        return self.table
