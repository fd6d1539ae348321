"""One Hydra job: validate the config, build the run, descend, record it in MLflow, report.

This is the only module that knows about all the others; it knows nothing of Hydra itself beyond
reading the composed config (``HydraConfig`` only to name runs in a multirun).
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from runner import tracking
from runner.backends import make_backend, resolve_device, resolve_dtype
from runner.loop import Trajectory, descend, sample_coords
from runner.memory import check_fits
from runner.optimizers import is_plain_descent, make_optimizer, needs_closure, optimizer_name
from runner.problem import Problem, build_problem
from runner.progress import make_progress
from runner.store import resolve_uri
from runner.validate import validate

def build(cfg: DictConfig) -> tuple[Problem, Any, torch.device]:
    """The problem and backend, on the configured dtype and device."""
    dtype = resolve_dtype(cfg.backend.dtype)
    size = len(cfg.objective.init) if cfg.objective.init is not None else (cfg.objective.dim or 1)
    device = resolve_device(cfg.backend.device, size)
    # Before anything of size d is allocated: a run that cannot fit says so with an estimate.
    moving = len(cfg.objective.wrt) if cfg.objective.wrt else size
    check_fits(
        size, moving, 1, dtype, device, cfg.backend.name, bool(cfg.backend.compile),
        bool(cfg.backend.richardson), cfg.steps, 2 * min(size, cfg.tracking.max_coords),
    )
    problem = build_problem(cfg.objective, dtype=dtype, device=device)
    return problem, make_backend(cfg.backend), device


PARENT_ENV = "RUNNER_PARENT_RUN_ID"  # set by the sweep callback: the multirun's parent run
SWEPT_ENV = "RUNNER_SWEPT_KEYS"  # set by the sweep callback: comma-separated keys the sweep varies


def swept_extras(cfg: DictConfig) -> dict[str, Any]:
    """In a multirun, the overridden keys that the base run name does not already show.

    With the sweep callback, only the keys the sweep varies (``$RUNNER_SWEPT_KEYS``); without it,
    every task override of the job.
    """
    swept = os.environ.get(SWEPT_ENV)
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except Exception:  # not under Hydra (tests calling run_job directly)
        return {}
    if hc.mode != RunMode.MULTIRUN:
        return {}
    extras = {}
    for item in hc.overrides.task:
        key, _, value = item.lstrip("+~").partition("=")
        if key in ("objective", "optimizer", "lr") or key.startswith(("tracking", "hydra", "progress")):
            continue
        if swept is not None and key not in swept.split(","):
            continue
        extras[key] = value
    return extras


def contour_grid(problem: Problem, traj: Trajectory, row: int = 0):
    """For 2-D objectives: a grid around the path and the minima, evaluated in one batched call."""
    from runner import plots

    if problem.dim != 2:
        return None
    last = int(traj.final_step[row]) + 1
    path = traj.x[:last, row, :]
    bounds = plots.contour_bounds([path], problem.minima)
    X, Y, points = plots.grid_points(bounds)
    with torch.no_grad():
        Z = problem.fn(torch.as_tensor(points, dtype=problem.x0.dtype, device=problem.x0.device))
    # Only the bounds and Z travel to the writer (which rebuilds X and Y), and Z in float32: a
    # sixth of the bytes, plenty for a contour plot.
    return bounds, Z.reshape(X.shape).cpu().numpy().astype(np.float32), path


def compile_plan(cfg: DictConfig, backend) -> tuple[Any, float | None]:
    """With ``backend.compile=true``: plain descent becomes one fused compiled step (its lr is
    returned); any other optimizer keeps its own step around a compiled gradient."""
    if not cfg.backend.compile:
        return backend, None
    from runner.compiled import CompiledAutograd, CompiledBackend

    if is_plain_descent(cfg.optimizer) and not needs_closure(cfg.optimizer) and not cfg.check_grad:
        return backend, float(cfg.lr)
    return (CompiledAutograd() if backend.name == "autograd" else CompiledBackend(backend)), None


def run_optimize(cfg: DictConfig) -> float:
    """Descend, record the run, print a summary; the final loss (inf when diverged) for sweepers."""
    problem, backend, device = build(cfg)
    opt_name = optimizer_name(cfg.optimizer)
    k = problem.wrt.numel()
    name = cfg.tracking.run_name or tracking.run_name(problem.name, opt_name, cfg.lr, swept_extras(cfg))
    torch.manual_seed(cfg.seed)
    warning = None
    if cfg.steps > 0 and is_plain_descent(cfg.optimizer):
        from runner.curvature import stable_lr_warning

        warning = stable_lr_warning(problem, backend, cfg.lr)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    checker = None
    if cfg.check_grad:
        from runner.gradcheck import GradChecker

        checker = GradChecker(problem, cfg.backend)

    store, run_id = None, None
    if cfg.tracking.enabled:
        store = tracking.writer()
        uri = resolve_uri(cfg.tracking.uri)
        store.open(uri, cfg.tracking.experiment)  # does not wait: the store opens meanwhile
    # Fail on a bad hyperparameter before anything is recorded (a stand-in parameter); the first
    # torch.optim optimizer also imports torch._dynamo (~1-2 s), overlapping the store's opening.
    make_optimizer(cfg.optimizer, [torch.zeros(1, k if k <= 64 else 1, dtype=problem.x0.dtype, requires_grad=True)])
    backend, fused_lr = compile_plan(cfg, backend)
    if store is not None:
        tags = {
            "compiled": "fused step" if fused_lr is not None else str(bool(cfg.backend.compile)).lower(),
            "objective": problem.name,
            "backend": backend.name,
            "optimizer": opt_name,
            "device": str(device),
            "dtype": cfg.backend.dtype,
            "task": cfg.task,
        }
        params = tracking.flatten(OmegaConf.to_container(cfg, resolve=True))
        parent = os.environ.get(PARENT_ENV) or None
        if tracking.in_process_sweep():
            # Jobs in this process need not wait for MLflow's run id: the writer creates the run
            # when it gets there and maps this handle to it; the sweep's end waits for all of it.
            run_id = tracking.new_handle()
            store.start_run(name, params, tags, parent_run_id=parent, handle=run_id, _wait=False)
        else:
            run_id = store.start_run(name, params, tags, parent_run_id=parent)

    x_names = [problem.var_names[i] for i in sample_coords(problem.dim, cfg.tracking.max_coords)]
    g_names = [problem.wrt_names[i] for i in sample_coords(k, cfg.tracking.max_coords)]
    stride = tracking.log_stride(cfg.steps, cfg.tracking.log_every)
    started = time.time()
    streamed = 0  # metrics of steps before this one went to the writer during the descent

    def stream(lo: int, hi: int, records) -> None:
        # A long run's metrics are logged by the writer (the other core) while the descent goes on,
        # instead of all at once after it (~0.5 s for 20,000 steps on the dev box).
        nonlocal streamed
        store.log_metrics(run_id, tracking.window_series(lo, records, 0, x_names, g_names, stride), int(started * 1000))
        streamed = hi

    try:
        traj = descend(
            problem,
            backend,
            lambda params: make_optimizer(cfg.optimizer, params),
            steps=cfg.steps,
            tol=cfg.tol,
            max_coords=cfg.tracking.max_coords,
            closure=needs_closure(cfg.optimizer),
            monitor=checker,
            monitor_every=cfg.check_grad_every,
            progress=make_progress(cfg.progress, cfg.steps, name),
            fused_lr=fused_lr,
            stream=stream if store is not None else None,
        )
    except BaseException as exc:
        if store is not None:
            status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            store.end_run(run_id, status, {"outcome": "failed", "error": f"{type(exc).__name__}: {exc}"[:500]})
        raise

    outcome, final = traj.outcome[0], int(traj.final_step[0])
    if store is not None:
        series = tracking.metric_series(traj, 0, x_names, g_names, stride, start=streamed)
        if checker is not None:
            series.update(checker.series())
        store.log_metrics(run_id, series, int(started * 1000))
        if cfg.tracking.artifacts:
            grid = contour_grid(problem, traj)
            store.log_run_artifacts(
                run_id,
                {
                    "config": OmegaConf.to_yaml(cfg, resolve=True),
                    "table": tracking.trajectory_table(traj, 0, x_names, g_names),
                    "title": name,
                    "plots": {
                        "steps": np.arange(final + 1),
                        "loss": traj.loss[: final + 1, 0],
                        "grid": None if grid is None else grid[:2],
                        "path": None if grid is None else grid[2],
                        # Plain strings: the writer must not unpickle (and import) our name sequences.
                        "var_names": [str(n) for n in problem.var_names[:2]],
                        "minima": problem.minima,
                    },
                },
            )
        end_tags = {"outcome": outcome, "final_step": str(final), "log_every": str(stride)}
        if outcome == "diverged":
            end_tags["diverged_step"] = str(final)
        if len(x_names) < problem.dim:
            end_tags["logged_coords"] = ",".join(x_names)
        if warning:
            end_tags["warning"] = warning
        if checker is not None:
            end_tags.update(checker.tags())
        # In an in-process sweep the next job starts while this run's plots are drawn; elsewhere
        # the job returns only when its run is complete in the store.
        store.end_run(run_id, "FINISHED", end_tags, _wait=not tracking.in_process_sweep())

    final_loss = traj.final_loss(0)
    print_summary(name, problem, traj, final, outcome, run_id, cfg)
    if checker is not None:
        if checker.failed():
            print(f"warning: {checker.message()}", file=sys.stderr)
        else:
            tags = checker.tags()
            print(f"gradient check passed at {tags.get('grad_check.checks', '?')} points (worst error/tolerance {tags.get('grad_check.worst_ratio', '?')})")
    return final_loss if math.isfinite(final_loss) else math.inf


def print_summary(name, problem, traj, final, outcome, run_id, cfg) -> None:
    start_loss, final_loss = float(traj.loss[0, 0]), traj.final_loss(0)
    shown = ", ".join(f"{n}={v:.7g}" for n, v in zip(problem.var_names[:8], traj.x_final[0][:8]))
    if problem.dim > 8:
        shown += ", …"
    print(f"{name}: {outcome} at step {final}, loss {start_loss:.7g} -> {final_loss:.7g}, x = [{shown}]")
    if run_id is not None and not tracking.is_handle(run_id):
        uri = resolve_uri(cfg.tracking.uri)
        print(f"  mlflow run {run_id} in experiment '{cfg.tracking.experiment}' at {uri}")
    sys.stdout.flush()


def run_job(cfg: DictConfig) -> float:
    """The task function behind ``python -m runner``."""
    validate(cfg)
    if cfg.task == "derivatives":
        from runner.derivatives import run_derivatives

        return run_derivatives(cfg)
    return run_optimize(cfg)
