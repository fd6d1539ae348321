"""Figures for optimisation runs: loss curves, descent paths over contours, sweep summaries.

Pure functions from numpy arrays to matplotlib figures and PNG files. They run in the tracking
(logging) process, which must start fast, so only numpy is imported here; matplotlib is imported
inside the functions, and only its object API (``matplotlib.figure.Figure`` on an Agg canvas). No
pyplot: no global figure registry, no GUI backend, so figures can be built in any thread. No torch:
callers pass numpy arrays.

What a loss axis shows (the gap to a known minimum, or the loss) and how it is scaled (log, symmetric
log or linear, every label with its sign) is :mod:`runner.tracking.loss_axis`. A run that diverged
ends on a non-finite loss: its finite part is drawn, and a dashed vertical line marks the step where
it diverged; beside runs that did not, the axis is scaled to theirs and the diverged one runs off the
top. Every figure is laid out by measuring its decorations (:func:`fit_layout`), so no title, tick
label, axis label or legend is cut off at the edge: up to 8 runs get a legend inside the axes, up to
``MANY_CURVES`` one beside or below them in columns (the figure grows to hold it, the plot keeps
``MIN_PANEL``), more a colour bar. A sweep's overlays take one panel per objective
(:func:`loss_panels_figure`, :func:`final_loss_panels_figure`): losses of different functions share
no axis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from runner.tracking.loss_axis import DECADES, LossView, apply_scale

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FIGSIZE = (6.4, 4.8)
PANEL = (5.6, 4.3)  # one panel of a figure with several
DPI = 110
LEGEND_INSIDE = 8  # legend entries drawn inside the axes, at most
LEGEND_ROWS = 20  # rows of a legend beside the axes, at most: more entries take another column
MIN_PANEL = (3.6, 3.0)  # inches: the plotting area a panel keeps, however long its legend or title
# Beyond this many runs on one axes, the curves are one LineCollection with a colour scale instead
# of one labelled line each: a 1,000-entry legend took most of a 1,000-child sweep's summary time
# (~100 s for its figures on the loaded dev box) and cannot be read anyway.
MANY_CURVES = 40
PATH_MARGINS = {"left": 0.11, "right": 0.97, "bottom": 0.1, "top": 0.93}  # path_figure's fixed layout

Curve = tuple  # (steps, loss): a non-finite loss marks the step where the run diverged


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


# -- figures and their layout ----------------------------------------------------------------------
def new_figure(title: str, panels: int = 1) -> tuple[Figure, list[Axes]]:
    """A figure on an Agg canvas with ``panels`` axes (two per row); the title on the axes, or
    above all panels when there are several."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(panels, 2)
    rows = -(-panels // cols)
    size = FIGSIZE if panels == 1 else (PANEL[0] * cols, PANEL[1] * rows + 0.4)
    fig = Figure(figsize=size, dpi=DPI)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(panels)]
    if panels == 1:
        axes[0].set_title(title)
    else:
        fig.suptitle(title)
    return fig, axes


def fit_layout(fig: Figure, pad: float = 6.0) -> Figure:
    """Move the axes in or out until their decorations (tick labels, axis labels, titles, legends and
    texts) lie ``pad`` pixels inside the figure, and under the figure's own title: a y axis labelled
    ``1e−142`` needs more room than one labelled ``10``. Only the decorations are measured, not the
    plotted data: matplotlib's ``tight_layout`` also measures every line and contour, which made a
    loss figure ~55 ms and a path figure ~90 ms slower (CPU, the 2-core dev box; this costs a few ms).

    Where the decorations would leave a panel less than ``MIN_PANEL`` inches (a 40-run legend beside
    the axes, a long title), the figure grows instead of the plot shrinking or the legend running off
    the edge. Panels keep matplotlib's spacing (a fifth of a panel), or more between rows where a
    legend below a panel needs it."""
    renderer = fig.canvas.get_renderer()
    for _ in range(3):  # what overhangs the axes (a centred title) depends on their width: grow until it holds
        if not _grow_to_fit(fig, renderer, pad, _row_gap(fig, renderer, pad)):
            break
        _fit_margins(fig, renderer, pad)
    _fit_margins(fig, renderer, pad)
    if _make_room_between_rows(fig, renderer, pad):
        _fit_margins(fig, renderer, pad)
    return fig


def _fit_margins(fig: Figure, renderer, pad: float, tries: int = 4) -> None:
    """Set the figure's margins so that the decorations lie ``pad`` pixels inside it. A title wider
    than its axes stays centred on them, so it moves when they do: measured again until it holds."""
    width, height = fig.bbox.width, fig.bbox.height
    for _ in range(tries):
        used, top = _used_box(fig, renderer, pad)
        sp = fig.subplotpars
        margins = dict(left=(sp.left * width + pad - used.x0) / width,
                       right=(sp.right * width + width - pad - used.x1) / width,
                       bottom=(sp.bottom * height + pad - used.y0) / height,
                       top=(sp.top * height + top - used.y1) / height)
        moved = max(abs(margins[k] - getattr(sp, k)) * (width if k in ("left", "right") else height) for k in margins)
        fig.subplots_adjust(**margins)
        if moved < 0.5:
            return


def _used_box(fig: Figure, renderer, pad: float):
    """The box of every axes' decorations, and the top they must stay under (the figure's title)."""
    from matplotlib.transforms import Bbox

    used = Bbox.union([_decorations_box(ax, renderer) for ax in fig.axes])
    top = min([fig.bbox.height - pad] + [t.get_window_extent(renderer).y0 - pad for t in fig.texts if t.get_text()])
    return used, top


def _grow_to_fit(fig: Figure, renderer, pad: float, row_gap: float = 0.0) -> bool:
    """Enlarge the figure where its decorations, and ``row_gap`` pixels between rows of panels, would
    leave the panels less than ``MIN_PANEL``; whether it grew."""
    from matplotlib.transforms import Bbox

    used, top = _used_box(fig, renderer, pad)
    plots = Bbox.union([ax.bbox for ax in fig.axes])
    rows, cols = _grid_shape(fig)
    sp = fig.subplotpars
    dpi = fig.dpi
    beside = (plots.x0 - used.x0) + (used.x1 - plots.x1) + 2 * pad  # pixels the decorations take
    above_below = (plots.y0 - used.y0) + (used.y1 - plots.y1) + (fig.bbox.height - top)
    need_w = beside + MIN_PANEL[0] * dpi * (cols + (cols - 1) * sp.wspace)
    need_h = above_below + pad + MIN_PANEL[1] * dpi * rows + (rows - 1) * max(row_gap, MIN_PANEL[1] * dpi * sp.hspace)
    titles = [ax.title for ax in fig.axes] + list(fig.texts)  # centred: each needs its width in the figure
    need_w = max([need_w] + [t.get_window_extent(renderer).width + 2 * pad for t in titles if t.get_text()])
    width, height = fig.get_size_inches()
    if need_w <= fig.bbox.width + 0.5 and need_h <= fig.bbox.height + 0.5:
        return False
    fig.set_size_inches(max(width, need_w / dpi), max(height, need_h / dpi))
    return True


def _grid_shape(fig: Figure) -> tuple[int, int]:
    """(rows, columns) of the figure's panels (1, 1 for a figure without a grid). A colour bar splits
    its panel's cell in two: the grid counted is the figure's own, above such splits."""
    for ax in fig.axes:
        spec = ax.get_subplotspec()
        if spec is not None and ax.get_label() != "<colorbar>":
            return spec.get_topmost_subplotspec().get_gridspec().get_geometry()
    return 1, 1


def _row_gap(fig: Figure, renderer, pad: float) -> float:
    """The pixels needed between rows of panels: the most that hangs below a panel of one row (its x
    label, a legend) plus the most above a panel of the next (its title), and ``pad``; 0 for one row."""
    rows, _ = _grid_shape(fig)
    if rows < 2:
        return 0.0
    hanging: dict[int, list[float]] = {}
    for ax in fig.axes:
        spec = ax.get_subplotspec() if ax.get_label() != "<colorbar>" else None
        if spec is None:
            continue
        box = _decorations_box(ax, renderer)
        hang = hanging.setdefault(spec.get_topmost_subplotspec().rowspan.start, [0.0, 0.0])
        hang[0], hang[1] = max(hang[0], ax.bbox.y0 - box.y0), max(hang[1], box.y1 - ax.bbox.y1)
    return max(hanging.get(r, [0, 0])[0] + hanging.get(r + 1, [0, 0])[1] for r in range(rows - 1)) + pad


def _make_room_between_rows(fig: Figure, renderer, pad: float) -> bool:
    """Widen the space between rows of panels to :func:`_row_gap` where it is narrower; whether it changed."""
    rows, _ = _grid_shape(fig)
    if rows < 2:
        return False
    gap = _row_gap(fig, renderer, pad)
    sp = fig.subplotpars
    total = (sp.top - sp.bottom) * fig.bbox.height  # rows * h + (rows - 1) * hspace * h
    panel = (total - (rows - 1) * gap) / rows
    if panel <= 0 or gap / panel <= sp.hspace:
        return False
    fig.subplots_adjust(hspace=gap / panel)
    return True


def _decorations_box(ax: Axes, renderer):
    """The union of :func:`_decorations` (display pixels), boxes that overflowed left out."""
    from matplotlib.transforms import Bbox

    with np.errstate(over="ignore", invalid="ignore"):
        return Bbox.union([b for b in _decorations(ax, renderer) if np.isfinite(b.bounds).all()])


def _decorations(ax: Axes, renderer) -> list:
    """The boxes (display pixels) of what is drawn around and on an axes, its data aside."""
    boxes = [ax.bbox, ax.yaxis.get_tightbbox(renderer), ax.xaxis.get_tightbbox(renderer)]
    texts = [ax.title, *ax.texts] + ([ax.get_legend()] if ax.get_legend() is not None else [])
    boxes += [t.get_window_extent(renderer) for t in texts if not hasattr(t, "get_text") or t.get_text()]
    return [b for b in boxes if b is not None]


def _legend(ax: Axes, n: int, below: bool = False) -> None:
    """A legend inside the axes for up to ``LEGEND_INSIDE`` entries; beyond that outside, beside the
    axes in columns of at most ``LEGEND_ROWS``, or below them where a colorbar or another panel
    stands beside them, in as many columns (up to 3) as fit the axes' width. The layout makes room."""
    if n > LEGEND_INSIDE and below:
        _legend_below(ax, n)
    elif n > LEGEND_INSIDE:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), ncol=-(-n // LEGEND_ROWS), fontsize="x-small",
                  borderaxespad=0)
    elif n:
        ax.legend(fontsize="small")


def _legend_below(ax: Axes, n: int, gap_pt: float = 6.0) -> None:
    """The legend under the axes' x label (``gap_pt`` points below it, however the figure grows
    later), in as many columns, up to 3, as fit the axes' width."""
    from matplotlib.transforms import ScaledTranslation

    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    under_label = ax.bbox.y0 - ax.xaxis.get_tightbbox(renderer).y0  # pixels from the axes down to its label's foot
    drop = ScaledTranslation(0, -(under_label / fig.dpi + gap_pt / 72), fig.dpi_scale_trans)
    for ncol in range(min(3, n), 0, -1):
        legend = ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), bbox_transform=ax.transAxes + drop, ncol=ncol,
                           fontsize="x-small", borderaxespad=0)
        if legend.get_window_extent(renderer).width <= ax.bbox.width * 1.15:
            return


# -- loss curves -----------------------------------------------------------------------------------
def divergence(steps: np.ndarray, loss: np.ndarray) -> tuple[int, float] | None:
    """(step, loss) at the first non-finite loss, where the run diverged; None if it did not."""
    loss = np.asarray(loss, dtype=float).ravel()
    bad = np.flatnonzero(~np.isfinite(loss))
    if not bad.size:
        return None
    return int(np.asarray(steps).ravel()[bad[0]]), float(loss[bad[0]])


def _mark_divergence(ax: Axes, step: int, value: float, color: Any, annotate: bool) -> None:
    """A dashed vertical line at the step where a run diverged (``gid="diverged"``), a cross on the
    top edge, and with ``annotate`` the words."""
    ax.axvline(step, color=color, ls="--", lw=1.2, gid="diverged")
    ax.plot([step], [1.0], marker="X", ms=9, color=color, mec="k", mew=0.5, transform=ax.get_xaxis_transform(),
            clip_on=False, zorder=6, label="_divergence")
    if annotate:
        left = step > 0 and step >= 0.5 * max(ax.dataLim.x1, 1.0)
        ax.annotate(f"diverged at step {step}\n(loss {value})", xy=(step, 0.95), xycoords=ax.get_xaxis_transform(),
                    xytext=(-6 if left else 6, 0), textcoords="offset points", ha="right" if left else "left",
                    va="top", color="tab:red", fontsize="small", bbox={"fc": "white", "ec": "none", "alpha": 0.8})


def _style(i: int, n: int) -> dict[str, Any]:
    """Colour and line style of run ``i`` of ``n``: matplotlib's ten colours, beyond ten the twenty of
    ``tab20``, and beyond twenty the same colours dashed, then dotted, so that no two of up to
    ``MANY_CURVES`` runs look alike."""
    from matplotlib import colormaps

    if n <= 10:
        return {"color": f"C{i}", "ls": "-"}
    return {"color": colormaps["tab20"](i % 20), "ls": ("-", "--", ":")[i // 20 % 3]}


def _draw_curves(ax: Axes, curves: Mapping[str, Curve], view: LossView, annotate: bool) -> np.ndarray:
    """Each curve's finite part as one line (labelled with its name, and where it diverged); the
    values drawn."""
    if len(curves) > MANY_CURVES:
        return _draw_many_curves(ax, curves, view)
    drawn = [np.empty(0)]
    for i, (name, (steps, loss)) in enumerate(curves.items()):
        steps, loss = np.asarray(steps, dtype=float).ravel(), np.asarray(loss, dtype=float).ravel()
        y = view.values(loss)
        keep = np.isfinite(y) & np.isfinite(steps)
        (line,) = ax.plot(steps[keep], y[keep], lw=1.5 if len(curves) == 1 else 1.2, label=str(name), **_style(i, len(curves)))
        found = divergence(steps, loss)
        if found is not None:
            line.set_label(f"{name} (diverged at step {found[0]})")
            _mark_divergence(ax, *found, color=line.get_color(), annotate=annotate)
        drawn.append(y[keep])
    return np.concatenate(drawn)


def _draw_many_curves(ax: Axes, curves: Mapping[str, Curve], view: LossView) -> np.ndarray:
    """More than ``MANY_CURVES`` runs: their finite parts as one LineCollection, no legend entries;
    the values drawn."""
    lines = []
    for steps, loss in curves.values():
        steps, loss = np.asarray(steps, dtype=float).ravel(), np.asarray(loss, dtype=float).ravel()
        y = view.values(loss)
        keep = np.isfinite(y) & np.isfinite(steps)
        lines.append(np.column_stack([steps[keep], y[keep]]))
    _many_lines(ax, lines)
    return np.concatenate([np.empty(0)] + [line[:, 1] for line in lines])


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


def _floor_line(ax: Axes, view: LossView, losses: Sequence) -> None:
    """A dotted line at the floor (``gid="floor"``) when some loss reached the minimum, to rounding."""
    if view.at_floor(np.concatenate([np.asarray(loss, dtype=float).ravel() for loss in losses] or [[]])):
        ax.axhline(view.floor, ls=":", color="0.3", lw=1.0, gid="floor", label="minimum reached (within rounding)")


def _loss_axes(ax: Axes, curves: Mapping[str, Curve], min_value: float | None, legend: bool, below: bool = False) -> None:
    """Curves on ``ax``: the view (gap or loss), the scale, labels, the floor line, the legend (a long
    one ``below`` the axes where another panel stands beside them)."""
    view = LossView(min_value)
    drawn = _draw_curves(ax, curves, view, annotate=not legend)
    _floor_line(ax, view, [loss for _, loss in curves.values()])
    scaled = _scale_values(curves, view)
    apply_scale(ax, drawn if scaled is None else scaled, gap=view.min_value is not None)
    if scaled is not None and ax.get_yscale() != "log":  # a log axis's limits are set from the values already
        scale = ax.yaxis.get_transform()  # pad 5% in the axis's own (linear or symlog) units
        lo, hi = scale.transform(np.array([[float(scaled.min())], [float(scaled.max())]])).ravel()
        span = (hi - lo) or 1.0
        ax.set_ylim(*scale.inverted().transform(np.array([[lo - 0.05 * span], [hi + 0.05 * span]])).ravel())
    ax.set(xlabel="step", ylabel=view.label("loss"))
    ax.grid(True, which="both", alpha=0.3)
    entries = [h for h in ax.get_legend_handles_labels()[1]]
    if legend or len(entries) > 1:
        _legend(ax, len(entries), below=below)


def _scale_values(curves: Mapping[str, Curve], view: LossView) -> np.ndarray | None:
    """The values the y axis is scaled to when some runs diverged and others did not: those of the
    runs that did not. A diverged run's last finite losses (1e300 before inf) would otherwise squash
    every other curve into one flat line; it runs off the top instead, where its cross and its
    dashed line mark the step. None when no run diverged, or all did (then everything drawn counts)."""
    kept = [view.values(np.asarray(loss, dtype=float).ravel()) for steps, loss in curves.values()
            if divergence(steps, loss) is None]
    if not kept or len(kept) == len(curves):
        return None
    values = np.concatenate(kept)
    values = values[np.isfinite(values)]
    return values if values.size else None


def loss_figure(steps: np.ndarray, loss: np.ndarray, title: str, min_value: float | None = None) -> Figure:
    """Loss against step for one run: its gap to ``min_value`` when known (module docstring)."""
    fig, (ax,) = new_figure(title)
    _loss_axes(ax, {"loss": (steps, loss)}, min_value, legend=False)
    return fit_layout(fig)


def overlay_loss_figure(curves: Mapping[str, Curve], title: str, min_value: float | None = None) -> Figure:
    """Several runs of one objective on one axes, one line per run labelled with its name; one
    scale for all, so that they compare. Beyond 8 curves the legend goes beside the axes."""
    fig, (ax,) = new_figure(title)
    _loss_axes(ax, curves, min_value, legend=True)
    return fit_layout(fig)


def loss_panels_figure(panels: Mapping[str, tuple[Mapping[str, Curve], float | None]], title: str) -> Figure:
    """One panel per objective (``{objective: (curves, min value)}``), each its own scale; a single
    objective is :func:`overlay_loss_figure`."""
    if len(panels) == 1:
        ((curves, min_value),) = panels.values()
        return overlay_loss_figure(curves, title, min_value)
    fig, axes = new_figure(title, len(panels))
    for ax, (objective, (curves, min_value)) in zip(axes, panels.items()):
        ax.set_title(str(objective))
        _loss_axes(ax, curves, min_value, legend=True, below=True)
    return fit_layout(fig)


# -- final loss against a swept value --------------------------------------------------------------
Series = Mapping  # {label: (swept values, final losses)}; label "" for a single unlabelled series


def final_loss_figure(
    values: Sequence, final_loss: Sequence[float], param: str, title: str, min_value: float | None = None
) -> Figure:
    """Final loss (its gap to ``min_value`` when known) against one swept parameter, one point per run.

    Numeric values (numbers, or strings that parse as numbers, as MLflow params come back) go on
    a numeric x axis, joined in sorted order, with log x when all > 0 and spanning > 1 decade
    (learning rates). Anything else (optimizer names) becomes categories in first-seen order.
    Runs with a non-finite final loss (diverged) are red crosses along the top edge rather than
    silently vanishing.
    """
    return final_loss_panels_figure({"": ({"": (values, final_loss)}, min_value)}, param, title)


def final_loss_panels_figure(panels: Mapping[str, tuple[Series, float | None]], param: str, title: str) -> Figure:
    """:func:`final_loss_figure` with one panel per objective (``{objective: (series, min value)}``)
    and one line per series (a combination of the sweep's other values) in each."""
    fig, axes = new_figure(title, len(panels))
    for ax, (objective, (series, min_value)) in zip(axes, panels.items()):
        if len(panels) > 1:
            ax.set_title(str(objective))
        _final_loss_axes(ax, series, param, LossView(min_value), below=len(panels) > 1)
    return fit_layout(fig)


def _final_loss_axes(ax: Axes, series: Series, param: str, view: LossView, below: bool = False) -> None:
    values = [v for vs, _ in series.values() for v in vs]
    numeric = _as_numbers(values) is not None
    cats = None if numeric else list(dict.fromkeys(str(v) for v in values))
    drawn, crosses = [np.empty(0)], []
    for i, (label, (vs, losses)) in enumerate(series.items()):
        x = _as_numbers(vs) if numeric else np.array([cats.index(str(v)) for v in vs], dtype=float)
        y = view.values(np.asarray(losses, dtype=float).ravel())
        if numeric:
            order = np.argsort(x, kind="stable")
            x, y = x[order], y[order]
        ok = np.isfinite(x) & np.isfinite(y)
        ax.plot(x[ok], y[ok], "-o" if numeric else "o", ms=5 if numeric else 6, color=f"C{i % 10}",
                label=str(label) if label else "_series")
        drawn.append(y[ok])
        crosses += [v for v, ok_y in zip(x, np.isfinite(y)) if not ok_y and np.isfinite(v)]
    _swept_axis(ax, _as_numbers(values) if numeric else None, cats)
    _floor_line(ax, view, [losses for _, losses in series.values()])
    if crosses:
        ax.scatter(crosses, np.full(len(crosses), 0.97), marker="x", c="tab:red", s=50, zorder=5,
                   transform=ax.get_xaxis_transform(), label="diverged (non-finite)")
        ax.update_datalim(np.column_stack([crosses, np.ones(len(crosses))]), updatey=False)
        ax.autoscale_view()
    apply_scale(ax, np.concatenate(drawn), gap=view.min_value is not None)
    ax.set(xlabel=param, ylabel=view.label("final loss"))
    ax.grid(True, which="both", alpha=0.3)
    entries = [text for text in ax.get_legend_handles_labels()[1]]
    if entries:
        _legend(ax, len(entries), below=below)


def _swept_axis(ax: Axes, x: np.ndarray | None, cats: list[str] | None) -> None:
    """Log x for positive numbers over more than a decade; categories as named ticks."""
    if x is not None:
        xf = x[np.isfinite(x)]
        if xf.size and xf.min() > 0 and xf.max() / xf.min() > 10:
            from matplotlib.ticker import LogFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
            ax.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
        return
    slanted = len(cats) > 4
    ax.set_xticks(range(len(cats)), cats, rotation=30 if slanted else 0, ha="right" if slanted else "center")
    ax.set_xlim(-0.5, len(cats) - 0.5)


def _as_numbers(values: Sequence) -> np.ndarray | None:
    """Float array if every value is a number (bools excluded) or a numeric string, else None."""
    if len(values) == 0 or any(isinstance(v, (bool, np.bool_)) for v in values):
        return None
    try:
        return np.array([float(v) for v in values], dtype=float)
    except (TypeError, ValueError):
        return None


# -- descent paths over contours -------------------------------------------------------------------
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
        ax.figure.colorbar(cs, ax=ax, use_gridspec=True, label="objective − its lowest value here (log scale)",
                           ticks=LogLocator(), format=LogFormatter())
    else:
        cs = ax.contourf(X, Y, Zm, levels=30, cmap=cmap)
        ax.contour(X, Y, Zm, levels=10, colors="k", linewidths=0.3, alpha=0.3)
        ax.figure.colorbar(cs, ax=ax, use_gridspec=True, label="objective")


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
    squashing the contour. Drawn for every 2-D run, it keeps fixed margins instead of
    :func:`fit_layout`: what it labels is known (two variable names, coordinates, the colorbar), and
    measuring it cost ~100 ms a figure (CPU, the 2-core dev box), as much as drawing it.
    """
    fig, (ax,) = new_figure(title)
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
    fig.subplots_adjust(**PATH_MARGINS)
    return fig


def overlay_paths_figure(
    X: np.ndarray, Y: np.ndarray, Z: np.ndarray, paths: Mapping[str, np.ndarray],
    var_names: Sequence[str], title: str, minima: Sequence[Sequence[float]] = (),
) -> Figure:
    """Several runs' descent paths on one (grey) contour, one colour and legend entry per run."""
    fig, (ax,) = new_figure(title)
    _contour(ax, X, Y, Z, "Greys")
    finite = [_finite_rows(path) for path in paths.values()]
    if len(paths) > MANY_CURVES:
        _many_lines(ax, finite, zorder=4)
        starts = np.array([p[0] for p in finite if len(p)]).reshape(-1, 2)
        ax.scatter(starts[:, 0], starts[:, 1], marker="o", s=12, c="white", edgecolors="k", linewidths=0.5, zorder=5)
    for i, (name, p) in enumerate(zip(paths, finite) if len(paths) <= MANY_CURVES else ()):
        style = _style(i, len(paths))
        color = style["color"]
        ax.plot(p[:, 0], p[:, 1], marker="o", ms=2.5, lw=1.2, label=str(name), zorder=4, **style)
        if len(p):
            ax.scatter(p[:1, 0], p[:1, 1], marker="o", s=40, c=[color], edgecolors="k", zorder=5)
    _decorate_path_axes(ax, X, Y, var_names, minima)
    _legend(ax, (len(paths) if len(paths) <= MANY_CURVES else 0) + (1 if len(minima) else 0), below=True)
    return fit_layout(fig)


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
    var_names: Sequence[str] = (), minima: Sequence[Sequence[float]] = (), min_value: float | None = None,
) -> list[tuple[str, str, tuple]]:
    """The figures of one run as :mod:`runner.tracking.plot_pool` jobs: ``plots/loss.png`` always (the
    gap to ``min_value`` when the objective's minimum is known), ``plots/path.png`` for a 2-D
    objective (``grid`` = (bounds, Z) around ``path``)."""
    jobs = [("plots/loss.png", "runner.tracking.plots:loss_figure", (steps, loss, f"{title}: loss", min_value))]
    if grid is not None:
        bounds, Z = grid
        jobs.append(
            ("plots/path.png", "runner.tracking.plots:path_figure_on_grid", (bounds, Z, path, list(var_names), f"{title}: path", minima))
        )
    return jobs
