"""Compose each job of a multirun from a cached composition instead of from scratch.

Hydra composes every job of a sweep anew: the defaults tree, each YAML file, the structured-config
schemas and the whole ``hydra`` node, ~140 ms a job on the 2-core dev box. The basic sweeper does it
twice per job (once to validate the batch, once in the launcher), so a 16-job sweep spent ~4.4 s of
its ~9 s in composition. Most sweeps vary plain values (``lr=0.01,0.1``) over a few group choices
(``optimizer=sgd,adam``), and a plain value cannot change the defaults tree: Hydra itself composes the
defaults first and applies value overrides to the result.

So :func:`compose_job` composes the overrides that shape the defaults tree (config-group choices,
``pkg@`` packages, anything under ``hydra``) once per distinct set, through the loader's public
``load_sweep_config``, and keeps the result; each job gets a deep copy (~9 ms) with its value
overrides applied by the function Hydra uses, and the bookkeeping that depends on the whole override
list (``hydra.overrides.task``, ``hydra.job.override_dirname``, ``hydra.job.env_set``) set as Hydra
sets it. Anything unusual goes to Hydra's own path unchanged: overrides of ``hydra.searchpath``
(which change where groups are found), or a job without value overrides.

It is used by the ``cached`` sweeper and launcher (``hydra_plugins/runner_plugins``), Hydra's public
extension points; nothing of Hydra is patched. Two private Hydra functions are called,
``ConfigLoaderImpl._apply_overrides_to_config`` and ``get_overrides_dirname``: the project pins
``hydra-core`` to the 1.3 series, and ``tests/test_compose_cache.py`` fails loudly if either changes
(signature, or a composition that differs from Hydra's own, key by key).
"""

from __future__ import annotations

import copy
import os
import weakref
from typing import Any

_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loader -> {key: composed config}
_GROUPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loader -> set of group names
_PARSER: Any = None


def _parse(overrides: list[str]) -> list:
    global _PARSER
    if _PARSER is None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        _PARSER = OverridesParser.create()
    return _PARSER.parse_overrides(overrides)


def config_groups(loader) -> set[str]:
    """Every config group the loader knows (``objective``, ``hydra/launcher``, …), through the
    public ``ConfigLoader.list_groups``."""
    if loader not in _GROUPS:
        found: set[str] = set()
        pending = [""]
        while pending:
            parent = pending.pop()
            for name in loader.list_groups(parent):
                group = f"{parent}/{name}" if parent else name
                found.add(group)
                pending.append(group)
        _GROUPS[loader] = found
    return _GROUPS[loader]


def shapes_defaults(loader, override) -> bool:
    """Whether an override can change the defaults tree (so it must be part of a composition):
    a config-group choice, a ``@package`` override, or anything under ``hydra``. Hydra draws the same
    line: a key that is no config group is a value."""
    return override.is_hydra_override() or override.package is not None or override.key_or_group in config_groups(loader)


def compose_job(loader, master_config, sweep_overrides: list[str]):
    """The config of one sweep job, equal to ``loader.load_sweep_config(master_config,
    sweep_overrides)``, composed from a cached composition of the overrides that shape the defaults."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
    from omegaconf import OmegaConf, open_dict

    hydra_overrides = [str(o) for o in master_config.hydra.overrides.hydra]
    parsed = _parse(sweep_overrides)
    if any("searchpath" in o for o in hydra_overrides) or any(
        o.is_hydra_override() and "searchpath" in o.key_or_group for o in parsed
    ):
        return loader.load_sweep_config(master_config, sweep_overrides)
    shaped = [shapes_defaults(loader, o) for o in parsed]
    shaping = [o.input_line for o, s in zip(parsed, shaped) if s]
    values = [o for o, s in zip(parsed, shaped) if not s]
    if not values:
        return loader.load_sweep_config(master_config, sweep_overrides)

    key = (str(master_config.hydra.job.config_name), tuple(hydra_overrides), tuple(shaping))
    cache = _CACHES.setdefault(loader, {})
    if key not in cache:
        cache[key] = loader.load_sweep_config(master_config, shaping)
    cfg = copy.deepcopy(cache[key])

    # What Hydra's _load_configuration_impl does with the whole override list, in its order.
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
