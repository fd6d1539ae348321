"""One Hydra job: validate the config, build the run, descend, record it in MLflow, report.

``run_optimize`` reads as the steps it takes: :func:`prepare` (the problem, backend, name and checks),
:func:`start_record` (the MLflow run), :func:`descend_recorded` (the loop, streaming metrics),
:func:`finish_record` (metrics, artifacts, final tags) and :func:`report` (the lines on stdout). It knows
nothing of Hydra beyond the composed config (``HydraConfig`` only names runs in a multirun).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from runner.descent.backends import device_name
from runner.descent.build import build, compile_plan
from runner.descent.loop import Trajectory, descend, sample_coords
from runner.descent.optimizers import is_plain_descent, make_optimizer, needs_closure, optimizer_name
from runner.descent.problem import Problem
from runner.descent.progress import make_progress
from runner.descent.schedules import is_constant, schedule_factory, schedule_name
from runner.tracking import links, records
from runner.tracking.fingerprint import fingerprint
from runner.tracking.naming import JOB_TAG, PARENT_ENV, multirun_job_number, objective_label, run_name, swept_extras
from runner.tracking.provenance import provenance_tags
from runner.tracking.recorder import RunRecorder, forget_current_run, open_store
from runner.tracking.scheduler import scheduler_tags
from runner.tracking.store import StoreError, resolve_uri
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
    min_value: float | None = None  # the objective's minimum value, when known (figures plot the gap to it)


def run_job(cfg: DictConfig) -> float:
    """The task function behind ``python -m runner``."""
    validate(cfg)
    if cfg.resume and cfg.tracking.enabled and cfg.task == "optimize":
        earlier = finished_before(cfg)
        if earlier is not None:
            return reuse(cfg, earlier)
    if cfg.task == "derivatives":
        from runner.curvature.task import run_derivatives

        return run_derivatives(cfg)
    return run_optimize(cfg)


def config_fingerprint(cfg: DictConfig) -> str:
    """:func:`runner.tracking.fingerprint.fingerprint` of the job's resolved config (a sweep's
    composed config also has the ``hydra`` node, which is not the job's)."""
    keys = [k for k in cfg if k != "hydra"]
    return fingerprint(OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True))


def job_key(cfg: DictConfig) -> tuple[str, str]:
    """What a job is for resuming: its config fingerprint and the type of device it resolves to."""
    from runner.descent.backends import resolve_device

    size = len(cfg.objective.init) if cfg.objective.init is not None else (cfg.objective.dim or 1)
    return config_fingerprint(cfg), resolve_device(cfg.backend.device, size).type


def finished_before(cfg: DictConfig) -> dict[str, Any] | None:
    """The FINISHED run of this experiment with this job's fingerprint and device type, if any."""
    key, device = job_key(cfg)
    return open_store(cfg.tracking).find_finished(key, device)


def reuse(cfg: DictConfig, earlier: dict[str, Any]) -> float:
    """Stand the earlier run in for this job: link it to the sweep, say so, return its value."""
    parent = os.environ.get(PARENT_ENV)
    if parent:
        open_store(cfg.tracking).mark_reused(earlier["run_id"], parent)
    print(f"{earlier['name']}: reused run {earlier['run_id']} ({earlier['outcome']} at step {earlier['final_step']}, same config)")
    sys.stdout.flush()
    return float(earlier["value"])


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


def optimize(cfg: DictConfig, extra_tags: dict[str, str] | None = None) -> Optimized:
    """Descend and record the run, printing nothing (the Python API and ``runner.rerun`` call this);
    ``extra_tags`` go onto the run when it is created.

    A run that the job cannot finish (an error, a signal, a full disk) is ended FAILED or KILLED
    with what it recorded (:func:`end_abnormally`) before the exception goes on."""
    forget_current_run()
    plan = prepare(cfg)
    store = open_store(cfg.tracking) if cfg.tracking.enabled else None  # opens meanwhile
    check_optimizer(plan)
    recorder = start_record(plan, store, extra_tags) if store is not None else None
    traj, trajectory_file = descend_recorded(plan, recorder)
    if recorder is not None:
        try:
            finish_record(plan, recorder, traj, trajectory_file)
        except BaseException as exc:
            end_abnormally(recorder, exc, trajectory_file)
            raise
    return Optimized(plan, traj, recorder)


def prepare(cfg: DictConfig) -> Plan:
    """Build the problem and backend, name the run, warn about an unstable step, set up checks."""
    problem, backend, device = build(cfg)
    opt_name = optimizer_name(cfg.optimizer)
    objective = objective_label(OmegaConf.to_container(cfg.objective, resolve=True))
    name = cfg.tracking.run_name or run_name(objective, opt_name, cfg.lr, swept_extras(cfg), backend=cfg.backend.name, schedule=scheduled(cfg))
    torch.manual_seed(cfg.seed)
    k = problem.wrt.numel()
    plan = Plan(
        cfg=cfg, problem=problem, backend=backend, device=device, name=name, optimizer=opt_name,
        x_names=[problem.var_names[i] for i in sample_coords(problem.dim, cfg.tracking.max_coords)],
        g_names=[problem.wrt_names[i] for i in sample_coords(k, cfg.tracking.max_coords)],
        stride=records.log_stride(cfg.steps, cfg.tracking.log_every),
        min_value=known_min_value(problem),
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


def known_min_value(problem: Problem) -> float | None:
    """The objective's minimum value when the registry knows it and every variable moves (with some
    held constant, the minimum over the others is another number, unknown)."""
    import objectives

    if problem.name == "custom" or not problem.moves_all:
        return None
    return objectives.get(problem.name).min_value


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


def start_record(plan: Plan, store: Any, extra_tags: dict[str, str] | None = None) -> RunRecorder:
    """The run in MLflow, with its params (the resolved config) and the tags known up front."""
    config = OmegaConf.to_container(plan.cfg, resolve=True)
    job = multirun_job_number()
    tags = {**start_tags(plan), **({JOB_TAG: str(job)} if job is not None else {}), **(extra_tags or {})}
    # Over a tracking server the config is logged at once: an artifact store that cannot take it
    # fails the run now, not after the descent (it is logged again, unchanged, with the others).
    files = {"config.yaml": OmegaConf.to_yaml(plan.cfg, resolve=True)} if plan.cfg.tracking.artifacts else None
    # Jobs of an in-process sweep do not wait for MLflow's run id; the sweep's end waits for all.
    return RunRecorder.start(store, plan.name, config, tags, wait=not in_process_sweep(), folder=str(output_folder()), files=files)


def start_tags(plan: Plan) -> dict[str, str]:
    """The tags known before the descent (the batched launcher gives its rows the same)."""
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
    if plan.min_value is not None:
        tags["objective.min_value"] = repr(plan.min_value)
    tags.update(provenance_tags(config_fingerprint(cfg), cfg.seed, device_name(plan.device)))
    return tags


def descend_recorded(plan: Plan, recorder: RunRecorder | None) -> tuple[Trajectory, Path | None]:
    """The descent, and the run's trajectory.csv. The metrics and the file are written while it
    descends (:class:`runner.tracking.stream.RunStream`); the Trajectory keeps only the metric
    samples, so memory does not grow with the steps. A run whose descent raises (a signal included)
    or whose file cannot be written is ended KILLED or FAILED, with what it recorded so far, before
    the exception goes on."""
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
        trajectory_file = stream.close() if stream is not None else None
    except BaseException as exc:
        if stream is not None:
            end_abnormally(recorder, exc, stream.close(stopped=True))
        raise
    return traj, trajectory_file


def end_abnormally(recorder: RunRecorder, exc: BaseException, trajectory_file: Path | None) -> None:
    """End the run KILLED (a signal) or FAILED, with its trajectory.csv so far. If the store cannot
    take that either, the error is kept on the recorder (``end_error``) and ``exc`` still goes on:
    the process's end tries once more and says what happened."""
    files = {"trajectory.csv": trajectory_file} if trajectory_file is not None and trajectory_file.exists() else None
    try:
        recorder.fail(exc, files)
    except StoreError as error:
        recorder.end_error = str(error)


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


def end_tags(plan: Plan, traj: Trajectory, row: int = 0) -> dict[str, str]:
    """The tags known once row ``row`` of the descent has ended."""
    outcome, final = traj.outcome[row], int(traj.final_step[row])
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


def artifact_bundle(plan: Plan, traj: Trajectory, trajectory_file: Path | None, row: int = 0) -> dict[str, Any]:
    """What the writer turns into config.yaml, trajectory.csv and the plots (drawn from the metric
    samples: every step up to 1,000 steps, about 1,000 points beyond) of row ``row``."""
    at = traj.row_positions(row)
    at = at[np.isin(traj.steps[at], records.sampled_steps(int(traj.final_step[row]), plan.stride))]
    grid = contour_grid(plan.problem, traj.x[at, row, :])
    return {
        "config": OmegaConf.to_yaml(plan.cfg, resolve=True),
        "trajectory": str(trajectory_file) if trajectory_file is not None else None,
        "title": plan.name,
        "plots": {
            "steps": traj.steps[at],
            "loss": traj.loss[at, row],
            "grid": None if grid is None else grid[:2],
            "path": None if grid is None else grid[2],
            # Plain strings: the writer must not unpickle (and import) our name sequences.
            "var_names": [str(n) for n in plan.problem.var_names[:2]],
            "minima": plan.problem.minima,
            "min_value": plan.min_value,
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


def result_line(plan: Plan, traj: Trajectory, row: int = 0) -> str:
    """``<name>: <outcome> at step <k>, loss <start> -> <final>, x = [...]`` for row ``row``."""
    problem = plan.problem
    final = int(traj.final_step[row])
    shown = ", ".join(f"{n}={v:.7g}" for n, v in zip(problem.var_names[:8], traj.x_final[row][:8]))
    if problem.dim > 8:
        shown += ", …"
    start = float(traj.loss[traj.index(0), row])
    return f"{plan.name}: {traj.outcome[row]} at step {final}, loss {start:.7g} -> {traj.final_loss(row):.7g}, x = [{shown}]"


def report(plan: Plan, traj: Trajectory, recorder: RunRecorder | None) -> None:
    """The run's line (and where it is recorded), and the gradient check's verdict."""
    cfg = plan.cfg
    print(result_line(plan, traj))
    if recorder is not None and recorder.known_id is not None:
        experiment_id = recorder.store.get_experiment_id()
        print(links.run_lines(resolve_uri(cfg.tracking.uri), cfg.tracking.experiment, experiment_id, recorder.known_id))
    sys.stdout.flush()
    if plan.checker is not None:
        if plan.checker.failed():
            print(f"warning: {plan.checker.message()}", file=sys.stderr)
        else:
            tags = plan.checker.tags()
            print(f"gradient check passed at {tags.get('grad_check.checks', '?')} points (worst error/tolerance {tags.get('grad_check.worst_ratio', '?')})")
    sys.stdout.flush()
