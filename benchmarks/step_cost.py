"""Case (c) in one process: a step of f through the runner's loop against a step of the bare loop.

    python benchmarks/step_cost.py --steps 20000 --lr 0.01 --repeat 5 --out result.json

The runner's side is what a run of ``python -m runner objective=f steps=20000 lr=0.01`` does in its
main process between its imports and its report: :func:`runner.descent.loop.descend` with the
autograd backend and the hand-written update (``optimizer=manual``), keeping every
``record_every``-th step (the run's metric stride, 20 here), and handing every window to
:class:`runner.tracking.stream.RunStream`, which writes every step to ``trajectory.csv`` and sends the
metric samples to the writer. The writer itself is another process; its share in this one is pickling
the samples for the pipe, which the stand-in recorder here does (``pickle.dumps``), so nothing of the
main process's work is left out. The bare side is :func:`bare_loop.bare_loop` (autograd, ``x -= lr·grad``
in place, every step's loss, x and gradient kept in preallocated tensors), imported from
``benchmarks/bare_loop.py``.

The two alternate (runner, bare, runner, bare, …) in this one process, after one unmeasured round
each; every sample is the wall time of the whole descent, from the call to the file being closed, and
the CPU time of this thread over the same span (on a shared machine the CPU time is the steadier of
the two: another process's work delays the wall clock, not this thread's CPU clock). The JSON has
every sample and the medians per step.
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bare_loop import bare_loop  # noqa: E402

from runner.descent.backends import Autograd  # noqa: E402
from runner.descent.loop import descend  # noqa: E402
from runner.descent.optimizers import ManualDescent  # noqa: E402
from runner.descent.problem import build_problem  # noqa: E402
from runner.tracking.records import log_stride  # noqa: E402
from runner.tracking.stream import RunStream  # noqa: E402


class PicklingRecorder:
    """Stands in for :class:`runner.tracking.recorder.RunRecorder`: the metrics are pickled, as the
    writer's pipe pickles them, and dropped."""

    def __init__(self) -> None:
        self.bytes = 0

    def log_metrics(self, series) -> None:
        self.bytes += len(pickle.dumps(series, protocol=pickle.HIGHEST_PROTOCOL))

    def keep_file(self, name, path) -> None:
        """The real recorder tells the writer once, before the first step, which file the run writes."""
        pickle.dumps((name, str(path)), protocol=pickle.HIGHEST_PROTOCOL)


def runner_loop(steps: int, lr: float, folder: Path) -> float:
    """Seconds of one run's descent of f, with its stream of metrics and trajectory file."""
    cfg = OmegaConf.create({"name": "f", "init": None, "dim": None, "expr": None, "vars": None, "target": None, "wrt": None})
    problem = build_problem(cfg, dtype=torch.float64, device=torch.device("cpu"))
    stride = log_stride(steps, "auto")
    start = time.perf_counter()
    stream = RunStream(PicklingRecorder(), ["x"], ["x"], stride, folder / "trajectory.csv")
    traj = descend(problem, Autograd(), lambda params: ManualDescent(params, lr), steps=steps,
                   record_every=stride, on_window=stream.window)
    stream.close()
    seconds = time.perf_counter() - start
    assert int(traj.final_step[0]) == steps, traj.outcome
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="runner-step-cost-"))
    runner_loop(min(args.steps, 2000), args.lr, folder)  # unmeasured: first calls, allocator, file cache
    bare_loop(min(args.steps, 2000), args.lr)
    samples: dict[str, list[float]] = {"runner": [], "bare": []}
    cpu: dict[str, list[float]] = {"runner": [], "bare": []}
    sides = {"runner": lambda: runner_loop(args.steps, args.lr, folder), "bare": lambda: bare_loop(args.steps, args.lr)[0]}
    for _ in range(args.repeat):
        for name, side in sides.items():
            started = time.thread_time()
            samples[name].append(side())
            cpu[name].append(time.thread_time() - started)
    per_step = {name: statistics.median(values) / (args.steps + 1) for name, values in samples.items()}
    cpu_per_step = {name: statistics.median(values) / (args.steps + 1) for name, values in cpu.items()}
    with open(args.out, "w") as fh:
        json.dump({"steps": args.steps, "lr": args.lr, "samples": samples, "cpu_samples": cpu, "per_step_s": per_step,
                   "cpu_per_step_s": cpu_per_step}, fh)


if __name__ == "__main__":
    main()
