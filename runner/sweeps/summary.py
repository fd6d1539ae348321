"""The end of a sweep: read the parent run's children back from MLflow, summarise them on the parent, end it.

What the parent gets (all computed from what the children recorded, so the summary is the same whichever
launcher ran them and wherever):

- ``summary_table.json`` (``MlflowClient.log_table``): one row per child: its name, the swept values,
  lr, objective, optimizer, final loss, outcome, final step (steps taken), status and run id;
- ``summary_loss.png``: the children's loss curves on one axes;
- ``summary_paths.png``: for a 2-D objective, every child's path on one contour of the objective
  (``summary_paths_<objective>.png`` for each 2-D objective when the sweep varies it);
- ``summary_final_loss_<key>.png``: final loss against each swept key;
- tags ``best_child`` (run name), ``best_child_run_id``, ``best_final_loss``, ``sweep.children``,
  ``sweep.failed``, ``sweep.outcome`` and a description (``mlflow.note.content``) with the command and
  a table of the children.

Final loss of a child: the last point of its ``loss`` history, ``inf`` when it diverged (as the job
returns to sweepers), ``nan`` when it recorded no loss. The best child is the FINISHED child with the
smallest finite final loss.

Parent status: FINISHED when every job finished; FAILED when a job failed or the sweep stopped early
(``sweep.outcome`` ``failed_jobs``, ``aborted`` or ``missing_jobs``); KILLED when it was interrupted.
"""

from __future__ import annotations

import math
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

PARENT_TAG = "mlflow.parentRunId"
TABLE = "summary_table.json"
MAX_DESCRIBED = 50  # children listed in the parent's description


@dataclass
class Child:
    """What the summary needs of one child run."""

    run_id: str
    name: str
    status: str
    outcome: str
    steps: int | None
    params: dict[str, str]
    tags: dict[str, str]
    start_time: int
    metrics: set[str] = field(default_factory=set)
    loss_steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        if self.outcome == "diverged":
            return math.inf
        return self.loss[-1] if self.loss else math.nan


# -- reading ---------------------------------------------------------------------------------------
def search_children(client, parent) -> list:
    """Every run of the parent's experiment tagged with the parent's id, page by page."""
    runs, token = [], None
    while True:
        page = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'",
            max_results=1000,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def history(client, run_id: str, key: str) -> tuple[list[int], list[float]]:
    """A child's metric history; from memory when this process logged it in bulk (the batched
    launcher's children: :func:`runner.tracking.bulk.logged_history`), else from the store."""
    from runner.tracking.bulk import logged_history

    logged = logged_history(run_id, key)
    if logged is not None:
        return list(logged[0]), list(logged[1])
    points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return [m.step for m in points], [m.value for m in points]


def read_children(client, parent) -> list[Child]:
    """The children with their loss histories, ordered by their swept values, then start time."""
    children = []
    for run in search_children(client, parent):
        tags = dict(run.data.tags)
        final_step = tags.get("final_step")
        child = Child(
            run_id=run.info.run_id,
            name=run.info.run_name or run.info.run_id,
            status=run.info.status,
            outcome=tags.get("outcome", "failed" if run.info.status == "FAILED" else "unknown"),
            steps=int(final_step) if final_step and final_step.isdigit() else None,
            params=dict(run.data.params),
            tags=tags,
            start_time=run.info.start_time or 0,
            metrics=set(run.data.metrics),
        )
        if "loss" in run.data.metrics:
            child.loss_steps, child.loss = history(client, child.run_id, "loss")
        children.append(child)
    swept = swept_keys_of(parent)
    children.sort(key=lambda c: (tuple(_sort_key(swept_value(c, k)) for k in swept), c.start_time))
    return children


def swept_keys_of(parent) -> list[str]:
    text = parent.data.tags.get("sweep.swept", "")
    return [k for k in text.split(",") if k]


def swept_value(child: Child, key: str) -> str:
    """The child's value of a swept key: its param, or for a config group the choice's name."""
    if key in child.params:
        return child.params[key]
    if f"{key}.name" in child.params:
        return child.params[f"{key}.name"]
    return child.tags.get(key, "")


def _sort_key(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


# -- the summary -----------------------------------------------------------------------------------
def table(children: Sequence[Child], swept: Sequence[str]) -> dict[str, list]:
    """Columns of the summary table, one row per child.

    Params stay the strings MLflow stores; the final loss is written ``repr(float)`` ("inf" for a
    diverged child, null when none was recorded): ``log_table`` goes through pandas' JSON writer,
    which keeps only 10 decimals of a float (2.3e-11 would read back as 0.0).
    """
    cols: dict[str, list] = {"run_name": [c.name for c in children]}
    for key in list(swept) + [k for k in ("lr", "objective", "optimizer") if k not in swept]:
        cols[key] = [swept_value(c, key) for c in children]
    cols["final_loss"] = [None if math.isnan(c.final_loss) else repr(c.final_loss) for c in children]
    cols["outcome"] = [c.outcome for c in children]
    cols["final_step"] = [c.steps for c in children]  # steps taken (the param `steps` may be swept)
    cols["status"] = [c.status for c in children]
    cols["run_id"] = [c.run_id for c in children]
    return cols


def best_child(children: Sequence[Child]) -> Child | None:
    ok = [c for c in children if c.status == "FINISHED" and math.isfinite(c.final_loss)]
    return min(ok, key=lambda c: c.final_loss) if ok else None


def verdict(children: Sequence[Child], ended: str, expected: int | None) -> tuple[str, str]:
    """(MLflow status, sweep outcome) of the parent."""
    if ended == "interrupted":
        return "KILLED", "interrupted"
    if any(c.status != "FINISHED" for c in children):
        return "FAILED", "failed_jobs"
    if ended != "completed":
        return "FAILED", "aborted"
    if expected is not None and len(children) < expected:
        return "FAILED", "missing_jobs"
    return "FINISHED", "completed"


def _objective_key(child: Child) -> tuple:
    """Children with equal keys descend the same function (the start point and wrt may differ)."""
    return tuple(sorted((k, v) for k, v in child.params.items() if k.startswith("objective.") and k not in ("objective.init", "objective.wrt")))


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
            name = dict(key).get("objective.name", "?")
            _warn(f"no paths figure for objective {name}: {type(exc).__name__}: {exc}")
            grids[key] = None
    return grids


def groups_by_objective(children: Sequence[Child]) -> dict[tuple, list[Child]]:
    groups: dict[tuple, list[Child]] = {}
    for c in children:
        groups.setdefault(_objective_key(c), []).append(c)
    return groups


_READ: dict[str, list[Child]] = {}  # parent id -> children read by contour_inputs_of, for finish_sweep


def contour_inputs_of(uri: str, parent_id: str) -> dict[tuple, dict | None]:
    """:func:`contour_inputs` of each objective group of the parent's children (run in the writer
    by the sweep's process, which then evaluates :func:`contour_from` itself, where torch is)."""
    client, parent = _open(uri, parent_id)
    children = _READ[parent_id] = read_children(client, parent)
    return {key: contour_inputs(client, group) for key, group in groups_by_objective(children).items()}


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


def figures(
    client, children: Sequence[Child], swept: Sequence[str], title: str, folder: Path, contours: dict | None = None
) -> list[str]:
    """Draw the summary figures into ``folder``; their file names. ``contours``: the result of
    :func:`contour_from` for each objective group, when the caller computed them (else they are
    computed here). The figures are drawn on both cores (:mod:`runner.tracking.plot_pool`). A figure that
    cannot be drawn is skipped with a warning (the table and tags still go on)."""
    import numpy as np

    from runner.tracking import plot_pool

    title = title if len(title) <= 60 else title[:59] + "…"
    jobs: list[tuple[str, str, tuple]] = []
    curves = {c.name: (np.asarray(c.loss_steps), np.asarray(c.loss)) for c in children if c.loss}
    if curves:
        jobs.append(("summary_loss.png", "runner.tracking.plots:overlay_loss_figure", (curves, f"{title}: loss")))
    groups = groups_by_objective(children)
    if contours is None:
        contours = contour_grids({key: (lambda group=group: contour_inputs(client, group)) for key, group in groups.items()})
    for key, group in groups.items():
        found = contours.get(key)
        if found is None:
            continue
        bounds, Z, paths, names, minima = found
        name = "summary_paths.png" if len(groups) == 1 else f"summary_paths_{_safe(group[0].params.get('objective.name', 'objective'))}.png"
        jobs.append((name, "runner.tracking.plots:overlay_paths_on_grid", (bounds, Z, paths, names, f"{title}: paths", minima)))
    for key in swept:
        others = [k for k in swept if k != key]
        series: dict[str, tuple[list[str], list[float]]] = {}
        for c in children:
            label = ", ".join(f"{k}={swept_value(c, k)}" for k in others)
            values, losses = series.setdefault(label, ([], []))
            values.append(swept_value(c, key))
            losses.append(c.final_loss)
        if series:
            jobs.append((f"summary_final_loss_{_safe(key)}.png", "runner.sweeps.summary:final_loss_by_group", (series, key, f"{title}: final loss vs {key}")))
    written = []
    # One job per figure, so that both workers share them.
    for name, (files, error) in plot_pool.draw_all([(job[0], [job]) for job in jobs]).items():
        if error:
            _warn(error)
        for file_name, data in files.items():
            (folder / file_name).write_bytes(data)
            written.append(file_name)
    return sorted(written, key=[job[0] for job in jobs].index)


def final_loss_by_group(series: dict[str, tuple[list[str], list[float]]], param: str, title: str):
    """:func:`runner.tracking.plots.final_loss_figure` over all points (its axes, scales and diverged
    markers), with one line per combination of the other swept values when there are several."""
    import numpy as np

    from runner.tracking import plots

    values = [v for vs, _ in series.values() for v in vs]
    losses = [x for _, xs in series.values() for x in xs]
    fig = plots.final_loss_figure(values, losses, param, title)
    if len(series) < 2:
        return fig
    ax = fig.axes[0]
    for line in list(ax.lines):
        line.remove()
    try:
        numeric = all(not isinstance(float(v), bool) for v in values)
    except ValueError:
        numeric = False
    cats = list(dict.fromkeys(str(v) for v in values))
    for i, (label, (vs, xs)) in enumerate(series.items()):
        x = np.array([float(v) for v in vs]) if numeric else np.array([cats.index(str(v)) for v in vs], dtype=float)
        y = np.asarray(xs, dtype=float)
        order = np.argsort(x, kind="stable")
        x, y = x[order], y[order]
        ok = np.isfinite(y)
        ax.plot(x[ok], y[ok], "-o" if numeric else "o", ms=5, color=f"C{i % 10}", label=label)
    plots._legend(ax, len(series))
    return fig


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in text)


def _warn(message: str) -> None:
    print(f"warning: sweep summary: {message}", file=sys.stderr)


def _fmt(value: float) -> str:
    return f"{value:.6g}" if math.isfinite(value) else str(value)


def describe(description: str, children: Sequence[Child], best: Child | None, outcome: str) -> str:
    """The parent's description: the sweep's own (its command) and a markdown table of the children."""
    base = description.split("\n\n**Result**", 1)[0]
    lines = [base, "", f"**Result**: {outcome}, {len(children)} runs" + (f"; best: `{best.name}` (final loss {_fmt(best.final_loss)})" if best else ""), ""]
    lines += ["| run | final loss | outcome | steps | status |", "|---|---|---|---|---|"]
    for c in children[:MAX_DESCRIBED]:
        lines.append(f"| {c.name} | {_fmt(c.final_loss)} | {c.outcome} | {c.steps if c.steps is not None else ''} | {c.status} |")
    if len(children) > MAX_DESCRIBED:
        lines.append(f"| … {len(children) - MAX_DESCRIBED} more in {TABLE} | | | | |")
    return "\n".join(lines)


def _open(uri: str, parent_id: str):
    from runner.tracking.store import quiet_mlflow_logs

    quiet_mlflow_logs()
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    return client, client.get_run(parent_id)


def finish_sweep(
    uri: str, parent_id: str, ended: str = "completed", contours: dict | None = None
) -> tuple[str, str, Child | None]:
    """Summarise the parent's children on it and end it; (status, outcome, best child or None).

    ``ended``: ``completed`` (every job returned), ``interrupted`` or ``aborted``. ``contours``: the
    paths figures' grids, computed by the caller from :func:`contour_inputs_of` (whose reading of
    the children is then reused). The parent is ended even when drawing or logging the summary
    fails (the error goes into the tag ``summary_error``).
    """
    from mlflow.entities import RunTag

    client, parent = _open(uri, parent_id)
    read_before = _READ.pop(parent_id, None)
    swept = swept_keys_of(parent)
    expected = parent.data.tags.get("sweep.jobs")
    tags: dict[str, str] = {}
    status, outcome, best = "FAILED", "aborted", None
    try:
        children = read_before if read_before is not None and contours is not None else read_children(client, parent)
        status, outcome = verdict(children, ended, int(expected) if expected and expected.isdigit() else None)
        failed = sum(c.status != "FINISHED" for c in children)
        tags.update({"sweep.outcome": outcome, "sweep.children": str(len(children)), "sweep.failed": str(failed)})
        best = best_child(children)
        if best is not None:
            tags.update({"best_child": best.name, "best_child_run_id": best.run_id, "best_final_loss": repr(best.final_loss)})
        tags["mlflow.note.content"] = describe(parent.data.tags.get("mlflow.note.content", ""), children, best, outcome)
        if children:
            client.log_table(parent_id, data=table(children, swept), artifact_file=TABLE)
            title = parent.info.run_name or "sweep"
            with tempfile.TemporaryDirectory(prefix="runner-sweep-") as tmp:
                if figures(client, children, swept, title, Path(tmp), contours):
                    client.log_artifacts(parent_id, tmp)
    except Exception as exc:  # noqa: BLE001 - the parent must still be ended
        tags["summary_error"] = f"{type(exc).__name__}: {exc}"[:500]
        tags.setdefault("sweep.outcome", outcome)
        _warn(tags["summary_error"])
    client.log_batch(parent_id, tags=[RunTag(k, v) for k, v in tags.items()], synchronous=True)
    client.set_terminated(parent_id, status=status)
    return status, outcome, best


def result_line(run_id: str, status: str, outcome: str, best: Child | None) -> str:
    line = f"parent run {run_id} ended {status} ({outcome})"
    return line + (f"; best: {best.name}, final loss {_fmt(best.final_loss)}" if best is not None else "")
