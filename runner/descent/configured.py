"""Build a torch object (an optimizer, a learning-rate scheduler) from its config group's node.

The node has ``_target_`` (a class, or a function that builds one), ``_partial_: true`` (the run
supplies the first argument: the parameters, the optimizer), ``name`` (for run names) and the
target's keyword arguments. Every way it can go wrong is one line naming the group: a target that
cannot be imported, an argument the target does not take (with the ones it does), a value it refuses.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from runner.errors import UserError


def build(cfg: Any, group: str, example: str, first: Any, skipped: tuple[str, ...] = ()) -> Any:
    """``instantiate(cfg)(first)`` for the ``group`` config node ``cfg``; ``example`` names a target
    that would work, ``skipped`` are the target's parameters the runner sets itself."""
    from hydra.errors import InstantiationException
    from hydra.utils import get_object, instantiate
    from omegaconf import OmegaConf

    kwargs = OmegaConf.to_container(cfg, resolve=True)
    kwargs.pop("name", None)
    target = kwargs.get("_target_")
    quiet = logging.getLogger("hydra.utils")  # get_object logs the failure over four lines first
    quiet.disabled, was = True, quiet.disabled
    try:
        built = get_object(target)
    except Exception:
        raise UserError(f"{group}._target_: cannot import {target!r}; use {example}") from None
    finally:
        quiet.disabled = was
    signature = inspect.signature(built.__init__ if isinstance(built, type) else built)
    allowed = [n for i, n in enumerate(signature.parameters) if n != "self" and n not in skipped and not (i == 0 and not isinstance(built, type))]
    unknown = [k for k in kwargs if not k.startswith("_") and k not in allowed]
    if unknown:
        raise UserError(f"{group}: {target} takes no argument {', '.join(unknown)}; it takes: {', '.join(allowed)}")
    try:
        return instantiate(kwargs)(first)
    except (ValueError, TypeError, InstantiationException) as exc:
        cause = exc.__cause__ or exc
        raise UserError(f"{group}: {target}: {str(cause).splitlines()[0]}") from None
