"""From the objective config to a batch-first loss of the moving variables.

A :class:`Problem` is everything the descent needs to know about the objective: the function of the
full vector ``x`` (shape ``(..., d)``), the variable names, the start point, and which coordinates
move (``objective.wrt``; the tutorial's ``tape.watch``). The optimiser only ever sees the moving
coordinates ``p`` (shape ``(..., k)``); :meth:`Problem.loss` puts them back into ``x`` around the
constant ones before calling the objective, so gradients exist only for the watched variables.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

import objectives
from runner.errors import UserError

Objective = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Problem:
    """The objective, its variables and the start point, in the run's dtype and device.

    Attributes:
        name: the objective's name (``f``, ``rosenbrock``, ``custom`` …).
        fn: ``(..., d) -> (...)``, the objective.
        var_names: the d variable names.
        x0: the start point, shape ``(d,)``.
        wrt: indices of the moving coordinates (all by default), shape ``(k,)``.
        targets: for a list objective, ``(..., d) -> [(...)]`` giving each target; None otherwise.
        target_sources: the targets' expressions, for reports.
        minima: known global minimisers (for plots and tests), possibly empty.
    """

    name: str
    fn: Objective
    var_names: Sequence[str]
    x0: torch.Tensor
    wrt: torch.Tensor
    targets: Callable[[torch.Tensor], list[torch.Tensor]] | None = None
    target_sources: list[str] = field(default_factory=list)
    minima: list[list[float]] = field(default_factory=list)

    @property
    def dim(self) -> int:
        return len(self.var_names)

    @property
    def wrt_names(self) -> list[str]:
        return [self.var_names[i] for i in self.wrt.tolist()]

    @property
    def moves_all(self) -> bool:
        return len(self.wrt) == self.dim

    def params(self, x: torch.Tensor) -> torch.Tensor:
        """The moving coordinates of x: ``(..., d) -> (..., k)``."""
        return x if self.moves_all else x.index_select(-1, self.wrt)

    def assemble(self, p: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """x with the moving coordinates taken from p and the rest from base.

        ``p``: ``(B, *extra, k)``; ``base``: ``(B, d)``. Differentiable in p (``index_copy``).
        """
        if self.moves_all:
            return p
        extra = p.dim() - base.dim()
        shaped = base.reshape(base.shape[:1] + (1,) * extra + base.shape[1:])
        return shaped.expand(p.shape[:-1] + (self.dim,)).index_copy(-1, self.wrt, p)

    def loss(self, base: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The loss as a function of the moving coordinates, around the constants in ``base``."""
        if self.moves_all:
            return self.fn
        return lambda p: self.fn(self.assemble(p, base))


def _import_target(spec: str) -> Objective:
    """Import ``pkg.module:function``; one-line errors for every way it can fail."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"objective.target: {spec!r} is not of the form pkg.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"objective.target: cannot import module {module_name!r} ({exc})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UserError(f"objective.target: {module_name!r} has no function {attr!r}")
    return fn


def _custom(cfg) -> tuple[Objective, list[str], Callable | None, list[str]]:
    from objectives.expression import ExpressionError, parse_expression

    if (cfg.expr is None) == (cfg.target is None):
        raise UserError(
            "objective=custom needs exactly one of objective.expr='<expression>' (or a list of them) "
            "and objective.target=pkg.module:function"
        )
    if cfg.target is not None:
        fn = _import_target(cfg.target)
        if cfg.vars is not None:
            names = list(cfg.vars)
        elif cfg.init is not None:
            names = [f"x{i}" for i in range(1, len(cfg.init) + 1)]
        else:
            raise UserError("objective.target needs objective.init=[...] or objective.vars=[...] to know its size")
        return fn, names, None, [cfg.target]
    # parse_expression takes one expression or a list of them, numbers included (Hydra hands
    # ``objective.expr=2`` over as an int), and refuses anything else in one line.
    try:
        parsed = parse_expression(cfg.expr, None if cfg.vars is None else list(cfg.vars))
    except ExpressionError as exc:
        raise UserError(str(exc)) from None
    if not parsed.variables:  # a constant: nothing to descend on
        raise UserError(f"objective.expr: {', '.join(parsed.sources)!r} has no variable; write a function of at least one "
                        "(e.g. 'x**2 + 1'), or name its variables with objective.vars=[x]")
    targets = parsed.targets if len(parsed.sources) > 1 else None
    return parsed, list(parsed.variables), targets, list(parsed.sources)


MINIMA_LIMIT = 1000  # known minima are materialised (for plots and reports) only up to this size


def _start(cfg, names: Sequence[str], default) -> list[float] | torch.Tensor:
    if cfg.init is None:
        return default
    init = [float(v) for v in cfg.init]
    if len(init) != len(names):
        raise UserError(
            f"objective.init: {cfg.name} takes {len(names)} value(s) ({', '.join(names[:8])}"
            f"{', …' if len(names) > 8 else ''}), got {len(init)}"
        )
    if not all(math.isfinite(v) for v in init):
        raise UserError(f"objective.init: every value must be finite, got {init}")
    return init


def build_problem(cfg, *, dtype: torch.dtype, device: torch.device) -> Problem:
    """Build the :class:`Problem` described by the ``objective`` config group."""
    targets, sources, minima = None, [], []
    if cfg.name == "custom":
        fn, names, targets, sources = _custom(cfg)
        default = [0.0] * len(names)
    else:
        try:
            spec = objectives.get(cfg.name)
        except KeyError as exc:
            raise UserError(str(exc.args[0])) from None
        if cfg.dim is not None and cfg.init is not None and cfg.dim != len(cfg.init):
            raise UserError(f"objective.dim={cfg.dim} disagrees with objective.init of length {len(cfg.init)}")
        d = cfg.dim if cfg.dim is not None else (len(cfg.init) if cfg.init is not None else spec.default_dim)
        if not spec.n_dim and cfg.init is not None and cfg.dim is None:
            d = spec.default_dim  # a wrong-length init is reported as such by _start below
        if not spec.n_dim and d != spec.default_dim:
            raise UserError(f"objective.dim: {cfg.name} is {spec.default_dim}-D only, got {d}")
        if d < spec.min_dim:
            raise UserError(f"objective.dim: {cfg.name} needs dim ≥ {spec.min_dim}, got {d}")
        fn, names, default = spec.fn, spec.var_names(d), spec.start(d)
        minima = spec.minima(d) if d <= MINIMA_LIMIT else []
    init = _start(cfg, names, default)
    if cfg.wrt is None:  # all of them: not a Python list of d ints (~36 bytes each, 3.6 GB at d = 10⁸)
        wrt = torch.arange(len(names), device=device)
    else:
        unknown = [v for v in cfg.wrt if v not in names]
        if unknown or not cfg.wrt:
            shown = ", ".join(names[:16]) + (", …" if len(names) > 16 else "")
            what = f"unknown variable(s) {', '.join(map(str, unknown))}" if unknown else "an empty list"
            raise UserError(f"objective.wrt: {what}; {cfg.name}'s variables are: {shown}")
        if len(set(cfg.wrt)) != len(cfg.wrt):
            raise UserError(f"objective.wrt: a variable is listed twice in {list(cfg.wrt)}")
        wrt = torch.tensor([names.index(v) for v in cfg.wrt], dtype=torch.long, device=device)
    return Problem(
        name=cfg.name,
        fn=fn,
        var_names=names,
        x0=torch.as_tensor(init, dtype=dtype).to(device),
        wrt=wrt,
        targets=targets,
        target_sources=sources,
        minima=minima,
    )
