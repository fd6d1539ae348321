"""The config of an API call: the command line's composition (:mod:`runner.composition`).

``run("objective=g", "optimizer=sgd", lr=0.1)`` composes exactly what ``python -m runner objective=g
optimizer=sgd lr=0.1`` composes, with the same one-line messages, raised as :class:`RunnerError`.
"""

from __future__ import annotations

from typing import Any

from runner.composition import hydra_value
from runner.errors import UserError


class RunnerError(UserError):
    """What the command line would print as ``error: ...`` (the message is that line's text)."""


def as_overrides(args: tuple[str, ...], kwargs: dict[str, Any], strings_as_written: bool = False) -> list[str]:
    """Positional ``KEY=VALUE`` strings, then keyword ``key=value`` pairs (``objective__init`` or a
    dotted key in ``**{"objective.init": [1, 2]}``), in Hydra's override syntax. With
    ``strings_as_written`` a string value is passed as is (a multirun's ``lr="0.01,0.1"`` sweeps)."""
    overrides = [str(a) for a in args]
    for key, value in kwargs.items():
        text = value if strings_as_written and isinstance(value, str) else hydra_value(value)
        overrides.append(f"{key.replace('__', '.')}={text}")
    return overrides


def compose_config(overrides: list[str]):
    """The validated config of these overrides (a DictConfig), or :class:`RunnerError`."""
    from runner.composition import compose

    try:
        return compose(overrides)
    except UserError as exc:
        raise RunnerError(str(exc)) from None
