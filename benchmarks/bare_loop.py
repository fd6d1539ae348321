"""Case (c)'s yardstick: the bare PyTorch loop of hand-written descent on f, after the import floor.

    python benchmarks/bare_loop.py --steps 20000 --lr 0.01 --out result.json

The process imports what every run of the runner imports (``torch, mlflow, hydra, omegaconf``: the
import floor), then runs the loop a user would write by hand: autograd for the gradient, the update
``x -= lr * grad`` in place, and the loss, x and the gradient of every step kept in preallocated tensors
(the runner records them too). Float64, like the runner's default dtype. It writes the loop's own
wall time (``perf_counter`` around the loop alone) to ``--out`` as JSON, so that the benchmark can
compare the runner's time above the import floor with this loop's time.
"""

from __future__ import annotations

import argparse
import json
import time

import hydra  # noqa: F401  (the import floor)
import mlflow  # noqa: F401
import omegaconf  # noqa: F401
import torch


def f(x: torch.Tensor) -> torch.Tensor:
    """f(x) = 3x² + 2x − 1."""
    return 3.0 * x**2 + 2.0 * x - 1.0


def bare_loop(steps: int, lr: float) -> tuple[float, dict[str, torch.Tensor]]:
    """Descend f from x = 0 for ``steps`` updates (k = 0 … steps evaluated); the loop's seconds and
    its records (``loss`` (steps + 1,), ``x`` and ``grad`` (steps + 1, 1))."""
    x = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    losses = torch.empty(steps + 1, dtype=torch.float64)
    xs = torch.empty(steps + 1, 1, dtype=torch.float64)
    grads = torch.empty(steps + 1, 1, dtype=torch.float64)
    start = time.perf_counter()
    for k in range(steps + 1):
        loss = f(x).sum()
        (grad,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            losses[k] = loss
            xs[k] = x
            grads[k] = grad
            if k < steps:
                x -= lr * grad
    seconds = time.perf_counter() - start
    return seconds, {"loss": losses, "x": xs, "grad": grads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    seconds, records = bare_loop(args.steps, args.lr)
    with open(args.out, "w") as fh:
        json.dump({"loop_s": seconds, "steps": args.steps, "lr": args.lr, "x_final": float(records["x"][-1, 0])}, fh)


if __name__ == "__main__":
    main()
