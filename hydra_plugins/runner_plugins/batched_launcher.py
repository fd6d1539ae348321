"""``hydra/launcher=batched``: a sweep's jobs as one tensor program, every job still its own run.

The runner's default launcher (``conf/config.yaml``). For each batch of jobs the sweeper hands it:

1. compose each job's task config (:func:`runner.sweeps.compose.compose_task`, reusing the sweeper's
   validation);
2. group the jobs that differ only in per-row values (:mod:`runner.batched.plan`) and run each group
   as one ``(B, d)`` descent (:mod:`runner.batched.group`); its rows go to the MLflow writer process
   as child runs at once (:mod:`runner.batched.launch`);
3. meanwhile give every job, in order, what Hydra's ``run_job`` gives it (:mod:`.job_shell`): its
   folder with ``.hydra/``, its ``JobReturn`` (the final loss, ``inf`` when diverged) and the
   callbacks; print its line as the job would have;
4. wait until the writer has recorded every child (a progress bar over runs on a terminal).

A job that cannot be batched (an optimizer without a batched rule, ``check_grad``,
``backend.compile``, ``task=derivatives`` …) runs alone through the task function and Hydra's own
``run_job``, as under the ``cached`` launcher; the launcher says why, once per reason. A job with bad
input fails with the job-by-job path's one-line error (its ``JobReturn`` FAILED); the others finish.
"""


import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from hydra.errors import CompactHydraException
from omegaconf import open_dict

from hydra_plugins.runner_plugins import job_shell
from hydra_plugins.runner_plugins.cached_launcher import CachedBasicLauncher, run_one

log = logging.getLogger(__name__)


@dataclass
class BatchedLauncherConf:
    _target_: str = "hydra_plugins.runner_plugins.batched_launcher.BatchedLauncher"
    max_batch: int = 1_000_000  # rows of one descent at most
    table: bool = True  # the parent's table of every trajectory (trajectories/*.parquet)


ConfigStore.instance().store(group="hydra/launcher", name="batched", node=BatchedLauncherConf, provider="runner")


class JobInputError(CompactHydraException):
    """A job's bad input: Hydra shows the one-line message, no traceback."""


class BatchedLauncher(CachedBasicLauncher):
    """Runs a sweep's jobs in batched groups in this process (see the module docstring); the jobs
    that run alone run as under the cached launcher."""

    def __init__(self, max_batch: int = 1_000_000, table: bool = True) -> None:
        super().__init__()
        self.max_batch, self.table = int(max_batch), bool(table)
        self.job_callbacks = False  # whether a configured callback acts on jobs (set per launch)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from runner.batched.launch import Recording, run_plan
        from runner.batched.plan import plan

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs locally, batched")
        timer = _Timer()
        tasks, jobs = self._compose(job_overrides, initial_job_idx)
        timer.lap("compose")
        planned = plan(jobs, self.max_batch)
        timer.lap("plan")
        recording = Recording(self.table)
        try:
            outcome = run_plan(planned, recording)
            timer.lap("descend and send")
            alone = {**{n: "its config needs Hydra's own composition" for n, t in tasks.items() if t is None},
                     **planned.alone, **outcome.alone}
            failed = {**planned.failed, **outcome.failed}
            _announce(outcome.lines, alone)
            self.job_callbacks = job_shell.job_callbacks(self.config)
            runs = [self._finish(num, list(overrides), tasks.get(num), outcome.results.get(num), failed.get(num))
                    for num, overrides in enumerate(job_overrides, start=initial_job_idx)]
            timer.lap("job folders")
            recording.finish(initial_job_idx, initial_job_idx + len(job_overrides) - 1)
        except KeyboardInterrupt:
            recording.cancel()
            raise
        timer.lap("wait for the writer")
        timer.report(len(job_overrides), recording.seconds)
        return runs

    def _compose(self, job_overrides, initial_job_idx):
        """Each job's :class:`runner.sweeps.compose.TaskJob` (None: Hydra's own path), and the
        composed ones as :class:`runner.batched.plan.Job`."""
        from runner.batched.plan import Job
        from runner.sweeps.compose import compose_task, hydra_node

        loader, sweep_dir = self.hydra_context.config_loader, str(self.config.hydra.sweep.dir)
        tasks, jobs = {}, []
        for num, overrides in enumerate(job_overrides, start=initial_job_idx):
            task = tasks[num] = compose_task(loader, self.config, list(overrides))
            if task is None:
                continue
            task.node = job_shell.job_node(hydra_node(loader, task.key), num, task.task_overrides,
                                           task.override_dirname, task.env_set, sweep_dir)
            jobs.append(Job(num, task.task, task.task_overrides, Path(task.node["runtime"]["output_dir"])))
        return tasks, jobs

    def _finish(self, num: int, overrides: List[str], task, result, error) -> JobReturn:
        """One job's return, in order: the batched row's, the failed job's, or the job run alone."""
        log.info(f"\t#{num} : {' '.join(filter_overrides(overrides))}")
        if result is None and error is None:
            return self._alone(num, overrides)
        job_shell.write_files(Path(task.node["runtime"]["output_dir"]), task.task, task.node)
        if error is not None:
            message = " ".join(str(error).split())
            sys.stderr.write(f"error: job #{num} ({' '.join(filter_overrides(overrides))}): {message}\n")
            ret = job_shell.job_return(task.task, task.node, None, JobInputError(message))
        else:
            if result.warning:
                sys.stderr.write(f"warning: {result.warning}\n")
            print(result.line, flush=True)
            ret = job_shell.job_return(task.task, task.node, result.value)
        if self.job_callbacks:
            self._callbacks(num, overrides, task, ret)
        return ret

    def _alone(self, num: int, overrides: List[str]) -> JobReturn:
        ret = run_one(self.hydra_context, self.task_function, self.config, num, overrides)
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return ret

    def _callbacks(self, num: int, overrides: List[str], task, ret: JobReturn) -> None:
        """``on_job_start`` and ``on_job_end`` with the job's full config, as ``run_job`` calls them."""
        from runner.sweeps.compose import compose_job

        config = compose_job(self.hydra_context.config_loader, self.config, overrides)
        with open_dict(config):
            config.hydra.job.id = config.hydra.job.num = num
            config.hydra.runtime.output_dir = task.node["runtime"]["output_dir"]
        saved = HydraConfig.instance().cfg
        HydraConfig.instance().set_config(config)
        try:
            self.hydra_context.callbacks.on_job_start(config=config, task_function=self.task_function)
            self.hydra_context.callbacks.on_job_end(config=config, job_return=ret)
        finally:
            HydraConfig.instance().cfg = saved


def _announce(lines: List[str], alone: Dict[int, str]) -> None:
    """One line per descent, and once per reason the jobs that run alone."""
    for line in lines:
        print(line, flush=True)
    reasons: Dict[str, int] = {}
    for why in alone.values():
        reasons[why] = reasons.get(why, 0) + 1
    for why, count in reasons.items():
        sys.stderr.write(f"note: batched launcher: {count} job(s) run one by one: {why}\n")
    sys.stderr.flush()


class _Timer:
    """``RUNNER_BATCHED_PROFILE=1``: where a launch's time went in this process, on stderr."""

    def __init__(self) -> None:
        import time

        self.clock = time.perf_counter
        self.last = self.clock()
        self.laps: Dict[str, float] = {}
        self.on = bool(os.environ.get("RUNNER_BATCHED_PROFILE"))

    def lap(self, name: str) -> None:
        now = self.clock()
        self.laps[name] = self.laps.get(name, 0.0) + now - self.last
        self.last = now

    def report(self, jobs: int, sending: float) -> None:
        if self.on:
            parts = ", ".join(f"{k} {v:.2f} s" for k, v in self.laps.items())
            sys.stderr.write(f"batched launch of {jobs} jobs: {parts} (building and sending the records {sending:.2f} s)\n")
