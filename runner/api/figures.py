"""A run's figures in the notebook: the same functions that draw ``plots/loss.png`` and
``plots/path.png`` for its MLflow record, called here and returned as matplotlib figures."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np


def run_figures(result) -> tuple[Any, Any | None]:
    """(loss figure, path figure or None) of a :class:`runner.api.results.RunResult`."""
    from omegaconf import OmegaConf

    from runner.descent.build import build
    from runner.job import contour_grid
    from runner.tracking.plots import run_figure_jobs

    problem, _, _ = build(OmegaConf.create(result.config))
    names = [str(n) for n in problem.var_names]
    grid = None
    path = None
    if problem.dim == 2 and all(n in result.x for n in names):
        path = np.column_stack([result.x[n] for n in names])
        grid = contour_grid(problem, path)
    jobs = run_figure_jobs(
        result.name, result.steps, result.loss, None if grid is None else grid[:2], path, names[:2], problem.minima
    )
    figures = [_draw(target, args) for _, target, args in jobs]
    return figures[0], figures[1] if len(figures) > 1 else None


def _draw(target: str, args: tuple):
    module, _, function = target.partition(":")
    with np.errstate(all="ignore"):  # a diverged run's values overflow inside matplotlib's scales
        return getattr(importlib.import_module(module), function)(*args)
