"""A launch of the batched launcher, on the runner's side: run the groups, send their rows to the
writer process as child runs while the launcher does Hydra's bookkeeping, then wait for the writer
with a progress bar over runs.

Set ``RUNNER_BATCHED_PROFILE=1`` to get, on stderr, where the launch's time went in this process.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from runner.batched.children import child_records, chunks, merge_columns, table_columns
from runner.batched.group import GroupRun, final_value, run_group, split_to_fit
from runner.batched.plan import Group, LaunchPlan
from runner.errors import UserError
from runner.job import result_line
from runner.tracking.naming import PARENT_ENV, SWEPT_ENV
from runner.tracking.recorder import open_store


@dataclass
class RowResult:
    """What a batched job returns, prints and warns."""

    value: float
    line: str
    warning: str | None = None


@dataclass
class Outcome:
    """The launch's results: per job number, its row's result, or why it runs alone after all,
    or the error it fails with."""

    results: dict[int, RowResult] = field(default_factory=dict)
    alone: dict[int, str] = field(default_factory=dict)
    failed: dict[int, Exception] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)  # one per descent


def run_plan(plan: LaunchPlan, recording: "Recording") -> Outcome:
    """Descend every group (in parts that fit), hand each part's rows to ``recording``."""
    out = Outcome()
    swept = os.environ.get(SWEPT_ENV)
    for group in plan.groups:
        for part in split_to_fit(group):
            for run in _descents(part, swept, out):
                recording.add(run)
                for row, (job, row_plan) in enumerate(zip(run.group.jobs, run.plans)):
                    out.results[job.num] = RowResult(final_value(run.traj, row), result_line(row_plan, run.traj, row), row_plan.warning)
                out.lines.append(_descent_line(run))
    return out


def _descent_line(run: GroupRun) -> str:
    """``batched: 1000 jobs of rosenbrock-sgd as one (1000, 2) descent on cpu: 1.81 s``."""
    first, rows = run.plans[0], len(run.group.jobs)
    return (f"batched: {rows} job{'s' if rows != 1 else ''} of {first.problem.name}-{first.optimizer} as one "
            f"({rows}, {first.problem.dim}) descent on {first.device}: {run.seconds:.2f} s")


def _descents(group: Group, swept: str | None, out: Outcome):
    """The group's descent; halves of it when it does not fit in memory (a single job that does not
    fit fails with the job-by-job path's message); its jobs run alone when it raises otherwise
    (each then fails or finishes on its own, as under the job-by-job launchers)."""
    try:
        yield run_group(group, swept)
    except UserError as exc:
        if len(group.jobs) == 1:
            out.failed[group.jobs[0].num] = exc
            return
        half = len(group.jobs) // 2
        for part in (Group(group.key, group.cls, group.rule, group.jobs[:half], group.hyper[:half]),
                     Group(group.key, group.cls, group.rule, group.jobs[half:], group.hyper[half:])):
            yield from _descents(part, swept, out)
    except Exception as exc:  # noqa: BLE001 - e.g. an objective that raises for some rows
        why = f"their batched descent raised {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        out.alone.update({job.num: why for job in group.jobs})


class Recording:
    """The launch's child runs on their way to the store: sent in chunks as each descent ends (the
    writer writes them while the launcher goes on), and the parent's trajectory table at the end."""

    def __init__(self, table: bool) -> None:
        self.token = uuid.uuid4().hex
        self.table = table
        self.parent = os.environ.get(PARENT_ENV) or None
        self.store: Any = None
        self.sent = 0
        self.columns: list[dict] = []
        self.names: dict[int, str] = {}
        self.seconds = 0.0

    def add(self, run: GroupRun) -> None:
        started = time.perf_counter()
        recorded = [job for job in run.group.jobs if job.cfg.tracking.enabled]
        if recorded:
            self.store = open_store(recorded[0].cfg.tracking)
            for chunk in chunks(child_records(run)):
                self.store.log_children(self.parent, chunk, self.token)
                self.sent += len(chunk)
            if self.table and self.parent:
                self.columns.append(table_columns(run))
                self.names.update({job.num: plan.name for job, plan in zip(run.group.jobs, run.plans)})
        self.seconds += time.perf_counter() - started

    def cancel(self) -> None:
        """An interrupted launch: the writer drops the children it has not written yet (it would
        otherwise write them all before the sweep could end), and says how many."""
        if self.store is None or not self.sent:
            return
        self.store.cancel_children(self.token)
        done = self.store.children_written(self.token)
        sys.stderr.write(f"interrupted: {self.sent - done} of {self.sent} runs of this launch were computed but not "
                         "recorded; run the sweep again to record them\n")

    def finish(self, first: int, last: int) -> None:
        """Send the table (``trajectories/jobs-<first>-<last>.parquet`` on the parent), then wait
        until the writer has written every child, with a progress bar over runs on a terminal."""
        if self.store is None:
            return
        if self.columns:
            self.store.log_trajectory_table(self.parent, f"trajectories/jobs-{first}-{last}.parquet",
                                            merge_columns(self.columns), self.names)
            self.columns = []
        from tqdm import tqdm

        done = 0
        with tqdm(total=self.sent, desc="recording runs", unit="run", file=sys.stderr, disable=None, mininterval=0.5, leave=False) as bar:
            while done < self.sent:
                now = self.store.children_written(self.token)
                bar.update(now - done)
                done = now
                if done < self.sent:
                    time.sleep(0.1)
