"""The API's functions: run, multirun, derivatives, runs, trajectory.

A call runs in this process with an MLflow store opened here (no writer process: a notebook kernel
keeps MLflow imported between calls, and nothing is left running after a call). ``multirun`` runs
``python -m runner -m ...`` as a child process, since a multirun is Hydra's whole application (its
sweeper, launcher and callbacks), then reads the sweep back from the store.
"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

from runner.api.compose import RunnerError, as_overrides, compose_config
from runner.api.results import DerivativesResult, RunResult, SweepResult


def run(*overrides: str, **settings: Any) -> RunResult:
    """One run, as ``python -m runner OVERRIDES`` would make it (recorded in MLflow unless
    ``tracking.enabled=false``). ``run("objective=g", "optimizer=sgd", lr=0.1)``."""
    from omegaconf import OmegaConf

    from runner.api.store import in_process_store
    from runner.job import optimize
    from runner.validate import validate

    cfg = compose_config(as_overrides(overrides, settings))
    with in_process_store():
        validate(cfg)
        if cfg.task == "derivatives":
            raise RunnerError("task: use runner.derivatives(...) for task=derivatives")
        done = _reraised(optimize, cfg)
    plan, traj = done.plan, done.traj
    at = traj.row_positions(0)
    return RunResult(
        name=plan.name,
        run_id=done.recorder.known_id if done.recorder is not None else None,
        outcome=traj.outcome[0],
        final_step=int(traj.final_step[0]),
        final_loss=traj.final_loss(0),
        x_final={str(n): float(v) for n, v in zip(plan.problem.var_names, traj.x_final[0])},
        steps=traj.steps[at],
        loss=traj.loss[at, 0],
        grad_norm=traj.grad_norm[at, 0],
        x={n: traj.x[at, 0, j] for j, n in enumerate(plan.x_names)},
        grad={n: traj.grad[at, 0, j] for j, n in enumerate(plan.g_names)},
        config=OmegaConf.to_container(cfg, resolve=True),
    )


def derivatives(*overrides: str, **settings: Any) -> DerivativesResult:
    """Value, gradient and Hessian at ``objective.init`` (``task=derivatives``)."""
    from runner.api.store import in_process_store
    from runner.curvature.task import derivatives_recorded

    cfg = compose_config(as_overrides(("task=derivatives", *overrides), settings))
    with in_process_store():
        result, table, recorder = _reraised(derivatives_recorded, cfg)
    names = list(result.names)
    hessian = None
    if result.hessian is not None:
        zero = result.structural if result.structural is not None else [[False] * len(names)] * len(names)
        hessian = {a: {b: (None if zero[i][j] else float(result.hessian[i][j])) for j, b in enumerate(names)} for i, a in enumerate(names)}
    return DerivativesResult(
        objective=result.objective,
        point={str(n): float(v) for n, v in zip(result.var_names, result.point)},
        value=float(result.value),
        grad={n: float(g) for n, g in zip(names, result.grad)},
        hessian=hessian,
        eigenvalues=None if result.eigenvalues is None else [float(e) for e in result.eigenvalues],
        stable_lr=result.stable_lr,
        targets=[{"source": t.source, "value": float(t.value), "grad": {n: float(g) for n, g in zip(names, t.grad)}} for t in result.targets],
        run_id=recorder.run_id if recorder is not None else None,
        table=table,
    )


def multirun(*overrides: str, **settings: Any) -> SweepResult:
    """A sweep, as ``python -m runner -m OVERRIDES`` (``lr="0.01,0.1"`` sweeps two values): the
    parent run's id and every child's result read back from the store."""
    from runner.processes import child_env
    from runner.tracking.store import resolve_uri

    args = as_overrides(overrides, settings, strings_as_written=True)
    done = subprocess.run([sys.executable, "-m", "runner", "-m", *args], capture_output=True, text=True, env=child_env())
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        raise RunnerError(errors[0].removeprefix("error: ") if errors else f"the sweep exited with status {done.returncode}: {done.stderr.strip()[-300:]}")
    found = re.search(r"sweep: parent run ([0-9a-f]{32}) ", done.stdout)
    if found is None:
        raise RunnerError("the sweep did not record a parent run (is tracking.enabled=false?)")
    parent = found.group(1)
    uri = resolve_uri(next((a.split("=", 1)[1] for a in args if a.startswith("tracking.uri=")), None))
    from runner.api.reading import child_results

    return SweepResult(parent_run_id=parent, children=child_results(uri, parent))


def runs(experiment: str = "runner", parent: str | None = None, tracking_uri: str | None = None):
    """The runs of an experiment (or the children of the sweep ``parent``) as a DataFrame: one row
    per run with its name, status, ``params.*``, final ``metrics.*`` and ``tags.*``."""
    from runner.api.reading import runs_frame

    return runs_frame(experiment, parent, tracking_uri)


def trajectory(run_id: str, tracking_uri: str | None = None):
    """A recorded run's trajectory as a DataFrame indexed by step (its ``trajectory.csv``, every
    step; or, when the run kept no artifacts, its metric histories)."""
    from runner.api.reading import trajectory_frame

    return trajectory_frame(run_id, tracking_uri)


def _reraised(function, *args):
    """Call a job function; a UserError (bad settings found while building) as a RunnerError."""
    from runner.errors import UserError
    from runner.tracking.store import StoreError

    try:
        return function(*args)
    except (UserError, StoreError) as exc:
        if isinstance(exc, RunnerError):
            raise
        raise RunnerError(str(exc)) from None
