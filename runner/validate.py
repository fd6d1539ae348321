"""Checks of the composed config that its schema's types cannot express (ranges, choices).

Torch-free on purpose: a bad value is reported before the job imports torch (~2 s).
"""

from __future__ import annotations

import math

from omegaconf import DictConfig

from runner.errors import UserError

TASKS = ("optimize", "derivatives")
DTYPES = ("float32", "float64")
DEVICES = ("auto", "cpu", "cuda")


def validate(cfg: DictConfig) -> None:
    """The top-level checks that the schema's types cannot express."""
    if cfg.task not in TASKS:
        raise UserError(f"task: {cfg.task!r} is not allowed; choose one of: {', '.join(TASKS)}")
    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise UserError(f"lr: {cfg.lr} is not allowed; the learning rate must be a finite number > 0")
    if cfg.steps < 0:
        raise UserError(f"steps: {cfg.steps} is not allowed; use 0 (evaluate only) or more")
    if cfg.tol is not None and not (math.isfinite(cfg.tol) and cfg.tol >= 0):
        raise UserError(f"tol: {cfg.tol} is not allowed; use null or a finite number ≥ 0")
    if cfg.check_grad_every < 1:
        raise UserError(f"check_grad_every: {cfg.check_grad_every} is not allowed; use 1 or more")
    if cfg.tracking.max_coords < 1:
        raise UserError(f"tracking.max_coords: {cfg.tracking.max_coords} is not allowed; use 1 or more")
    log_every = cfg.tracking.log_every
    if log_every != "auto" and not (isinstance(log_every, int) and log_every >= 1):
        raise UserError(f"tracking.log_every: {log_every!r} is not allowed; use auto or an integer ≥ 1")
    if cfg.backend.dtype not in DTYPES:
        raise UserError(f"backend.dtype: {cfg.backend.dtype!r} is not allowed; choose float32 or float64")
    if cfg.backend.device not in DEVICES:
        raise UserError(f"backend.device: {cfg.backend.device!r} is not allowed; choose auto, cpu or cuda")
    if cfg.backend.scheme not in ("central", "forward"):
        raise UserError(f"backend.scheme: {cfg.backend.scheme!r} is not allowed; choose central or forward")
