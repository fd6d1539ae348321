"""Figures for optimisation runs: loss curves, descent paths over contours, sweep summaries.

Pure functions from numpy arrays to matplotlib figures and PNG files. They run in the tracking
(logging) process, which must start fast, so only numpy is imported here; matplotlib is imported
inside the functions, and only its object API (``matplotlib.figure.Figure``; PNGs are written by
``fig.savefig`` through the Agg canvas). No pyplot: no global figure registry, no GUI backend, so
figures can be built in any thread. No torch: callers pass numpy arrays.

Scale rule (``loss_figure``, ``overlay_loss_figure``, ``final_loss_figure``): a loss that decays
from 1e3 to 1e-8 is a flat line on a linear axis, so finite values that are all > 0 and span more
than 2 decades get a log axis; values that change sign (or touch 0) and whose magnitudes span more
than 2 decades get symlog (linear within the 10th-percentile magnitude of 0); anything else stays
linear, where a log axis would only distort. Non-finite points (diverged runs) are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FIGSIZE = (6.4, 4.8)
DPI = 110
DECADES = 2.0  # "spans decades": max/min magnitude ratio above 10**DECADES
MINOR_DECADES = 3.0  # a log axis over more decades than this shows no minor ticks
# Beyond this many runs on one axes, the curves are one LineCollection with a colour scale instead
# of one labelled line each: a 1,000-entry legend took most of a 1,000-child sweep's summary time
# (~100 s for its figures on the loaded dev box) and cannot be read anyway.
MANY_CURVES = 40


def contour_bounds(
    paths: Sequence[np.ndarray], minima: Sequence[Sequence[float]] = (), margin: float = 0.25
) -> tuple[float, float, float, float]:
    """(xmin, xmax, ymin, ymax) covering every path's finite rows and the known minima.

    Each side is padded by ``margin`` times that axis's span, and by at least 0.5, so that a path
    that never moves still gets a visible box. Rows with nan/inf are ignored (a diverged step must
    not blow the box up to 1e30). With nothing finite at all, the box is (-1, 1, -1, 1).
    """
    pts = [np.asarray(p, dtype=float).reshape(-1, 2) for p in paths]
    pts += [np.asarray(minima, dtype=float).reshape(-1, 2)]
    allp = np.concatenate(pts, axis=0)
    allp = allp[np.isfinite(allp).all(axis=1)]
    if len(allp) == 0:
        return (-1.0, 1.0, -1.0, 1.0)
    lo, hi = allp.min(axis=0), allp.max(axis=0)
    pad = np.maximum(margin * (hi - lo), 0.5)
    lo, hi = lo - pad, hi + pad
    return (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))


def grid_points(bounds: Sequence[float], n: int = 120) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """X, Y of shape (n, n) (``np.meshgrid``, 'xy' indexing) over ``bounds`` and the (n*n, 2) points.

    The caller evaluates the objective on the points in one batched call and reshapes the result
    to (n, n); row-major order matches X and Y, i.e. ``Z[i, j] = f(X[i, j], Y[i, j])``.
    """
    xmin, xmax, ymin, ymax = (float(b) for b in bounds)
    X, Y = np.meshgrid(np.linspace(xmin, xmax, n), np.linspace(ymin, ymax, n))
    return X, Y, np.column_stack([X.ravel(), Y.ravel()])


def _new_axes(title: str) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    # Fixed margins instead of tight_layout / bbox_inches="tight": those measure every tick label's
    # text (two extra layout passes, most of a figure's cost), and these figures' layout is known.
    fig = Figure(figsize=FIGSIZE)
    fig.subplots_adjust(left=0.12, right=0.96, bottom=0.11, top=0.92)
    ax = fig.add_subplot()
    ax.set_title(title)
    return fig, ax


def _finite_xy(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def _yscale(values: np.ndarray) -> tuple[str, dict[str, Any]]:
    """Scale name and ``set_yscale`` kwargs for these values, by the module docstring's rule."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "linear", {}
    if v.min() > 0:
        with np.errstate(over="ignore"):  # 1e300 / 1e-10 is inf, and rightly "spans decades"
            spans = v.max() / v.min() > 10**DECADES
        return ("log", {}) if spans else ("linear", {})
    mag = np.abs(v[v != 0])
    if v.max() > 0 and mag.size:  # changes sign, or runs from 0 up
        # A robust small magnitude: a curve sampled finely through 0 has tiny |v| near the crossing
        # and must not count as spanning decades for that alone.
        small = float(np.percentile(mag, 10))
        with np.errstate(over="ignore"):
            spans = mag.max() / small > 10**DECADES
        if spans:
            return "symlog", {"linthresh": small}
    return "linear", {}


def _plain_log_labels(axis) -> None:
    """Label a log (or symlog) axis ``1e-05`` instead of matplotlib's default mathtext $10^{-5}$:
    parsing and typesetting mathtext was half the time of drawing a loss figure on a log axis
    (~175 against ~90 ms on the dev box), and the plain form reads as well."""
    from matplotlib.ticker import LogFormatter

    axis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    axis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))


def _apply_yscale(ax: Axes, values: np.ndarray) -> None:
    """Set the y scale by the module's rule. A log axis over more than ``MINOR_DECADES`` decades
    loses its minor ticks: eight per decade, each a matplotlib Tick object, they made such a loss
    figure ~1.7× slower to draw (~200 against ~125 ms on the dev box) while too dense to read."""
    scale, kw = _yscale(values)
    ax.set_yscale(scale, **kw)
    if scale != "linear":
        _plain_log_labels(ax.yaxis)
    v = np.abs(np.asarray(values, dtype=float))
    v = v[np.isfinite(v) & (v > 0)]
    if scale != "linear" and v.size:
        with np.errstate(over="ignore"):
            if v.max() / (kw.get("linthresh") or v.min()) > 10**MINOR_DECADES:
                from matplotlib.ticker import NullLocator

                ax.yaxis.set_minor_locator(NullLocator())


def loss_figure(steps: np.ndarray, loss: np.ndarray, title: str) -> Figure:
    """Loss against step for one run; y-scale by the module's rule, non-finite points dropped."""
    return _loss_axes({"loss": (steps, loss)}, title, legend=False)


def overlay_loss_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str) -> Figure:
    """Several runs' (steps, loss) curves on one axes, one line per run labelled with its name.

    The scale rule is applied to all curves' values together so they share one comparable axis.
    With more than 8 curves the legend goes outside the axes in a small font.
    """
    return _loss_axes(curves, title, legend=True)


def _loss_axes(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str, legend: bool) -> Figure:
    fig, ax = _new_axes(title)
    lines = [np.column_stack(_finite_xy(steps, loss)) for steps, loss in curves.values()]
    ys = np.concatenate([np.empty(0)] + [line[:, 1] for line in lines])
    if len(curves) > MANY_CURVES:
        _many_lines(ax, lines)
    else:
        for name, line in zip(curves, lines):
            ax.plot(line[:, 0], line[:, 1], lw=1.5 if len(curves) == 1 else 1.2, label=str(name))
    _apply_yscale(ax, ys)
    ax.set(xlabel="step", ylabel="loss")
    ax.grid(True, which="both", alpha=0.3)
    if legend and len(curves) <= MANY_CURVES:
        _legend(ax, len(curves))
    return fig


def _many_lines(ax: Axes, lines: list[np.ndarray], **kwargs: Any) -> None:
    """Many runs' curves as one LineCollection, coloured in run order (a colour bar says which),
    in one draw call instead of one Line2D (and legend entry) each."""
    from matplotlib import colormaps
    from matplotlib.collections import LineCollection

    kept = [line for line in lines if len(line)]
    if not kept:
        return
    collection = LineCollection(kept, cmap=colormaps["viridis"], lw=0.8, alpha=0.6, **kwargs)
    collection.set_array(np.arange(len(kept), dtype=float))
    ax.add_collection(collection)
    ax.autoscale_view()
    ax.figure.colorbar(collection, ax=ax, label=f"run, in sweep order ({len(kept)} runs)", pad=0.02)


def _legend(ax: Axes, n: int, below: bool = False) -> None:
    """A legend inside the axes for up to 8 entries; beyond that outside, beside the axes, or
    below them where a colorbar already stands beside them."""
    if n > 8 and below:
        rows = -(-n // 3)
        ax.figure.subplots_adjust(bottom=min(0.55, 0.2 + 0.04 * rows))
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, fontsize="x-small", borderaxespad=0)
    elif n > 8:
        ax.figure.subplots_adjust(right=0.72)  # room for the legend beside the axes
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="x-small", borderaxespad=0)
    elif n:
        ax.legend(fontsize="small")


def _contour(ax: Axes, X: np.ndarray, Y: np.ndarray, Z: np.ndarray, cmap: str) -> None:
    """Filled contour of Z; log-spaced levels of Z - min Z when Z spans decades.

    Valley-shaped functions (Rosenbrock: 0 in the valley, ~1e3 on the walls) show only the walls
    with linear levels; log levels of the gap to the minimum make the valley floor visible. The
    test is max(gap) / 5th-percentile(gap) > 100, which a plain quadratic bowl (~30) does not pass.
    """
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import LogFormatter, LogLocator

    Zm = np.ma.masked_invalid(np.asarray(Z, dtype=float))
    if Zm.count() == 0 or float(Zm.max() - Zm.min()) <= 0:
        return  # nothing to contour; the path is still drawn
    gap = Zm - Zm.min()
    hi = float(gap.max())
    pos = gap.compressed()[gap.compressed() > 0]
    if hi / float(np.percentile(pos, 5)) > 10**DECADES:
        lo = max(float(np.percentile(pos, 0.2)), hi * 1e-8)
        levels = np.geomspace(lo, hi, 30)
        gap = gap + hi * 1e-12  # tiny: keep the minimum itself on the log scale
        cs = ax.contourf(X, Y, gap, levels=levels, norm=LogNorm(lo, hi), cmap=cmap, extend="min")
        ax.contour(X, Y, gap, levels=levels[::3], colors="k", linewidths=0.3, alpha=0.3)
        ax.figure.colorbar(cs, ax=ax, label="f − min f (log scale)", ticks=LogLocator(), format=LogFormatter())
    else:
        cs = ax.contourf(X, Y, Zm, levels=30, cmap=cmap)
        ax.contour(X, Y, Zm, levels=10, colors="k", linewidths=0.3, alpha=0.3)
        ax.figure.colorbar(cs, ax=ax, label="f")


def _finite_rows(path: np.ndarray) -> np.ndarray:
    p = np.asarray(path, dtype=float).reshape(-1, 2)
    return p[np.isfinite(p).all(axis=1)]


def _decorate_path_axes(
    ax: Axes, X: np.ndarray, Y: np.ndarray, var_names: Sequence[str], minima: Sequence[Sequence[float]]
) -> None:
    m = np.asarray(minima, dtype=float).reshape(-1, 2)
    if len(m):
        ax.scatter(m[:, 0], m[:, 1], marker="*", s=180, c="gold", edgecolors="k", zorder=5,
                   label="known minimum")
    ax.set_xlim(float(np.min(X)), float(np.max(X)))
    ax.set_ylim(float(np.min(Y)), float(np.max(Y)))
    ax.set(xlabel=str(var_names[0]), ylabel=str(var_names[1]))


def path_figure(
    X: np.ndarray, Y: np.ndarray, Z: np.ndarray, path: np.ndarray, var_names: Sequence[str],
    title: str, minima: Sequence[Sequence[float]] = (),
) -> Figure:
    """Descent path (K, 2) over a filled contour of the objective on grid X, Y (values Z).

    The path is one line with markers (its non-finite rows dropped), its first and last points
    marked and annotated 'start' and 'end'; known minima are gold stars; axes are labelled with
    ``var_names`` and limited to the grid, so a diverging path leaves the frame instead of
    squashing the contour.
    """
    fig, ax = _new_axes(title)
    _contour(ax, X, Y, Z, "viridis")
    from matplotlib.patheffects import withStroke

    p = _finite_rows(path)
    ax.plot(p[:, 0], p[:, 1], "-o", color="tab:red", ms=3, lw=1.2, mec="white", mew=0.4,
            label="path", zorder=4)
    for (px, py), text, marker in ((p[0], "start", "o"), (p[-1], "end", "s")) if len(p) else ():
        ax.scatter([px], [py], marker=marker, s=60, c="white", edgecolors="k", zorder=6)
        ax.annotate(text, (px, py), xytext=(6, 6), textcoords="offset points", fontsize=9,
                    color="white", fontweight="bold", zorder=7,
                    path_effects=[withStroke(linewidth=2, foreground="black")])
    _decorate_path_axes(ax, X, Y, var_names, minima)
    return fig


def overlay_paths_figure(
    X: np.ndarray, Y: np.ndarray, Z: np.ndarray, paths: Mapping[str, np.ndarray],
    var_names: Sequence[str], title: str, minima: Sequence[Sequence[float]] = (),
) -> Figure:
    """Several runs' descent paths on one (grey) contour, one colour and legend entry per run."""
    from matplotlib import colormaps

    fig, ax = _new_axes(title)
    _contour(ax, X, Y, Z, "Greys")
    finite = [_finite_rows(path) for path in paths.values()]
    if len(paths) > MANY_CURVES:
        _many_lines(ax, finite, zorder=4)
        starts = np.array([p[0] for p in finite if len(p)]).reshape(-1, 2)
        ax.scatter(starts[:, 0], starts[:, 1], marker="o", s=12, c="white", edgecolors="k", linewidths=0.5, zorder=5)
    for i, (name, p) in enumerate(zip(paths, finite) if len(paths) <= MANY_CURVES else ()):
        color = f"C{i}" if len(paths) <= 10 else colormaps["tab20"](i % 20)
        ax.plot(p[:, 0], p[:, 1], "-o", color=color, ms=2.5, lw=1.2, label=str(name), zorder=4)
        if len(p):
            ax.scatter(p[:1, 0], p[:1, 1], marker="o", s=40, c=[color], edgecolors="k", zorder=5)
    _decorate_path_axes(ax, X, Y, var_names, minima)
    _legend(ax, (len(paths) if len(paths) <= MANY_CURVES else 0) + (1 if len(minima) else 0), below=True)
    return fig


def final_loss_figure(values: Sequence, final_loss: Sequence[float], param: str, title: str) -> Figure:
    """Final loss against one swept parameter (one point per run).

    Numeric values (numbers, or strings that parse as numbers, as MLflow params come back) go on
    a numeric x axis, joined in sorted order, with log x when all > 0 and spanning > 1 decade
    (learning rates). Anything else (optimizer names) becomes categories in first-seen order.
    The y axis follows the module's scale rule; runs with a non-finite final loss (diverged) are
    drawn as red crosses along the top edge rather than silently vanishing.
    """
    fig, ax = _new_axes(title)
    y = np.asarray(final_loss, dtype=float).ravel()
    x = _as_numbers(values)
    if x is not None:
        order = np.argsort(x, kind="stable")
        x, y = x[order], y[order]
        ok = np.isfinite(x) & np.isfinite(y)
        ax.plot(x[ok], y[ok], "-o", ms=5)
        xf = x[np.isfinite(x)]
        if xf.size and xf.min() > 0 and xf.max() / xf.min() > 10:
            ax.set_xscale("log")
            _plain_log_labels(ax.xaxis)
    else:
        cats = list(dict.fromkeys(str(v) for v in values))
        x = np.array([cats.index(str(v)) for v in values], dtype=float)
        ok = np.isfinite(y)
        ax.plot(x[ok], y[ok], "o", ms=6)
        ax.set_xticks(range(len(cats)), cats, rotation=30 if len(cats) > 4 else 0, ha="right" if len(cats) > 4 else "center")
        if len(cats) > 4:
            fig.subplots_adjust(bottom=0.2)  # room for the slanted labels (no tight_layout: see _new_axes)
        ax.set_xlim(-0.5, len(cats) - 0.5)
    bad = ~np.isfinite(y) & np.isfinite(x)
    if bad.any():
        ax.scatter(x[bad], np.full(bad.sum(), 0.97), marker="x", c="tab:red", s=50, zorder=5,
                   transform=ax.get_xaxis_transform(), label="diverged (non-finite)")
        ax.update_datalim(np.column_stack([x[bad], np.ones(bad.sum())]), updatey=False)
        ax.autoscale_view()
        ax.legend(fontsize="small")
    _apply_yscale(ax, y)
    ax.set(xlabel=param, ylabel="final loss")
    ax.grid(True, which="both", alpha=0.3)
    return fig


def _as_numbers(values: Sequence) -> np.ndarray | None:
    """Float array if every value is a number (bools excluded) or a numeric string, else None."""
    if len(values) == 0 or any(isinstance(v, (bool, np.bool_)) for v in values):
        return None
    try:
        return np.array([float(v) for v in values], dtype=float)
    except (TypeError, ValueError):
        return None


def save_figure(fig: Figure, path: str | Path | BinaryIO) -> None:
    """Write ``fig`` as an image (format from the suffix; PNG for a file object), creating parent dirs."""
    kwargs: dict[str, Any] = {}
    if isinstance(path, (str, Path)):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        kwargs["format"] = "png"
    # A diverging run's values near float's limit overflow inside matplotlib's scale transforms;
    # the points are drawn (or clipped) all the same, so the warning would only be noise.
    with np.errstate(over="ignore", invalid="ignore"):
        fig.savefig(path, dpi=DPI, pil_kwargs={"compress_level": 1}, **kwargs)


def path_figure_on_grid(
    bounds: Sequence[float], Z: np.ndarray, path: np.ndarray, var_names: Sequence[str], title: str,
    minima: Sequence[Sequence[float]] = (),
) -> Figure:
    """:func:`path_figure` on the grid of :func:`grid_points` over ``bounds`` (only Z travels)."""
    X, Y, _ = grid_points(bounds, np.shape(Z)[0])
    return path_figure(X, Y, Z, path, var_names, title, minima)


def overlay_paths_on_grid(
    bounds: Sequence[float], Z: np.ndarray, paths: Mapping[str, np.ndarray], var_names: Sequence[str],
    title: str, minima: Sequence[Sequence[float]] = (),
) -> Figure:
    """:func:`overlay_paths_figure` on the grid of :func:`grid_points` over ``bounds``."""
    X, Y, _ = grid_points(bounds, np.shape(Z)[0])
    return overlay_paths_figure(X, Y, Z, paths, var_names, title, minima)


def run_figure_jobs(
    title: str, steps: np.ndarray, loss: np.ndarray, grid: tuple | None = None, path: np.ndarray | None = None,
    var_names: Sequence[str] = (), minima: Sequence[Sequence[float]] = (),
) -> list[tuple[str, str, tuple]]:
    """The figures of one run as :mod:`runner.tracking.plot_pool` jobs: ``plots/loss.png`` always,
    ``plots/path.png`` for a 2-D objective (``grid`` = (bounds, Z) around ``path``)."""
    jobs = [("plots/loss.png", "runner.tracking.plots:loss_figure", (steps, loss, f"{title}: loss"))]
    if grid is not None:
        bounds, Z = grid
        jobs.append(
            ("plots/path.png", "runner.tracking.plots:path_figure_on_grid", (bounds, Z, path, list(var_names), f"{title}: path", minima))
        )
    return jobs
