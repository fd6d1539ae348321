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
    """The top-level checks that the schema's types cannot express; a key the command line deleted
    (``~lr``) that every run needs is one line too, not OmegaConf's traceback."""
    from omegaconf.errors import ConfigAttributeError, MissingMandatoryValue

    try:
        _validate(cfg)
    except (ConfigAttributeError, MissingMandatoryValue) as exc:
        key = getattr(exc, "full_key", None) or "a key"
        raise UserError(f"{key}: every run needs it; do not delete it (~{key}), set it instead ({key}=...)") from None


def _validate(cfg: DictConfig) -> None:
    if cfg.task not in TASKS:
        raise UserError(f"task: {cfg.task!r} is not allowed; choose one of: {', '.join(TASKS)}")
    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise UserError(f"lr: {cfg.lr} is not allowed; the learning rate must be a finite number > 0")
    if cfg.steps < 0:
        raise UserError(f"steps: {cfg.steps} is not allowed; use 0 (evaluate only) or more")
    if cfg.steps >= 2**63:
        raise UserError(f"steps: {cfg.steps} is not allowed; use at most 2**63-1 (steps are counted in int64)")
    if cfg.tol is not None and not (math.isfinite(cfg.tol) and cfg.tol >= 0):
        raise UserError(f"tol: {cfg.tol} is not allowed; use null or a finite number ≥ 0")
    if cfg.check_grad_every < 1:
        raise UserError(f"check_grad_every: {cfg.check_grad_every} is not allowed; use 1 or more")
    if cfg.tracking.max_coords < 1:
        raise UserError(f"tracking.max_coords: {cfg.tracking.max_coords} is not allowed; use 1 or more")
    if cfg.tracking.http_retries is not None and not 0 <= cfg.tracking.http_retries <= 10:
        raise UserError(f"tracking.http_retries: {cfg.tracking.http_retries} is not allowed; use 0 to 10 (MLflow's limit)")
    log_every = cfg.tracking.log_every
    if log_every != "auto" and not (isinstance(log_every, int) and log_every >= 1):
        raise UserError(f"tracking.log_every: {log_every!r} is not allowed; use auto or an integer ≥ 1")
    if cfg.backend.dtype not in DTYPES:
        raise UserError(f"backend.dtype: {cfg.backend.dtype!r} is not allowed; choose float32 or float64")
    if cfg.backend.device not in DEVICES:
        raise UserError(f"backend.device: {cfg.backend.device!r} is not allowed; choose auto, cpu or cuda")
    if cfg.backend.scheme not in ("central", "forward"):
        raise UserError(f"backend.scheme: {cfg.backend.scheme!r} is not allowed; choose central or forward")
    check_schedule(cfg.schedule, cfg.steps)
    if cfg.tracking.enabled:
        validate_tracking_text(cfg.tracking)


def check_schedule(schedule: DictConfig, steps: int) -> None:
    """Settings of the built-in schedules that make no sense (the schedulers would accept some of
    them silently: a negative gamma flips the lr's sign every step)."""
    get = schedule.get
    if get("_target_") in (None, "null"):
        return
    gamma = get("gamma")
    if gamma is not None and not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma > 0):
        raise UserError(f"schedule.gamma: {gamma} is not allowed; the decay factor must be a finite number > 0")
    for key in ("step_size", "T_max"):
        value = get(key)
        if value is not None and not (isinstance(value, int) and value >= 1):
            raise UserError(f"schedule.{key}: {value!r} is not allowed; use an integer ≥ 1")
    eta_min = get("eta_min")
    if eta_min is not None and not (isinstance(eta_min, (int, float)) and math.isfinite(eta_min) and eta_min >= 0):
        raise UserError(f"schedule.eta_min: {eta_min} is not allowed; use a finite number ≥ 0")
    start = get("start_factor")
    if start is not None and not (isinstance(start, (int, float)) and 0 < start <= 1):
        raise UserError(f"schedule.start_factor: {start} is not allowed; use a number in (0, 1]")
    warmup = get("warmup_steps")
    if warmup is not None:
        total = get("total_steps", steps)
        if not (isinstance(warmup, int) and warmup >= 1):
            raise UserError(f"schedule.warmup_steps: {warmup!r} is not allowed; use an integer ≥ 1")
        if warmup >= total:
            raise UserError(
                f"schedule.warmup_steps: {warmup} is not allowed; the warm-up must be shorter than the run "
                f"({total} steps): use fewer warm-up steps or more steps"
            )


def validate_tracking_text(tracking) -> None:
    """The store's URI, the experiment and the run's name are text MLflow stores: UTF-8 (not bytes
    that were not UTF-8, which Python reads as lone surrogates), no control characters, and an
    experiment's name not empty (MLflow refuses it)."""
    if tracking.experiment is None or not str(tracking.experiment).strip():
        raise UserError(f"tracking.experiment: {tracking.experiment!r} is not allowed; name the experiment (the default is runner)")
    for key in ("uri", "experiment", "run_name"):
        value = tracking.get(key)
        if value is None:
            continue
        bad = next((ch for ch in str(value) if "\udc80" <= ch <= "\udcff" or not (ch.isprintable() or ch == " ")), None)
        if bad is not None:
            what = f"the byte 0x{ord(bad) - 0xDC00:02x} is not UTF-8 text" if "\udc80" <= bad <= "\udcff" else f"the character {ascii(bad)} is not printable"
            raise UserError(f"tracking.{key}: {ascii(str(value))} is not allowed: {what}; use printable UTF-8 text")
