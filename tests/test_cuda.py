"""The GPU path (run by benchmarks/cuda_check.sh on a machine with CUDA; skipped without one)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_problem

from runner.descent.backends import Autograd, resolve_device
from runner.descent.loop import descend
from runner.descent.optimizers import ManualDescent

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]


def on(device: str, name: str, **overrides):
    p = make_problem(name, **overrides)
    p.x0, p.wrt = p.x0.to(device), p.wrt.to(device)
    return p


def test_auto_device_picks_cuda_for_large_problems():
    assert resolve_device("auto", 2**20).type == "cuda"
    assert resolve_device("auto", 2).type == "cpu"


def test_a_cuda_descent_matches_the_cpu_one():
    cpu = descend(on("cpu", "rosenbrock", dim=64), Autograd(), lambda p: ManualDescent(p, 1e-4), steps=300)
    gpu = descend(on("cuda", "rosenbrock", dim=64), Autograd(), lambda p: ManualDescent(p, 1e-4), steps=300)
    assert gpu.outcome == cpu.outcome and gpu.final_step.tolist() == cpu.final_step.tolist()
    assert np.abs(gpu.x - cpu.x).max() < 1e-10


def test_the_fused_compiled_step_on_cuda_matches_eager():
    problem = on("cuda", "rosenbrock", dim=4096)
    eager = descend(problem, Autograd(), lambda p: ManualDescent(p, 1e-4), steps=200)
    fused = descend(problem, Autograd(), None, steps=200, fused_lr=1e-4)
    assert np.abs(fused.x - eager.x).max() < 1e-10
    assert np.abs(fused.loss - eager.loss).max() / abs(eager.loss).max() < 1e-12


def test_divergence_found_in_chunks_on_cuda():
    problem = on("cuda", "f")
    starts = torch.tensor([[0.0], [3.0], [1e300]], dtype=torch.float64, device="cuda")
    traj = descend(problem, Autograd(), lambda p: ManualDescent(p, 0.1), steps=300, tol=1e-9, x0=starts)
    assert traj.outcome == ["converged", "converged", "diverged"]
    assert traj.final_step[2] == 0
