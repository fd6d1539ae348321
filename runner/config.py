"""Structured configs: the schema of every config group, registered in Hydra's ConfigStore.

Types live here, values in ``conf/*.yaml``. Each YAML file of a group starts from its group's schema
(``defaults: [base_<group>]``), so a key that the schema does not know fails at composition time
(``objective.inti=...`` is an error, not a silently ignored typo). The optimizer group is the
exception: its keys are whatever the chosen ``torch.optim`` class takes, so its schema is open and
:mod:`runner.descent.optimizers` checks them against the class signature instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class ObjectiveConf:
    """``objective=<name>``: what is minimised, where it starts, which variables move."""

    name: str = MISSING
    init: Optional[List[float]] = None  # start point; None = the objective's customary start
    dim: Optional[int] = None  # size of n-D functions (rosenbrock, rastrigin, quadratic)
    expr: Any = None  # custom: an expression, or a list of them (their sum is the objective)
    vars: Optional[List[str]] = None  # custom: variable order
    target: Optional[str] = None  # custom: "pkg.module:function" of a (..., d) tensor
    wrt: Optional[List[str]] = None  # differentiate and move only these; None = all


@dataclass
class BackendConf:
    """``backend=<name>``: how gradients are computed, where, and in what precision."""

    name: str = MISSING
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "float64"  # float32 | float64
    eps: Any = "auto"  # finite differences: "auto" or a float step
    scheme: str = "central"  # finite differences: central | forward
    richardson: bool = False  # finite differences: Richardson extrapolation
    compile: bool = False  # torch.compile the step


@dataclass
class TrackingConf:
    """``tracking``: where MLflow records the run."""

    uri: Optional[str] = None  # None = $MLFLOW_TRACKING_URI or sqlite:///outputs/mlflow.db
    experiment: str = "runner"
    run_name: Optional[str] = None  # None = "<objective>-<optimizer>-lr<lr>" (+ swept keys)
    log_every: Any = "auto"  # metric sampling: auto (≈1000 points per metric) or an int
    max_coords: int = 64  # per-coordinate metrics for at most this many coordinates
    artifacts: bool = True  # trajectory table, config and plots
    enabled: bool = True  # false: compute and print only
    # A tracking server's requests: retries before it counts as gone; None = $MLFLOW_HTTP_REQUEST_MAX_RETRIES, else 2.
    http_retries: Optional[int] = None


@dataclass
class RunnerConf:
    """The top level: ``python -m runner [group=choice ...] [key=value ...]``."""

    objective: ObjectiveConf = MISSING
    backend: BackendConf = MISSING
    optimizer: Any = MISSING
    schedule: Any = MISSING  # open like optimizer: a torch.optim.lr_scheduler class's arguments
    tracking: TrackingConf = field(default_factory=TrackingConf)
    task: str = "optimize"  # optimize | derivatives
    lr: float = 0.01
    steps: int = 100
    tol: Optional[float] = None  # stop when the gradient norm is ≤ tol (outcome=converged)
    seed: int = 0
    check_grad: bool = False  # compare autograd with finite differences during descent
    check_grad_every: int = 10
    progress: Any = "auto"  # progress bar: auto (on a terminal) | true | false
    resume: bool = False  # reuse a FINISHED run with the same config fingerprint instead of running again


def register_configs() -> None:
    """Put the schemas where the YAML files' ``defaults`` lists find them."""
    cs = ConfigStore.instance()
    cs.store(name="runner_schema", node=RunnerConf)
    cs.store(group="objective", name="base_objective", node=ObjectiveConf)
    cs.store(group="backend", name="base_backend", node=BackendConf)
    cs.store(group="tracking", name="base_tracking", node=TrackingConf)
