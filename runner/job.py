"""One Hydra job: validate the config, build the run, descend, record it in MLflow, report.

``run_optimize`` reads as the steps it takes: :func:`prepare` (the problem, backend, name and checks),
:func:`start_record` (the MLflow run), :func:`descend_recorded` (the loop, streaming metrics),
:func:`finish_record` (metrics, artifacts, final tags) and :func:`report` (the lines on stdout). It knows
nothing of Hydra beyond the composed config (``HydraConfig`` only names runs in a multirun).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from runner.descent.build import build, compile_plan
from runner.descent.loop import Trajectory, descend, sample_coords
from runner.descent.optimizers import is_plain_descent, make_optimizer, needs_closure, optimizer_name
from runner.descent.problem import Problem
from runner.descent.progress import make_progress
from runner.descent.schedules import is_constant, schedule_factory, schedule_name
from runner.tracking import records
from runner.tracking.naming import run_name, swept_extras
from runner.tracking.recorder import RunRecorder, open_store
from runner.tracking.scheduler import scheduler_tags
from runner.tracking.store import resolve_uri
from runner.tracking.stream import RunStream
from runner.tracking.writer import in_process_sweep
from runner.validate import validate


@dataclass
class Plan:
    """What one descent run is, decided before it starts."""

    cfg: DictConfig
    problem: Problem
    backend: Any
    device: torch.device
    name: str
    optimizer: str
    x_names: list[str]
    g_names: list[str]
    stride: int
    warning: str | None = None
    checker: Any = None  # a GradChecker with check_grad=true
    fused_lr: float | None = None  # plain descent as one compiled step (backend.compile=true)


def run_job(cfg: DictConfig) -> float:
    """The task function behind ``python -m runner``."""
    validate(cfg)
    if cfg.task == "derivatives":
        from runner.curvature.task import run_derivatives

        return run_derivatives(cfg)
    return run_optimize(cfg)


def run_optimize(cfg: DictConfig) -> float:
    """Descend, record the run, print a summary; the final loss (inf when diverged) for sweepers."""
    done = optimize(cfg)
    report(done.plan, done.traj, done.recorder)
    return done.value


@dataclass
class Optimized:
    """A finished descent: what it was, what it did, where it is recorded (None without tracking)."""

    plan: Plan
    traj: Trajectory
    recorder: RunRecorder | None

    @property
    def value(self) -> float:
        """The final loss as sweepers take it: inf when the run diverged."""
        final_loss = self.traj.final_loss(0)
        return final_loss if math.isfinite(final_loss) else math.inf


def optimize(cfg: DictConfig) -> Optimized:
    """Descend and record the run, printing nothing (the Python API calls this)."""
    plan = prepare(cfg)
    store = open_store(cfg.tracking) if cfg.tracking.enabled else None  # opens meanwhile
    check_optimizer(plan)
    recorder = start_record(plan, store) if store is not None else None
    traj, trajectory_file = descend_recorded(plan, recorder)
    if recorder is not None:
        finish_record(plan, recorder, traj, trajectory_file)
    return Optimized(plan, traj, recorder)


def prepare(cfg: DictConfig) -> Plan:
    """Build the problem and backend, name the run, warn about an unstable step, set up checks."""
    problem, backend, device = build(cfg)
    opt_name = optimizer_name(cfg.optimizer)
    name = cfg.tracking.run_name or run_name(problem.name, opt_name, cfg.lr, swept_extras(cfg), schedule=scheduled(cfg))
    torch.manual_seed(cfg.seed)
    k = problem.wrt.numel()
    plan = Plan(
        cfg=cfg, problem=problem, backend=backend, device=device, name=name, optimizer=opt_name,
        x_names=[problem.var_names[i] for i in sample_coords(problem.dim, cfg.tracking.max_coords)],
        g_names=[problem.wrt_names[i] for i in sample_coords(k, cfg.tracking.max_coords)],
        stride=records.log_stride(cfg.steps, cfg.tracking.log_every),
    )
    if cfg.steps > 0 and is_plain_descent(cfg.optimizer):
        from runner.curvature.hessian import stable_lr_warning

        plan.warning = stable_lr_warning(problem, backend, cfg.lr)
        if plan.warning:
            print(f"warning: {plan.warning}", file=sys.stderr)
    if cfg.check_grad:
        from runner.curvature.gradcheck import GradChecker

        plan.checker = GradChecker(problem, cfg.backend)
    return plan


def scheduled(cfg: DictConfig) -> str | None:
    """The schedule's name when the lr is not constant (it then goes into the run's name)."""
    return None if is_constant(cfg.schedule) else schedule_name(cfg.schedule)


def check_optimizer(plan: Plan) -> None:
    """Fail on a bad hyperparameter before anything is recorded (on a stand-in parameter); the first
    torch.optim optimizer also imports torch._dynamo (~1-2 s), overlapping the store's opening.
    Then decide the compiled plan."""
    k = plan.problem.wrt.numel()
    stand_in = torch.zeros(1, k if k <= 64 else 1, dtype=plan.problem.x0.dtype, requires_grad=True)
    optimizer = make_optimizer(plan.cfg.optimizer, [stand_in])
    if not is_constant(plan.cfg.schedule):  # a bad schedule setting fails now, not after the run starts
        schedule_factory(plan.cfg.schedule)(optimizer)
    plan.backend, plan.fused_lr = compile_plan(plan.cfg, plan.backend)


def start_record(plan: Plan, store: Any) -> RunRecorder:
    """The run in MLflow, with its params (the resolved config) and the tags known up front."""
    cfg = plan.cfg
    tags = {
        "compiled": "fused step" if plan.fused_lr is not None else str(bool(cfg.backend.compile)).lower(),
        "objective": plan.problem.name,
        "backend": plan.backend.name,
        "optimizer": plan.optimizer,
        "device": str(plan.device),
        "dtype": cfg.backend.dtype,
        "task": cfg.task,
        **scheduler_tags(),  # slurm.job_id in a SLURM job: its launcher ends the run if SLURM kills it
    }
    config = OmegaConf.to_container(cfg, resolve=True)
    # Jobs of an in-process sweep do not wait for MLflow's run id; the sweep's end waits for all.
    return RunRecorder.start(store, plan.name, config, tags, wait=not in_process_sweep())


def descend_recorded(plan: Plan, recorder: RunRecorder | None) -> tuple[Trajectory, Path | None]:
    """The descent, and the run's trajectory.csv. The metrics and the file are written while it
    descends (:class:`runner.tracking.stream.RunStream`); the Trajectory keeps only the metric
    samples, so memory does not grow with the steps. A run whose descent raises (an interrupt
    included) is ended KILLED or FAILED, with what it recorded so far, before the exception goes on."""
    cfg = plan.cfg
    csv_path = output_folder() / "trajectory.csv" if recorder is not None and cfg.tracking.artifacts else None
    stream = RunStream(recorder, plan.x_names, plan.g_names, plan.stride, csv_path) if recorder is not None else None
    try:
        traj = descend(
            plan.problem,
            plan.backend,
            lambda params: make_optimizer(cfg.optimizer, params),
            steps=cfg.steps,
            tol=cfg.tol,
            max_coords=cfg.tracking.max_coords,
            closure=needs_closure(cfg.optimizer),
            monitor=plan.checker,
            monitor_every=cfg.check_grad_every,
            progress=make_progress(cfg.progress, cfg.steps, plan.name),
            fused_lr=plan.fused_lr,
            record_every=plan.stride,
            schedule=schedule_factory(cfg.schedule),
            on_window=stream.window if stream is not None else None,
        )
    except BaseException as exc:
        if stream is not None:
            path = stream.close()
            recorder.fail(exc, {"trajectory.csv": path} if path is not None else None)
        raise
    return traj, stream.close() if stream is not None else None


def output_folder() -> Path:
    """The Hydra job's output folder (where ``.hydra/`` is), else a new temporary folder."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # not under Hydra: tests and the Python API calling run_job directly
        import tempfile

        return Path(tempfile.mkdtemp(prefix="runner-job-"))


def finish_record(plan: Plan, recorder: RunRecorder, traj: Trajectory, trajectory_file: Path | None) -> None:
    """The gradient check's metrics, the artifacts and the final tags; the run ends FINISHED (the
    descent's metrics were logged while it ran)."""
    if plan.checker is not None:
        recorder.log_metrics(plan.checker.series())
    if plan.cfg.tracking.artifacts:
        recorder.log_run_artifacts(artifact_bundle(plan, traj, trajectory_file))
    # In an in-process sweep the next job starts while this run's plots are drawn; elsewhere
    # the job returns only when its run is complete in the store.
    recorder.finish(end_tags(plan, traj), wait=not in_process_sweep())


def end_tags(plan: Plan, traj: Trajectory) -> dict[str, str]:
    outcome, final = traj.outcome[0], int(traj.final_step[0])
    tags = {"outcome": outcome, "final_step": str(final), "log_every": str(plan.stride)}
    if outcome == "diverged":
        tags["diverged_step"] = str(final)
    if len(plan.x_names) < plan.problem.dim:
        tags["logged_coords"] = ",".join(plan.x_names)
    if plan.warning:
        tags["warning"] = plan.warning
    if plan.checker is not None:
        tags.update(plan.checker.tags())
    return tags


def artifact_bundle(plan: Plan, traj: Trajectory, trajectory_file: Path | None) -> dict[str, Any]:
    """What the writer turns into config.yaml, trajectory.csv and the plots (drawn from the metric
    samples: every step up to 1,000 steps, about 1,000 points beyond)."""
    at = traj.row_positions(0)
    grid = contour_grid(plan.problem, traj.x[at, 0, :])
    return {
        "config": OmegaConf.to_yaml(plan.cfg, resolve=True),
        "trajectory": str(trajectory_file) if trajectory_file is not None else None,
        "title": plan.name,
        "plots": {
            "steps": traj.steps[at],
            "loss": traj.loss[at, 0],
            "grid": None if grid is None else grid[:2],
            "path": None if grid is None else grid[2],
            # Plain strings: the writer must not unpickle (and import) our name sequences.
            "var_names": [str(n) for n in plan.problem.var_names[:2]],
            "minima": plan.problem.minima,
        },
    }


def contour_grid(problem: Problem, path: np.ndarray):
    """For 2-D objectives: a grid around the path and the minima, evaluated in one batched call."""
    from runner.tracking import plots

    if problem.dim != 2:
        return None
    bounds = plots.contour_bounds([path], problem.minima)
    X, Y, points = plots.grid_points(bounds)
    with torch.no_grad():
        Z = problem.fn(torch.as_tensor(points, dtype=problem.x0.dtype, device=problem.x0.device))
    # Only the bounds and Z travel to the writer (which rebuilds X and Y), and Z in float32: a
    # sixth of the bytes, plenty for a contour plot.
    return bounds, Z.reshape(X.shape).cpu().numpy().astype(np.float32), path


def report(plan: Plan, traj: Trajectory, recorder: RunRecorder | None) -> None:
    """The run's line (and where it is recorded), and the gradient check's verdict."""
    problem, cfg = plan.problem, plan.cfg
    final = int(traj.final_step[0])
    shown = ", ".join(f"{n}={v:.7g}" for n, v in zip(problem.var_names[:8], traj.x_final[0][:8]))
    if problem.dim > 8:
        shown += ", …"
    print(f"{plan.name}: {traj.outcome[0]} at step {final}, loss {float(traj.loss[0, 0]):.7g} -> {traj.final_loss(0):.7g}, x = [{shown}]")
    if recorder is not None and recorder.known_id is not None:
        print(f"  mlflow run {recorder.known_id} in experiment '{cfg.tracking.experiment}' at {resolve_uri(cfg.tracking.uri)}")
    sys.stdout.flush()
    if plan.checker is not None:
        if plan.checker.failed():
            print(f"warning: {plan.checker.message()}", file=sys.stderr)
        else:
            tags = plan.checker.tags()
            print(f"gradient check passed at {tags.get('grad_check.checks', '?')} points (worst error/tolerance {tags.get('grad_check.worst_ratio', '?')})")
    sys.stdout.flush()
