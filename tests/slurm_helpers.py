"""Objectives for jobs that a scheduler stops mid-descent (``objective=custom
objective.target=tests.slurm_helpers:slow_square``)."""

from __future__ import annotations

import time


def slow_square(x):
    """sum(x²), after sleeping 20 ms: a descent that is still running when the scheduler stops it,
    without keeping a core busy meanwhile."""
    time.sleep(0.02)
    return (x**2).sum(-1)
