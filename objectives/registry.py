"""The registry of built-in objectives and what is known about each.

An :class:`ObjectiveSpec` holds the batch-first function and the facts the runner and the tests
need: its variable names for a given size, its customary start point and its known minima. The
function modules register themselves on import; :func:`get` imports them lazily so that importing
this package costs nothing.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

Objective = Callable[[torch.Tensor], torch.Tensor]

# Modules whose functions register themselves; imported on first look-up.
_MODULES = ("objectives.tutorial", "objectives.test_functions")


@dataclass(frozen=True)
class ObjectiveSpec:
    """A named objective.

    Attributes:
        name: the config-group choice (``objective=<name>``).
        fn: batch-first function, ``(..., d) -> (...)``.
        default_dim: d when the user gives neither ``dim`` nor ``init``.
        n_dim: whether the function is defined for any d (``objective.dim``) or only ``default_dim``.
        min_dim: the smallest d allowed for an n-D function.
        start: customary start point for a given d: a list, or for n-D functions a float64 tensor
            (so that d = 10⁸ does not build a Python list).
        minima: the known global minimisers for a given d (empty when unbounded below).
        min_value: the function's value at those minimisers (None when unbounded below).
        var_names: the variable names for a given d.
    """

    name: str
    fn: Objective
    default_dim: int
    n_dim: bool
    min_dim: int
    start: Callable[[int], list[float]]
    minima: Callable[[int], list[list[float]]]
    min_value: float | None
    var_names: Callable[[int], list[str]]


REGISTRY: dict[str, ObjectiveSpec] = {}


class NumberedNames(Sequence[str]):
    """``x1 … xd`` as a lazy sequence: d = 10⁸ names cost nothing until one is asked for."""

    def __init__(self, d: int):
        self.d = d

    def __len__(self) -> int:
        return self.d

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [f"x{j + 1}" for j in range(*i.indices(self.d))]
        if i < 0:
            i += self.d
        if not 0 <= i < self.d:
            raise IndexError(i)
        return f"x{i + 1}"

    def index(self, name, start: int = 0, stop: int | None = None) -> int:
        if isinstance(name, str) and name[:1] == "x" and name[1:].isdigit() and not name[1:].startswith("0"):
            i = int(name[1:]) - 1
            if 0 <= i < self.d:
                return i
        raise ValueError(f"{name!r} is not a variable")

    def __contains__(self, name) -> bool:
        try:
            self.index(name)
        except ValueError:
            return False
        return True

    def __eq__(self, other) -> bool:
        return list(self) == list(other) if isinstance(other, (list, tuple, Sequence)) else NotImplemented

    def __repr__(self) -> str:
        return f"NumberedNames({self.d})"


def numbered_names(d: int) -> Sequence[str]:
    """``x1 … xd``: the variable names of every objective but the one-variable f."""
    return NumberedNames(d)


def register(
    name: str,
    *,
    dim: int,
    start: Sequence[float] | Callable[[int], list[float]],
    minima: Sequence[Sequence[float]] | Callable[[int], list[list[float]]] = (),
    min_value: float | None = None,
    n_dim: bool = False,
    min_dim: int = 1,
    var_names: Callable[[int], list[str]] = numbered_names,
) -> Callable[[Objective], Objective]:
    """Decorator that adds a batch-first objective to the registry under ``name``."""

    def as_function(value):  # a fixed list for fixed-size functions, a function of d for n-D ones
        return value if callable(value) else (lambda d, v=value: [list(p) if isinstance(p, (list, tuple)) else p for p in v])

    def decorate(fn: Objective) -> Objective:
        REGISTRY[name] = ObjectiveSpec(
            name=name,
            fn=fn,
            default_dim=dim,
            n_dim=n_dim,
            min_dim=min_dim,
            start=as_function(start),
            minima=as_function(minima),
            min_value=min_value,
            var_names=var_names,
        )
        return fn

    return decorate


def _load() -> None:
    for module in _MODULES:
        importlib.import_module(module)


def get(name: str) -> ObjectiveSpec:
    """The spec of a built-in objective; KeyError lists the choices."""
    _load()
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown objective {name!r}; choose one of: {', '.join(names())}") from None


def names() -> list[str]:
    """Names of the built-in objectives, sorted."""
    _load()
    return sorted(REGISTRY)
