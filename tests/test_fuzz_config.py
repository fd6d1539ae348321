"""Fuzzing the config values a command line can set (hypothesis, reproducible).

Every generated command line (overrides ``key=value``, ``+key=value``, ``~key``, sweeps, quoted and
unquoted text, numbers at the edges, lists, non-UTF-8 bytes as Python reads them) goes through the
checks ``python -m runner`` makes, in-process and in order:

1. :func:`runner.cli.preflight` (Hydra's own parser, the groups and the schemas' types),
2. Hydra's composition through its compose API (``initialize_config_dir`` + ``compose``),
3. :func:`runner.validate.validate`, then :func:`runner.descent.build.build` (the objective, its
   start point and variables, the memory check) and the optimizer's construction.

The contract: each step either raises :class:`runner.errors.UserError` (or, for the store,
:class:`runner.tracking.store.StoreError`) whose message is one printable line that encodes to UTF-8
after the escaping stderr does, or passes; no other exception, ever; and when every step passes the
config is valid (composed, typed, built). A handful of cases also go through real ``python -m
runner`` subprocesses: exit 0 or one ``error:`` line and exit 2, never a traceback. The module prints
how many inputs it ran and how many were accepted.
"""

from __future__ import annotations

import collections
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hydra.core.override_parser.overrides_parser import OverridesParser

from runner import cli, overrides_check
from runner.errors import UserError, printable
from runner.tracking.store import StoreError
from tests.conftest import run_cli

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=600,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
COUNTS: collections.Counter = collections.Counter()

KEYS = ["task", "lr", "steps", "tol", "seed", "check_grad", "check_grad_every", "progress",
        "objective.name", "objective.init", "objective.dim", "objective.expr", "objective.vars", "objective.target",
        "objective.wrt", "backend.name", "backend.dtype", "backend.device", "backend.compile", "backend.scheme",
        "backend.eps", "backend.richardson", "optimizer.lr", "optimizer.momentum", "optimizer.betas",
        "optimizer.weight_decay", "optimizer._target_", "tracking.uri", "tracking.experiment", "tracking.run_name",
        "tracking.log_every", "tracking.max_coords", "tracking.artifacts", "tracking.enabled"]
GROUPS = {"objective": ["f", "g", "rosenbrock", "custom", "quadratic", "himmelblau", "nope"],
          "optimizer": ["manual", "sgd", "adam", "lbfgs", "torch_optim", "rmsprop", "x"],
          "backend": ["autograd", "finite_diff", "jax"], "tracking": ["mlflow", "none"]}
TEXT = st.text(st.characters(codec="utf-8") | st.sampled_from(list("\udcff\udc80\u2212\u00d7\x00\x07\u200b'\"\\ ,=[]{}()$:")),
               max_size=12)
NUMBERS = st.sampled_from(["0", "-0", "1", "-1", "1e308", "1e309", "-1e-320", "nan", "inf", "-inf", "1.5", "0.1",
                           "10000000000", "99999999999999999999", "2**10", "1_000", "0x10", "True", "false", "null"])


@st.composite
def value(draw) -> str:
    kind = draw(st.sampled_from(["number", "int", "float", "text", "quoted", "list", "sweep", "func", "empty"]))
    if kind == "number":
        return draw(NUMBERS)
    if kind == "int":
        return str(draw(st.integers(-10**12, 10**12)))
    if kind == "float":
        return repr(draw(st.floats(allow_nan=True, allow_infinity=True)))
    if kind == "text":
        return draw(TEXT)
    if kind == "quoted":
        quote = draw(st.sampled_from(["'", '"']))
        return quote + draw(TEXT).replace(quote, "") + quote
    if kind == "list":
        return "[" + ",".join(draw(st.lists(NUMBERS | TEXT, max_size=4))) + "]"
    if kind == "sweep":
        return ",".join(draw(st.lists(NUMBERS, min_size=2, max_size=3)))
    if kind == "func":
        return draw(st.sampled_from(["range(1,3)", "interval(0,1)", "choice(1,2)", "tag(log,interval(0.1,1))",
                                     "glob(*)", "shuffle(1,2)", "range(0,10**9)", "choice()"]))
    return ""


@st.composite
def override(draw) -> str:
    kind = draw(st.sampled_from(["key", "key", "key", "group", "random", "prefixed"]))
    if kind == "group":
        group = draw(st.sampled_from(sorted(GROUPS)))
        choice = draw(st.sampled_from(GROUPS[group]) | st.just(",".join(draw(st.lists(st.sampled_from(GROUPS[group]), min_size=1, max_size=2)))))
        return f"{group}={choice}"
    key = draw(st.sampled_from(KEYS)) if kind != "random" else draw(st.from_regex(r"[a-z_.+~/@]{1,12}", fullmatch=True) | TEXT)
    if kind == "prefixed":
        key = draw(st.sampled_from(["+", "++", "~"])) + key
    if key.startswith("~") and draw(st.booleans()):
        return key
    return f"{key}={draw(value())}"


COMMAND_LINES = st.lists(override(), min_size=1, max_size=4).map(lambda tokens: ["steps=2", "progress=false", *tokens])


def one_line(message: str) -> str:
    """What the CLI prints for ``message`` (:func:`runner.errors.printable`): one line, no lone
    surrogate, nothing invisible."""
    line = printable(message)
    assert line and "\n" not in line and "Traceback" not in line, line
    line.encode("utf-8")
    assert all(ch.isprintable() for ch in line), ascii(line)
    return line


def compose(tokens: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(cli.CONF), version_base="1.3"):
        return hydra_compose("config", overrides=tokens)


@pytest.fixture(scope="module")
def counts():
    """Register the schemas; print how many inputs each step refused once the module is done."""
    from runner.config import register_configs

    register_configs()
    yield COUNTS
    summary = ", ".join(f"{k} {v}" for k, v in sorted(COUNTS.items()))
    print(f"\nconfig fuzz: {sum(COUNTS.values())} command lines; {summary}")


def check(tokens: list[str]) -> str:
    """The contract for one command line; where it ended (``accepted``, ``refused by ...``)."""
    try:
        cli.preflight(tokens)
        overrides_check.check(cli.overrides_of(tokens), cli.CONF)
    except UserError as exc:
        one_line(str(exc))
        return "refused before composing"
    parsed = OverridesParser.create().parse_overrides(cli.overrides_of(tokens))
    if any(o.is_sweep_override() for o in parsed):
        return "a sweep whose values preflight checked"
    return checked_config(compose(tokens))


def checked_config(cfg) -> str:
    """validate, build and the optimizer: a UserError (one line), or a config that holds."""
    import torch

    from runner.descent.build import build
    from runner.descent.optimizers import make_optimizer
    from runner.validate import validate

    try:
        validate(cfg)
        problem, backend, device = build(cfg)
        make_optimizer(cfg.optimizer, [torch.zeros(1, problem.wrt.numel(), dtype=problem.x0.dtype, requires_grad=True)])
    except (UserError, StoreError) as exc:
        one_line(str(exc))
        return "refused after composing"
    assert math.isfinite(float(cfg.lr)) and cfg.lr > 0 and cfg.steps >= 0 and cfg.tracking.experiment.strip()
    assert problem.x0.shape == (problem.dim,) and bool(torch.isfinite(problem.x0).all())
    return "accepted"


@FUZZ
@given(COMMAND_LINES)
def test_config_values_are_refused_in_one_line_or_make_a_valid_config(counts, tokens):
    counts[check(tokens)] += 1


@pytest.mark.slow
@pytest.mark.parametrize("args, expected", [
    (["tracking.experiment=''"], "error: tracking.experiment: "),
    (["tracking.experiment='  '"], "error: tracking.experiment: "),
    (["tracking.experiment='a\udcffb'"], "error: tracking.experiment: "),
    (["tracking.run_name='a\udcffb'"], "error: tracking.run_name: "),
    (["tracking.uri='sqlite:///a\udcff.db'"], "error: tracking.uri: "),
    (["objective=custom", "objective.expr='x\udcff'"], "error: objective.expr: "),
    (["+optimizer.x\udcff=1"], "error: cannot parse the command line: "),
    (["lr='\udcff'"], "error: lr: "),
    (["objective.init=[1e309]"], "error: objective.init: "),
    (["steps=99999999999999999999"], "error: steps: "),
])
def test_hostile_values_through_the_real_cli(workdir, args, expected):
    steps = [] if any(a.startswith("steps=") for a in args) else ["steps=2"]
    result = run_cli(*args, *steps, cwd=workdir, env={"PYTHONIOENCODING": "utf-8"})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
    assert "Traceback" not in result.stderr and "UnicodeEncodeError" not in result.stderr
