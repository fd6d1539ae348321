"""Learning-rate schedules: the lr in effect at each step, applied to any optimizer alike.

A schedule is a ``torch.optim.lr_scheduler`` class (or a function that builds one), configured in the
``schedule`` group (``conf/schedule/``) with ``_target_`` and ``_partial_: true``. torch's schedulers
compute some sequences recursively (``CosineAnnealingLR`` multiplies the previous lr by a ratio), so
the runner never re-derives them: it steps torch's own scheduler and reads the lr it gives.

* With a ``torch.optim`` optimizer the scheduler drives the optimizer itself.
* With the hand-written update (:class:`runner.descent.optimizers.ManualDescent`, which has no
  ``param_groups``), the scheduler drives a *shadow* ``torch.optim.SGD`` over a one-element tensor,
  and its lr is copied into the update before every step. The lr sequence is then the one torch SGD
  would follow, so manual descent under a schedule equals torch SGD under it bit for bit.

Step k's lr is the one used for the update x_k → x_{k+1}; it is recorded as the metric ``lr`` at
step k (k = 0 … steps; at the last step there is no update, the lr is recorded all the same).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from runner.descent.configured import build


def is_constant(cfg: Any) -> bool:
    """Whether the schedule keeps lr fixed (``schedule=constant``, or no schedule at all)."""
    return cfg is None or cfg.get("_target_") in (None, "null")


def schedule_name(cfg: Any) -> str:
    """``schedule.name``, or the class name in lower case for ``schedule=torch_scheduler``."""
    if cfg.get("name"):
        return str(cfg.name)
    return str(cfg._target_).rsplit(".", 1)[-1].lower()


def warmup_cosine(optimizer, warmup_steps: int, start_factor: float, total_steps: int, eta_min: float = 0.0):
    """A linear warm-up from ``lr·start_factor`` to lr over ``warmup_steps`` steps, then cosine
    annealing to ``eta_min`` over the remaining ``total_steps − warmup_steps``: torch's ``LinearLR``
    and ``CosineAnnealingLR`` chained by ``SequentialLR`` at step ``warmup_steps``."""
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    warm = LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup_steps)
    cool = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup_steps), eta_min=eta_min)
    return SequentialLR(optimizer, [warm, cool], milestones=[warmup_steps])


def make_scheduler(cfg: Any, optimizer) -> Any:
    """Instantiate the configured scheduler on ``optimizer``; one-line errors for bad settings."""
    return build(cfg, "schedule", "a torch.optim.lr_scheduler class such as torch.optim.lr_scheduler.MultiStepLR", optimizer, skipped=("optimizer", "last_epoch", "verbose"))


class LrSchedule:
    """Steps a scheduler once per descent step and sets the lr of the optimizer it serves.

    Called by the loop as ``schedule(k)`` at k = 0, 1, …, in order, before the update of step k;
    returns the lr in effect at step k.
    """

    def __init__(self, cfg: Any, optimizer: Any) -> None:
        self.optimizer = optimizer
        self.driven = optimizer if hasattr(optimizer, "param_groups") else _shadow_sgd(optimizer.lr)
        self.scheduler = make_scheduler(cfg, self.driven)

    def __call__(self, k: int) -> float:
        if k > 0:
            if self.driven is not self.optimizer:
                self.driven.step()  # a no-op (no gradient) that keeps torch's step order
            self.scheduler.step()
        lr = float(self.driven.param_groups[0]["lr"])
        if self.driven is not self.optimizer:
            self.optimizer.lr = lr
        return lr


def _shadow_sgd(lr: float):
    """A torch SGD over one element without a gradient: something for a scheduler to drive."""
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)


def schedule_factory(cfg: Any) -> Callable[[Any], LrSchedule] | None:
    """What the loop needs: a function of the optimizer giving its :class:`LrSchedule`, or None for
    a constant lr."""
    if is_constant(cfg):
        return None
    return lambda optimizer: LrSchedule(cfg, optimizer)
