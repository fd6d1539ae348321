"""The figures on a sweep's parent run, one panel (or file) per objective.

- ``summary_loss.png``: the children's loss curves (each objective's gap to its minimum when known, see
  :mod:`runner.tracking.loss_axis`), one panel per objective when the sweep spans several;
- ``summary_paths.png``: for a 2-D objective, every child's path on one contour of the objective
  (``summary_paths_<objective>.png`` for each 2-D objective when the sweep varies it);
- ``summary_final_loss_<key>.png``: final loss against each swept key, one panel per objective, one line
  per combination of the other swept values. There is none against ``objective`` itself: final losses
  of different functions do not compare.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from runner.sweeps.children import Child, groups_by_objective, history, safe, swept_value, warn

TITLE_CHARS = 60  # a longer sweep name is cut in the figures' titles


# -- the paths figures' contours -----------------------------------------------------------------
def contour_inputs(client, children: Sequence[Child]) -> dict | None:
    """What a paths figure of a group of children (one objective) needs from MLflow, without torch:
    the objective's config (from the first child's params) and, for each child that logged exactly
    two coordinates, their ``x/<var>`` histories. None when there is nothing to draw."""
    import yaml

    spec = {k.split(".", 1)[1]: yaml.safe_load(v) for k, v in children[0].params.items() if k.startswith("objective.")}
    if not spec.get("name"):
        return None
    series: dict[str, dict[str, list[float]]] = {}
    for c in children:
        names = sorted(k[2:] for k in c.metrics if k.startswith("x/"))
        if len(names) != 2:
            continue
        (s1, v1), (s2, v2) = (history(client, c.run_id, f"x/{v}") for v in names)
        if v1 and s1 == s2:
            series[c.name] = dict(zip(names, (v1, v2)))
    if not series:
        return None
    return {"spec": spec, "series": series, "diverged": [c.name for c in children if c.outcome == "diverged"]}


def contour_from(inputs: dict | None):
    """(bounds, Z, paths, var_names, minima) for :func:`runner.tracking.plots.overlay_paths_figure`, or None
    when the objective is not 2-D. Needs torch (the objective is evaluated on a grid), so it runs
    where torch already is: the sweep's own process after in-process jobs, else the writer.

    The box covers the paths that did not diverge (or, if all did, every start point): a path that
    ran off to 1e190 must not shrink the others to a dot. Diverged paths are cut where they leave it.
    """
    if inputs is None:
        return None
    import torch
    from omegaconf import OmegaConf

    from runner.descent.problem import build_problem
    from runner.tracking import plots

    problem = build_problem(OmegaConf.create(inputs["spec"]), dtype=torch.float64, device=torch.device("cpu"))
    if problem.dim != 2:
        return None
    names = [str(n) for n in problem.var_names]
    paths = {
        name: _as_array(list(zip(xs[names[0]], xs[names[1]])))
        for name, xs in inputs["series"].items()
        if set(xs) == set(names)
    }
    if not paths:
        return None
    diverged = set(inputs["diverged"]) & set(paths)
    framed = [p for name, p in paths.items() if name not in diverged] or [p[:1] for p in paths.values()]
    bounds = plots.contour_bounds(framed, problem.minima)
    for name in diverged:
        paths[name] = _until_outside(paths[name], bounds)
    X, _, points = plots.grid_points(bounds)
    with torch.no_grad():
        Z = problem.fn(torch.as_tensor(points, dtype=torch.float64)).reshape(X.shape).numpy()
    return bounds, Z, paths, names, [list(map(float, m)) for m in problem.minima]


def contour_grids(inputs: dict) -> dict:
    """:func:`contour_from` of each objective group's inputs (a dict from :func:`contour_inputs`, or a
    function that reads it); a group that fails gets no paths figure (None) and a warning. The sweep's
    process calls it when it has torch, so that the writer need not import it."""
    grids = {}
    for key, group in inputs.items():
        try:
            grids[key] = contour_from(group() if callable(group) else group)
        except Exception as exc:  # noqa: BLE001 - e.g. a custom target not importable here
            warn(f"no paths figure for objective {key}: {type(exc).__name__}: {exc}")
            grids[key] = None
    return grids


def _until_outside(path, bounds, reach: float = 3.0):
    """The path up to its first point beyond ``reach`` times the box around the box's centre."""
    import numpy as np

    xmin, xmax, ymin, ymax = bounds
    cx, cy, hx, hy = (xmin + xmax) / 2, (ymin + ymax) / 2, reach * (xmax - xmin) / 2, reach * (ymax - ymin) / 2
    with np.errstate(invalid="ignore"):
        outside = ~((np.abs(path[:, 0] - cx) <= hx) & (np.abs(path[:, 1] - cy) <= hy))
    first = int(np.argmax(outside)) if outside.any() else len(path) - 1
    return path[: first + 1]


def _as_array(rows):
    import numpy as np

    return np.asarray(rows, dtype=float).reshape(-1, 2)



# -- the figures -----------------------------------------------------------------------------------
def figures(
    client, children: Sequence[Child], swept: Sequence[str], title: str, folder: Path, contours: dict | None = None
) -> list[str]:
    """Draw the summary figures into ``folder``; their file names. ``contours``: the result of
    :func:`contour_from` for each objective group, when the caller computed them (else they are
    computed here). The figures are drawn on both cores (:mod:`runner.tracking.plot_pool`). A figure that
    cannot be drawn is skipped with a warning (the table and tags still go on)."""
    from runner.tracking import plot_pool

    title = title if len(title) <= TITLE_CHARS else title[: TITLE_CHARS - 1] + "…"
    groups = groups_by_objective(children)
    if contours is None:
        contours = contour_grids({label: (lambda group=group: contour_inputs(client, group)) for label, group in groups.items()})
    jobs = loss_jobs(groups, title) + path_jobs(groups, contours, title)
    jobs += [job for key in swept if key != "objective" for job in final_loss_jobs(groups, swept, key, title)]
    written = []
    # One job per figure, so that both workers share them.
    for name, (files, error) in plot_pool.draw_all([(job[0], [job]) for job in jobs]).items():
        if error:
            warn(error)
        for file_name, data in files.items():
            (folder / file_name).write_bytes(data)
            written.append(file_name)
    return sorted(written, key=[job[0] for job in jobs].index)


def loss_jobs(groups: dict[str, list[Child]], title: str) -> list[tuple]:
    """``summary_loss.png``: one panel per objective, each child's curve in it."""
    import numpy as np

    panels = {}
    for label, group in groups.items():
        curves = {c.name: tuple(np.asarray(a, dtype=float) for a in c.loss_curve()) for c in group}
        curves = {name: curve for name, curve in curves.items() if curve[0].size}
        if curves:
            panels[label] = (curves, group[0].min_value)
    if not panels:
        return []
    return [("summary_loss.png", "runner.tracking.plots:loss_panels_figure", (panels, f"{title}: loss"))]


def path_jobs(groups: dict[str, list[Child]], contours: dict, title: str) -> list[tuple]:
    """``summary_paths.png`` (one 2-D objective) or ``summary_paths_<objective>.png`` (several)."""
    jobs = []
    for label in groups:
        found = contours.get(label)
        if found is None:
            continue
        bounds, Z, paths, names, minima = found
        name = "summary_paths.png" if len(groups) == 1 else f"summary_paths_{label}.png"
        heading = f"{title}: paths" if len(groups) == 1 else f"{title}: paths of {label}"
        jobs.append((name, "runner.tracking.plots:overlay_paths_on_grid", (bounds, Z, paths, names, heading, minima)))
    return jobs


def final_loss_jobs(groups: dict[str, list[Child]], swept: Sequence[str], key: str, title: str) -> list[tuple]:
    """``summary_final_loss_<key>.png``: per objective, one series per combination of the other swept
    values (the objective's own value aside: each panel is one objective)."""
    others = [k for k in swept if k not in (key, "objective")]
    panels = {}
    for label, group in groups.items():
        series: dict[str, tuple[list[str], list[float]]] = {}
        for c in group:
            values, losses = series.setdefault(", ".join(f"{k}={swept_value(c, k)}" for k in others), ([], []))
            values.append(swept_value(c, key))
            losses.append(c.final_loss)
        panels[label] = (series, group[0].min_value)
    if not panels:
        return []
    args = (panels, key, f"{title}: final loss vs {key}")
    return [(f"summary_final_loss_{safe(key)}.png", "runner.tracking.plots:final_loss_panels_figure", args)]
