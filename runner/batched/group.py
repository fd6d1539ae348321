"""One group's descent: every job a row of one ``(B, d)`` batch, with its own start point, lr,
hyperparameters, ``steps`` and ``tol``; and each row's :class:`runner.job.Plan` (its name, metric
stride, stable-step warning), so that its record is built as the job-by-job path builds it.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from math import gcd

import numpy as np
import torch

from runner.batched.plan import Group, check_objective
from runner.descent.batched_optimizers import BatchedOptimizer, hyper_tensors
from runner.descent.build import build
from runner.descent.loop import Trajectory, descend, sample_coords
from runner.descent.memory import available_bytes, check_fits
from runner.descent.optimizers import is_plain_descent, optimizer_name
from runner.job import Plan, known_min_value
from runner.tracking import records
from runner.tracking.naming import extras_of, objective_label, run_name

TABLE_SHARE = 0.25  # the every-step records of a group may take this share of the free memory


@dataclass
class GroupRun:
    """A group's descent: the trajectory (row b is ``group.jobs[b]``) and each row's plan."""

    group: Group
    traj: Trajectory
    plans: list[Plan]
    every_step: bool  # the trajectory kept every step (else each row's metric samples)
    seconds: float


def run_group(group: Group, swept: str | None) -> GroupRun:
    """Descend the group's rows together. ``swept``: ``$RUNNER_SWEPT_KEYS`` (run names)."""
    started = time.perf_counter()
    first = group.jobs[0].cfg
    problem, backend, device = build(first)
    rows = len(group.jobs)
    cfgs = [job.cfg for job in group.jobs]
    dtype = problem.x0.dtype
    steps = [int(c.steps) for c in cfgs]
    x_names = [problem.var_names[i] for i in sample_coords(problem.dim, first.tracking.max_coords)]
    g_names = [problem.wrt_names[i] for i in sample_coords(problem.wrt.numel(), first.tracking.max_coords)]
    strides = [records.log_stride(s, c.tracking.log_every) for s, c in zip(steps, cfgs)]
    every_step = any(c.tracking.artifacts and c.tracking.enabled for c in cfgs) or fits_every_step(
        rows, max(steps), len(x_names) + len(g_names) + 2, dtype)
    check_fits(problem.dim, problem.wrt.numel(), rows, dtype, device, backend.name, False,
               bool(first.backend.richardson), max(steps), len(x_names) + len(g_names))
    x0 = torch.stack([check_objective(j.cfg, j.values['objective']).x0 for j in group.jobs]).to(device=device, dtype=dtype)
    lr = torch.tensor([float(c.lr) for c in cfgs], dtype=dtype, device=device).reshape(-1, 1)
    hyper = hyper_tensors(group.rule, group.hyper, dtype, device)
    with beside_the_writer(any(c.tracking.enabled for c in cfgs)):
        traj = descend(
            problem, backend, lambda params: BatchedOptimizer(params, group.rule, hyper, lr),
            steps=max(steps), tol=_tolerances(cfgs, dtype, device), x0=x0, max_coords=first.tracking.max_coords,
            record_every=1 if every_step else _common_stride(strides),
            row_steps=None if len(set(steps)) == 1 else torch.tensor(steps, device=device),
        )
    plans = row_plans(group, problem, backend, device, x_names, g_names, strides, swept)
    return GroupRun(group, traj, plans, every_step, time.perf_counter() - started)


@contextmanager
def beside_the_writer(recording: bool):
    """Torch's CPU threads during a descent that runs beside the MLflow writer process: one core
    fewer than the machine has. On the 2-core dev box two threads beside a busy writer made every
    reduction of a large batch wait for the other core (~20 ms instead of ~0.4 ms for a window's
    stopping test of 10,000 rows)."""
    before = torch.get_num_threads()
    if recording:
        torch.set_num_threads(max(1, min(before, (os.cpu_count() or 2) - 1)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _tolerances(cfgs, dtype, device) -> torch.Tensor | float | None:
    """One tol for every row, or a ``(B,)`` tensor (NaN where a row has none)."""
    tols = [c.tol for c in cfgs]
    if len(set(tols)) == 1:
        return tols[0]
    return torch.tensor([math.nan if t is None else float(t) for t in tols], dtype=dtype, device=device)


def _common_stride(strides: list[int]) -> int:
    """The largest stride whose multiples include every row's metric samples."""
    out = 0
    for s in strides:
        out = gcd(out, s)
    return max(out, 1)


def fits_every_step(rows: int, steps: int, columns: int, dtype: torch.dtype) -> bool:
    """Whether every step of every row may be kept on the host (for the parent's trajectory table
    and the rows' trajectory.csv): about twice its bytes within :data:`TABLE_SHARE` of free memory."""
    return rows <= rows_that_fit(steps, columns, dtype)


def rows_that_fit(steps: int, columns: int, dtype: torch.dtype) -> int:
    per_row = 2 * (steps + 1) * columns * torch.finfo(dtype).bits // 8
    return max(1, int(TABLE_SHARE * available_bytes(torch.device("cpu")) // per_row))


def split_to_fit(group: Group) -> list[Group]:
    """The group, cut into parts whose every-step records fit in memory where its jobs keep
    artifacts (each needs its trajectory.csv, every step); other groups keep only what fits."""
    cfgs = [job.cfg for job in group.jobs]
    if not any(c.tracking.artifacts and c.tracking.enabled for c in cfgs):
        return [group]
    problem = check_objective(cfgs[0])
    limit = cfgs[0].tracking.max_coords
    columns = 2 + min(problem.dim, limit) + min(problem.wrt.numel(), limit)
    size = rows_that_fit(max(int(c.steps) for c in cfgs), columns, problem.x0.dtype)
    return [Group(group.key, group.cls, group.rule, group.jobs[i : i + size], group.hyper[i : i + size])
            for i in range(0, len(group.jobs), size)]


def row_plans(group, problem, backend, device, x_names, g_names, strides, swept) -> list[Plan]:
    """Each row's plan, as :func:`runner.job.prepare` makes it for one job (the problem, backend and
    device are the group's; the stable-step bound is computed once per start point)."""
    from runner.curvature.hessian import lr_warning, stable_step

    bounds: dict[tuple, object] = {}
    plans = []
    min_value = known_min_value(problem)
    for job, stride in zip(group.jobs, strides):
        cfg = job.cfg
        opt_name = optimizer_name(cfg.optimizer)
        objective = objective_label(job.values["objective"])
        name = cfg.tracking.run_name or run_name(objective, opt_name, cfg.lr, extras_of(job.overrides, swept), backend=cfg.backend.name)
        warning = None
        if cfg.steps > 0 and is_plain_descent(cfg.optimizer):
            start = check_objective(cfg, job.values["objective"])
            key = tuple(start.x0.tolist())
            if key not in bounds:
                bounds[key] = stable_step(start)
            warning = lr_warning(float(cfg.lr), bounds[key])
        plans.append(Plan(cfg=cfg, problem=problem, backend=backend, device=device, name=name, optimizer=opt_name,
                          x_names=x_names, g_names=g_names, stride=stride, warning=warning, min_value=min_value))
    return plans


def final_value(traj: Trajectory, row: int) -> float:
    """What the job returns to the sweeper: the final loss, ``inf`` when it is not finite."""
    value = traj.final_loss(row)
    return value if np.isfinite(value) else math.inf
