"""The parts of ``hydra/launcher=slurm`` that need no cluster: the tags a SLURM job's run gets, the end
states read from slurmstepd's lines (copied from the test cluster's job logs), the status a lost job's
run ends with, the time-limit signal, and giving up when ``squeue`` cannot be run. On the real
cluster: tests/test_slurm.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from runner.sweeps.slurm_queue import end_state, log_state
from runner.sweeps.slurm_wait import wait_for_jobs
from runner.tracking.scheduler import scheduler_tags, slurm_job_id, status_for


def test_a_job_is_named_as_squeue_names_it():
    assert slurm_job_id({"SLURM_JOB_ID": "13", "SLURM_ARRAY_JOB_ID": "12", "SLURM_ARRAY_TASK_ID": "1"}) == "12_1"
    assert slurm_job_id({"SLURM_JOB_ID": "7"}) == "7"
    assert slurm_job_id({}) is None
    assert scheduler_tags({"SLURM_JOB_ID": "7", "SLURMD_NODENAME": "node3"}) == {"slurm.job_id": "7", "slurm.node": "node3"}
    assert scheduler_tags({"PATH": "/usr/bin"}) == {}


def test_end_state_from_slurmstepd_lines():
    cancelled = "submitit WARNING - Bypassing signal SIGTERM\nslurmstepd-vm: error: *** STEP 2.0 ON vm CANCELLED AT 2026-11-27T14:57:49 ***\n"
    timeout = "slurmstepd-vm: error: *** JOB 1 ON vm CANCELLED AT 2026-11-27T15:06:01 DUE TO TIME LIMIT ***\n"
    assert log_state(cancelled) == "CANCELLED"
    assert log_state(timeout) == "TIMEOUT"
    assert log_state("*** JOB 9 ON n1 CANCELLED AT 2026-01-01T00:00:00 DUE TO PREEMPTION ***") == "PREEMPTED"
    assert log_state("*** JOB 9 ON n1 CANCELLED AT 2026-01-01T00:00:00 DUE TO NODE FAILURE ***") == "NODE_FAIL"
    assert log_state("srun: error: Timed out waiting for job step to complete\n") is None


def test_the_scheduler_stopping_a_job_kills_its_run():
    assert [status_for(s) for s in ("CANCELLED", "TIMEOUT", "PREEMPTED", "DEADLINE")] == ["KILLED"] * 4
    assert [status_for(s) for s in ("FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "COMPLETED", "UNKNOWN")] == ["FAILED"] * 5


def test_the_time_limit_warning_is_harmless_unless_asked():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra_plugins.runner_plugins.slurm_launcher import quiet_time_warning

    assert quiet_time_warning({"signal_delay_s": 120}) == {"signal": "URG@120"}
    assert quiet_time_warning({"signal_delay_s": 60, "additional_parameters": {"mail-type": "END"}}) == {
        "mail-type": "END", "signal": "URG@60"}
    assert quiet_time_warning({"additional_parameters": {"signal": "USR1@300"}}) == {"signal": "USR1@300"}


@dataclass
class Paths:
    result_pickle: Path
    stdout: Path
    stderr: Path


@dataclass
class Job:
    job_id: str
    paths: Paths


def test_without_squeue_the_wait_gives_up(tmp_path, monkeypatch):
    """No squeue on PATH (a login node without SLURM's clients): the jobs still waited for are lost,
    with their log; one that had written its result is not."""
    monkeypatch.setenv("PATH", str(tmp_path))
    jobs = [Job(f"5_{i}", Paths(tmp_path / f"{i}_result.pkl", tmp_path / f"{i}.out", tmp_path / f"{i}.err")) for i in range(2)]
    jobs[0].paths.result_pickle.write_bytes(b"done")
    (tmp_path / "1.err").write_text("*** JOB 6 ON n1 CANCELLED AT 2026-01-01T00:00:00 ***\n")
    said = []
    lost = wait_for_jobs(jobs, poll_s=0.01, unreachable_s=0.05, say=said.append)
    assert list(lost) == ["5_1"]
    assert (lost["5_1"].state, lost["5_1"].error_log) == ("UNKNOWN", tmp_path / "1.err")
    assert lost["5_1"].message().startswith("SLURM job 5_1 was UNKNOWN: it ended without a result (state from none: squeue")
    assert said and "1 job(s) given up" in said[0]
    assert end_state("5_1", [tmp_path / "1.err"]) == ("CANCELLED", "job log")  # no sacct, no scontrol: the log
