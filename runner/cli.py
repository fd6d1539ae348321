"""The command line before Hydra composes: ``--help``, and one-line errors for every mistake it can see.

Hydra reports an unknown group choice or key over several lines with a hint about
``HYDRA_FULL_ERROR``, a flag it does not know (``--steps=10``) with its 8-line usage block, and a
missing ``=`` (``steps 10``) as a parse error; the runner's promise is one line naming the problem and
what is allowed, with the closest name when it looks like a typo (``did you mean 'lr'?``, difflib).
So the overrides are parsed with Hydra's own parser and checked against the config groups on disk and
the structured-config schemas (:mod:`runner.config`): choices, keys and value types (``objective.init:
expected a list like [2.0, 3.0], got 2``). Anything that slips through still gets Hydra's (longer)
message.

``--help`` is answered here (:func:`help_text`), from the same sources: the groups' choices are the
files in ``conf/`` (not the ``base_*`` schema entries Hydra's own help lists, which are no choices),
the keys and their meanings are ``conf/config.yaml``'s, the key types :mod:`runner.config`'s.
``--hydra-help`` still shows Hydra's flags.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
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
FLAGS = FLAGS_WITH_VALUE | NO_RUN_FLAGS | {"-m", "--multirun", "-r", "--run", "--resolve"}
HELP_FLAGS = {"-h", "--help"}


def overrides_of(argv: Iterable[str]) -> list[str]:
    """The KEY=VALUE tokens of a command line, without Hydra's flags and their values."""
    tokens = list(argv)
    return [t for i, t in enumerate(tokens) if not t.startswith("-") and not _is_value_of_flag(tokens, i)]


def wants_help(argv: list[str]) -> bool:
    return any(token in HELP_FLAGS for token in argv)


def wants_tracking(argv: list[str]) -> bool:
    """Whether this command will run a job that records into MLflow (so the writer is worth starting)."""
    if any(token.split("=")[0] in NO_RUN_FLAGS for token in argv):
        return False
    return not any(token.replace(" ", "") in ("tracking.enabled=false", "tracking.enabled=False") for token in argv)


# -- what the config offers ------------------------------------------------------------------------
@lru_cache(maxsize=None)
def choices(group: str) -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in (CONF / group).glob("*.yaml")))


@lru_cache(maxsize=None)
def _config() -> dict:
    import yaml

    return yaml.safe_load((CONF / "config.yaml").read_text())


def default_choice(group: str) -> str:
    for item in _config()["defaults"]:
        if isinstance(item, dict) and group in item:
            return item[group]
    raise KeyError(group)


def default_experiment() -> str:
    """The experiment runs go to unless ``tracking.experiment`` says otherwise (conf/tracking/)."""
    import yaml

    return str(yaml.safe_load((CONF / "tracking" / f"{default_choice('tracking')}.yaml").read_text())["experiment"])


@lru_cache(maxsize=None)
def open_group_keys(group: str, choice: str) -> tuple[str, ...]:
    """The keys a choice of an open group (optimizer, schedule) sets: its class's arguments."""
    import yaml

    data = yaml.safe_load((CONF / group / f"{choice}.yaml").read_text()) or {}
    return tuple(k for k in data if not k.startswith("_") or k == "_target_")


def _schemas() -> dict[str, type]:
    from runner.config import BackendConf, ObjectiveConf, RunnerConf, TrackingConf

    return {"": RunnerConf, "objective": ObjectiveConf, "backend": BackendConf, "tracking": TrackingConf}


def _fields(schema: type) -> list[str]:
    return [f.name for f in dataclasses.fields(schema)]


def top_level_keys() -> list[str]:
    return [n for n in _fields(_schemas()[""]) if n not in GROUPS]


def is_key(name: str) -> bool:
    """Whether ``name`` is something a command line sets: a group, a top-level key, ``group.key``."""
    group, _, field = name.rpartition(".")
    schemas = _schemas()
    if not group:
        return name in GROUPS or name in top_level_keys()
    return group == "optimizer" or (group in schemas and field in _fields(schemas[group]))


# -- suggestions -----------------------------------------------------------------------------------
def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate ``word`` most likely misspells (difflib's ratio ≥ 0.6), if any."""
    found = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return found[0] if found else None


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
    match = closest(word, candidates)
    return f" (did you mean {match!r}?)" if match else ""


def _key_suggestion(key: str) -> str:
    """For an unknown key: a close key of the same group; for a bare field of a group
    (``init=...``), that group's key (``objective.init``)."""
    group, _, field = key.rpartition(".")
    schemas = _schemas()
    if group in schemas and group:
        return _did_you_mean(key, [f"{group}.{name}" for name in _fields(schemas[group])])
    owners = [f"{g}.{field}" for g in ("objective", "backend", "tracking") if field in _fields(schemas[g])]
    if not group and owners:
        return f" (did you mean {owners[0]!r}?)"
    return _did_you_mean(key, list(top_level_keys()) + list(GROUPS))


# -- the checks ------------------------------------------------------------------------------------
def check_form(argv: list[str]) -> None:
    """``--steps=10``, ``--steps 10`` and ``steps 10``: one line showing ``steps=10``."""
    tokens = list(argv)
    for i, token in enumerate(tokens):
        after = tokens[i + 1] if i + 1 < len(tokens) else None
        if token.startswith("-") and token not in FLAGS and not _is_value_of_flag(tokens, i):
            name, eq, value = token.lstrip("-").partition("=")
            if is_key(name):
                value = value if eq else (after if after is not None and "=" not in after and not after.startswith("-") else "VALUE")
                raise UserError(f"write {name}={value}, not {token}{'' if eq or value == 'VALUE' else ' ' + value}: settings are KEY=VALUE, without dashes")
            raise UserError(
                f"unknown option {token!r}; the options are -m (a sweep), --help, --cfg job (print the config), "
                "--hydra-help; settings are KEY=VALUE (e.g. lr=0.1)"
            )
        if not token.startswith(("-", "~")) and "=" not in token and not _is_value_of_flag(tokens, i) and not _is_value(tokens, i):
            if is_key(token):
                value = after if after is not None and "=" not in after and not after.startswith("-") else "VALUE"
                raise UserError(f"{token!r} needs a value: write {token}={value} (KEY=VALUE, no spaces around =)")
            raise UserError(f"{token!r} is not KEY=VALUE{_key_suggestion(token)}; write settings as KEY=VALUE, e.g. lr=0.1")


def _is_value_of_flag(tokens: list[str], i: int) -> bool:
    """``job`` in ``--cfg job``; ``defaults`` in ``--info defaults`` (its value is optional)."""
    previous = tokens[i - 1] if i > 0 else ""
    return previous in FLAGS_WITH_VALUE or (previous in ("-i", "--info") and "=" not in tokens[i])


def _is_value(tokens: list[str], i: int) -> bool:
    """``10`` in ``steps 10`` (reported with ``steps``)."""
    return i > 0 and is_key(tokens[i - 1].lstrip("-")) and "=" not in tokens[i - 1]


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


EXAMPLES = {float: "a number like 0.1", int: "a whole number like 100", bool: "true or false", str: "text"}
LIST_EXAMPLES = {float: "a list like [2.0, 3.0]", str: "a list like [x1, x2]"}


def expected(kind: Any) -> str:
    """What a field of this type takes, with an example (``a list like [2.0, 3.0]``)."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) is typing.Union and type(None) in args:  # Optional: null is the default
        inner = [a for a in args if a is not type(None)]
        return expected(inner[0]) if len(inner) == 1 else "a value"
    if typing.get_origin(kind) in (list, typing.List):
        return LIST_EXAMPLES.get(args[0] if args else None, "a list like [1, 2]")
    return EXAMPLES.get(kind, getattr(kind, "__name__", str(kind)))


def _check_type(schema: type, field: str, value: Any, key: str) -> None:
    """Let OmegaConf's structured-config validation judge the value; say what it takes instead."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    node = _schema_node(schema)
    try:
        OmegaConf.update(node, field, value, merge=False)
    except OmegaConfBaseException:
        kind = typing.get_type_hints(schema)[field]
        given = repr(value) if isinstance(value, str) else str(value)
        raise UserError(f"{key}: expected {expected(kind)}, got {given}") from None


def _parse(tokens: list[str]) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_overrides(tokens)
    except HydraException as exc:
        raise UserError(
            f"cannot parse the command line: {str(exc).splitlines()[0]} "
            "(quote values with spaces or symbols: objective.expr='(a-1)**2 + b')"
        ) from None


def _check_choices(parsed: list) -> dict[str, list[str]]:
    """Every group choice exists; the choices of the open groups (optimizer, schedule) the command uses."""
    chosen = {g: [default_choice(g)] for g in OPEN_GROUPS}
    for o in parsed:
        if o.key_or_group in GROUPS:
            for value in _values(o):
                if str(value) not in choices(o.key_or_group):
                    raise UserError(
                        f"{o.key_or_group}: unknown choice {str(value)!r}{_did_you_mean(str(value), choices(o.key_or_group))}; "
                        f"choose one of: {', '.join(choices(o.key_or_group))}"
                    )
            if o.key_or_group in OPEN_GROUPS:
                chosen[o.key_or_group] = [str(v) for v in _values(o)]
    return chosen


def _check_open_group_key(key: str, group: str, field: str, chosen: list[str]) -> None:
    """``optimizer.KEY`` / ``schedule.KEY``: an argument of every chosen class."""
    kind = "torch.optim" if group == "optimizer" else "torch.optim.lr_scheduler"
    for choice in chosen:
        keys = open_group_keys(group, choice)
        if field not in keys:
            raise UserError(
                f"{key}: {group} {choice!r} has no setting {field!r}{_did_you_mean(field, keys)}; "
                f"it has: {', '.join(keys)} (add a {kind} argument with +{key}=...)"
            )


def _unknown_key(key: str, group: str, schema: type | None) -> UserError:
    names = _fields(schema) if schema else []
    if group:
        allowed = f"{group} keys are: {', '.join(names)}" if schema else f"groups are: {', '.join(GROUPS)}"
    else:
        allowed = "top-level keys are: " + ", ".join(top_level_keys()) + f"; groups: {', '.join(GROUPS)}"
    return UserError(f"unknown key {key!r}{_key_suggestion(key)}; {allowed}")


def preflight(argv: list[str]) -> None:
    """Raise :class:`UserError` for a mistyped form, an unknown group choice, an unknown key or a
    mistyped value."""
    from hydra.core.override_parser.types import OverrideType

    check_form(argv)
    tokens = overrides_of(argv)
    if not tokens:
        return
    parsed = _parse(tokens)
    chosen = _check_choices(parsed)
    schemas = _schemas()
    for o in parsed:
        key = o.key_or_group
        if key in GROUPS or key.startswith("hydra") or "/" in key or o.type in (OverrideType.ADD, OverrideType.FORCE_ADD, OverrideType.DEL):
            continue
        group, _, field = key.rpartition(".")
        if group in OPEN_GROUPS:
            _check_open_group_key(key, group, field, chosen[group])
            continue
        schema = schemas.get(group)
        if schema is None or "." in field or field not in _fields(schema):
            raise _unknown_key(key, group, schema)
        for value in _values(o):
            _check_type(schema, field, value, key)


# -- --help ----------------------------------------------------------------------------------------
INTRO = """\
runner: config-driven optimization experiments. Minimise an objective with a gradient backend
(autograd or finite differences) and an optimizer (x <- x - lr*grad by hand, or any torch.optim
class), record every run in MLflow (params, metrics at every step, figures), and sweep with -m."""

EXAMPLE_COMMANDS = [
    ("one run: g with torch.optim.SGD", "python -m runner objective=g optimizer=sgd lr=0.1"),
    ("value, gradient and Hessian at the start", "python -m runner task=derivatives objective=rosenbrock"),
    ("a sweep: 8 runs and a summary", "python -m runner -m objective=f,g optimizer=manual,sgd lr=0.01,0.1"),
]


def _key_comments() -> dict[str, str]:
    """``key: value  # meaning`` of conf/config.yaml's top level: the meanings."""
    out = {}
    for line in (CONF / "config.yaml").read_text().splitlines():
        head, sep, comment = line.partition("#")
        key, colon, _ = head.partition(":")
        if sep and colon and key and not key[0].isspace() and key.strip() in top_level_keys():
            out[key.strip()] = comment.strip()
    return out


def _show(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def help_text() -> str:
    """What ``python -m runner --help`` prints (module docstring)."""
    config, meanings, schemas = _config(), _key_comments(), _schemas()
    lines = [INTRO, "", "usage: python -m runner [GROUP=CHOICE ...] [KEY=VALUE ...]", "       python -m runner -m KEY=V1,V2 ...   (a sweep: one run per combination)", "", "groups (* the default):"]
    for group in GROUPS:
        default = default_choice(group)
        lines.append(f"  {group:<10} " + ", ".join(c + ("*" if c == default else "") for c in choices(group)))
    lines += ["", "keys (default, meaning):"]
    for key in top_level_keys():
        lines.append(f"  {key + '=' + _show(config.get(key)):<22} {meanings.get(key, '')}".rstrip())
    for group in ("objective", "backend", "tracking"):
        lines.append(f"  {group + '.KEY':<22} " + ", ".join(_fields(schemas[group])))
    lines.append(f"  {'optimizer.KEY':<22} the chosen class's arguments (optimizer=sgd: {', '.join(k for k in open_group_keys('optimizer', 'sgd') if k not in ('_target_', 'name'))})")
    lines.append(f"  {'schedule.KEY':<22} the chosen schedule's arguments (schedule=cosine: {', '.join(k for k in open_group_keys('schedule', 'cosine') if k not in ('_target_', 'name'))})")
    lines += ["", "examples:"] + [f"  {command:<70} # {what}" for what, command in EXAMPLE_COMMANDS]
    lines += [
        "",
        "where runs go: the MLflow store sqlite:///outputs/mlflow.db under the current folder (artifacts in",
        "outputs/mlartifacts/, Hydra's job folders in outputs/hydra/ and outputs/multirun/); another store",
        "with tracking.uri=... or $MLFLOW_TRACKING_URI. Look at them: python -m runner.serve, then open the",
        "link it prints. Every run also prints its own link.",
        "",
        "Hydra's flags: --hydra-help; the composed config: --cfg job. Docs: README.md and docs/.",
    ]
    return "\n".join(lines) + "\n"
