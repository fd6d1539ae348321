"""Tests for runner.tracking.plots: exact bounds, grid layout, scale choices, plotted data, PNG output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runner.tracking import plots

ROOT = Path(__file__).resolve().parents[1]


def rosen(p: np.ndarray) -> np.ndarray:
    return 100 * (p[:, 1] - p[:, 0] ** 2) ** 2 + (1 - p[:, 0]) ** 2


def quad(p: np.ndarray) -> np.ndarray:
    return p[:, 0] ** 2 + 3 * p[:, 1] ** 2


# ---------------------------------------------------------------- contour_bounds / grid_points


def test_contour_bounds_exact_with_margin_and_minima():
    path = np.array([[0.0, 0.0], [4.0, 2.0], [2.0, 8.0]])
    # x span [0, 4] -> pad 1.0; y span with minimum at y=-2: [-2, 8] -> pad 2.5
    assert plots.contour_bounds([path], minima=[[1.0, -2.0]]) == (-1.0, 5.0, -4.5, 10.5)


def test_contour_bounds_ignores_nonfinite_rows_across_paths():
    a = np.array([[0.0, 0.0], [np.nan, 1.0], [4.0, 4.0], [np.inf, -np.inf]])
    b = np.array([[-4.0, 2.0], [1e308 * 10, 0.0]])  # overflow -> inf, ignored
    assert plots.contour_bounds([a, b]) == (-6.0, 6.0, -1.0, 5.0)


def test_contour_bounds_minimum_box_for_static_path():
    path = np.array([[1.0, -2.0]] * 5)
    assert plots.contour_bounds([path]) == (0.5, 1.5, -2.5, -1.5)
    # small span: 0.25 * 0.4 = 0.1 < 0.5, so the absolute floor wins
    assert plots.contour_bounds([np.array([[0.0, 0.0], [0.4, 0.0]])]) == (-0.5, 0.9, -0.5, 0.5)


def test_contour_bounds_nothing_finite():
    assert plots.contour_bounds([np.full((3, 2), np.nan)]) == (-1.0, 1.0, -1.0, 1.0)
    assert plots.contour_bounds([], minima=[[3.0, 3.0]]) == (2.5, 3.5, 2.5, 3.5)


def test_grid_points_shapes_corners_and_order():
    X, Y, pts = plots.grid_points((-2.0, 2.0, -1.0, 3.0), n=5)
    assert X.shape == Y.shape == (5, 5) and pts.shape == (25, 2)
    assert (X[0, 0], Y[0, 0]) == (-2.0, -1.0)
    assert (X[-1, -1], Y[-1, -1]) == (2.0, 3.0)
    assert (X[0, -1], Y[0, -1]) == (2.0, -1.0)  # 'xy' indexing: x varies along columns
    np.testing.assert_array_equal(X[0], [-2.0, -1.0, 0.0, 1.0, 2.0])
    # evaluating on pts and reshaping gives Z[i, j] = f(X[i, j], Y[i, j])
    Z = rosen(pts).reshape(5, 5)
    np.testing.assert_allclose(Z, 100 * (Y - X**2) ** 2 + (1 - X) ** 2)


# ---------------------------------------------------------------- loss figures


def test_loss_figure_log_for_decaying_positive_curve():
    steps = np.arange(1000)
    loss = 24.2 * np.exp(-steps / 50.0) + 1e-9  # Rosenbrock-like: 24 -> ~1e-9
    loss[500] = np.nan
    loss[600] = np.inf
    fig = plots.loss_figure(steps, loss, "rosenbrock")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "step" and ax.get_ylabel() == "loss"
    assert ax.get_title() == "rosenbrock"
    (line,) = ax.lines
    x, y = line.get_data()
    assert len(x) == 998 and np.isfinite(y).all()  # nan and inf points dropped
    assert tuple(fig.get_size_inches()) == pytest.approx((6.4, 4.8))


def test_loss_figure_linear_for_small_span_crossing_zero():
    steps = np.arange(1000)
    loss = np.linspace(1.0, -1.0, 1000)  # finely sampled through 0, magnitudes within ~1 decade
    assert plots.loss_figure(steps, loss, "t").axes[0].get_yscale() == "linear"
    # positive but less than 2 decades is linear too
    pos = np.linspace(5.0, 0.1, 100)
    assert plots.loss_figure(np.arange(100), pos, "t").axes[0].get_yscale() == "linear"


def test_loss_figure_symlog_for_sign_change_over_decades():
    steps = np.arange(300)
    loss = 1e4 * np.exp(-steps / 10.0) - 78.3  # e.g. Styblinski-Tang: 1e4 down to a negative min
    ax = plots.loss_figure(steps, loss, "t").axes[0]
    assert ax.get_yscale() == "symlog"


def test_overlay_loss_figure_one_line_per_curve_and_shared_scale():
    steps = np.arange(200)
    curves = {
        "lr=0.1": (steps, 10 * np.exp(-steps / 5.0) + 1e-8),
        "lr=0.01": (steps, 10 * np.exp(-steps / 50.0) + 1e-3),
        "lr=1.0": (steps, np.full(200, np.nan)),  # diverged: empty line, still in the legend
    }
    ax = plots.overlay_loss_figure(curves, "sweep").axes[0]
    assert [ln.get_label() for ln in ax.lines] == list(curves)
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(curves)
    np.testing.assert_array_equal(ax.lines[1].get_ydata(), curves["lr=0.01"][1])


def test_overlay_loss_figure_many_curves_legend_outside():
    steps = np.arange(10)
    curves = {f"run{i}": (steps, np.linspace(1, 2, 10) + i) for i in range(12)}
    ax = plots.overlay_loss_figure(curves, "many").axes[0]
    assert len(ax.lines) == 12 and ax.get_yscale() == "linear"
    legend = ax.get_legend()
    assert legend.get_bbox_to_anchor().bounds[0] > ax.bbox.bounds[0] + ax.bbox.bounds[2] - 1


# ---------------------------------------------------------------- contour + path figures


def _grid(fn, paths, minima):
    X, Y, pts = plots.grid_points(plots.contour_bounds(paths, minima), n=60)
    return X, Y, fn(pts).reshape(X.shape)


def test_path_figure_labels_line_data_and_limits():
    path = np.column_stack([np.linspace(-1.2, 1.0, 40), np.linspace(1.0, 1.0, 40)])
    X, Y, Z = _grid(rosen, [path], [[1.0, 1.0]])
    fig = plots.path_figure(X, Y, Z, path, ["x1", "x2"], "rosen path", minima=[[1.0, 1.0]])
    ax = fig.axes[0]
    assert ax.get_xlabel() == "x1" and ax.get_ylabel() == "x2"
    assert ax.get_title() == "rosen path"
    (line,) = ax.lines
    np.testing.assert_array_equal(np.column_stack(line.get_data()), path)
    assert line.get_marker() == "o"
    texts = {t.get_text() for t in ax.texts}
    assert {"start", "end"} <= texts
    assert ax.get_xlim() == (X.min(), X.max()) and ax.get_ylim() == (Y.min(), Y.max())
    stars = [c for c in ax.collections if c.get_label() == "known minimum"]
    assert len(stars) == 1 and np.allclose(stars[0].get_offsets(), [[1.0, 1.0]])
    assert len(fig.axes) == 2  # the colorbar


def test_path_figure_log_levels_for_rosenbrock_linear_for_quadratic():
    path = np.array([[-1.2, 1.0], [1.0, 1.0]])
    X, Y, Z = _grid(rosen, [path], [[1.0, 1.0]])
    from matplotlib.colors import LogNorm

    def filled(fig):
        (cs,) = [c for c in fig.axes[0].collections if getattr(c, "filled", False)]
        return cs

    fig = plots.path_figure(X, Y, Z, path, ["x1", "x2"], "r")
    assert isinstance(filled(fig).norm, LogNorm)
    assert fig.axes[1].get_yscale() == "log" and "log" in fig.axes[1].get_ylabel()
    levels = filled(fig).levels
    np.testing.assert_allclose(levels[1:] / levels[:-1], levels[1] / levels[0])  # geometric
    assert levels[-1] / levels[0] > 1e3
    X, Y, Z = _grid(quad, [path], [[0.0, 0.0]])
    fig = plots.path_figure(X, Y, Z, path, ["x", "y"], "q")
    assert not isinstance(filled(fig).norm, LogNorm)
    assert fig.axes[1].get_yscale() != "log" and fig.axes[1].get_ylabel() == "f"


def test_path_figure_drops_nonfinite_rows_and_survives_bad_z():
    path = np.array([[0.0, 0.0], [0.5, 0.5], [np.nan, np.nan], [np.inf, 1.0]])
    X, Y, Z = _grid(quad, [path], ())
    Z[0, :] = np.inf
    Z[1, :] = np.nan
    ax = plots.path_figure(X, Y, Z, path, ["a", "b"], "t").axes[0]
    np.testing.assert_array_equal(np.column_stack(ax.lines[0].get_data()), path[:2])
    # constant Z: no contour, but the path is still drawn
    ax = plots.path_figure(X, Y, np.ones_like(X), path, ["a", "b"], "t").axes[0]
    assert len(ax.lines) == 1


def test_overlay_paths_figure_one_coloured_line_per_path():
    t = np.linspace(0, 1, 30)[:, None]
    paths = {"sgd": np.hstack([2 - 2 * t, 1 - t]), "adam": np.hstack([-2 + 2 * t, 1 - t]),
             "lbfgs": np.hstack([0 * t, -1 + t])}
    X, Y, Z = _grid(quad, list(paths.values()), [[0.0, 0.0]])
    fig = plots.overlay_paths_figure(X, Y, Z, paths, ["x", "y"], "paths", minima=[[0.0, 0.0]])
    ax = fig.axes[0]
    assert [ln.get_label() for ln in ax.lines] == ["sgd", "adam", "lbfgs"]
    for ln, p in zip(ax.lines, paths.values()):
        np.testing.assert_array_equal(np.column_stack(ln.get_data()), p)
    assert len({ln.get_color() for ln in ax.lines}) == 3
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["sgd", "adam", "lbfgs", "known minimum"]
    assert ax.get_xlabel() == "x" and ax.get_ylabel() == "y"


# ---------------------------------------------------------------- final loss


def test_final_loss_figure_numeric_lr_log_x_sorted():
    lrs = [1e-1, 1e-4, 1e-2, 1e-3]
    final = [1e-9, 3.0, 1e-4, 0.5]
    ax = plots.final_loss_figure(lrs, final, "lr", "final vs lr").axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_xlabel() == "lr" and ax.get_ylabel() == "final loss"
    x, y = ax.lines[0].get_data()
    np.testing.assert_array_equal(x, [1e-4, 1e-3, 1e-2, 1e-1])
    np.testing.assert_array_equal(y, [3.0, 0.5, 1e-4, 1e-9])


def test_final_loss_figure_numeric_strings_linear_and_diverged_marked():
    # MLflow params come back as strings; < 1 decade of x stays linear
    ax = plots.final_loss_figure(["0.5", "0.9", "0.7"], [1.0, float("inf"), 2.0], "momentum", "t").axes[0]
    assert ax.get_xscale() == "linear" and ax.get_yscale() == "linear"
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), [0.5, 0.7])
    crosses = [c for c in ax.collections if c.get_label() == "diverged (non-finite)"]
    assert len(crosses) == 1 and crosses[0].get_offsets()[0][0] == 0.9
    assert ax.get_xlim()[1] >= 0.9


def test_final_loss_figure_strings_are_categories():
    names = ["sgd", "adam", "lbfgs", "adam"]
    ax = plots.final_loss_figure(names, [0.3, 1e-3, 1e-10, 2e-3], "optimizer", "t").axes[0]
    assert ax.get_xscale() == "linear"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["sgd", "adam", "lbfgs"]
    np.testing.assert_array_equal(ax.get_xticks(), [0, 1, 2])
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), [0, 1, 2, 1])
    assert ax.get_yscale() == "log"
    # bools are categories, not 0/1
    ax = plots.final_loss_figure([True, False], [1.0, 2.0], "nesterov", "t").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["True", "False"]


# ---------------------------------------------------------------- output and import cost


def test_save_figure_writes_png_creating_dirs(tmp_path):
    fig = plots.loss_figure(np.arange(10), np.arange(10.0), "t")
    out = tmp_path / "a" / "b" / "loss.png"
    plots.save_figure(fig, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_import_is_light():
    code = "import runner.tracking.plots, sys; print('matplotlib' in sys.modules, 'torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert res.stdout.split() == ["False", "False"]


def test_building_figures_never_loads_pyplot_or_torch(tmp_path):
    code = (
        "import sys, numpy as np; from runner.tracking import plots; "
        "plots.save_figure(plots.loss_figure(np.arange(5), np.arange(5.0), 't'), sys.argv[1]); "
        "print('matplotlib.pyplot' in sys.modules, 'torch' in sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.png")], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    assert res.stdout.split() == ["False", "False"]
