"""Overrides only Hydra's composition can judge (add, delete, group paths, Hydra's keys), judged before Hydra runs, in one line.

:func:`runner.cli.preflight` checks keys, choices and value types against the schemas, but leaves
``+key=value`` (add), ``++key=value`` (add or override), ``~key`` (delete), group paths
(``hydra/launcher=...``) and Hydra's own keys to Hydra: whether they apply depends on the composed
config (``+task=0``: ``task`` is already there; ``~optimizer.lr`` under
the hand-written update: it is not). Hydra would report such a mistake over several lines with a hint
about ``HYDRA_FULL_ERROR``. So when the command line has one, it is composed once here with Hydra's
compose API (each sweep at its first value), and a failure becomes one :class:`UserError` line. A
command line without them is not composed twice.
"""

from __future__ import annotations

from pathlib import Path

from runner.errors import UserError


def needs_composition(parsed) -> bool:
    """Whether an override is one that only composition can judge: add, force-add, delete, a
    config group's path (``hydra/launcher=joblib``) or one of Hydra's own keys."""
    from hydra.core.override_parser.types import OverrideType

    return any(o.type in (OverrideType.ADD, OverrideType.FORCE_ADD, OverrideType.DEL)
               or "/" in o.key_or_group or o.key_or_group.split(".")[0] == "hydra" for o in parsed)


def single_job(parsed) -> list[str]:
    """The overrides of one job: a sweep at its first value (an interval, which has no first value,
    is left out)."""
    from hydra.errors import HydraException

    tokens = []
    for o in parsed:
        if not o.is_sweep_override():
            tokens.append(o.input_line)
            continue
        try:
            first = next(iter(o.sweep_string_iterator()))
        except (StopIteration, HydraException):  # an interval or a glob: no first value
            continue
        tokens.append(f"{o.get_key_element()}={first}")
    return tokens


def check(tokens: list[str], config_dir: Path, config_name: str = "config") -> None:
    """Compose ``tokens`` (already parsed by :func:`runner.cli.preflight`) if they need it; a
    failure raises :class:`UserError`."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    parsed = OverridesParser.create().parse_overrides(tokens)
    if not needs_composition(parsed):
        return
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            compose(config_name, overrides=single_job(parsed))
    except (HydraException, OmegaConfBaseException) as exc:
        cause = f" ({exc.__cause__})" if isinstance(exc.__cause__, OmegaConfBaseException) else ""
        raise UserError(f"cannot compose the config: {exc}{cause}") from None
