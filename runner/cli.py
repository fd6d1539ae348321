"""Command-line checks made before Hydra composes the config.

Hydra reports an unknown group choice or key over several lines with a hint about
``HYDRA_FULL_ERROR``; the runner's promise is one line naming the problem and what is allowed. So the
overrides are parsed with Hydra's own parser and checked against the config groups on disk and the
structured-config schemas (:mod:`runner.config`): choices, keys and value types. Anything that slips
through still gets Hydra's (longer) message.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from runner.errors import UserError

CONF = Path(__file__).resolve().parent.parent / "conf"
GROUPS = ("objective", "backend", "optimizer", "schedule", "tracking")
OPEN_GROUPS = ("optimizer", "schedule")  # their keys are a torch class's arguments, not a schema
# Hydra flags that take the next token as their value.
FLAGS_WITH_VALUE = {"-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir", "-c", "--cfg", "-p", "--package", "--experimental-rerun"}
NO_RUN_FLAGS = {"-h", "--help", "--hydra-help", "--version", "-c", "--cfg", "-i", "--info", "--shell-completion", "-sc"}


def overrides_of(argv: Iterable[str]) -> list[str]:
    """The KEY=VALUE tokens of a command line, without Hydra's flags and their values."""
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
            continue
        if token in FLAGS_WITH_VALUE:
            skip = True
            continue
        if token.startswith("-"):
            continue
        out.append(token)
    return out


def wants_tracking(argv: list[str]) -> bool:
    """Whether this command will run a job that records into MLflow (so the writer is worth starting)."""
    if any(token.split("=")[0] in NO_RUN_FLAGS for token in argv):
        return False
    return not any(token.replace(" ", "") in ("tracking.enabled=false", "tracking.enabled=False") for token in argv)


@lru_cache(maxsize=None)
def choices(group: str) -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in (CONF / group).glob("*.yaml")))


@lru_cache(maxsize=None)
def default_choice(group: str) -> str:
    import yaml

    for item in yaml.safe_load((CONF / "config.yaml").read_text())["defaults"]:
        if isinstance(item, dict) and group in item:
            return item[group]
    raise KeyError(group)


@lru_cache(maxsize=None)
def open_group_keys(group: str, choice: str) -> tuple[str, ...]:
    """The keys a choice of an open group (optimizer, schedule) sets: its class's arguments."""
    import yaml

    data = yaml.safe_load((CONF / group / f"{choice}.yaml").read_text()) or {}
    return tuple(k for k in data if not k.startswith("_") or k == "_target_")


def _schemas() -> dict[str, type]:
    from runner.config import BackendConf, ObjectiveConf, RunnerConf, TrackingConf

    return {"": RunnerConf, "objective": ObjectiveConf, "backend": BackendConf, "tracking": TrackingConf}


def _values(override) -> list[Any]:
    """The values an override stands for: every choice of a sweep, the ends of an interval (a
    sweeper such as Optuna draws from it), or the single value."""
    from hydra.core.override_parser.types import IntervalSweep, ValueType

    if not override.is_sweep_override():
        return [override.value()]
    value = override.value()
    if isinstance(value, IntervalSweep):
        return [value.start, value.end]
    if override.value_type in (ValueType.CHOICE_SWEEP, ValueType.RANGE_SWEEP, ValueType.SIMPLE_CHOICE_SWEEP):
        return list(override.sweep_iterator())
    return []


@lru_cache(maxsize=None)
def _schema_node(schema: type):
    """One typed node per schema (building one costs ~40 ms): values are tried on it."""
    from omegaconf import OmegaConf

    return OmegaConf.structured(schema)


def _check_type(schema: type, field: str, value: Any, key: str) -> None:
    """Let OmegaConf's structured-config validation judge the value; reword its complaint."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    node = _schema_node(schema)
    try:
        OmegaConf.update(node, field, value, merge=False)
    except OmegaConfBaseException:
        kind = next(f.type for f in dataclasses.fields(schema) if f.name == field)
        kind = kind.__name__ if isinstance(kind, type) else str(kind).replace("typing.", "")
        if kind.startswith("Optional["):
            kind = kind[len("Optional[") : -1] + " or null"
        raise UserError(f"{key}: {value!r} is not a valid value; expected {kind}") from None


def preflight(argv: list[str]) -> None:
    """Raise :class:`UserError` for an unknown group choice, an unknown key or a mistyped value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType
    from hydra.errors import HydraException

    tokens = overrides_of(argv)
    if not tokens:
        return
    try:
        parsed = OverridesParser.create().parse_overrides(tokens)
    except HydraException as exc:
        raise UserError(
            f"cannot parse the command line: {str(exc).splitlines()[0]} "
            "(quote values with spaces or symbols: objective.expr='(a-1)**2 + b')"
        ) from None
    schemas = _schemas()
    chosen = {g: [default_choice(g)] for g in OPEN_GROUPS}
    for o in parsed:
        if o.key_or_group in GROUPS:
            for value in _values(o):
                if str(value) not in choices(o.key_or_group):
                    raise UserError(
                        f"{o.key_or_group}: unknown choice {value!r}; choose one of: {', '.join(choices(o.key_or_group))}"
                    )
            if o.key_or_group in OPEN_GROUPS:
                chosen[o.key_or_group] = [str(v) for v in _values(o)]
    for o in parsed:
        key = o.key_or_group
        if key in GROUPS or key.startswith("hydra") or "/" in key or o.type in (OverrideType.ADD, OverrideType.FORCE_ADD, OverrideType.DEL):
            continue
        group, _, field = key.rpartition(".")
        if group in OPEN_GROUPS:
            for choice in chosen[group]:
                keys = open_group_keys(group, choice)
                if field not in keys:
                    kind = "torch.optim" if group == "optimizer" else "torch.optim.lr_scheduler"
                    raise UserError(
                        f"{key}: {group} {choice!r} has no setting {field!r}; it has: {', '.join(keys)} "
                        f"(add a {kind} argument with +{key}=...)"
                    )
            continue
        schema = schemas.get(group)
        names = [f.name for f in dataclasses.fields(schema)] if schema else []
        if schema is None or "." in field or field not in names:
            if group:
                allowed = f"{group} keys are: {', '.join(names)}" if schema else f"groups are: {', '.join(GROUPS)}"
            else:
                allowed = "top-level keys are: " + ", ".join(n for n in names if n not in GROUPS) + f"; groups: {', '.join(GROUPS)}"
            raise UserError(f"unknown key {key!r}; {allowed}")
        for value in _values(o):
            _check_type(schema, field, value, key)
