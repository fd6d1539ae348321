"""Wait for a sweep's SLURM jobs without ever waiting for a job that has ended without a result.

submitit's ``job.result()`` waits until the job's result file exists or ``sacct`` says it ended; on a
cluster without accounting a cancelled job never qualifies, and hydra-submitit-launcher calls it on
every job, so one cancelled job hangs the sweep for good. :func:`wait_for_jobs` watches the result
files and the queue (:mod:`runner.sweeps.slurm_queue`) instead: a job is done when its result file
exists, or when it has been out of ``squeue`` for ``grace_s`` seconds without one (a shared file
system may show the file late); such a job is *lost*, with the end state SLURM gives for it. If
``squeue`` itself does not answer for ``unreachable_s`` seconds, every job still waited for is lost
(state UNKNOWN). So the wait ends at the latest ``grace_s`` after the last job leaves the queue, and
a running job cannot stay in the queue past its time limit (plus ``KillWait``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from runner.sweeps.slurm_queue import SchedulerUnreachable, end_state, queued


@dataclass
class LostJob:
    """A job that ended without writing its result."""

    job_id: str
    state: str  # SLURM's end state: CANCELLED, TIMEOUT, PREEMPTED, NODE_FAIL … or UNKNOWN
    source: str  # where the state came from: sacct, scontrol, job log, none
    error_log: Path | None = None

    def message(self) -> str:
        where = f"; its log: {self.error_log}" if self.error_log is not None else ""
        return (f"SLURM job {self.job_id} was {self.state}: it ended without a result "
                f"(state from {self.source}){where}")


class SlurmJobLost(RuntimeError):
    """The error a lost job's ``JobReturn`` carries (the sweep raises it once all jobs are in)."""


def _error_log(job: Any) -> Path:
    return Path(job.paths.stderr)


def _logs(job: Any) -> tuple[Path, Path]:
    return Path(job.paths.stdout), Path(job.paths.stderr)


def wait_for_jobs(jobs: Sequence[Any], poll_s: float = 2.0, grace_s: float = 10.0, unreachable_s: float = 300.0,
                  say: Callable[[str], None] = print) -> dict[str, LostJob]:
    """Wait until every submitit job has its result file or is lost; ``{job id: LostJob}``.

    ``jobs``: submitit jobs (``job_id``, ``paths.result_pickle``, ``paths.stdout``, ``paths.stderr``)."""
    pending = {job.job_id: job for job in jobs}
    gone: dict[str, tuple[float, str, str]] = {}  # job id -> (first seen out of the queue, state, source)
    lost: dict[str, LostJob] = {}
    silent_since: float | None = None
    while pending:
        for job_id in [j for j, job in pending.items() if Path(job.paths.result_pickle).exists()]:
            del pending[job_id]
        if not pending:
            break
        now = time.monotonic()
        try:
            in_queue = queued(pending)
            silent_since = None
        except SchedulerUnreachable as exc:
            silent_since = silent_since or now
            if now - silent_since >= unreachable_s:
                say(f"warning: {exc} for {now - silent_since:.0f} s; {len(pending)} job(s) given up")
                lost.update({j: LostJob(j, "UNKNOWN", f"none: {exc}", _error_log(job)) for j, job in pending.items()})
                break
            time.sleep(poll_s)
            continue
        for job_id, job in list(pending.items()):
            if job_id in in_queue:
                gone.pop(job_id, None)
            elif job_id not in gone:  # ask now: slurmctld forgets a job MinJobAge after its end
                gone[job_id] = (now, *end_state(job_id, _logs(job)))
            elif now - gone[job_id][0] >= grace_s:
                _, state, source = gone[job_id]
                if state == "UNKNOWN":
                    state, source = end_state(job_id, _logs(job))
                lost[job_id] = LostJob(job_id, state, source, _error_log(job))
                del pending[job_id]
                say(f"warning: {lost[job_id].message()}")
        if pending:
            time.sleep(poll_s)
    return lost
