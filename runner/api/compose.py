"""The config of an API call: the command line's composition, through Hydra's compose API.

``run("objective=g", "optimizer=sgd", lr=0.1)`` composes exactly what ``python -m runner objective=g
optimizer=sgd lr=0.1`` composes: the same ``conf/``, the same checks before composing
(:func:`runner.cli.preflight`) and after (:func:`runner.validate.validate`), the same one-line
messages, raised as :class:`RunnerError`. Hydra's global state is initialised for the composition
only and cleared after it, so calls can be repeated in one process.
"""

from __future__ import annotations

from typing import Any

from runner.errors import UserError


class RunnerError(UserError):
    """What the command line would print as ``error: ...`` (the message is that line's text)."""


def as_overrides(args: tuple[str, ...], kwargs: dict[str, Any], strings_as_written: bool = False) -> list[str]:
    """Positional ``KEY=VALUE`` strings, then keyword ``key=value`` pairs (``objective__init`` or a
    dotted key in ``**{"objective.init": [1, 2]}``), in Hydra's override syntax. With
    ``strings_as_written`` a string value is passed as is (a multirun's ``lr="0.01,0.1"`` sweeps)."""
    overrides = [str(a) for a in args]
    for key, value in kwargs.items():
        text = value if strings_as_written and isinstance(value, str) else _hydra_value(value)
        overrides.append(f"{key.replace('__', '.')}={text}")
    return overrides


def _hydra_value(value: Any) -> str:
    """A Python value written as Hydra reads it: lists in brackets, strings quoted when needed."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str) and not value.replace("_", "").replace(".", "").replace("-", "").isalnum():
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value)


def compose_config(overrides: list[str]):
    """The validated config of these overrides (a DictConfig), or :class:`RunnerError`."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from runner import cli
    from runner.config import register_configs
    from runner.validate import validate

    try:
        cli.preflight(overrides)
        register_configs()
        try:
            with initialize_config_dir(version_base="1.3", config_dir=str(cli.CONF), job_name="runner"):
                cfg = compose(config_name="config", overrides=overrides)
        except (HydraException, OmegaConfBaseException) as exc:
            raise UserError(str(exc).splitlines()[0]) from None
        validate(cfg)
    except UserError as exc:
        raise RunnerError(str(exc)) from None
    return cfg
