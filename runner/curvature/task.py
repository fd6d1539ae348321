"""``task=derivatives``: the value, gradient and Hessian of the objective at its start point.

The tutorial's first half (finite and automatic derivatives, a list of targets, the Hessian with
its structural zero) as one command::

    python -m runner task=derivatives objective=g

prints a table and records one MLflow run with, at step 0:

* ``value`` = L(p), ``grad/<var>`` = ∂L/∂p, ``hessian/<vi>/<vj>`` = ∂²L/∂pᵢ∂pⱼ, ``hessian_eig/<i>``
  (the eigenvalues λ₀ ≤ λ₁ ≤ … of H) and ``stable_lr`` = 2/λ_max, the largest step plain gradient
  descent can take on the local quadratic model (see :mod:`runner.curvature.hessian`);
* for a list objective (``objective.expr=[e1, e2]``) each target's ``target/<i>/value`` and
  ``target/<i>/grad/<var>`` (i = 1, 2, …) besides those of the sum;
* with ``backend=finite_diff`` the error bar of every entry, ``grad_err/<var>`` and
  ``hessian_err/<vi>/<vj>``.

p is the vector of moving variables (``objective.wrt``; all by default), at ``objective.init``.
``backend=autograd`` differentiates exactly (the Hessian by ``torch.func``); ``backend=finite_diff``
uses the run's difference scheme for the gradient and second-order central differences with their own
step ε^(1/4)·max(1, |x|) for the Hessian (:func:`runner.curvature.hessian.fd_hessian`). Structural zeros
(TensorFlow's ``None``) are found with autograd whatever the backend
(:func:`runner.curvature.hessian.hessian_structure`) and tagged ``hessian_structural``.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from runner.curvature.hessian import MAX_DIM, autograd_hessian, eigenvalues, fd_gradient, fd_hessian, hessian_structure, stable_lr
from runner.descent.backends import Autograd, FiniteDifference, device_name
from runner.descent.build import build
from runner.descent.loop import sample_coords
from runner.descent.optimizers import optimizer_name
from runner.descent.problem import Problem
from runner.errors import UserError
from runner.tracking import links
from runner.tracking.fingerprint import fingerprint
from runner.tracking.naming import objective_label, swept_extras
from runner.tracking.provenance import provenance_tags
from runner.tracking.recorder import RunRecorder, open_store
from runner.tracking.store import resolve_uri

MATRIX_SHOWN = 8  # the Hessian is printed as a matrix up to this many moving variables
ROWS_SHOWN = 64  # gradient rows printed; the rest are in derivatives.json


@dataclass
class TargetDerivatives:
    """One target of a list objective: its source, value, gradient and (finite differences) error."""

    source: str
    value: float
    grad: np.ndarray
    grad_err: np.ndarray | None = None


@dataclass
class Derivatives:
    """Everything the task computes at one point, on the host, in float64 numpy.

    ``names`` are the moving variables (the rows and columns of ``grad`` and ``hessian``);
    ``structural[i, j]`` marks the structural zeros (None when autograd cannot tell); the ``*_err``
    arrays are finite-difference error bars (None with autograd, which is exact up to rounding).
    """

    objective: str
    var_names: list[str]
    point: np.ndarray
    names: list[str]
    backend: str
    dtype: str
    device: str
    value: float
    grad: np.ndarray
    grad_err: np.ndarray | None = None
    hessian: np.ndarray | None = None
    hessian_err: np.ndarray | None = None
    structural: np.ndarray | None = None
    eigenvalues: np.ndarray | None = None
    stable_lr: float | None = None
    targets: list[TargetDerivatives] = field(default_factory=list)
    method: str = ""
    steps: dict[str, list[float]] = field(default_factory=dict)
    evaluations: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def structural_entries(self) -> list[str]:
        """``["x1/x1", …]``: the structurally zero entries, row-major."""
        if self.structural is None:
            return []
        return [f"{self.names[i]}/{self.names[j]}" for i, j in zip(*np.nonzero(self.structural))]


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def _autograd_grad(loss, p: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        return Autograd().value_and_grad(loss, p)
    except RuntimeError as exc:
        raise UserError(
            f"backend=autograd cannot differentiate {what} ({str(exc).splitlines()[0]}); use backend=finite_diff"
        ) from None


def compute_derivatives(problem: Problem, backend: Any, dtype_name: str = "", device: str = "") -> Derivatives:
    """Value, gradient and Hessian of ``problem`` at its start point with ``backend`` (Autograd or
    FiniteDifference); per-target gradients for a list objective; the structural zeros by autograd.

    The Hessian (and so the eigenvalues and ``stable_lr``) is computed for at most
    :data:`runner.curvature.hessian.MAX_DIM` moving variables; above that a note says to pick some with
    ``objective.wrt``.
    """
    base = problem.x0.unsqueeze(0)
    p = problem.params(base)
    loss = problem.loss(base)
    k = p.shape[-1]
    fd = isinstance(backend, FiniteDifference)
    out = Derivatives(
        objective=problem.name,
        var_names=list(problem.var_names),
        point=_numpy(problem.x0),
        names=problem.wrt_names,
        backend=backend.name,
        dtype=dtype_name or str(problem.x0.dtype).removeprefix("torch."),
        device=device or str(problem.x0.device),
        value=math.nan,
        grad=np.zeros(k),
    )
    if fd:
        est = fd_gradient(loss, p, backend.scheme, backend.eps, backend.richardson)
        out.value, out.grad, out.grad_err = float(est.value[0]), _numpy(est.estimate[0]), _numpy(est.error[0])
        out.steps["grad"] = _numpy(est.step[0]).tolist()
        out.evaluations["grad"] = est.evaluations
        rich = ", Richardson" if backend.richardson else ""
        out.method = f"finite_diff ({backend.scheme}{rich}, eps {backend.eps})"
    else:
        value, grad = _autograd_grad(loss, p, problem.name)
        out.value, out.grad = float(value[0]), _numpy(grad[0])
        out.method = "autograd"

    if not math.isfinite(out.value):
        out.notes.append(f"L = {out.value} here: the derivatives are those of the formulas, not of a function defined at this point")
    if k > MAX_DIM:
        out.notes.append(
            f"Hessian skipped: {k} moving variables > {MAX_DIM}; pick some with objective.wrt=[...]"
        )
    else:
        try:
            structure = hessian_structure(loss, p[0])
        except Exception:  # noqa: BLE001 - a function autograd cannot see through: nothing is marked
            structure = None
        if fd:
            est = fd_hessian(loss, p, backend.eps, backend.richardson)
            H, out.hessian_err = est.estimate[0], _numpy(est.error[0])
            out.steps["hessian"] = _numpy(est.step[0]).tolist()
            out.evaluations["hessian"] = est.evaluations
        else:
            try:
                H = autograd_hessian(loss, p[0])
            except RuntimeError as exc:
                H = None
                out.notes.append(f"Hessian unavailable: autograd cannot differentiate twice ({str(exc).splitlines()[0]})")
            if H is not None and structure is not None:
                structure = structure & (H == 0)
        if H is not None:
            out.hessian = _numpy(H)
            out.structural = None if structure is None else structure.cpu().numpy()
            if bool(torch.isfinite(H).all()):
                eigs = eigenvalues(H)
                out.eigenvalues = _numpy(eigs)
                out.stable_lr = stable_lr(eigs)
            else:
                out.notes.append("the Hessian is not finite here: no eigenvalues")
        if structure is None and H is not None:
            out.notes.append("structural zeros: autograd cannot tell for this function (none marked)")

    if problem.targets is not None:
        for t, source in enumerate(problem.target_sources):
            target = lambda q, t=t: problem.targets(problem.assemble(q, base))[t]  # noqa: E731
            if fd:
                est = fd_gradient(target, p, backend.scheme, backend.eps, backend.richardson)
                out.targets.append(TargetDerivatives(source, float(est.value[0]), _numpy(est.estimate[0]), _numpy(est.error[0])))
            else:
                value, grad = _autograd_grad(target, p, f"target {source!r}")
                out.targets.append(TargetDerivatives(source, float(value[0]), _numpy(grad[0])))
    return out


# -- the table -----------------------------------------------------------------------------------


SIGNIFICANT = 12  # digits printed of a float64 number; the JSON artifact and MLflow keep all 17


def _number(value: float, dtype: str) -> str:
    """A number at the precision that means something: the shortest text that reads back as the
    value rounded to 12 significant digits in float64 (``24.2``, not the 24.199999999999996 that
    0.1-steps of arithmetic leave; ``8.99999999999`` for a finite difference of 9, whose error
    shows), and the shortest round-trip text of the float32 value in float32."""
    if value is None or not math.isfinite(value):
        return str(value)
    if dtype == "float32":
        text = str(np.float32(value))
    else:
        text = repr(float(f"{float(value):.{SIGNIFICANT}g}"))
    return "0.0" if text == "-0.0" else text


def _cell(value: float, err: float | None, dtype: str) -> str:
    return _number(value, dtype) if err is None else f"{_number(value, dtype)} ± {err:.1e}"


def _grid(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[c]) for r in rows if c < len(r)) for c in range(max(len(r) for r in rows))]
    return [indent + "  ".join(cell.ljust(widths[c]) for c, cell in enumerate(r)).rstrip() for r in rows]


def format_table(d: Derivatives) -> str:
    """The table the task prints (and logs as ``derivatives.txt``)."""
    dt = d.dtype
    at = ", ".join(f"{n} = {_number(v, dt)}" for n, v in zip(d.var_names[:8], d.point[:8]))
    if len(d.var_names) > 8:
        at += ", …"
    lines = [f"{d.objective} at {at}"]
    if len(d.names) < len(d.var_names):
        held = [n for n in d.var_names if n not in d.names]
        lines.append(f"differentiated with respect to {', '.join(d.names)} ({', '.join(held)} held constant)")
    lines.append(f"{d.method} · {d.dtype} · {d.device}")
    lines.append("")

    fd = d.grad_err is not None
    err = (lambda a, *i: float(a[i])) if fd else (lambda a, *i: None)
    shown = min(len(d.names), ROWS_SHOWN)
    if d.targets:
        header = [""] + [t.source for t in d.targets] + ["sum"]
        rows = [header, ["value"] + [_number(t.value, dt) for t in d.targets] + [_number(d.value, dt)]]
        for i in range(shown):
            row = [f"∂/∂{d.names[i]}"]
            row += [_cell(float(t.grad[i]), err(t.grad_err, i) if fd else None, dt) for t in d.targets]
            rows.append(row + [_cell(float(d.grad[i]), err(d.grad_err, i), dt)])
    else:
        rows = [["value", _number(d.value, dt)]]
        rows += [[f"∂/∂{d.names[i]}", _cell(float(d.grad[i]), err(d.grad_err, i), dt)] for i in range(shown)]
    lines += _grid(rows)
    if shown < len(d.names):
        lines.append(f"  … {len(d.names) - shown} more in derivatives.json")
    if fd:
        lines.append(f"  (± estimated error; steps h = {', '.join(f'{h:.2g}' for h in d.steps['grad'][:8])})")

    if d.hessian is not None:
        k = len(d.names)
        lines.append("")
        if k <= MATRIX_SHOWN:
            title = "Hessian" + (" (second central differences, ± estimated error)" if fd else "")
            lines.append(title)
            rows = [[""] + d.names]
            for i in range(k):
                row = [d.names[i]]
                for j in range(k):
                    cell = _cell(float(d.hessian[i, j]), err(d.hessian_err, i, j), dt)
                    if d.structural is not None and d.structural[i, j]:
                        cell = "0 (structural)" if not fd else f"{cell} (structural 0)"
                    row.append(cell)
                rows.append(row)
            lines += _grid(rows)
            if fd:
                lines.append(f"  (steps h = {', '.join(f'{h:.2g}' for h in d.steps['hessian'])})")
        else:
            lines.append(f"Hessian: {k}×{k}, in derivatives.json and the hessian/<vi>/<vj> metrics")
        if d.eigenvalues is not None:
            eigs = d.eigenvalues if k <= MATRIX_SHOWN else d.eigenvalues[[0, -1]]
            label = "eigenvalues" if k <= MATRIX_SHOWN else "eigenvalues (min, max)"
            lines.append("")
            lines += _grid(
                [
                    [label, ", ".join(_number(float(v), dt) for v in eigs)],
                    ["stable_lr", f"{_number(d.stable_lr, dt)} = 2/λ_max (plain gradient descent is stable for lr below it)"
                     if math.isfinite(d.stable_lr) else "inf (no positive curvature: no step size is unstable here)"],
                ],
                indent="",
            )
        if d.structural is not None and d.structural.any():
            lines.append("")
            lines.append("0 (structural): " + structural_note(d) + " (TensorFlow's None); other zeros are computed")
    for note in d.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines) + "\n"


def structural_note(d: Derivatives, rows: int = 4) -> str:
    """``∂L/∂x1 does not involve x1``, per row of the Hessian with structural zeros (the first few)."""
    parts = []
    for i in range(len(d.names)):
        cols = [d.names[j] for j in np.nonzero(d.structural[i])[0]]
        if cols:
            parts.append(f"∂L/∂{d.names[i]} does not involve {', '.join(cols)}")
    more = len(parts) - rows
    return "; ".join(parts[:rows]) + (f"; … ({more} more rows)" if more > 0 else "")


# -- MLflow --------------------------------------------------------------------------------------


def metrics(d: Derivatives, max_coords: int = 64) -> dict[str, float]:
    """The metrics at step 0 (contract: ``value``, ``grad/<var>``, ``hessian/<vi>/<vj>``, ``stable_lr``)."""
    out = {"value": d.value}
    coords = sample_coords(len(d.names), max_coords)
    for i in coords:
        out[f"grad/{d.names[i]}"] = float(d.grad[i])
        if d.grad_err is not None:
            out[f"grad_err/{d.names[i]}"] = float(d.grad_err[i])
    if d.hessian is not None:
        for i, vi in enumerate(d.names):
            for j, vj in enumerate(d.names):
                out[f"hessian/{vi}/{vj}"] = float(d.hessian[i, j])
                if d.hessian_err is not None:
                    out[f"hessian_err/{vi}/{vj}"] = float(d.hessian_err[i, j])
    if d.eigenvalues is not None:
        for i, v in enumerate(d.eigenvalues):
            out[f"hessian_eig/{i}"] = float(v)
        out["stable_lr"] = d.stable_lr
    for t, target in enumerate(d.targets, start=1):
        out[f"target/{t}/value"] = target.value
        for i in coords:
            out[f"target/{t}/grad/{d.names[i]}"] = float(target.grad[i])
    return out


def _plain(x: Any) -> Any:
    """JSON-ready: arrays to lists, non-finite floats to strings."""
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else str(float(x))
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def as_json(d: Derivatives) -> str:
    """All the numbers of the task, for scripts (``derivatives.json``)."""
    data = {
        "objective": d.objective,
        "point": dict(zip(d.var_names, d.point.tolist())),
        "wrt": d.names,
        "backend": d.backend,
        "method": d.method,
        "dtype": d.dtype,
        "device": d.device,
        "value": d.value,
        "grad": d.grad,
        "grad_err": d.grad_err,
        "hessian": d.hessian,
        "hessian_err": d.hessian_err,
        "hessian_structural": d.structural,
        "eigenvalues": d.eigenvalues,
        "stable_lr": d.stable_lr,
        "targets": [{"source": t.source, "value": t.value, "grad": t.grad, "grad_err": t.grad_err} for t in d.targets],
        "steps": d.steps,
        "evaluations": d.evaluations,
        "notes": d.notes,
    }
    return json.dumps(_plain(data), indent=2) + "\n"


def run_name(cfg: DictConfig, problem: Problem, backend: Any) -> str:
    """``g-derivatives-autograd`` (a custom objective with its tag, ``custom-9c1b1e-derivatives-autograd``),
    plus ``-<key><value>`` for keys a multirun sweeps."""
    if cfg.tracking.run_name:
        return str(cfg.tracking.run_name)
    parts = [objective_label(OmegaConf.to_container(cfg.objective, resolve=True)), "derivatives", backend.name]
    parts += [f"{key.rsplit('.', 1)[-1]}{value}" for key, value in swept_extras(cfg).items()]
    return "-".join(parts)


def run_derivatives(cfg: DictConfig) -> float:
    """The task behind ``task=derivatives``: compute, print, record; the value L(p) for sweepers."""
    result, table, recorder = derivatives_recorded(cfg)
    sys.stdout.write(table)
    if recorder is not None:
        experiment_id = recorder.store.get_experiment_id()
        print(links.run_lines(resolve_uri(cfg.tracking.uri), cfg.tracking.experiment, experiment_id, recorder.run_id))
    sys.stdout.flush()
    return result.value


def derivatives_recorded(cfg: DictConfig) -> tuple[Derivatives, str, RunRecorder | None]:
    """Compute and record, printing nothing: the result, its table, the run (None untracked)."""
    problem, backend, device = build(cfg)
    name = run_name(cfg, problem, backend)
    recorder = start_record(cfg, name, problem, backend, device) if cfg.tracking.enabled else None
    try:
        result = compute_derivatives(problem, backend, cfg.backend.dtype, str(device))
        table = format_table(result)
    except BaseException as exc:
        if recorder is not None:
            recorder.fail(exc)
        raise
    if recorder is not None:
        finish_record(cfg, recorder, result, table)
    return result, table, recorder


def start_record(cfg: DictConfig, name: str, problem: Problem, backend: Any, device: Any) -> RunRecorder:
    tags = {
        "objective": problem.name,
        "backend": backend.name,
        "optimizer": optimizer_name(cfg.optimizer),
        "device": str(device),
        "dtype": cfg.backend.dtype,
        "task": cfg.task,
    }
    config = OmegaConf.to_container(cfg, resolve=True)
    tags.update(provenance_tags(fingerprint(config), cfg.seed, device_name(device)))
    return RunRecorder.start(open_store(cfg.tracking), name, config, tags)


def finish_record(cfg: DictConfig, recorder: RunRecorder, result: Derivatives, table: str) -> None:
    """The metrics at step 0, the table and JSON as artifacts, the structural-zero tags."""
    values = metrics(result, cfg.tracking.max_coords)
    recorder.log_metrics({key: (np.array([0]), np.array([value], dtype=float)) for key, value in values.items()})
    files = {"derivatives.txt": table, "derivatives.json": as_json(result)}
    if cfg.tracking.artifacts:
        files["config.yaml"] = OmegaConf.to_yaml(cfg, resolve=True)
    recorder.log_files(files)
    marked = result.structural_entries()
    end_tags = {
        "hessian_structural": ",".join(marked) if marked else ("unknown" if result.structural is None else "none"),
    }
    if result.stable_lr is not None and not math.isfinite(result.stable_lr):
        end_tags["stable_lr"] = "inf (no positive curvature)"
    if result.notes:
        end_tags["note"] = "; ".join(result.notes)[:500]
    recorder.finish(end_tags)
