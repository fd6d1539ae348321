"""Tests for runner.tracking.plots: exact bounds, grid layout, scale choices, plotted data, PNG output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runner.tracking import loss_axis, plots
from runner.tracking.loss_axis import LossView

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


# ---------------------------------------------------------------- descents with known numbers


def f_descent(lr: float, steps: int) -> np.ndarray:
    """f(x) = 3x² + 2x − 1 along x ← x − lr·(6x + 2) from 0, in float64; inf from the first overflow on
    (where the runner stops, as a diverged run)."""
    x, out = 0.0, []
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(steps + 1):
            value = 3 * x * x + 2 * x - 1
            out.append(value if np.isfinite(value) else np.inf)
            if not np.isfinite(value):
                break
            x -= lr * (6 * x + 2)
    return np.array(out)


def g_descent(lr: float, steps: int) -> np.ndarray:
    """g(x1, x2) = (x1 + 5)·x2² along plain gradient descent from (2, 3)."""
    x1, x2, out = 2.0, 3.0, []
    for _ in range(steps + 1):
        out.append((x1 + 5) * x2 * x2)
        x1, x2 = x1 - lr * x2 * x2, x2 - lr * 2 * (x1 + 5) * x2
    return np.array(out)


def number(text: str) -> float:
    """A tick label read back as a number (matplotlib writes minus as U+2212)."""
    return float(text.replace("\N{MINUS SIGN}", "-"))


def in_view(axis) -> list:
    """The major tick labels of an axis that are drawn (ticks inside the view)."""
    lo, hi = sorted(axis.get_view_interval())
    return [lab for t, lab in zip(axis.get_majorticklocs(), axis.get_majorticklabels()) if lo <= t <= hi]


def y_labels(ax) -> list[tuple[float, str]]:
    """(tick, label) of the y axis's major ticks inside the view, as drawn."""
    lo, hi = sorted(ax.get_ylim())
    return [(t, lab.get_text()) for t, lab in zip(ax.get_yticks(), ax.get_yticklabels()) if lo <= t <= hi]


def check_readable(fig) -> None:
    """Every axes' y tick labels carry their tick's value and sign, none twice, none overlapping; the
    axis labels, titles and tick labels lie inside the figure."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    inside = fig.bbox
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            assert_inside(ax.yaxis.label, renderer, inside)
            continue
        labels = y_labels(ax)
        assert len(labels) >= 2, labels
        texts = [text for _, text in labels]
        assert len(set(texts)) == len(texts), texts
        for tick, text in labels:
            assert number(text) == pytest.approx(tick, rel=1e-9), (tick, text)
        boxes = sorted((lab.get_window_extent(renderer) for lab in in_view(ax.yaxis) if lab.get_text()), key=lambda b: b.y0)
        for below, above in zip(boxes, boxes[1:]):
            assert below.y1 <= above.y0, "tick labels overlap"
        for text in [ax.yaxis.label, ax.xaxis.label, ax.title, *in_view(ax.yaxis), *in_view(ax.xaxis), *ax.texts]:
            assert_inside(text, renderer, inside)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    for i, a in enumerate(panels):  # one panel's labels never run into another's
        for b in panels[i + 1 :]:
            assert not a.get_tightbbox(renderer).overlaps(b.get_tightbbox(renderer))
    for ax in panels:  # every legend whole inside the figure, clear of the other panels and colour bars
        if ax.get_legend() is None:
            continue
        legend = ax.get_legend().get_window_extent(renderer)
        assert inside.x0 <= legend.x0 and legend.x1 <= inside.x1 and inside.y0 <= legend.y0 and legend.y1 <= inside.y1
        for other in fig.axes:
            if other is not ax:
                assert not legend.overlaps(other.get_tightbbox(renderer)), other.get_label()


def assert_inside(text, renderer, inside) -> None:
    if text.get_text():
        box = text.get_window_extent(renderer)
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1, text.get_text()


# ---------------------------------------------------------------- the loss axis


def test_loss_view_gap_floor_and_label():
    view = LossView(-4 / 3)
    loss = np.array([-1.0, -4 / 3, -1.3333333333333335, np.inf])
    drawn = view.values(loss)
    assert drawn[0] == pytest.approx(1 / 3) and drawn[1] == drawn[2] == view.floor and np.isinf(drawn[3])
    assert view.floor == 2 * np.finfo(float).eps * 4 / 3 and view.at_floor(loss)
    assert view.label() == "loss − min (min = −1.333333)"
    assert LossView(0.0).label("final loss") == "final loss (min = 0)"
    assert LossView(None).label() == "loss" and not LossView(None).at_floor(loss)
    np.testing.assert_array_equal(LossView(None).values(loss), loss)


def test_scale_choice():
    assert loss_axis.choose_scale(np.array([24.2, 1e-9])) == ("log", None)
    assert loss_axis.choose_scale(np.array([5.0, 0.1])) == ("linear", None)
    assert loss_axis.choose_scale(np.array([5.0, 4.0]), gap=True) == ("log", None)
    assert loss_axis.choose_scale(1e4 * np.exp(-np.arange(300) / 10.0) - 78.3) == ("symlog", 10.0)
    assert loss_axis.choose_scale(np.linspace(1.0, -1.0, 1000)) == ("linear", None)
    assert loss_axis.choose_scale(np.array([np.nan, np.inf])) == ("linear", None)


def test_log_and_symlog_ticks():
    assert loss_axis.log_ticks(1e-142, 63.0) == [10.0**e for e in range(-160, 3, 20)]
    assert loss_axis.log_ticks(0.3, 1.7e308)[-1] == 1e300  # no decade past float's range
    ticks, stride = loss_axis.symlog_ticks(-78.3, 1e4, 10.0)
    assert (ticks, stride) == ([-100.0, -10.0, 0.0, 10.0, 100.0, 1000.0, 10000.0], 1)
    ticks, stride = loss_axis.symlog_ticks(-1e6, 1e6, 1e-88)
    assert stride == 25 and 0.0 in ticks and len(ticks) <= loss_axis.MAX_LABELS + 2
    assert [loss_axis.signed_decade(t) for t in (-1e6, 0.0, 1e-5)] == ["−1e+06", "0", "1e−05"]


# ---------------------------------------------------------------- loss figures


def test_known_minimum_plots_the_gap_on_a_log_axis():
    """f's loss ends at −4/3: the figure is loss − min, down to rounding, with the floor line."""
    loss = f_descent(0.1, 100)
    fig = plots.loss_figure(np.arange(101), loss, "f-manual-lr0.1: loss", -4 / 3)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "loss − min (min = −1.333333)"
    (line,) = [ln for ln in ax.lines if ln.get_gid() is None]
    np.testing.assert_array_equal(line.get_ydata(), np.maximum(loss + 4 / 3, LossView(-4 / 3).floor))
    assert line.get_ydata()[0] == pytest.approx(1 / 3)
    (floor,) = [ln for ln in ax.lines if ln.get_gid() == "floor"]
    assert floor.get_ydata()[0] == LossView(-4 / 3).floor
    check_readable(fig)


def test_positive_loss_over_142_decades_is_readable():
    """g with lr = 0.1 falls from 63 to 1.4e-142: a log axis labelled every 20 decades, the y label
    (not clipped off the left edge) and every tick label inside the figure."""
    loss = g_descent(0.1, 100)
    assert loss[-1] == pytest.approx(1.411095e-142, rel=1e-6)
    fig = plots.loss_figure(np.arange(101), loss, "g-sgd-lr0.1: loss")
    (ax,) = fig.axes
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "loss"
    assert [text for _, text in y_labels(ax)] == [loss_axis.signed_decade(10.0**e) for e in range(-140, 1, 20)]
    check_readable(fig)


def test_diverged_run_shows_its_finite_part_and_where_it_diverged():
    """f with lr = 0.5 doubles |x| each step until the loss overflows at step 513."""
    loss = f_descent(0.5, 1000)
    assert len(loss) == 514 and np.isinf(loss[-1]) and np.isfinite(loss[:-1]).all()
    fig = plots.loss_figure(np.arange(514), loss, "f-manual-lr0.5: loss", -4 / 3)
    (ax,) = fig.axes
    (line,) = [ln for ln in ax.lines if ln.get_label() == "loss (diverged at step 513)"]
    assert len(line.get_xdata()) == 513 and line.get_xdata()[-1] == 512
    (marker,) = [ln for ln in ax.lines if ln.get_gid() == "diverged"]
    assert list(marker.get_xdata()) == [513, 513]
    assert [t.get_text() for t in ax.texts] == ["diverged at step 513\n(loss inf)"]
    lo, hi = ax.get_ylim()
    assert np.isfinite(hi) and hi <= 1e308 and lo < 1 and ax.get_xlim()[1] >= 513
    check_readable(fig)


def test_sign_changing_loss_gets_a_symlog_axis_with_signed_labels():
    steps = np.arange(300)
    loss = 1e4 * np.exp(-steps / 10.0) - 78.3  # no known minimum, from 1e4 down to −78.3
    fig = plots.loss_figure(steps, loss, "t")
    (ax,) = fig.axes
    assert ax.get_yscale() == "symlog"
    texts = [text for _, text in y_labels(ax)]
    assert "−1e+01" in texts and "0" in texts and "1e+04" in texts
    check_readable(fig)


def test_the_issue_sweep_symlog_case_has_no_crowded_or_unsigned_labels():
    """A loss spanning 1e-88 … 1e6 on both sides of 0 (what mixing f's and g's losses gave)."""
    loss = np.concatenate([np.geomspace(1e6, 1e-88, 60), -np.geomspace(1e-88, 1e6, 60)])
    fig = plots.loss_figure(np.arange(120), loss, "t")
    assert fig.axes[0].get_yscale() == "symlog"
    check_readable(fig)


def test_linear_for_small_spans():
    steps = np.arange(1000)
    assert plots.loss_figure(steps, np.linspace(1.0, -1.0, 1000), "t").axes[0].get_yscale() == "linear"
    assert plots.loss_figure(np.arange(100), np.linspace(5.0, 0.1, 100), "t").axes[0].get_yscale() == "linear"


def test_overlay_loss_figure_one_line_per_curve_and_shared_scale():
    steps = np.arange(200)
    curves = {
        "lr=0.1": (steps, 10 * np.exp(-steps / 5.0) + 1e-8),
        "lr=0.01": (steps, 10 * np.exp(-steps / 50.0) + 1e-3),
        "lr=1.0": (steps[:3], np.array([10.0, 1e200, np.inf])),  # diverged at step 2
    }
    ax = plots.overlay_loss_figure(curves, "sweep").axes[0]
    runs = [ln for ln in ax.lines if ln.get_gid() is None and not ln.get_label().startswith("_")]
    assert [ln.get_label() for ln in runs] == ["lr=0.1", "lr=0.01", "lr=1.0 (diverged at step 2)"]
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [ln.get_label() for ln in runs]
    np.testing.assert_array_equal(runs[1].get_ydata(), curves["lr=0.01"][1])
    (marker,) = [ln for ln in ax.lines if ln.get_gid() == "diverged"]
    assert marker.get_xdata()[0] == 2 and marker.get_color() == runs[2].get_color()


def test_overlay_loss_figure_many_curves_legend_outside():
    steps = np.arange(10)
    curves = {f"run{i}": (steps, np.linspace(1, 2, 10) + i) for i in range(12)}
    fig = plots.overlay_loss_figure(curves, "many")
    ax = fig.axes[0]
    assert len(ax.lines) == 12 and ax.get_yscale() == "linear"
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent(fig.canvas.get_renderer())
    assert legend.x0 >= ax.bbox.x1 and legend.x1 <= fig.bbox.x1  # beside the axes, inside the figure


def sweep_curves(n: int, prefix: str = "rosenbrock") -> dict:
    """``n`` runs' loss curves named as a sweep of optimizers and learning rates names its children."""
    steps = np.arange(2001.0)
    names = [f"{prefix}-{opt}-lr{lr}" for opt in ("sgd", "adam", "rmsprop", "adagrad", "adamw")
             for lr in (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)]
    return {name: (steps, 10 * np.exp(-steps * (i + 1) / 4000) + 1e-3) for i, name in enumerate(names[:n])}


def test_forty_runs_on_one_axes_each_in_the_legend_and_told_apart():
    """The most runs that still get a legend (``MANY_CURVES``): the legend stands beside the axes in
    columns of 20, the figure grows to hold it and the title, the plot keeps its size, and no two
    runs share both colour and line style."""
    curves = sweep_curves(plots.MANY_CURVES)
    fig = plots.overlay_loss_figure(curves, "multirun 2026-11-27/21-40-12 (40 jobs, rosenbrock): loss", 0.0)
    check_readable(fig)
    (ax,) = fig.axes
    renderer = fig.canvas.get_renderer()
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == list(curves)
    columns = {round(t.get_window_extent(renderer).x0) for t in legend.get_texts()}
    assert len(columns) == 2 and legend.get_window_extent(renderer).x0 >= ax.bbox.x1
    # the plot keeps (to a few pixels: the title's overhang moves as the axes widen) its minimum size
    assert ax.bbox.width >= 0.95 * plots.MIN_PANEL[0] * fig.dpi and ax.bbox.height >= 0.95 * plots.MIN_PANEL[1] * fig.dpi
    assert fig.get_size_inches()[0] > plots.FIGSIZE[0]  # grown for the legend
    styles = {(ln.get_color(), ln.get_linestyle()) for ln in ax.lines}
    assert len(ax.lines) == len(styles) == 40


def test_runs_that_diverged_do_not_flatten_the_others():
    """SGD on Rosenbrock at a large rate reaches 1e300 before inf: the axis is scaled to the runs that
    did not diverge (their decades 1e-3..1e1 stay readable), the diverged run runs off the top."""
    steps = np.arange(300.0)
    curves = {"adam": (steps, 10 * np.exp(-steps / 40) + 1e-3), "rmsprop": (steps, 5 * np.exp(-steps / 90) + 1e-2),
              "sgd-lr0.1": (steps[:6], np.array([24.2, 1e4, 1e30, 1e120, 1e300, np.inf]))}
    fig = plots.overlay_loss_figure(curves, "sweep: loss", 0.0)
    check_readable(fig)
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    lowest, highest = curves["adam"][1][-1], curves["adam"][1][0]  # 6.7e-3 and 10.001: adam's ends
    assert lowest / 10 < lo < lowest and highest < hi < 10 * highest and ax.get_yscale() == "log"
    (marker,) = [ln for ln in ax.lines if ln.get_gid() == "diverged"]
    assert marker.get_xdata()[0] == 5
    only = plots.overlay_loss_figure({"sgd-lr0.1": curves["sgd-lr0.1"]}, "one diverged run", 0.0).axes[0]
    assert only.get_ylim()[1] >= 1e300  # nothing else to show: its whole finite part


def test_a_title_wider_than_the_figure_makes_it_wider():
    """A sweep's name cut at 60 characters plus ": final loss vs lr" is wider than the 6.4-inch figure."""
    title = "sweep-rosenbrock-{sgd,adam,rmsprop}-lr{0.0001,0.0002,0.0005…: final loss vs lr"
    fig = plots.final_loss_figure([1e-4, 1e-3, 1e-2], [3.0, 0.5, 0.01], "lr", title)
    check_readable(fig)  # the title whole inside the figure
    assert fig.get_size_inches()[0] > plots.FIGSIZE[0]


def test_long_legends_below_panels_in_two_rows_stay_clear_of_each_other():
    """Three objectives with 13-14 runs each: every legend below its panel, in the panel's width,
    none over the next row's title or a neighbour's legend, all inside the figure."""
    curves = list(sweep_curves(40).items())
    panels = {"rosenbrock": (dict(curves[:14]), 0.0), "g": (dict(curves[14:27]), None), "f": (dict(curves[27:]), None)}
    fig = plots.loss_panels_figure(panels, "multirun 2026-11-27/21-40-12: loss")
    check_readable(fig)
    renderer = fig.canvas.get_renderer()
    legends = [ax.get_legend().get_window_extent(renderer) for ax in fig.axes]
    for ax, legend in zip(fig.axes, legends):
        assert legend.y1 < ax.xaxis.label.get_window_extent(renderer).y0 and legend.width <= 1.15 * ax.bbox.width
        assert ax.bbox.height >= 0.95 * plots.MIN_PANEL[1] * fig.dpi  # the rows moved apart, the plots kept their size
    for i, a in enumerate(legends):
        assert not any(a.overlaps(b) for b in legends[i + 1 :])
    assert legends[0].y0 > fig.axes[2].title.get_window_extent(renderer).y1  # above the second row's title


def test_one_panel_per_objective():
    """The issue's sweep, f and g at lr 0.01 and 0.1: two panels, f's gap and g's loss, both log."""
    steps = np.arange(101)
    panels = {
        "f": ({f"f-manual-lr{lr}": (steps, f_descent(lr, 100)) for lr in (0.01, 0.1)}, -4 / 3),
        "g": ({f"g-manual-lr{lr}": (steps, g_descent(lr, 100)) for lr in (0.01, 0.1)}, None),
    }
    fig = plots.loss_panels_figure(panels, "sweep-{f,g}-manual-lr{0.01,0.1}: loss")
    assert [ax.get_title() for ax in fig.axes] == ["f", "g"]
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss − min (min = −1.333333)", "loss"]
    assert [ax.get_yscale() for ax in fig.axes] == ["log", "log"]
    assert fig.get_suptitle() == "sweep-{f,g}-manual-lr{0.01,0.1}: loss"
    check_readable(fig)
    single = plots.loss_panels_figure({"f": panels["f"]}, "one")
    assert len(single.axes) == 1 and single.axes[0].get_title() == "one"


def test_a_long_legend_in_a_panel_goes_below_it_not_over_the_next_panel():
    """Nine curves and the floor line in f's panel (the legend's limit inside is eight): the legend
    sits below that panel, clear of its axis label and of g's panel."""
    steps = np.arange(101)
    panels = {
        "f": ({f"f-run{i}": (steps, f_descent(0.01 * (i + 1), 100)) for i in range(9)}, -4 / 3),
        "g": ({f"g-run{i}": (steps, g_descent(0.01 * (i + 1), 100)) for i in range(2)}, None),
    }
    fig = plots.loss_panels_figure(panels, "many in one panel")
    check_readable(fig)
    f_ax, g_ax = fig.axes[:2]
    renderer = fig.canvas.get_renderer()
    legend = f_ax.get_legend().get_window_extent(renderer)
    assert legend.y1 < f_ax.xaxis.label.get_window_extent(renderer).y0  # below "step"
    assert not legend.overlaps(g_ax.get_tightbbox(renderer)) and legend.y0 >= fig.bbox.y0


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
    check_readable(fig)


def test_path_figure_log_levels_for_rosenbrock_linear_for_quadratic():
    path = np.array([[-1.2, 1.0], [1.0, 1.0]])
    X, Y, Z = _grid(rosen, [path], [[1.0, 1.0]])
    from matplotlib.colors import LogNorm

    def filled(fig):
        (cs,) = [c for c in fig.axes[0].collections if getattr(c, "filled", False)]
        return cs

    fig = plots.path_figure(X, Y, Z, path, ["x1", "x2"], "r")
    assert isinstance(filled(fig).norm, LogNorm)
    assert fig.axes[1].get_yscale() == "log" and fig.axes[1].get_ylabel() == "objective − its lowest value here (log scale)"
    levels = filled(fig).levels
    np.testing.assert_allclose(levels[1:] / levels[:-1], levels[1] / levels[0])  # geometric
    assert levels[-1] / levels[0] > 1e3
    X, Y, Z = _grid(quad, [path], [[0.0, 0.0]])
    fig = plots.path_figure(X, Y, Z, path, ["x", "y"], "q")
    assert not isinstance(filled(fig).norm, LogNorm)
    assert fig.axes[1].get_yscale() != "log" and fig.axes[1].get_ylabel() == "objective"


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
    check_readable(fig)
    many = {f"run{i}": p + 0.01 * i for i, p in enumerate(list(paths.values()) * 4)}  # 12: legend below
    check_readable(plots.overlay_paths_figure(X, Y, Z, many, ["x", "y"], "paths", minima=[[0.0, 0.0]]))
    thirty = {f"quad-run{i}-lr{0.01 * i:.2f}": p + 0.01 * i for i, p in enumerate(list(paths.values()) * 10)}
    fig = plots.overlay_paths_figure(X, Y, Z, thirty, ["x", "y"], "multirun 2026-11-27/21-40-12: paths", minima=[[0.0, 0.0]])
    check_readable(fig)  # a 31-entry legend under the contour, inside the figure, clear of the colour bar
    ax, renderer = fig.axes[0], fig.canvas.get_renderer()
    gap = ax.xaxis.label.get_window_extent(renderer).y0 - ax.get_legend().get_window_extent(renderer).y1
    assert 0 < gap <= 12  # right under the x label, however much the figure grew


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


def test_final_loss_gap_at_the_minimum_and_a_diverged_run():
    """f at lr 0.01 … 0.5 for 1000 steps: three runs end at −4/3 to rounding, lr = 0.5 diverges."""
    finals = [f_descent(lr, 1000)[-1] for lr in (0.01, 0.1, 0.3, 0.5)]
    assert finals[:3] == pytest.approx([-4 / 3] * 3, abs=1e-15) and np.isinf(finals[3])
    fig = plots.final_loss_figure([0.01, 0.1, 0.3, 0.5], finals, "lr", "t", -4 / 3)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "final loss − min (min = −1.333333)"
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), [LossView(-4 / 3).floor] * 3)
    assert [ln.get_gid() for ln in ax.lines].count("floor") == 1
    assert [c.get_offsets()[0][0] for c in ax.collections if c.get_label() == "diverged (non-finite)"] == [0.5]
    check_readable(fig)


def test_final_loss_panels_one_per_objective_one_line_per_series():
    panels = {
        "f": ({"optimizer=manual": ([0.01, 0.1], [f_descent(lr, 100)[-1] for lr in (0.01, 0.1)]),
               "optimizer=sgd": ([0.01, 0.1], [f_descent(lr, 100)[-1] for lr in (0.01, 0.1)])}, -4 / 3),
        "g": ({"optimizer=manual": ([0.01, 0.1], [g_descent(lr, 100)[-1] for lr in (0.01, 0.1)])}, None),
    }
    fig = plots.final_loss_panels_figure(panels, "lr", "sweep: final loss vs lr")
    assert [ax.get_title() for ax in fig.axes] == ["f", "g"]
    assert [len([ln for ln in ax.lines if ln.get_gid() is None]) for ax in fig.axes] == [2, 1]
    assert fig.axes[0].get_legend() is not None
    check_readable(fig)


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
