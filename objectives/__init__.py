"""Objective functions: scalar functions of a parameter vector, batch-first.

Every objective maps a tensor of shape ``(..., d)`` to a tensor of shape ``(...)``, so one call
evaluates a whole batch of points (a sweep's trajectories, or all the perturbed points of a
finite-difference stencil). Objectives know nothing of backends, optimizers or tracking.

The registry (:mod:`objectives.registry`) names each built-in objective; a new objective is one
function decorated with :func:`objectives.registry.register` plus one YAML file in ``conf/objective``.
"""

from objectives.registry import REGISTRY, ObjectiveSpec, get, names, register

__all__ = ["REGISTRY", "ObjectiveSpec", "get", "names", "register"]
