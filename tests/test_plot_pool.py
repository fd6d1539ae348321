"""The figure pool (runner.tracking.plot_pool): figures drawn by the forked helper are the figures drawn here."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from runner.tracking import plot_pool, plots

PNG = b"\x89PNG\r\n\x1a\n"


def loss_job(k: int) -> list:
    steps = np.arange(50)
    return [("plots/loss.png", "runner.tracking.plots:loss_figure", (steps, np.exp(-steps / (k + 5.0)), f"run {k}: loss"))]


def path_job() -> list:
    path = np.array([[-1.0, 2.0], [-0.5, 1.0], [0.0, 0.5], [0.4, 0.1]])
    bounds = plots.contour_bounds([path], [[0.0, 0.0]])
    _, _, points = plots.grid_points(bounds, 40)
    Z = (points**2).sum(axis=1).reshape(40, 40)
    return [
        ("plots/loss.png", "runner.tracking.plots:loss_figure", (np.arange(4), (path**2).sum(axis=1), "r: loss")),
        ("plots/path.png", "runner.tracking.plots:path_figure_on_grid", (bounds, Z, path, ["x", "y"], "r: path", [[0.0, 0.0]])),
    ]


@pytest.fixture
def pool():
    pool = plot_pool.PlotPool(helper=True)
    yield pool
    pool.close()


def test_the_helper_and_this_process_draw_the_same_pngs(pool):
    jobs = [(k, loss_job(k)) for k in range(6)] + [("path", path_job())]
    drawn = pool.draw_all(jobs)
    assert set(drawn) == {key for key, _ in jobs}
    for key, figures in jobs:
        here, error = plot_pool.draw_job(figures)
        files, pool_error = drawn[key]
        assert error is None and pool_error is None
        assert set(files) == {name for name, _, _ in figures}
        for name in files:
            assert files[name][:8] == PNG
            assert files[name] == here[name], (key, name)  # Agg output is deterministic


def who_draws(tag: str):
    """A figure job that names the process drawing it (through the error it reports)."""
    raise RuntimeError(f"{tag} drawn by pid {os.getpid()}")


def test_the_first_job_goes_to_the_forked_helper(pool):
    """The pool has a second process to share the work with: a live child of this one, which draws
    the first job submitted (the helper is idle then) while this process draws the next ones."""
    assert pool.pid != os.getpid() and os.waitpid(pool.pid, os.WNOHANG) == (0, 0)  # a live child
    jobs = [(k, [(f"plots/{k}.png", f"{__name__}:who_draws", (f"job {k}",))]) for k in range(4)]
    drawn = pool.draw_all(jobs)
    pids = {k: int(error.rsplit(" ", 1)[1]) for k, (files, error) in drawn.items()}
    assert pids[0] == pool.pid
    assert set(pids.values()) <= {pool.pid, os.getpid()}


def test_a_failing_figure_is_reported_and_the_others_are_kept(pool):
    figures = path_job() + [("plots/bad.png", "runner.tracking.plots:loss_figure", ("not", "enough"))]
    files, error = pool.draw_all([("run", figures)])["run"]
    assert set(files) == {"plots/loss.png", "plots/path.png"}
    assert error.startswith("figure plots/bad.png failed: TypeError")


def test_when_the_helper_dies_this_process_draws_everything(pool):
    os.kill(pool.pid, signal.SIGKILL)
    os.waitpid(pool.pid, 0)
    pool.pid = 0
    drawn = pool.draw_all([(k, loss_job(k)) for k in range(4)])
    assert sorted(drawn) == [0, 1, 2, 3]
    assert all(files["plots/loss.png"][:8] == PNG and error is None for files, error in drawn.values())
    assert pool._jobs is None and not pool.busy()


def test_results_of_other_owners_wait_in_done(pool):
    pool.submit("run-a", loss_job(1))
    drawn = pool.draw_all([("summary", loss_job(2))])
    assert list(drawn) == ["summary"]
    while pool.busy():
        pool.step()
    assert [key for key, _, _ in pool.done] == ["run-a"]


def test_the_helper_exits_when_the_pool_closes():
    pool = plot_pool.PlotPool(helper=True)
    pid = pool.pid
    pool.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_without_a_pool_figures_are_drawn_here():
    assert plot_pool.current() is None  # only the writer process starts one
    drawn = plot_pool.draw_all([("a", loss_job(0))])
    assert drawn["a"][0]["plots/loss.png"][:8] == PNG
