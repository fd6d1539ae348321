"""The end of a sweep: read the parent run's children back from MLflow, summarise them on the parent, end it.

What the parent gets (all computed from what the children recorded, so the summary is the same whichever
launcher ran them and wherever):

- ``summary_table.json`` (``MlflowClient.log_table``): one row per child: its name, the swept values,
  lr, objective, optimizer, final loss, outcome, final step (steps taken), status and run id;
- the figures of :mod:`runner.sweeps.summary_figures` (loss curves, paths, final loss against each swept
  key), one panel or file per objective;
- tags ``best_child`` (run name), ``best_child_run_id``, ``best_final_loss``, ``sweep.children``,
  ``sweep.failed``, ``sweep.outcome`` and a description (``mlflow.note.content``) with the command and
  a table of the children.

Final loss of a child: the last point of its ``loss`` history, ``inf`` when it diverged (as the job
returns to sweepers), ``nan`` when it recorded no loss. The best child is the FINISHED child with the
smallest finite final loss **of its objective**: a sweep over ``objective=f,g`` has a best run of f and a
best run of g (their losses are values of different functions, and do not compare), tagged
``best_child.<objective>``, ``best_child_run_id.<objective>`` and ``best_final_loss.<objective>``
(objectives named as in :mod:`runner.sweeps.children`); ``best_child`` and its two companions are set
only when the sweep has a single objective.

Parent status: FINISHED when every job finished; FAILED when a job failed or the sweep stopped early
(``sweep.outcome`` ``failed_jobs``, ``aborted`` or ``missing_jobs``); KILLED when it was interrupted.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Sequence

from runner.sweeps.children import (  # noqa: F401 - search_children: the guard's way in
    Child,
    groups_by_objective,
    read_children,
    search_children,
    swept_keys_of,
    swept_value,
    warn,
)
from runner.sweeps.summary_figures import contour_grids, contour_inputs, figures  # noqa: F401 - contour_grids: the callback's

TABLE = "summary_table.json"
MAX_DESCRIBED = 50  # children listed in the parent's description
Best = dict  # {objective: its best child}


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
    cols["reused"] = [c.reused for c in children]
    cols["run_id"] = [c.run_id for c in children]
    return cols


def best_child(children: Sequence[Child]) -> Child | None:
    """The FINISHED child with the smallest finite final loss (children of one objective)."""
    ok = [c for c in children if c.status == "FINISHED" and math.isfinite(c.final_loss)]
    return min(ok, key=lambda c: c.final_loss) if ok else None


def best_by_objective(children: Sequence[Child]) -> Best:
    """``{objective: best child}`` for each objective that has one."""
    found = {label: best_child(group) for label, group in groups_by_objective(children).items()}
    return {label: child for label, child in found.items() if child is not None}


def best_tags(best: Best, objectives: int) -> dict[str, str]:
    """``best_child``, ``best_child_run_id``, ``best_final_loss``: plain with a single objective,
    ``.<objective>`` after each with several."""
    tags = {}
    for label, child in best.items():
        suffix = "" if objectives == 1 else f".{label}"
        tags[f"best_child{suffix}"] = child.name
        tags[f"best_child_run_id{suffix}"] = child.run_id
        tags[f"best_final_loss{suffix}"] = repr(child.final_loss)
    return tags


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


_READ: dict[str, list[Child]] = {}  # parent id -> children read by contour_inputs_of, for finish_sweep


def contour_inputs_of(uri: str, parent_id: str) -> dict[str, dict | None]:
    """:func:`runner.sweeps.summary_figures.contour_inputs` of each objective group of the parent's
    children (run in the writer by the sweep's process, which then evaluates
    :func:`runner.sweeps.summary_figures.contour_from` itself, where torch is)."""
    client, parent = _open(uri, parent_id)
    children = _READ[parent_id] = read_children(client, parent)
    return {label: contour_inputs(client, group) for label, group in groups_by_objective(children).items()}


def _fmt(value: float) -> str:
    return f"{value:.6g}" if math.isfinite(value) else str(value)


def best_text(best: Best, markdown: bool = False) -> str:
    """``best: g-sgd-lr0.1, final loss 1.41e-142``, or with several objectives ``ranked within each
    objective: best of f: f-manual-lr0.1 (final loss -1.33333); best of g: …``."""
    quote = "`" if markdown else ""
    if len(best) == 1:
        ((_, child),) = best.items()
        return f"best: {quote}{child.name}{quote}, final loss {_fmt(child.final_loss)}"
    parts = [f"best of {label}: {quote}{c.name}{quote} (final loss {_fmt(c.final_loss)})" for label, c in best.items()]
    return "ranked within each objective: " + "; ".join(parts)


def describe(description: str, children: Sequence[Child], best: Best, outcome: str) -> str:
    """The parent's description: the sweep's own (its command) and a markdown table of the children."""
    base = description.split("\n\n**Result**", 1)[0]
    result = f"**Result**: {outcome}, {len(children)} runs" + (f"; {best_text(best, markdown=True)}" if best else "")
    lines = [base, "", result, ""]
    lines += ["| run | final loss | outcome | steps | status |", "|---|---|---|---|---|"]
    for c in children[:MAX_DESCRIBED]:
        status = f"{c.status} (reused)" if c.reused else c.status
        lines.append(f"| {c.name} | {_fmt(c.final_loss)} | {c.outcome} | {c.steps if c.steps is not None else ''} | {status} |")
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
) -> tuple[str, str, Best]:
    """Summarise the parent's children on it and end it; (status, outcome, ``{objective: best child}``).

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
    status, outcome, best = "FAILED", "aborted", {}
    try:
        children = read_before if read_before is not None and contours is not None else read_children(client, parent)
        status, outcome = verdict(children, ended, int(expected) if expected and expected.isdigit() else None)
        failed = sum(c.status != "FINISHED" for c in children)
        tags.update({"sweep.outcome": outcome, "sweep.children": str(len(children)), "sweep.failed": str(failed)})
        best = best_by_objective(children)
        tags.update(best_tags(best, len(groups_by_objective(children))))
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
        warn(tags["summary_error"])
    client.log_batch(parent_id, tags=[RunTag(k, v) for k, v in tags.items()], synchronous=True)
    client.set_terminated(parent_id, status=status)
    return status, outcome, best


def result_line(run_id: str, status: str, outcome: str, best: Best) -> str:
    line = f"parent run {run_id} ended {status} ({outcome})"
    return line + (f"; {best_text(best)}" if best else "")
