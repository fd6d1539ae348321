"""What SLURM says about a sweep's jobs, asked the way that works on any cluster.

submitit learns a job's state only from ``sacct``, which needs SLURM's accounting (slurmdbd and a
database). Without it ``sacct`` fails, submitit never learns that a job ended without writing its
result (cancelled, past its time limit, preempted, its node lost), and waits for that result for
ever. The queue is always there: a job is in ``squeue`` (PENDING, RUNNING, COMPLETING …) until it
has ended, so a job that is neither in ``squeue`` nor has a result has ended without one. Its end
state then comes from the first source that knows it:

1. ``sacct`` (accounting on): ``sacct -n -P -X -j ID -o JobID,State`` → ``CANCELLED by 0``;
2. ``scontrol -o show job ID`` → ``JobState=TIMEOUT`` (slurmctld forgets a job ``MinJobAge``
   seconds after it ended: 300 by default, so it is asked as soon as the job leaves the queue);
3. the line slurmstepd writes into the job's error log when it kills it:
   ``*** JOB 13 ON node1 CANCELLED AT 2026-11-27T14:52:51 DUE TO TIME LIMIT ***`` → TIMEOUT
   (``DUE TO PREEMPTION`` → PREEMPTED, ``DUE TO NODE FAILURE`` → NODE_FAIL, plain → CANCELLED);
4. else ``UNKNOWN``.

Job ids are submitit's: ``12`` for a job, ``12_3`` for task 3 of array 12 (``squeue -r`` lists an
array's tasks one per line in that form).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Iterable


class SchedulerUnreachable(Exception):
    """``squeue`` did not answer (slurmctld down, or the command missing)."""


def _run(cmd: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess | None:
    """A SLURM client command, text output; None if it could not run or did not answer in time."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None


def queued(job_ids: Iterable[str]) -> dict[str, str]:
    """``{job id: state}`` of those of ``job_ids`` still in ``squeue`` (PENDING, RUNNING,
    COMPLETING …); one ``squeue`` call for all. Raises :class:`SchedulerUnreachable` when squeue fails
    for another reason than jobs it no longer knows."""
    wanted = set(job_ids)
    arrays = sorted({j.split("_")[0] for j in wanted})
    if not arrays:
        return {}
    res = _run(["squeue", "-h", "-r", "-j", ",".join(arrays), "-o", "%i %T"])
    if res is None:
        raise SchedulerUnreachable("squeue did not answer")
    if res.returncode != 0:
        if "Invalid job id" in res.stderr:  # every one of them has left the queue and been purged
            return {}
        raise SchedulerUnreachable(f"squeue failed: {res.stderr.strip() or res.returncode}")
    states = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in wanted:
            states[parts[0]] = parts[1]
    return states


def end_state(job_id: str, logs: Iterable[Path] = ()) -> tuple[str, str]:
    """``(state, source)`` of a job that has left the queue: see the module docstring for the order.
    ``logs``: the job's output and error logs (slurmstepd writes its STEP line into one, JOB into the other)."""
    for source, ask in (("sacct", _sacct_state), ("scontrol", _scontrol_state)):
        state = ask(job_id)
        if state:
            return state, source
    text = "\n".join(Path(p).read_text(errors="replace") for p in logs if Path(p).is_file())
    state = log_state(text)
    return (state, "job log") if state else ("UNKNOWN", "none")


def _sacct_state(job_id: str) -> str | None:
    res = _run(["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "JobID,State"])
    if res is None or res.returncode != 0:
        return None
    for line in res.stdout.splitlines():
        jid, _, state = line.partition("|")
        if jid == job_id and state:
            return state.split()[0]  # "CANCELLED by 0"
    return None


def _scontrol_state(job_id: str) -> str | None:
    res = _run(["scontrol", "-o", "show", "job", job_id])
    if res is None or res.returncode != 0:
        return None
    match = re.search(r"\bJobState=(\S+)", res.stdout)
    return match.group(1) if match else None


_KILL_LINE = re.compile(r"\*\*\* (?:JOB|STEP) \S+ ON \S+ CANCELLED AT \S+(?: DUE TO ([A-Z ]+?))? \*\*\*")
_DUE_TO = {"TIME LIMIT": "TIMEOUT", "PREEMPTION": "PREEMPTED", "NODE FAILURE": "NODE_FAIL"}


def log_state(text: str) -> str | None:
    """The state slurmstepd's kill line in a job's log implies (the last such line), or None."""
    found = _KILL_LINE.findall(text)
    if not found:
        return None
    return _DUE_TO.get(found[-1], "CANCELLED") if found[-1] else "CANCELLED"
