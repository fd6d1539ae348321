"""Will the run fit? An up-front estimate, so that a run too big for the machine fails with a
number instead of being killed half-way.

The estimate counts copies of x (d numbers of the run's dtype, per trajectory):

* eager autograd: ~32 (the start point, the parameter, the gradient, the optimizer's state, the
  final point, and the forward and backward temporaries of the objective). Measured on the 2-core
  dev box, float64: ``python -m runner objective=rosenbrock optimizer=sgd objective.dim=1000000``
  peaks 295 MB (37 copies) above the same run at d = 2 (tests/test_memory.py); the descent alone
  (``runner.descent.loop.descend``, d = 2·10⁶) 31 copies under SGD and 34 under Adam for chained
  Rosenbrock, 22 and 19 for the quadratic;
* a compiled step (``backend.compile=true``): ~8 (Inductor fuses the temporaries away);
* finite differences: the stencil, ``(1 + 2k)·k`` numbers per trajectory (``(1 + 4k)·k`` with
  Richardson), plus the objective's temporaries on it, ~4 copies of the stencil;

plus the records the run keeps in memory: the metric samples (every step up to 1,000 steps, ~1,000
beyond with ``tracking.log_every=auto``, else every ``log_every``-th step) and a window of 32 steps,
``m_x + m_g + 2`` numbers each. The steps themselves stream to the store and to trajectory.csv, so
the records do not grow with the steps beyond the samples.
"""

from __future__ import annotations

import math

import torch

from runner.errors import UserError

EAGER_COPIES = 32
COMPILED_COPIES = 8
STENCIL_COPIES = 4
WINDOW = 32  # steps between stopping tests, held on the device (runner.descent.loop.SYNC_EVERY)


def kept_steps(steps: int, log_every: int | str | None = "auto") -> int:
    """Steps whose records a run keeps in memory: its metric samples (the stride of
    :func:`runner.tracking.records.log_stride`) and a window."""
    stride = max(1, math.ceil(steps / 1000)) if log_every in (None, "auto") else max(1, int(log_every))
    return steps // stride + 1 + (min(WINDOW, steps) if stride > 1 else 0)


def estimate_bytes(d: int, k: int, batch: int, dtype: torch.dtype, backend: str, compiled: bool, richardson: bool,
                   steps: int, recorded: int, log_every: int | str | None = "auto") -> int:
    """Bytes a descent needs at its peak (see the module docstring for the model)."""
    item = torch.finfo(dtype).bits // 8
    if backend == "finite_diff":
        per_row = STENCIL_COPIES * (1 + (4 if richardson else 2) * k) * max(d, k) + 4 * d
    else:
        per_row = (COMPILED_COPIES if compiled else EAGER_COPIES) * d
    records = kept_steps(steps, log_every) * (recorded + 2)
    return batch * (per_row + records) * item


def available_bytes(device: torch.device) -> int:
    """Free memory where the run lives: the GPU's free memory, or the host's MemAvailable."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62  # unknown: do not refuse


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def check_fits(d: int, k: int, batch: int, dtype: torch.dtype, device: torch.device, backend: str, compiled: bool,
               richardson: bool, steps: int, recorded: int, log_every: int | str | None = "auto") -> None:
    """Raise a one-line :class:`UserError` when the estimate exceeds the free memory."""
    need = estimate_bytes(d, k, batch, dtype, backend, compiled, richardson, steps, recorded, log_every)
    have = available_bytes(device)
    if need <= have:
        return
    how = "finite differences" if backend == "finite_diff" else ("a compiled step" if compiled else "eager autograd")
    if backend == "finite_diff":
        hints = "fewer moving variables (objective.wrt) or backend=autograd"
    else:
        hints = ", ".join(
            ([] if dtype == torch.float32 else ["backend.dtype=float32"])
            + ([] if compiled else ["backend.compile=true"])
            + ["a smaller objective.dim"]
        )
    raise UserError(
        f"objective.dim={d}: this run needs about {_gb(need)} on {device.type} ({how}, {torch.finfo(dtype).bits}-bit) "
        f"but about {_gb(have)} is free; try {hints}"
    )
