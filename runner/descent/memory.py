"""Will the run fit? An up-front estimate, so that a run too big for the machine fails with a
number instead of being killed half-way.

The estimate counts copies of x (d numbers of the run's dtype, per trajectory):

* eager autograd: ~16 (the start point, the parameter, the gradient, and the forward and backward
  temporaries of an objective such as chained Rosenbrock; measured: a 10⁷ float32 run peaks at
  ~15 copies on the CPU);
* a compiled step (``backend.compile=true``): ~8 (Inductor fuses the temporaries away);
* finite differences: the stencil, ``(1 + 2k)·k`` numbers per trajectory (``(1 + 4k)·k`` with
  Richardson), plus the objective's temporaries on it, ~4 copies of the stencil;

plus the records: ``(steps + 1)·(m_x + m_g + 2)`` numbers per trajectory.
"""

from __future__ import annotations

import torch

from runner.errors import UserError

EAGER_COPIES = 16
COMPILED_COPIES = 8
STENCIL_COPIES = 4


def estimate_bytes(d: int, k: int, batch: int, dtype: torch.dtype, backend: str, compiled: bool, richardson: bool, steps: int, recorded: int) -> int:
    """Bytes a descent needs at its peak (see the module docstring for the model)."""
    item = torch.finfo(dtype).bits // 8
    if backend == "finite_diff":
        per_row = STENCIL_COPIES * (1 + (4 if richardson else 2) * k) * max(d, k) + 4 * d
    else:
        per_row = (COMPILED_COPIES if compiled else EAGER_COPIES) * d
    records = (steps + 1) * (recorded + 2)
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


def check_fits(d: int, k: int, batch: int, dtype: torch.dtype, device: torch.device, backend: str, compiled: bool, richardson: bool, steps: int, recorded: int) -> None:
    """Raise a one-line :class:`UserError` when the estimate exceeds the free memory."""
    need = estimate_bytes(d, k, batch, dtype, backend, compiled, richardson, steps, recorded)
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
