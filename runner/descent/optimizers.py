"""Optimisers: the tutorial's hand-written update, and any ``torch.optim`` class via ``instantiate``.

Every optimizer config has ``_target_`` (the class), ``_partial_: true`` (the parameters come at run
time), ``name`` (for run names and tags) and the class's hyperparameters, ``lr: ${lr}`` among them.
"""

from __future__ import annotations

import inspect
import logging
import math
from typing import Any, Iterable

import torch

from runner.errors import UserError


class ManualDescent:
    """Plain gradient descent written by hand: ``x ← x − lr·∇L(x)``.

    The tutorial's ``x.assign_sub(learning_rate * dz_dx)``, applied in place under ``torch.no_grad``.
    It needs no ``torch.optim`` (whose first use imports ``torch._dynamo``, about a second), and it
    performs exactly the floating-point operation of ``torch.optim.SGD`` without momentum
    (``x.add_(grad, alpha=-lr)``), so the two give identical paths.

    Args:
        params: the tensors to update; each must have ``.grad`` set before :meth:`step`.
        lr: the step size, > 0.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float):
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"Invalid learning rate: {lr}")
        self.params = list(params)
        self.lr = lr

    @torch.no_grad()
    def step(self, closure=None) -> None:
        for x in self.params:
            if x.grad is not None:
                x.add_(x.grad, alpha=-self.lr)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for x in self.params:
            x.grad = None


def optimizer_name(cfg) -> str:
    """``optimizer.name``, or the class name in lower case for ``optimizer=torch_optim``."""
    if cfg.get("name"):
        return str(cfg.name)
    return str(cfg._target_).rsplit(".", 1)[-1].lower()


def needs_closure(cfg) -> bool:
    """L-BFGS re-evaluates the loss inside ``step``; it gets a closure."""
    return str(cfg.get("_target_", "")).endswith("LBFGS")


def is_plain_descent(cfg) -> bool:
    """Whether the update is x ← x − lr·g (manual, or SGD with no momentum and no weight decay)."""
    target = str(cfg.get("_target_", ""))
    if target.endswith("ManualDescent"):
        return True
    return (
        target == "torch.optim.SGD"
        and not cfg.get("momentum")
        and not cfg.get("weight_decay")
        and not cfg.get("maximize")
    )


def make_optimizer(cfg, params: list[torch.Tensor]) -> Any:
    """Instantiate the configured optimizer on ``params``; one-line errors for bad hyperparameters."""
    from hydra.errors import InstantiationException
    from hydra.utils import get_class, instantiate
    from omegaconf import OmegaConf

    kwargs = OmegaConf.to_container(cfg, resolve=True)
    kwargs.pop("name", None)
    target = kwargs.get("_target_")
    quiet = logging.getLogger("hydra.utils")  # get_class logs the failure over four lines first
    quiet.disabled, was = True, quiet.disabled
    try:
        cls = get_class(target)
    except Exception:
        raise UserError(f"optimizer._target_: cannot import {target!r}; use a torch.optim class such as torch.optim.NAdam") from None
    finally:
        quiet.disabled = was
    allowed = [n for n in inspect.signature(cls.__init__).parameters if n not in ("self", "params")]
    unknown = [k for k in kwargs if not k.startswith("_") and k not in allowed]
    if unknown:
        raise UserError(
            f"optimizer: {target} takes no argument {', '.join(unknown)}; it takes: {', '.join(allowed)}"
        )
    try:
        return instantiate(kwargs)(params)
    except (ValueError, TypeError, InstantiationException) as exc:
        cause = exc.__cause__ or exc
        raise UserError(f"optimizer: {target}: {str(cause).splitlines()[0]}") from None
