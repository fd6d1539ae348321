"""Memory: a run's peak does not grow with its steps, and the up-front estimate matches it.

Peaks are the kernel's high-water mark of resident memory (``VmHWM`` in ``/proc/PID/status``) of the
main process and of its writer process, read while the real ``python -m runner`` runs.

- f with the hand-written update (the cheapest step there is, ~0.2 ms on the 2-core dev box): a
  1,000,000-step run peaks within 1.5× of a 10,000-step run, in both processes. Before the descent
  streamed its records, the main process grew by ~2 KB a step (~2 GB at 10⁶ steps).
- Chained Rosenbrock at d = 10⁶ (float64, three steps): the growth of the main process's peak over
  the same run at d = 2 is within 2× of :func:`runner.descent.memory.estimate_bytes`'s growth.
- A run that cannot fit (``objective.dim=10000000000``) is refused in one line before it allocates.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from runner.descent.memory import estimate_bytes
from tests.conftest import run_cli
from tests.infra.runner_proc import Runner
from tests.sweep_helpers import client_for, make_workdir

pytestmark = pytest.mark.slow


def high_water_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peaks(workdir: Path, *args: str) -> dict[str, int]:
    """Run ``python -m runner ARGS`` to its end; the peak resident KB of its main and writer processes."""
    r = Runner(workdir, *args, "progress=false")
    seen: dict[str, int] = {}
    writer = None
    try:
        while True:
            writer = writer or r.writer_pid()
            for name, pid in (("main", r.pid), ("writer", writer)):
                value = high_water_kb(pid) if pid else None
                if value:
                    seen[name] = max(seen.get(name, 0), value)
            if r.proc.poll() is not None and (writer is None or high_water_kb(writer) is None):
                break
            time.sleep(0.02)
        assert r.proc.returncode == 0, r.stderr
        assert r.leftovers() == []
    finally:
        r.cleanup()
    return seen


def test_a_million_steps_peak_within_one_and_a_half_times_ten_thousand(tmp_path, empty_store):
    short = peaks(make_workdir(tmp_path / "short", empty_store), "objective=f", "steps=10000")
    long_dir = make_workdir(tmp_path / "long", empty_store)
    long = peaks(long_dir, "objective=f", "steps=1000000")
    print(f"peak RSS (KB), 10,000 vs 1,000,000 steps: main {short['main']} vs {long['main']}, "
          f"writer {short['writer']} vs {long['writer']}")
    for process in ("main", "writer"):
        assert long[process] <= 1.5 * short[process], (process, short, long)
    client = client_for(long_dir)
    (run,) = client.search_runs([client.get_experiment_by_name("runner").experiment_id])
    assert (run.info.status, run.data.tags["final_step"]) == ("FINISHED", "1000000")
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 1001  # steps 0, 1000, …, 10⁶


def test_the_estimate_matches_the_measured_peak_within_two_times(tmp_path, empty_store):
    d = 10**6
    args = ["objective=rosenbrock", "optimizer=sgd", "lr=0.0001", "steps=3"]
    small = peaks(make_workdir(tmp_path / "small", empty_store), *args, "objective.dim=2")["main"]
    large = peaks(make_workdir(tmp_path / "large", empty_store), *args, f"objective.dim={d}")["main"]
    measured = (large - small) * 1024
    estimate = (estimate_bytes(d, d, 1, torch.float64, "autograd", False, False, 3, 128)
                - estimate_bytes(2, 2, 1, torch.float64, "autograd", False, False, 3, 4))
    print(f"d = {d}: measured growth of the peak {measured / 1e6:.0f} MB, estimate {estimate / 1e6:.0f} MB")
    assert 0.5 <= measured / estimate <= 2.0


def test_a_run_that_cannot_fit_is_refused_in_one_line(workdir):
    result = run_cli("objective=quadratic", "objective.dim=10000000000", cwd=workdir)
    assert result.returncode == 2
    assert result.stderr.startswith("error: objective.dim=10000000000: this run needs about 2560.0 GB on cpu "
                                    "(eager autograd, 64-bit) but about ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    result = run_cli("objective=quadratic", "objective.dim=1e10", cwd=workdir)
    assert (result.returncode, result.stderr.count("\n")) == (2, 1), result.stderr
    assert result.stderr.startswith("error: objective.dim: ")
