"""The config of a run composed without the command line, exactly as the command line composes it.

The Python API (:mod:`runner.api`) and ``runner.rerun`` compose with Hydra's compose API from the
same ``conf/``, with the same checks before composing (:func:`runner.cli.preflight`) and after
(:func:`runner.validate.validate`), and the same one-line messages (a :class:`UserError`). Hydra's
global state is initialised for the composition only and cleared after it.
"""

from __future__ import annotations

from typing import Any

from runner.errors import UserError


def compose(overrides: list[str]):
    """The validated config of these overrides (a DictConfig without the ``hydra`` node)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from runner import cli
    from runner.config import register_configs
    from runner.validate import validate

    cli.preflight(overrides)
    register_configs()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(cli.CONF), job_name="runner"):
            cfg = hydra_compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise UserError(str(exc).splitlines()[0]) from None
    validate(cfg)
    return cfg


def hydra_value(value: Any) -> str:
    """A Python value written as Hydra's override grammar reads it: lists in brackets, strings
    quoted when they hold anything but letters, digits, ``_``, ``.`` and ``-``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str) and not value.replace("_", "").replace(".", "").replace("-", "").isalnum():
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value)
