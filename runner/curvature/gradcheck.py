"""``check_grad=true``: compare autograd's gradient with a finite-difference reference during descent.

At steps k = 0, ``check_grad_every``, 2·``check_grad_every``, … the loop calls the checker with the
batch of current points x ``(B, d)``. It differentiates ``problem.loss(x)`` at ``problem.params(x)``
twice, whatever backend the run uses: by autograd (g) and by finite differences with the run's
``backend.scheme``, ``backend.eps`` and ``backend.richardson`` (D, with its error bar e from
:func:`runner.curvature.hessian.fd_gradient`). Per coordinate i it records

    abs_errᵢ = |gᵢ − Dᵢ|,      rel_errᵢ = abs_errᵢ / max(‖g‖∞, ‖D‖∞)

(relative to the largest gradient entry at that point), logs their maxima as
``grad_check/max_abs_err`` and ``grad_check/max_rel_err``, and fails the check where

    abs_errᵢ > tolᵢ = C·(ε^m·(1 + |Dᵢ|) + eᵢ),      C = 10.

Where the tolerance comes from: a difference quotient whose step balances truncation against rounding
(``auto``: h = ε^(1/3)·max(1, |x|) central, ε^(1/2)·max(1, |x|) forward) is accurate to about ε^m
of the gradient's scale, m = 2/3 central (with or without Richardson), 1/2 forward, ε the dtype's
machine epsilon; the ``1 +`` keeps the bound meaningful where the gradient vanishes. eᵢ is the measured
error bar of this very estimate (step halving for truncation; 3σ·‖w‖ for rounding, σ the measured
noise of L), which covers fixed steps (``backend.eps=<float>``), large higher derivatives, and sums
that cancel (Rastrigin near 0 is 40 − 40 + tiny: its noise is ε·40, not ε·|L|). C = 10 is the safety margin: a
correct gradient stays at about a tenth of it or less on the test functions. So in float64 (ε = 2.2e-16)
a check is sensitive to relative errors of about 4e-10; in float32 (ε = 1.2e-7) only to about 2.4e-4
plus the much larger error bars: float32 finite differences cannot do better.

Non-finite entries (a diverged point) are skipped: there is nothing to compare. Within one step of a
kink (Ackley's origin) the check fails, rightly: the difference quotient is no derivative there.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from runner.curvature.hessian import fd_gradient
from runner.descent.backends import Autograd, FiniteDifference
from runner.errors import UserError

SAFETY = 10.0


def accuracy_exponent(scheme: str) -> float:
    """m in ε^m: the relative accuracy of a balanced difference quotient (2/3 central, 1/2 forward)."""
    return 0.5 if scheme == "forward" else 2.0 / 3.0


def tolerance(reference: torch.Tensor, error_bar: torch.Tensor, dtype: torch.dtype, scheme: str = "central") -> torch.Tensor:
    """``tolᵢ = C·(ε^m·(1 + |Dᵢ|) + eᵢ)`` for a finite-difference gradient D with error bar e (see module doc)."""
    level = torch.finfo(dtype).eps ** accuracy_exponent(scheme)
    return SAFETY * (level * (1.0 + reference.abs()) + error_bar)


def _setting(cfg: Any, key: str, default: Any) -> Any:
    """``cfg.key`` for a DictConfig, a dict or any object; ``default`` when absent or null."""
    value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
    return default if value is None else value


class GradChecker:
    """The loop's ``monitor``: call as ``checker(k, x)``; read ``series()``, ``tags()``, ``failed()``.

    Args:
        problem: the run's :class:`runner.descent.problem.Problem`.
        backend_cfg: ``cfg.backend`` (``name``, ``dtype``, ``eps``, ``scheme``, ``richardson``); the
            finite-difference settings are used for the reference whatever ``name`` is.
    """

    def __init__(self, problem, backend_cfg: Any) -> None:
        self.problem = problem
        self.dtype = problem.x0.dtype
        self.dtype_name = str(_setting(backend_cfg, "dtype", "float64"))
        self.scheme = str(_setting(backend_cfg, "scheme", "central"))
        self.eps = _setting(backend_cfg, "eps", "auto")
        self.richardson = bool(_setting(backend_cfg, "richardson", False))
        FiniteDifference(self.scheme, self.eps, self.richardson)  # validates the settings: one-line errors
        self.autograd = Autograd()
        self.steps: list[int] = []
        self.max_abs: list[float] = []
        self.max_rel: list[float] = []
        self.worst: dict[str, Any] | None = None  # the entry with the largest abs_err / tol
        self.worst_ratio = -math.inf

    def __call__(self, k: int, x: torch.Tensor) -> None:
        problem = self.problem
        x = x.detach()
        loss, p = problem.loss(x), problem.params(x)
        try:
            _, g = self.autograd.value_and_grad(loss, p)
        except RuntimeError as exc:
            raise UserError(
                f"check_grad=true: autograd cannot differentiate {problem.name} ({str(exc).splitlines()[0]}); "
                "use check_grad=false"
            ) from None
        ref = fd_gradient(loss, p, self.scheme, self.eps, self.richardson)
        d, bar = ref.estimate, ref.error
        err = (g - d).abs()
        tol = tolerance(d, bar, self.dtype, self.scheme)
        ok = torch.isfinite(g) & torch.isfinite(d) & torch.isfinite(bar)
        scale = torch.maximum(g.abs().amax(-1, keepdim=True), d.abs().amax(-1, keepdim=True))
        rel = torch.where(err == 0, torch.zeros_like(err), err / scale)
        self.steps.append(int(k))
        if not bool(ok.any()):
            self.max_abs.append(math.nan)
            self.max_rel.append(math.nan)
            return
        zero = torch.zeros_like(err)
        self.max_abs.append(float(torch.where(ok, err, zero).max()))
        self.max_rel.append(float(torch.where(ok, rel, zero).max()))
        ratio = torch.where(ok, err / tol, torch.full_like(err, -math.inf))
        flat = int(ratio.argmax())
        row, i = divmod(flat, ratio.shape[-1])
        value = float(ratio.reshape(-1)[flat])
        if value > self.worst_ratio:
            self.worst_ratio = value
            self.worst = {
                "step": int(k),
                "row": row,
                "coord": problem.wrt_names[i],
                "autograd": float(g[row, i]),
                "finite_diff": float(d[row, i]),
                "abs_err": float(err[row, i]),
                "tol": float(tol[row, i]),
                "batch": x.shape[0],
            }

    def failed(self) -> bool:
        """Whether some checked coordinate exceeded its tolerance."""
        return self.worst_ratio > 1.0

    def series(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``grad_check/max_abs_err`` and ``grad_check/max_rel_err`` at the checked steps."""
        steps = np.asarray(self.steps, dtype=np.int64)
        return {
            "grad_check/max_abs_err": (steps, np.asarray(self.max_abs, dtype=float)),
            "grad_check/max_rel_err": (steps, np.asarray(self.max_rel, dtype=float)),
        }

    def _where(self) -> str:
        w = self.worst
        row = f" (row {w['row']})" if w["batch"] > 1 else ""
        return f"{w['coord']} at step {w['step']}{row}"

    def tags(self) -> dict[str, str]:
        """``grad_check``: passed | failed; when failed the worst entry (coordinate, step, numbers)."""
        if not self.steps:
            return {}
        tags = {"grad_check": "failed" if self.failed() else "passed", "grad_check.checks": str(len(self.steps))}
        if self.worst is not None:
            tags["grad_check.worst_ratio"] = f"{self.worst_ratio:.3g}"
        if self.failed():
            w = self.worst
            tags.update(
                {
                    "grad_check.coord": w["coord"],
                    "grad_check.step": str(w["step"]),
                    "grad_check.autograd": repr(w["autograd"]),
                    "grad_check.finite_diff": repr(w["finite_diff"]),
                    "grad_check.abs_err": f"{w['abs_err']:.6g}",
                    "grad_check.tol": f"{w['tol']:.6g}",
                    "grad_check.message": self.message()[:500],
                }
            )
        return tags

    def message(self) -> str:
        """One line: the verdict, the worst coordinate, and (float32) why its tolerance is looser."""
        if self.worst is None:
            return "gradient check: nothing finite to compare"
        w = self.worst
        verdict = "failed" if self.failed() else "passed"
        line = (
            f"gradient check {verdict}: worst {self._where()}: autograd {w['autograd']:.10g} vs "
            f"finite_diff {w['finite_diff']:.10g}, |error| {w['abs_err']:.3g} "
            f"{'>' if self.failed() else '≤'} tolerance {w['tol']:.3g}"
        )
        if self.dtype == torch.float32:
            m = accuracy_exponent(self.scheme)
            level32, level64 = torch.finfo(torch.float32).eps ** m, torch.finfo(torch.float64).eps ** m
            line += (
                f" (float32: machine ε = {torch.finfo(torch.float32).eps:.2g}, so finite differences are only "
                f"accurate to about ε^{'2/3' if m > 0.6 else '1/2'} = {level32:.2g} of the gradient's scale, "
                f"{level32 / level64:.2g}× looser than float64; use backend.dtype=float64 for a sharper check)"
            )
        return line
