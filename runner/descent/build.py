"""From the composed config to what the descent needs: the problem, the backend, the device.

The config is only read here (attribute access on the ``objective``, ``backend``, ``optimizer`` and
``tracking`` nodes); nothing of Hydra is used, so tests and the Python API build problems the same way.
"""

from __future__ import annotations

from typing import Any

import torch

from runner.descent.backends import make_backend, resolve_device, resolve_dtype
from runner.descent.memory import check_fits
from runner.descent.optimizers import is_plain_descent, needs_closure
from runner.descent.problem import Problem, build_problem


def build(cfg: Any) -> tuple[Problem, Any, torch.device]:
    """The problem and backend, on the configured dtype and device."""
    dtype = resolve_dtype(cfg.backend.dtype)
    size = len(cfg.objective.init) if cfg.objective.init is not None else (cfg.objective.dim or 1)
    device = resolve_device(cfg.backend.device, size)
    # Before anything of size d is allocated: a run that cannot fit says so with an estimate.
    moving = len(cfg.objective.wrt) if cfg.objective.wrt else size
    check_fits(
        size, moving, 1, dtype, device, cfg.backend.name, bool(cfg.backend.compile),
        bool(cfg.backend.richardson), cfg.steps, 2 * min(size, cfg.tracking.max_coords), cfg.tracking.log_every,
    )
    problem = build_problem(cfg.objective, dtype=dtype, device=device)
    return problem, make_backend(cfg.backend), device


def compile_plan(cfg: Any, backend: Any) -> tuple[Any, float | None]:
    """With ``backend.compile=true``: plain descent becomes one fused compiled step (its lr is
    returned); any other optimizer keeps its own step around a compiled gradient."""
    if not cfg.backend.compile:
        return backend, None
    from runner.descent.compiled import CompiledAutograd, CompiledBackend

    constant_lr = cfg.schedule.get("_target_") in (None, "null")
    if is_plain_descent(cfg.optimizer) and not needs_closure(cfg.optimizer) and not cfg.check_grad and constant_lr:
        return backend, float(cfg.lr)
    return (CompiledAutograd() if backend.name == "autograd" else CompiledBackend(backend)), None
