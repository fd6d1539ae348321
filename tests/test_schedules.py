"""Learning-rate schedules: torch's own sequences, applied alike to the hand-written update and to
torch.optim, recorded as the metric ``lr``, refused when they make no sense."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_problem, run_cli, runs_of
from omegaconf import OmegaConf

from runner.descent.backends import Autograd
from runner.descent.loop import descend
from runner.descent.optimizers import ManualDescent
from runner.descent.schedules import LrSchedule, schedule_factory

STEPS = 100
LR = 0.1


def schedule_cfg(choice: str, **overrides):
    """The composed ``schedule`` node of a choice (the YAML in conf/schedule/, steps = STEPS)."""
    from conftest import REPO

    node = OmegaConf.load(REPO / "conf" / "schedule" / f"{choice}.yaml")
    root = OmegaConf.create({"steps": STEPS, "schedule": node})
    root.schedule.update(overrides)
    return root.schedule


def torch_sequence(make_scheduler) -> list[float]:
    """The lr torch's own scheduler gives a real SGD at steps 0 … STEPS."""
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=LR)
    scheduler = make_scheduler(opt)
    seen = []
    for _ in range(STEPS + 1):
        seen.append(opt.param_groups[0]["lr"])
        p.grad = torch.zeros(1)
        opt.step()
        scheduler.step()
    return seen


def our_sequence(cfg) -> list[float]:
    """The lr our schedule sets on the hand-written update at steps 0 … STEPS."""
    manual = ManualDescent([torch.zeros(1)], LR)
    lr_at = LrSchedule(cfg, manual)
    return [lr_at(k) for k in range(STEPS + 1)]


S = torch.optim.lr_scheduler
CASES = {
    "step": (schedule_cfg("step"), lambda o: S.StepLR(o, step_size=30, gamma=0.1)),
    "exponential": (schedule_cfg("exponential"), lambda o: S.ExponentialLR(o, gamma=0.99)),
    "cosine": (schedule_cfg("cosine"), lambda o: S.CosineAnnealingLR(o, T_max=STEPS, eta_min=0.0)),
    "warmup_cosine": (
        schedule_cfg("warmup_cosine"),
        lambda o: S.SequentialLR(o, [S.LinearLR(o, 0.1, 1.0, total_iters=10), S.CosineAnnealingLR(o, T_max=90)], milestones=[10]),
    ),
    "multistep by _target_": (
        schedule_cfg("torch_scheduler", _target_="torch.optim.lr_scheduler.MultiStepLR", milestones=[20, 60], gamma=0.5),
        lambda o: S.MultiStepLR(o, milestones=[20, 60], gamma=0.5),
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_each_schedule_gives_torchs_own_sequence(name):
    cfg, make = CASES[name]
    ours, theirs = our_sequence(cfg), torch_sequence(make)
    assert len(ours) == STEPS + 1
    assert np.allclose(ours, theirs, rtol=1e-12, atol=0)


def test_the_sequences_have_their_closed_forms():
    """Independent of torch: the formulas the README states."""
    cosine = our_sequence(schedule_cfg("cosine"))
    assert max(abs(lr - LR * 0.5 * (1 + math.cos(math.pi * k / STEPS))) for k, lr in enumerate(cosine)) < 1e-12
    step = our_sequence(schedule_cfg("step"))
    assert step == pytest.approx([LR * 0.1 ** (k // 30) for k in range(STEPS + 1)], rel=1e-12)
    exponential = our_sequence(schedule_cfg("exponential"))
    assert exponential == pytest.approx([LR * 0.99**k for k in range(STEPS + 1)], rel=1e-12)
    warm = our_sequence(schedule_cfg("warmup_cosine"))
    assert warm[0] == pytest.approx(0.1 * LR) and warm[10] == pytest.approx(LR)
    assert warm[5] == pytest.approx(LR * (0.1 + 0.9 * 5 / 10))
    assert warm[55] == pytest.approx(LR * 0.5 * (1 + math.cos(math.pi * 45 / 90)))


def test_manual_descent_under_cosine_equals_torch_sgd_under_cosine_bit_for_bit():
    problem = make_problem("rosenbrock")
    cfg = schedule_cfg("cosine")
    manual = descend(problem, Autograd(), lambda p: ManualDescent(p, 1e-3), steps=STEPS, schedule=schedule_factory(cfg))
    sgd = descend(problem, Autograd(), lambda p: torch.optim.SGD(p, lr=1e-3), steps=STEPS, schedule=schedule_factory(cfg))
    assert np.array_equal(manual.x, sgd.x) and np.array_equal(manual.loss, sgd.loss)
    assert np.array_equal(manual.lr, sgd.lr)
    assert manual.lr[0] == 1e-3 and manual.lr[-1] == 0.0  # cos(π) = -1 at k = T_max


def test_a_schedule_changes_the_path_of_adam_as_torch_does():
    problem = make_problem("rosenbrock")
    cfg = schedule_cfg("step", step_size=10, gamma=0.5)
    ours = descend(problem, Autograd(), lambda p: torch.optim.Adam(p, lr=0.01), steps=40, schedule=schedule_factory(cfg))
    x = problem.x0.reshape(1, -1).clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)
    for k in range(40):
        assert np.array_equal(ours.x[k, 0], x.detach().numpy()[0]), k
        opt.zero_grad()
        problem.fn(x).sum().backward()
        opt.step()
        scheduler.step()
    assert ours.lr[:40].tolist() == [0.01 * 0.5 ** (k // 10) for k in range(40)]


@pytest.mark.slow
def test_the_lr_metric_is_recorded_and_the_schedule_is_in_the_run_name(workdir, client):
    done = run_cli("objective=f", "optimizer=sgd", "schedule=cosine", "steps=20", "tracking.artifacts=false", cwd=workdir)
    assert done.returncode == 0, done.stderr
    (run,) = runs_of(client)
    assert run.info.run_name == "f-sgd-lr0.1-cosine"
    assert run.data.params["schedule.name"] == "cosine" and run.data.params["schedule.T_max"] == "20"
    lr = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "lr"))
    assert [s for s, _ in lr] == list(range(21))
    assert max(abs(v - 0.1 * 0.5 * (1 + math.cos(math.pi * s / 20))) for s, v in lr) < 1e-12
    constant = run_cli("objective=f", "steps=5", "tracking.artifacts=false", cwd=workdir)
    assert constant.returncode == 0
    plain = next(r for r in runs_of(client) if r.info.run_name == "f-manual-lr0.1")
    assert client.get_metric_history(plain.info.run_id, "lr") == []  # constant: no lr metric


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, line",
    [
        (["schedule=step", "schedule.gamma=-0.5"], "error: schedule.gamma: -0.5 is not allowed; the decay factor must be a finite number > 0"),
        (["schedule=warmup_cosine", "steps=5"], "error: schedule.warmup_steps: 10 is not allowed; the warm-up must be shorter than the run (5 steps)"),
        (["schedule=step", "schedule.gama=0.5"], "error: schedule.gama: schedule 'step' has no setting 'gama' (did you mean 'gamma'?); it has: _target_, name, step_size, gamma"),
        (["schedule=cosine", "schedule.T_max=0"], "error: schedule.T_max: 0 is not allowed; use an integer ≥ 1"),
        (["schedule=torch_scheduler", "schedule._target_=torch.optim.lr_scheduler.Nope"], "error: schedule._target_: cannot import 'torch.optim.lr_scheduler.Nope'; use a torch.optim.lr_scheduler class"),
        (["schedule=torch_scheduler", "schedule._target_=torch.optim.lr_scheduler.StepLR", "+schedule.size=3"], "error: schedule: torch.optim.lr_scheduler.StepLR takes no argument size; it takes: step_size, gamma"),
    ],
)
def test_a_schedule_that_makes_no_sense_is_one_line(workdir, client, args, line):
    done = run_cli("objective=f", *args, cwd=workdir)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith(line), done.stderr
    experiment = client.get_experiment_by_name("runner")
    assert experiment is None or client.search_runs([experiment.experiment_id]) == []  # nothing recorded


@pytest.mark.slow
def test_schedules_sweep_like_any_key(workdir, client):
    done = run_cli("-m", "objective=f", "schedule=constant,cosine", "steps=10", "tracking.artifacts=false", cwd=workdir)
    assert done.returncode == 0, done.stderr
    names = sorted(r.info.run_name for r in runs_of(client) if "mlflow.parentRunId" in r.data.tags)
    assert names == ["f-manual-lr0.1", "f-manual-lr0.1-cosine"]
