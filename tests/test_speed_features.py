"""Speed features keep the numbers: compiled and eager steps, sampled and full logging, the memory
estimate, the progress bar."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch
from conftest import make_problem as problem
from conftest import run_cli, runs_of

from runner.descent.backends import Autograd, FiniteDifference
from runner.descent.compiled import CompiledAutograd, CompiledBackend
from runner.descent.loop import descend
from runner.descent.memory import check_fits, estimate_bytes
from runner.descent.optimizers import ManualDescent
from runner.descent.progress import make_progress
from runner.errors import UserError
from runner.tracking.records import log_stride, metric_series, sampled_steps, window_rows

F64, CPU = torch.float64, torch.device("cpu")


@pytest.fixture(scope="module")
def rosenbrock6():
    return problem("rosenbrock", dim=6)


def test_the_fused_compiled_step_follows_the_eager_path(rosenbrock6):
    eager = descend(rosenbrock6, Autograd(), lambda p: ManualDescent(p, 1e-3), steps=200)
    fused = descend(rosenbrock6, Autograd(), None, steps=200, fused_lr=1e-3)
    assert fused.outcome == eager.outcome and fused.final_step.tolist() == eager.final_step.tolist()
    # Inductor may fuse p − lr·g into one multiply-add: equal to rounding, not bit for bit.
    assert np.abs(fused.x - eager.x).max() < 1e-13
    assert np.abs(fused.loss - eager.loss).max() < 1e-10
    assert np.abs(fused.grad_norm - eager.grad_norm).max() < 1e-10


def test_the_fused_step_with_finite_differences_takes_their_gradient(rosenbrock6):
    """Forward differences with h = 1e-3 are off the exact gradient by O(h) (~1e-1 here, the
    Hessian's entries being ~10²-10³): the fused step must take the backend's gradient, as the eager
    step does, not torch.func's exact one."""
    fd = FiniteDifference(scheme="forward", eps=1e-3)
    eager = descend(rosenbrock6, fd, lambda p: ManualDescent(p, 1e-4), steps=20)
    exact = descend(rosenbrock6, Autograd(), lambda p: ManualDescent(p, 1e-4), steps=20)
    fused = descend(rosenbrock6, fd, None, steps=20, fused_lr=1e-4)
    assert np.abs(eager.grad - exact.grad).max() > 1e-2  # the two gradients are told apart
    assert np.abs(fused.grad - eager.grad).max() < 1e-9
    assert np.abs(fused.x - eager.x).max() < 1e-12


def test_the_fused_step_freezes_rows_and_records_samples_of_the_moving_variables_as_the_eager_path():
    """Rosenbrock in d = 12 moving x1 … x6 (wrt), recording 4 of the 12 coordinates and 4 of the 6
    gradient entries; row 0 stops at its own step 5 and is frozen while row 1 goes on to 40."""
    p = problem("rosenbrock", dim=12, wrt=[f"x{i}" for i in range(1, 7)])
    starts = p.x0.reshape(1, -1).repeat(2, 1) + torch.tensor([[0.0], [0.1]], dtype=F64)
    reports = {"eager": [], "fused": []}
    run = dict(steps=40, x0=starts, max_coords=4, row_steps=torch.tensor([5, 40]))
    eager = descend(p, Autograd(), lambda q: ManualDescent(q, 1e-4), **run, progress=lambda k, v: reports["eager"].append((k, v)))
    fused = descend(p, Autograd(), None, fused_lr=1e-4, **run, progress=lambda k, v: reports["fused"].append((k, v)))
    # progress reports row 0's loss: at step 40 still its loss at x_31, where it was frozen.
    assert [k for k, _ in reports["fused"]] == [31, 40] and reports["fused"][1][1] == reports["fused"][0][1]
    assert np.allclose(reports["fused"], reports["eager"], rtol=1e-12, atol=0)
    assert fused.final_step.tolist() == eager.final_step.tolist() == [5, 40]
    assert fused.x.shape == eager.x.shape == (41, 2, 4) and fused.grad.shape == eager.grad.shape == (41, 2, 4)
    for key in ("x", "loss", "grad_norm", "grad", "x_final"):
        assert np.array_equal(np.isnan(getattr(fused, key)), np.isnan(getattr(eager, key))), key
        assert np.nanmax(np.abs(getattr(fused, key) - getattr(eager, key))) < 1e-10, key
    assert (fused.x_final[:, 6:] == starts[:, 6:].numpy()).all()  # the variables outside wrt never move


def test_a_compiled_gradient_under_adam_follows_the_eager_path(rosenbrock6):
    eager = descend(rosenbrock6, Autograd(), lambda p: torch.optim.Adam(p, lr=1e-2), steps=100)
    compiled = descend(rosenbrock6, CompiledAutograd(), lambda p: torch.optim.Adam(p, lr=1e-2), steps=100)
    assert np.abs(compiled.x - eager.x).max() < 1e-12


def test_compiled_finite_differences_follow_the_eager_path():
    p = problem("himmelblau")
    eager = descend(p, FiniteDifference(), lambda q: ManualDescent(q, 1e-3), steps=50)
    compiled = descend(p, CompiledBackend(FiniteDifference()), lambda q: ManualDescent(q, 1e-3), steps=50)
    assert np.abs(compiled.x - eager.x).max() < 1e-9  # within the differences' own accuracy


def test_metric_sampling_stride():
    assert log_stride(100, "auto") == 1 and log_stride(1000, "auto") == 1
    assert log_stride(1001, "auto") == 2 and log_stride(20000, "auto") == 20
    assert log_stride(100, 7) == 7
    assert sampled_steps(10, 3).tolist() == [0, 3, 6, 9, 10]  # the final step is always there
    assert sampled_steps(9, 3).tolist() == [0, 3, 6, 9]


def test_every_step_reaches_the_window_sink_once_and_equals_the_trajectory():
    """The loop hands out each window after its stopping test; the windows are the whole record."""
    f = problem("f")
    windows = []
    traj = descend(f, Autograd(), lambda p: ManualDescent(p, 0.01), steps=5000,
                   on_window=lambda lo, rec, finals: windows.append((lo, rec, finals.copy())))
    assert [lo for lo, _, _ in windows] == list(range(0, 5001, 32))
    for lo, rec, finals in windows:
        hi = lo + len(rec["loss"])
        assert np.array_equal(rec["loss"], traj.loss[lo:hi]) and np.array_equal(rec["x"], traj.x[lo:hi])
        assert np.array_equal(rec["grad"], traj.grad[lo:hi]) and np.array_equal(rec["grad_norm"], traj.grad_norm[lo:hi])
        assert finals.tolist() == ([5000] if hi == 5001 else [-1])  # the final step, once known


def test_a_sampled_trajectory_keeps_the_metric_samples_of_the_full_one():
    f = problem("f")
    stride = log_stride(5000, "auto")
    full = descend(f, Autograd(), lambda p: ManualDescent(p, 0.01), steps=5000)
    sampled = descend(f, Autograd(), lambda p: ManualDescent(p, 0.01), steps=5000, record_every=stride)
    assert sampled.steps.tolist() == list(range(0, 5001, stride))
    whole, kept = metric_series(full, 0, ["x"], ["x"], stride), metric_series(sampled, 0, ["x"], ["x"], stride)
    for key, (steps, values) in whole.items():
        assert np.array_equal(kept[key][0], steps) and np.array_equal(kept[key][1], values), key


def test_a_stop_inside_a_window_is_known_to_the_sink_and_the_rows_after_it_are_not_the_runs():
    f = problem("f")
    windows = []
    traj = descend(f, Autograd(), lambda p: ManualDescent(p, 1.0), steps=5000,  # diverges near step 450
                   on_window=lambda lo, rec, finals: windows.append((lo, len(rec["loss"]), finals.copy())))
    assert traj.outcome == ["diverged"]
    final = int(traj.final_step[0])
    lo, count, finals = windows[-1]
    assert lo <= final < lo + count and finals.tolist() == [final]
    own, sampled = window_rows(lo, count, final, 7)
    assert (lo + own).tolist() == list(range(lo, final + 1))
    assert (lo + sampled).tolist() == [s for s in range(lo, final + 1) if s % 7 == 0 or s == final]


@pytest.mark.slow
def test_a_long_run_streams_its_metrics_and_records_them_all(workdir, client):
    result = run_cli("objective=g", "lr=0.001", "steps=5000", cwd=workdir)
    assert result.returncode == 0, result.stderr
    (run,) = runs_of(client)
    assert run.data.tags["log_every"] == "5"
    for key in ("loss", "grad_norm", "x/x1", "x/x2", "grad/x1", "grad/x2"):
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == list(range(0, 5001, 5)), key


@pytest.mark.slow
def test_sampled_and_full_logging_record_the_same_trajectory(workdir, client):
    common = ["objective=f", "lr=0.01", "steps=2500", "tracking.artifacts=true"]
    auto = run_cli(*common, "tracking.run_name=auto", cwd=workdir)
    full = run_cli(*common, "tracking.run_name=full", "tracking.log_every=1", cwd=workdir)
    assert auto.returncode == 0 and full.returncode == 0, auto.stderr + full.stderr
    runs = {r.info.run_name: r for r in runs_of(client)}
    histories = {
        name: {m.step: m.value for m in client.get_metric_history(runs[name].info.run_id, "x/x")} for name in runs
    }
    assert sorted(histories["full"]) == list(range(2501))
    assert sorted(histories["auto"]) == list(range(0, 2501, 3)) + [2500]  # ~1000 points, and the end
    assert runs["auto"].data.tags["log_every"] == "3" and runs["full"].data.tags["log_every"] == "1"
    for step, value in histories["auto"].items():
        assert value == histories["full"][step]
    tables = []
    for name in ("auto", "full"):
        folder = client.download_artifacts(runs[name].info.run_id, "", str(workdir / name))
        tables.append(open(f"{folder}/trajectory.csv").read())
    assert tables[0] == tables[1]  # the trajectory artifact keeps every step either way
    assert len(list(csv.reader(io.StringIO(tables[0])))) == 2502


PEAK_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from conftest import make_problem
from runner.descent.backends import Autograd
from runner.descent.loop import descend
from runner.descent.optimizers import ManualDescent

def status(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(key))

descend(make_problem("rosenbrock", dtype=torch.float32, dim=4), Autograd(), lambda q: ManualDescent(q, 1e-4), steps=3)
before = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # the high-water mark VmHWM starts again from the resident memory now
descend(make_problem("rosenbrock", dtype=torch.float32, dim={d}), Autograd(), lambda q: ManualDescent(q, 1e-4), steps=3)
print(status("VmHWM:") - before)
"""


def test_the_memory_estimate_covers_the_measured_peak_of_a_real_descent():
    """Rosenbrock, d = 10⁷ in float32 (40 MB per copy of x), built and descended 3 steps by eager
    autograd in a fresh process: the peak of its resident memory above what it held before (the
    kernel's high-water mark) is within the estimate, and the estimate within 3× of it (the estimate takes 32 copies of x, what
    smaller dimensions measured through the whole CLI; this descent alone peaks near 13)."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux's /proc/self/clear_refs to measure a peak")
    d = 10**7
    code = PEAK_SCRIPT.format(tests=str(REPO / "tests"), d=d)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    peak = int(done.stdout.split()[-1])
    estimate = estimate_bytes(d, d, 1, torch.float32, "autograd", False, False, 3, 2)
    assert peak <= estimate <= 3 * peak, (peak, estimate)


def test_memory_estimate_and_refusal():
    # 10⁸ float32 numbers, eager autograd: ~32 copies of 400 MB.
    assert estimate_bytes(10**8, 10**8, 1, torch.float32, "autograd", False, False, 0, 0) == 32 * 4 * 10**8 + 8
    assert estimate_bytes(10**8, 10**8, 1, torch.float32, "autograd", True, False, 0, 0) < 4 * 10**9
    with pytest.raises(UserError) as err:
        check_fits(3 * 10**10, 3 * 10**10, 1, torch.float32, CPU, "autograd", False, False, 10, 128)
    message = str(err.value)
    assert message.startswith("objective.dim=30000000000: this run needs about 3840.0 GB on cpu (eager autograd, 32-bit)")
    assert "backend.compile=true" in message and "backend.dtype=float32" not in message
    check_fits(1000, 1000, 1, torch.float64, CPU, "autograd", False, False, 100, 128)  # fits: no error


def test_progress_bar_only_on_request_or_on_a_terminal(capsys):
    assert make_progress("auto", 10**6, "run") is None  # pytest's stderr is not a terminal
    assert make_progress(False, 10**6, "run") is None
    update = make_progress(True, 100, "f-manual-lr0.1", mininterval=0)
    for k in range(0, 101, 10):
        update(k, -1.25)
    err = capsys.readouterr().err
    assert "f-manual-lr0.1" in err and "loss=-1.25" in err


def test_trajectory_rows_are_the_bytes_numpy_savetxt_writes():
    """records.write_csv_rows formats a window in one go; numpy's savetxt, row by row, is the reference."""
    from runner.tracking.records import write_csv_rows

    rows = np.array([[0, 1.0, 0.1, -0.0, 1e-310], [1, np.nan, np.inf, -np.inf, 1 / 3], [123456789, 2.5e300, -7.0, 5e-324, 0.0]])
    mine, reference = io.StringIO(), io.StringIO()
    write_csv_rows(mine, rows)
    np.savetxt(reference, rows, delimiter=",", fmt=["%d"] + ["%.17g"] * 4)
    assert mine.getvalue() == reference.getvalue()
    assert mine.getvalue().splitlines()[1] == "1,nan,inf,-inf,0.33333333333333331"
