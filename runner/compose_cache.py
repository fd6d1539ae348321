"""Compose each job of a multirun from a cached composition instead of from scratch.

Hydra composes every job of a sweep anew: the defaults tree, each YAML file, the structured-config
schemas and the whole ``hydra`` node, ~140 ms a job on the 2-core dev box. The basic sweeper does it
twice per job (once to validate the batch, once in the launcher), so a 16-job sweep spent ~4.4 s of
its ~9 s in composition. Most sweeps vary plain values (``lr=0.01,0.1``) over a few group choices
(``optimizer=sgd,adam``), and a plain value cannot change the defaults tree: Hydra itself composes the
defaults first and applies value overrides to the result (``ConfigLoaderImpl._apply_overrides_to_config``).

So :func:`install` wraps ``ConfigLoaderImpl.load_sweep_config``: the overrides that shape the defaults
tree (config-group choices, ``pkg@`` packages, anything under ``hydra``) are composed once per distinct
set by Hydra's own code and kept; each job gets a deep copy (~9 ms) with its value overrides applied
by the same function Hydra uses, and the bookkeeping that depends on the whole override list
(``hydra.overrides.task``, ``hydra.job.override_dirname``, ``hydra.job.env_set``) set as Hydra sets it.
The result equals Hydra's own composition (``tests/test_compose_cache.py`` compares them key by key).

Anything unusual goes to Hydra's own path unchanged: overrides of ``hydra.searchpath`` (which change
where groups are found), or a job without value overrides. It is installed by ``python -m runner``
only, in the launching process; joblib or submitit workers compose with Hydra's own code.
"""

from __future__ import annotations

import copy
import os
import weakref
from typing import Any

_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loader -> {key: composed config}
_PARSER: Any = None


def install() -> None:
    """Make ``ConfigLoaderImpl.load_sweep_config`` reuse compositions (idempotent)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    if getattr(ConfigLoaderImpl.load_sweep_config, "runner_cached", False):
        return
    original = ConfigLoaderImpl.load_sweep_config

    def load_sweep_config(self, master_config, sweep_overrides):
        return compose_job(self, original, master_config, list(sweep_overrides))

    load_sweep_config.runner_cached = True
    load_sweep_config.__wrapped__ = original
    load_sweep_config.__doc__ = compose_job.__doc__
    ConfigLoaderImpl.load_sweep_config = load_sweep_config


def uninstall() -> None:
    """Restore Hydra's own ``load_sweep_config`` (tests)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    wrapped = getattr(ConfigLoaderImpl.load_sweep_config, "__wrapped__", None)
    if wrapped is not None:
        ConfigLoaderImpl.load_sweep_config = wrapped


def _parse(overrides: list[str]) -> list:
    global _PARSER
    if _PARSER is None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        _PARSER = OverridesParser.create()
    return _PARSER.parse_overrides(overrides)


def shapes_defaults(loader, override) -> bool:
    """Whether an override can change the defaults tree (so it must be part of a composition):
    a config-group choice, a ``@package`` override, or anything under ``hydra``. Hydra draws the same
    line (``hydra._internal.defaults_list.Overrides``): a key that is no config group is a value."""
    return override.is_hydra_override() or override.package is not None or loader.repository.group_exists(override.key_or_group)


def compose_job(loader, original, master_config, sweep_overrides: list[str]):
    """The config of one sweep job: Hydra's ``load_sweep_config(master_config, sweep_overrides)``,
    composed from a cached composition of the overrides that shape the defaults tree."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
    from omegaconf import OmegaConf, open_dict

    hydra_overrides = [str(o) for o in master_config.hydra.overrides.hydra]
    parsed = _parse(sweep_overrides)
    if any("searchpath" in o for o in hydra_overrides) or any(
        o.is_hydra_override() and "searchpath" in o.key_or_group for o in parsed
    ):
        return original(loader, master_config, sweep_overrides)
    shaped = [shapes_defaults(loader, o) for o in parsed]
    shaping = [o.input_line for o, s in zip(parsed, shaped) if s]
    values = [o for o, s in zip(parsed, shaped) if not s]
    if not values:
        return original(loader, master_config, sweep_overrides)

    key = (str(master_config.hydra.job.config_name), tuple(hydra_overrides), tuple(shaping))
    cache = _CACHES.setdefault(loader, {})
    if key not in cache:
        cache[key] = original(loader, master_config, shaping)
    cfg = copy.deepcopy(cache[key])

    # What _load_configuration_impl does with the whole override list, in its order.
    ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
    app_overrides = [o for o in parsed if not o.is_hydra_override()]
    with open_dict(cfg.hydra):
        cfg.hydra.overrides.task = [o.input_line for o in app_overrides]
        for name in cfg.hydra.job.env_copy:
            cfg.hydra.job.env_set[name] = os.environ[name]
        cfg.hydra.job.override_dirname = get_overrides_dirname(
            overrides=app_overrides,
            kv_sep=cfg.hydra.job.config.override_dirname.kv_sep,
            item_sep=cfg.hydra.job.config.override_dirname.item_sep,
            exclude_keys=cfg.hydra.job.config.override_dirname.exclude_keys,
        )
    OmegaConf.copy_cache(from_config=master_config, to_config=cfg)
    return cfg
