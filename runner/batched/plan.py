"""Which jobs of a sweep run together, which run alone (and why), and which fail on bad input.

Jobs share a group when they differ only in values that a batched descent takes per row: ``lr``,
the optimizer's hyperparameters, ``objective.init``, ``steps``, ``tol``, ``seed`` and the tracking
values that do not change the computation (``log_every``, ``run_name``, ``artifacts``). Everything
else is the group's key: the objective (name, size, expression, ``wrt``), the backend (with its
dtype and device), the optimizer's class, ``tracking.max_coords`` and the store. A job whose run
cannot be batched runs alone, through the task function, with a reason the launcher prints once;
a job whose config is bad fails with the error the job-by-job path would give, before anything runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from runner.descent.batched_optimizers import Rule, hyperparameters, rule_for
from runner.errors import UserError

PER_ROW = {"lr", "seed", "tol", "steps", "progress", "check_grad_every"}
PER_ROW_TRACKING = {"run_name", "log_every", "artifacts"}


@dataclass
class Job:
    """One job of the launch.

    Attributes:
        num: Hydra's job number (``hydra.job.num``).
        cfg: the job's config without the ``hydra`` node.
        overrides: its ``hydra.overrides.task`` (run names show the swept ones).
        output_dir: its folder (``hydra.runtime.output_dir``).
        values: ``cfg`` resolved to plain data (its params).
    """

    num: int
    cfg: DictConfig
    overrides: list[str]
    output_dir: Path
    values: dict = field(default_factory=dict)


@dataclass
class Group:
    """Jobs that run as one descent: their rule and each row's hyperparameters."""

    key: str
    cls: type
    rule: Rule
    jobs: list[Job] = field(default_factory=list)
    hyper: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class LaunchPlan:
    """The launch: groups, jobs that run alone (num -> why), jobs that fail (num -> error)."""

    groups: list[Group] = field(default_factory=list)
    alone: dict[int, str] = field(default_factory=dict)
    failed: dict[int, Exception] = field(default_factory=dict)


def plan(jobs: list[Job], max_batch: int) -> LaunchPlan:
    """Group ``jobs`` (in order of first appearance; at most ``max_batch`` rows a group)."""
    out = LaunchPlan()
    groups: dict[str, Group] = {}
    done = _done_keys(jobs)
    for job in jobs:
        try:
            placed = _place(job, done)
        except UserError as exc:
            out.failed[job.num] = exc
            continue
        if isinstance(placed, str):
            out.alone[job.num] = placed
            continue
        key, cls, hyper = placed
        group = groups.get(key)
        if group is None or len(group.jobs) >= max_batch:
            group = groups[key] = Group(key, cls, rule_for(cls))
            out.groups.append(group)
        group.jobs.append(job)
        group.hyper.append(hyper)
    return out


def _done_keys(jobs: list[Job]) -> set:
    """With ``resume=true``: the (fingerprint, device type) of the experiment's FINISHED runs."""
    resuming = [job for job in jobs if job.cfg.get("resume") and job.cfg.tracking.enabled]
    if not resuming:
        return set()
    from runner.tracking.recorder import open_store

    return open_store(resuming[0].cfg.tracking).done_keys()


def _place(job: Job, done: set = frozenset()) -> str | tuple[str, type, dict]:
    """``(group key, optimizer class, hyperparameters)``, or why the job runs alone; raises
    :class:`UserError` for bad input (the job-by-job path's checks, in its order)."""
    from runner.descent.schedules import is_constant, schedule_name
    from runner.validate import validate

    cfg = job.cfg
    validate(cfg)
    if cfg.task != "optimize":
        return f"task={cfg.task}"
    if done and cfg.get("resume"):
        from runner.job import job_key

        if job_key(cfg) in done:
            return "resume=true and a FINISHED run has its config (the job reuses it)"
    if not is_constant(cfg.get("schedule")):
        return f"schedule={schedule_name(cfg.schedule)} (a learning-rate schedule runs job by job)"
    if cfg.check_grad:
        return "check_grad=true"
    if cfg.backend.compile:
        return "backend.compile=true"
    job.values = OmegaConf.to_container(cfg, resolve=True)
    check_objective(cfg, job.values["objective"])
    cls = _optimizer_class(cfg, job.values["optimizer"])
    hyper, why = hyperparameters(cls, job.values["optimizer"])
    if hyper is None:
        return why
    return _key(job.values, cls), cls, hyper


_CHECKED: dict[str, Any] = {}  # (config as JSON) -> its Problem, its optimizer class, or its error


def _once(kind: str, spec: Any, make) -> Any:
    """``make()`` once per distinct ``spec`` (a sweep's jobs share most objective and optimizer
    configs); an error it raises is raised again for every job with that spec."""
    key = kind + json.dumps(spec, sort_keys=True, default=str)
    if key not in _CHECKED:
        if len(_CHECKED) > 100_000:
            _CHECKED.clear()
        try:
            _CHECKED[key] = make()
        except UserError as exc:
            _CHECKED[key] = exc
    found = _CHECKED[key]
    if isinstance(found, UserError):
        raise found
    return found


def _optimizer_class(cfg: DictConfig, spec: dict) -> type:
    """The optimizer's class, once its hyperparameters have passed the class's own checks (on a
    stand-in parameter, as the job-by-job path checks them)."""

    def make() -> type:
        import torch

        from runner.descent.backends import resolve_dtype
        from runner.descent.optimizers import make_optimizer

        stand_in = torch.zeros(1, 1, dtype=resolve_dtype(cfg.backend.dtype), requires_grad=True)
        return type(make_optimizer(cfg.optimizer, [stand_in]))

    return _once(f"optimizer|{cfg.backend.dtype}|", spec, make)


def check_objective(cfg: DictConfig, spec: dict | None = None):
    """The job's :class:`runner.descent.problem.Problem` on the CPU (bad objective settings raise
    here, with the job-by-job path's message); built once per distinct objective config."""

    def make():
        import torch

        from runner.descent.backends import resolve_dtype
        from runner.descent.problem import build_problem

        return build_problem(cfg.objective, dtype=resolve_dtype(cfg.backend.dtype), device=torch.device("cpu"))

    if spec is None:
        spec = OmegaConf.to_container(cfg.objective, resolve=True)
    return _once(f"objective|{cfg.backend.dtype}|", spec, make)


def _key(values: dict, cls: type) -> str:
    """What must be equal for two jobs to share a descent (see the module docstring)."""
    objective = {k: v for k, v in values["objective"].items() if k != "init"}
    objective["size"] = len(values["objective"]["init"]) if values["objective"]["init"] is not None else None
    tracking = {k: v for k, v in values["tracking"].items() if k not in PER_ROW_TRACKING}
    shared = {k: v for k, v in values.items() if k not in PER_ROW and k not in ("objective", "optimizer", "tracking")}
    return json.dumps({"objective": objective, "optimizer": f"{cls.__module__}.{cls.__qualname__}",
                       "tracking": tracking, **shared}, sort_keys=True, default=str)
