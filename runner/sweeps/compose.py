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

:func:`compose_task` goes one step further for the ``batched`` launcher, which runs a thousand jobs
without calling Hydra's ``run_job`` for each: it copies only the task part of the cached composition
(the config a task function receives, without the ``hydra`` node: ~3 ms instead of ~15 ms on the
2-core dev box) and hands the job's ``hydra`` bookkeeping over as plain values.
"""

from __future__ import annotations

import copy
import os
import weakref
from dataclasses import dataclass, field
from typing import Any

_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loader -> {key: composed config}
_GROUPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loader -> set of group names
_TASKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loader -> {key: task part or None}
_RECENT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loader -> {overrides: TaskJob}
_PARSER: Any = None
_PARSED: dict[str, Any] = {}  # override text -> Hydra's parse of it (a sweep's jobs repeat most of theirs)


def _parse(overrides: list[str]) -> list:
    """Hydra's parse of each override, each distinct text parsed once (~5 ms each by Hydra's ANTLR
    parser on the dev box: a 1,000-job sweep has a few hundred distinct texts, not 5,000)."""
    global _PARSER
    if _PARSER is None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        _PARSER = OverridesParser.create()
    missing = [o for o in dict.fromkeys(overrides) if o not in _PARSED]
    if missing:
        if len(_PARSED) > 100_000:
            _PARSED.clear()
        _PARSED.update(zip(missing, _PARSER.parse_overrides(missing)))
    return [_PARSED[o] for o in overrides]


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


def _split(loader, master_config, sweep_overrides: list[str]):
    """``(key, parsed, shaping, values)`` of a job's overrides, or None when only Hydra's own
    composition will do (an override of ``hydra.searchpath`` changes where groups are found)."""
    hydra_overrides = [str(o) for o in master_config.hydra.overrides.hydra]
    parsed = _parse(sweep_overrides)
    if any("searchpath" in o for o in hydra_overrides) or any(
        o.is_hydra_override() and "searchpath" in o.key_or_group for o in parsed
    ):
        return None
    shaped = [shapes_defaults(loader, o) for o in parsed]
    shaping = [o.input_line for o, s in zip(parsed, shaped) if s]
    values = [o for o, s in zip(parsed, shaped) if not s]
    key = (str(master_config.hydra.job.config_name), tuple(hydra_overrides), tuple(shaping))
    return key, parsed, shaping, values


def _cached(loader, master_config, key: tuple, shaping: list[str]):
    """The composition of the overrides that shape the defaults, composed once per key."""
    cache = _CACHES.setdefault(loader, {})
    if key not in cache:
        cache[key] = loader.load_sweep_config(master_config, shaping)
    return cache[key]


def _job_bookkeeping(cfg, parsed) -> tuple[list[str], str, dict[str, str]]:
    """What Hydra sets from the whole override list: ``hydra.overrides.task``,
    ``hydra.job.override_dirname`` and ``hydra.job.env_set`` (with ``env_copy``)."""
    from hydra._internal.config_loader_impl import get_overrides_dirname

    app_overrides = [o for o in parsed if not o.is_hydra_override()]
    env_set = {str(k): str(v) for k, v in cfg.hydra.job.env_set.items()}
    for name in cfg.hydra.job.env_copy:
        env_set[name] = os.environ[name]
    dirname = get_overrides_dirname(
        overrides=app_overrides,
        kv_sep=cfg.hydra.job.config.override_dirname.kv_sep,
        item_sep=cfg.hydra.job.config.override_dirname.item_sep,
        exclude_keys=cfg.hydra.job.config.override_dirname.exclude_keys,
    )
    return [o.input_line for o in app_overrides], dirname, env_set


def compose_job(loader, master_config, sweep_overrides: list[str]):
    """The config of one sweep job, equal to ``loader.load_sweep_config(master_config,
    sweep_overrides)``, composed from a cached composition of the overrides that shape the defaults."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from omegaconf import OmegaConf, open_dict

    split = _split(loader, master_config, sweep_overrides)
    if split is None or not split[3]:
        return loader.load_sweep_config(master_config, sweep_overrides)
    key, parsed, shaping, values = split
    cfg = copy.deepcopy(_cached(loader, master_config, key, shaping))

    # What Hydra's _load_configuration_impl does with the whole override list, in its order.
    ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
    with open_dict(cfg.hydra):
        cfg.hydra.overrides.task, cfg.hydra.job.override_dirname, env_set = _job_bookkeeping(cfg, parsed)
        for name, value in env_set.items():
            cfg.hydra.job.env_set[name] = value
    OmegaConf.copy_cache(from_config=master_config, to_config=cfg)
    return cfg


@dataclass
class TaskJob:
    """One sweep job, composed as far as a launcher that skips Hydra's ``run_job`` needs it.

    Attributes:
        overrides: the job's overrides, as the sweeper gave them.
        task: the job's config without the ``hydra`` node (what the task function receives).
        key: the cached composition it came from (see :func:`hydra_node`).
        task_overrides, override_dirname, env_set: its ``hydra.overrides.task``,
            ``hydra.job.override_dirname`` and ``hydra.job.env_set``.
    """

    overrides: list[str]
    task: Any
    key: tuple
    task_overrides: list[str]
    override_dirname: str
    env_set: dict[str, str] = field(default_factory=dict)
    node: dict | None = None  # the job's hydra node, once a launcher has made it


def _task_part(loader, master_config, key: tuple, shaping: list[str]):
    """The cached composition without its ``hydra`` node, or None when the task part reads the
    ``hydra`` node (``${hydra:…}``), which then needs Hydra's own ``run_job``."""
    from omegaconf import OmegaConf, open_dict

    tasks = _TASKS.setdefault(loader, {})
    if key not in tasks:
        task = copy.deepcopy(_cached(loader, master_config, key, shaping))
        with open_dict(task):
            del task["hydra"]
        tasks[key] = None if "${hydra" in OmegaConf.to_yaml(task) else task
    return tasks[key]


def compose_task(loader, master_config, sweep_overrides: list[str]) -> TaskJob | None:
    """The job as a :class:`TaskJob` (its task config equals the task part of :func:`compose_job`'s),
    or None when it needs Hydra's own composition and ``run_job``."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from omegaconf import OmegaConf

    known = _RECENT.get(loader, {}).get(tuple(sweep_overrides))
    if known is not None:
        return known
    split = _split(loader, master_config, sweep_overrides)
    if split is None:
        return None
    key, parsed, shaping, values = split
    base = _task_part(loader, master_config, key, shaping)
    if base is None:
        return None
    task = copy.deepcopy(base)
    ConfigLoaderImpl._apply_overrides_to_config(values, task)
    OmegaConf.copy_cache(from_config=master_config, to_config=task)
    overrides_task, dirname, env_set = _job_bookkeeping(_cached(loader, master_config, key, shaping), parsed)
    return TaskJob(list(sweep_overrides), task, key, overrides_task, dirname, env_set)


def remember_batch(loader, jobs: list[TaskJob]) -> None:
    """Keep one batch's compositions (a sweeper validated them) for the launcher that runs it."""
    _RECENT[loader] = {tuple(job.overrides): job for job in jobs}


def hydra_node(loader, key: tuple) -> dict:
    """The ``hydra`` node of the cached composition ``key`` as plain data (interpolations kept,
    enums by name): each job's ``.hydra/hydra.yaml`` is this with the job's own values set."""
    from omegaconf import OmegaConf

    nodes = _TASKS.setdefault(loader, {})
    name = ("hydra",) + key
    if name not in nodes:
        nodes[name] = OmegaConf.to_container(_CACHES[loader][key].hydra, resolve=False, enum_to_str=True)
    return nodes[name]
