"""Optimizers over a batch of independent trajectories, every row with its own hyperparameters.

A sweep over learning rates and optimizer settings runs as one ``(B, k)`` descent (the batched
launcher), so each row needs its own ``lr``, momentum, betas … A ``torch.optim`` optimizer has one
value per parameter group, so here every update is a small pure rule over explicit state, in the style
of optax: ``init(p, h) -> state`` and ``update(state, p, g, lr, h, t) -> (p', state')``, where ``h``
maps each hyperparameter to a ``(B, 1)`` tensor (one value per row, broadcast over the coordinates),
``lr`` is a ``(B, 1)`` tensor and ``t`` the step number (1, 2, …).

The per-row ``lr`` is handed to ``update`` at every step (:class:`BatchedOptimizer` multiplies it by
``schedule(t)`` when it has one), so a learning-rate schedule is one per-step factor away.

Each rule performs the floating-point operations of ``torch.optim``'s single-tensor implementation
(the one torch uses on the CPU) in the same order: ``p.addcdiv_(a, b, value=-s)`` computes
``p + (-s·a)/b``, which is ``torch.addcdiv(p, -s·a, b)`` with a per-row ``s``; bias corrections are
computed on the host in Python floats, as torch does. ``tests/test_batched_optimizers.py`` checks
every rule against the ``torch.optim`` class run row by row, at every step, in float64.

Notation: p the parameters, g the gradient, η the row's lr, t the step, λ the weight decay.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

Tensor = torch.Tensor
State = dict[str, Any]
Hyper = Mapping[str, Any]  # name -> (B, 1) tensor (and ``name:any`` -> bool, see _some)


def _some(h: Hyper, name: str) -> bool:
    """Whether any row has a nonzero ``name`` (:class:`BatchedOptimizer` answers it once, not at
    every step: a check over 10,000 rows costs as much as the update it would skip)."""
    known = h.get(f"{name}:any")
    return bool((h[name] != 0).any()) if known is None else bool(known)


def _decayed(g: Tensor, p: Tensor, h: Hyper) -> Tensor:
    """L2 weight decay folded into the gradient, ``g + λ·p``, only in rows with λ ≠ 0."""
    wd = h["weight_decay"]
    if not _some(h, "weight_decay"):
        return g
    return torch.where(wd != 0, torch.addcmul(g, p, wd), g)


@dataclass(frozen=True)
class Rule:
    """One update rule: its hyperparameters (name -> default), ``init`` and ``update``."""

    name: str
    defaults: Mapping[str, float | bool]
    init: Callable[[Tensor, Hyper], State]
    update: Callable[[State, Tensor, Tensor, Tensor, Hyper, int], tuple[Tensor, State]]


# -- plain descent -------------------------------------------------------------------------------
def _manual_update(state: State, p: Tensor, g: Tensor, lr: Tensor, h: Hyper, t: int):
    """``p ← p − η·g`` (:class:`runner.descent.optimizers.ManualDescent`)."""
    return torch.addcmul(p, g, -lr), state


MANUAL = Rule("manual", {}, lambda p, h: {}, _manual_update)


# -- SGD -----------------------------------------------------------------------------------------
def _sgd_update(state: State, p: Tensor, g: Tensor, lr: Tensor, h: Hyper, t: int):
    """``torch.optim.SGD`` with momentum μ, dampening τ, nesterov and weight decay λ per row:

    g ← g + λ·p;  b₁ = g,  b_t = μ·b_{t−1} + (1 − τ)·g  (t > 1);
    d = g + μ·b_t (nesterov) or b_t;  rows with μ = 0 take d = g (no buffer);  p ← p − η·d.
    """
    g = _decayed(g, p, h)
    mu = h["momentum"]
    if not _some(h, "momentum"):
        return torch.addcmul(p, g, -lr), state
    buf = g.clone() if t == 1 else torch.addcmul(state["buf"] * mu, g, 1 - h["dampening"])
    d = torch.where(h["nesterov"], torch.addcmul(g, buf, mu), buf)
    d = torch.where(mu != 0, d, g)
    return torch.addcmul(p, d, -lr), {"buf": buf}


SGD = Rule("sgd", {"momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0, "nesterov": False},
           lambda p, h: {"buf": None}, _sgd_update)


# -- Adam and AdamW ------------------------------------------------------------------------------
def _per_row(beta: Tensor, fn: Callable[[float], float]) -> Tensor:
    """``fn(β)`` per row, computed in Python floats once for each distinct β: torch.optim computes
    its bias corrections ``1 − βᵗ`` and ``√(1 − βᵗ)`` on the host, and so do we, bit for bit."""
    values, inverse = torch.unique(beta, return_inverse=True)
    mapped = torch.tensor([fn(b) for b in values.tolist()], dtype=beta.dtype, device=beta.device)
    return mapped[inverse]


def _adam_init(p: Tensor, h: Hyper) -> State:
    zeros = torch.zeros_like(p)
    return {"m": zeros, "v": zeros, "v_max": zeros}


def _adam_update(state: State, p: Tensor, g: Tensor, lr: Tensor, h: Hyper, t: int):
    """``torch.optim.Adam`` / ``AdamW`` with β₁, β₂, ε, λ, amsgrad (and decoupled decay) per row:

    AdamW: p ← p·(1 − η·λ);  Adam: g ← g + λ·p;
    m ← m + (1 − β₁)·(g − m);  v ← β₂·v + (1 − β₂)·g²;  v̂ = max(v̂, v) (amsgrad) or v;
    p ← p − (η / (1 − β₁ᵗ))·m / (√v̂ / √(1 − β₂ᵗ) + ε).
    """
    wd = h["weight_decay"]
    decoupled = h["decoupled_weight_decay"]
    if _some(h, "weight_decay"):
        p = torch.where(decoupled & (wd != 0), p * (1 - lr * wd), p)
        g = torch.where(~decoupled & (wd != 0), torch.addcmul(g, p, wd), g)
    m = torch.lerp(state["m"], g, 1 - h["beta1"])
    v = torch.addcmul(state["v"] * h["beta2"], (1 - h["beta2"]) * g, g)
    v_max = torch.maximum(state["v_max"], v)
    second = torch.where(h["amsgrad"], v_max, v)
    step_size = lr / _per_row(h["beta1"], lambda b: 1 - b**t)
    denom = second.sqrt() / _per_row(h["beta2"], lambda b: (1 - b**t) ** 0.5) + h["eps"]
    return torch.addcdiv(p, -step_size * m, denom), {"m": m, "v": v, "v_max": v_max}


_ADAM_DEFAULTS = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False}
ADAM = Rule("adam", {**_ADAM_DEFAULTS, "decoupled_weight_decay": False}, _adam_init, _adam_update)
ADAMW = Rule("adamw", {**_ADAM_DEFAULTS, "weight_decay": 0.01, "decoupled_weight_decay": True}, _adam_init, _adam_update)


# -- RMSprop -------------------------------------------------------------------------------------
def _rmsprop_init(p: Tensor, h: Hyper) -> State:
    zeros = torch.zeros_like(p)
    return {"square": zeros, "mean": zeros, "buf": zeros}


def _rmsprop_update(state: State, p: Tensor, g: Tensor, lr: Tensor, h: Hyper, t: int):
    """``torch.optim.RMSprop`` with α, ε, λ, momentum μ and centered per row:

    g ← g + λ·p;  s ← α·s + (1 − α)·g²;  centered: ḡ ← ḡ + (1 − α)·(g − ḡ), a = √(s − ḡ²), else a = √s;
    a ← a + ε;  μ > 0: b ← μ·b + g/a, p ← p − η·b;  μ = 0: p ← p − η·g/a.
    """
    g = _decayed(g, p, h)
    alpha = h["alpha"]
    square = torch.addcmul(state["square"] * alpha, (1 - alpha) * g, g)
    mean = torch.lerp(state["mean"], g, 1 - alpha)
    centered = torch.addcmul(square, mean, mean, value=-1).sqrt()
    avg = torch.where(h["centered"], centered, square.sqrt()) + h["eps"]
    mu = h["momentum"]
    buf = torch.addcdiv(state["buf"] * mu, g, avg)
    p = torch.where(mu > 0, torch.addcmul(p, buf, -lr), torch.addcdiv(p, -lr * g, avg))
    return p, {"square": square, "mean": mean, "buf": buf}


RMSPROP = Rule("rmsprop", {"alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0, "centered": False},
               _rmsprop_init, _rmsprop_update)


# -- Adagrad -------------------------------------------------------------------------------------
def _adagrad_init(p: Tensor, h: Hyper) -> State:
    return {"sum": torch.zeros_like(p) + h["initial_accumulator_value"]}


def _adagrad_update(state: State, p: Tensor, g: Tensor, lr: Tensor, h: Hyper, t: int):
    """``torch.optim.Adagrad`` with lr decay δ, λ, initial accumulator value and ε per row:

    g ← g + λ·p;  η_t = η / (1 + (t − 1)·δ);  S ← S + g²;  p ← p − η_t·g / (√S + ε).
    """
    g = _decayed(g, p, h)
    clr = lr / (1 + (t - 1) * h["lr_decay"])
    total = torch.addcmul(state["sum"], g, g)
    return torch.addcdiv(p, -clr * g, total.sqrt() + h["eps"]), {"sum": total}


ADAGRAD = Rule("adagrad", {"lr_decay": 0.0, "weight_decay": 0.0, "initial_accumulator_value": 0.0, "eps": 1e-10},
               _adagrad_init, _adagrad_update)


# -- which classes batch -------------------------------------------------------------------------
RULES: dict[str, Rule] = {
    "runner.descent.optimizers.ManualDescent": MANUAL,
    "torch.optim.sgd.SGD": SGD,
    "torch.optim.adam.Adam": ADAM,
    "torch.optim.adamw.AdamW": ADAMW,
    "torch.optim.rmsprop.RMSprop": RMSPROP,
    "torch.optim.adagrad.Adagrad": ADAGRAD,
}
CONFIG_KEYS = {"_target_", "_partial_", "name", "lr"}  # handled by the runner, not hyperparameters


def rule_for(cls: type) -> Rule | None:
    """The rule of an optimizer class (``torch.optim.SGD`` …), or None when it has none."""
    return RULES.get(f"{cls.__module__}.{cls.__qualname__}")


def hyperparameters(cls: type, options: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """One job's hyperparameters for the rule of ``cls`` (its own values, the class's defaults for
    the rest), or ``(None, why)`` when this job cannot run batched. ``options`` are the optimizer
    config's keys (resolved). A key the rule does not model batches only at the class's default
    (``maximize=false``, ``foreach=null`` …)."""
    rule = rule_for(cls)
    if rule is None:
        return None, f"optimizer {cls.__module__}.{cls.__qualname__} has no batched rule"
    signature = inspect.signature(cls.__init__).parameters
    values: dict[str, Any] = {}
    for key, value in options.items():
        if key in CONFIG_KEYS:
            continue
        if key == "betas" and "beta1" in rule.defaults:
            values["beta1"], values["beta2"] = (float(b) for b in value)
        elif key in rule.defaults:
            values[key] = value
        elif key not in signature or value != signature[key].default:
            return None, f"optimizer.{key}={value} is not batched"
    return {**rule.defaults, **values}, None


def hyper_tensors(rule: Rule, rows: list[Mapping[str, Any]], dtype: torch.dtype, device: torch.device) -> dict[str, Tensor]:
    """The rows' hyperparameters as ``(B, 1)`` tensors (booleans as bool tensors)."""
    out = {}
    for name, default in rule.defaults.items():
        values = [row.get(name, default) for row in rows]
        kind = torch.bool if isinstance(default, bool) else dtype
        out[name] = torch.tensor(values, dtype=kind, device=device).reshape(-1, 1)
    return out


class BatchedOptimizer:
    """A rule on one ``(B, k)`` leaf, with the interface the descent loop uses (``step`` after
    ``p.grad`` is set, ``zero_grad``).

    Args:
        params: ``[p]``, the batch of moving coordinates.
        rule: the update rule.
        hyper: the rule's hyperparameters, ``(B, 1)`` tensors.
        lr: ``(B, 1)``, each row's learning rate.
        schedule: optional per-step factor: step t uses ``lr · schedule(t)`` (a float or a
            ``(B, 1)`` tensor).
    """

    def __init__(self, params: list[Tensor], rule: Rule, hyper: Hyper, lr: Tensor,
                 schedule: Callable[[int], float | Tensor] | None = None) -> None:
        (self.p,) = params
        self.rule, self.lr, self.schedule = rule, lr, schedule
        self.hyper = {**hyper, **{f"{k}:any": bool((v != 0).any()) for k, v in hyper.items() if v.dtype != torch.bool}}
        self.state = rule.init(self.p.detach(), self.hyper)
        self.t = 0

    @torch.no_grad()
    def step(self, closure=None) -> None:
        self.t += 1
        lr = self.lr if self.schedule is None else self.lr * self.schedule(self.t)
        new, self.state = self.rule.update(self.state, self.p.detach(), self.p.grad, lr, self.hyper, self.t)
        self.p.copy_(new)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.p.grad = None
