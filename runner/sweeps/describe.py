"""What a sweep is, read from its composed config: the keys it varies, its job count, its name.

The parent run of a multirun is named after the sweep (``sweep-rosenbrock-adam-lr{0.001,0.01,0.1}``),
its params are the sweep's overrides as written, and its description is the command line.
"""

from __future__ import annotations

import shlex
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

NAMED_FIRST = ("objective", "optimizer", "lr")  # the parts every run name starts with


def parse_overrides(overrides: list[str]) -> list:
    """Hydra's parse of a command line's overrides (cached: naming, counting and describing a sweep
    each read the same ones)."""
    return list(_parse(tuple(overrides)))


@lru_cache(maxsize=8)
def _parse(overrides: tuple[str, ...]) -> tuple:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return tuple(OverridesParser.create().parse_overrides(list(overrides)))


def _key(override) -> str:
    return override.key_or_group


def _text(override) -> str:
    """The value as written on the command line (``0.01,0.1``, ``range(1,4)``)."""
    return override.input_line.split("=", 1)[1] if override.input_line and "=" in override.input_line else str(override.value())


def sweeper_params(config: DictConfig) -> dict[str, str]:
    """Search spaces given to the sweeper (``hydra.sweeper.params``, as Optuna's sweeper takes)."""
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None)
    return {str(k): str(v) for k, v in params.items()} if params else {}


def swept_keys(config: DictConfig) -> list[str]:
    """Keys that take several values in this sweep, in command-line order."""
    keys = [_key(o) for o in parse_overrides(list(config.hydra.overrides.task)) if o.is_sweep_override()]
    keys += [k for k in sweeper_params(config) if k not in keys]
    return keys


def expected_jobs(config: DictConfig) -> int | None:
    """How many jobs the sweep will launch, when that is known up front."""
    n_trials = OmegaConf.select(config, "hydra.sweeper.n_trials", default=None)
    if sweeper_params(config) or n_trials is not None:
        return int(n_trials) if n_trials is not None else None
    count = 1
    try:
        for o in parse_overrides(list(config.hydra.overrides.task)):
            if o.is_sweep_override():
                count *= len(list(o.sweep_iterator()))
    except Exception:  # noqa: BLE001 - interval or glob sweeps: not countable here
        return None
    return count


def sweep_name(config: DictConfig) -> str:
    """``sweep-<objective>-<optimizer>-lr<lr>`` with each swept part written ``{v1,v2,...}``,
    then ``-<key>{values}`` for the other swept keys."""
    from runner.tracking.naming import format_number

    given = {_key(o): o for o in parse_overrides(list(config.hydra.overrides.task))}
    space = sweeper_params(config)

    def part(key: str, default: Any) -> str:
        if key in space:
            return "{" + space[key].replace(" ", "") + "}"
        o = given.get(key)
        if o is None:
            return format_number(default) if isinstance(default, float) else str(default)
        return "{" + _text(o) + "}" if o.is_sweep_override() else _text(o)

    optimizer = OmegaConf.select(config, "optimizer.name", default=None) or "optimizer"
    parts = ["sweep", part("objective", config.objective.name), part("optimizer", optimizer), "lr" + part("lr", float(config.lr))]
    for key in swept_keys(config):
        if key not in NAMED_FIRST:
            parts.append(key.rsplit(".", 1)[-1] + part(key, ""))
    return "-".join(parts)[:250]


def sweep_params(config: DictConfig) -> dict[str, str]:
    """The parent's params: every task override as written (``lr: 0.01,0.1``) and the sweeper's
    search spaces (``lr: tag(log, interval(0.0001, 1.0))``)."""
    params = {_key(o).lstrip("+~"): _text(o) for o in parse_overrides(list(config.hydra.overrides.task))}
    params.update(sweeper_params(config))
    return params


def command_line() -> str:
    program = sys.argv[0]
    head = "python -m runner" if program.endswith("__main__.py") or program == "-m" else Path(program).name
    return " ".join([head] + [shlex.quote(a) for a in sys.argv[1:]])
