"""``hydra/launcher=slurm``: hydra-submitit-launcher's ``submitit_slurm``, with a wait that ends.

It submits the jobs exactly as ``submitit_slurm`` does (same keys: ``partition``, ``timeout_min``,
``cpus_per_task``, ``mem_gb``, ``setup``, ``additional_parameters``, ``array_parallelism`` …; one
SLURM job array), but waits for them with :func:`runner.sweeps.slurm_wait.wait_for_jobs` instead of
submitit's ``job.results()``, which never returns for a job that ended without a result on a
cluster without accounting (``scancel``, a time limit, a preemption, a lost node). A job that left
the queue without a result is reported as failed: its ``JobReturn`` carries ``SLURM job 12_3 was
CANCELLED: …``, so the sweep ends and its guard ends the parent FAILED (``sweep.outcome=failed_jobs``).
Before that, the job's run, found by its ``slurm.job_id`` tag, is ended if it was left RUNNING:
KILLED when the scheduler stopped the job (CANCELLED, TIMEOUT, PREEMPTED), FAILED otherwise,
with ``slurm.state``, the error and the trajectory.csv the job streamed to its folder
(:func:`runner.tracking.scheduler.end_job_runs`).

Extra keys: ``poll_s`` (how often to look at the queue, default 2), ``result_grace_s`` (how long a
job may be out of the queue before its result file shows, default 10: a shared file system can be
late), ``scheduler_timeout_s`` (give up on jobs when ``squeue`` has not answered this long, 300).
Without hydra-submitit-launcher this module registers nothing.
"""

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf, open_dict

try:
    from hydra_plugins.hydra_submitit_launcher import config as _submitit_config
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher as _submitit_launcher
except ImportError:  # the sweeps extra is not installed
    _submitit_config = _submitit_launcher = None

log = logging.getLogger(__name__)
OUR_KEYS = ("poll_s", "result_grace_s", "scheduler_timeout_s")

if _submitit_launcher is not None:

    @dataclass
    class RunnerSlurmConf(_submitit_config.SlurmQueueConf):
        _target_: str = "hydra_plugins.runner_plugins.slurm_launcher.RunnerSlurmLauncher"
        poll_s: float = 2.0
        result_grace_s: float = 10.0
        scheduler_timeout_s: float = 300.0

    ConfigStore.instance().store(group="hydra/launcher", name="slurm", node=RunnerSlurmConf, provider="runner")

    class RunnerSlurmLauncher(_submitit_launcher.SlurmLauncher):
        """``submitit_slurm`` whose wait ends when the jobs have left the queue (see the module)."""

        def __init__(self, **params: Any) -> None:
            self.wait_params = {k: float(params.pop(k)) for k in OUR_KEYS if k in params}
            super().__init__(**params)

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
            from runner.sweeps.slurm_wait import wait_for_jobs

            jobs = self.submit(job_overrides, initial_job_idx)
            log.info(f"Submitted SLURM job array {jobs[0].job_id.split('_')[0]} ({len(jobs)} jobs)")
            lost = wait_for_jobs(jobs, poll_s=self.wait_params.get("poll_s", 2.0),
                                 grace_s=self.wait_params.get("result_grace_s", 10.0),
                                 unreachable_s=self.wait_params.get("scheduler_timeout_s", 300.0), say=log.warning)
            returns = []
            for idx, (job, overrides) in enumerate(zip(jobs, job_overrides), start=initial_job_idx):
                if job.job_id in lost:
                    returns.append(self.lost_return(lost[job.job_id], list(overrides), idx))
                else:
                    returns.append(collect(job, list(overrides)))
            return returns

        def executor(self) -> Any:
            """submitit's SLURM executor with this launcher's parameters, as hydra-submitit-launcher makes it."""
            import submitit

            init = {"folder": self.params["submitit_folder"]}
            if "max_num_timeout" in self.params:
                init[f"{self._EXECUTOR}_max_num_timeout"] = self.params["max_num_timeout"]
            executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
            params = {k: v for k, v in self.params.items() if k not in ("submitit_folder", "max_num_timeout")}
            params["additional_parameters"] = quiet_time_warning(params)
            base_keys = set(OmegaConf.structured(_submitit_config.BaseQueueConf).keys())
            executor.update_parameters(**{k if k in base_keys else f"{self._EXECUTOR}_{k}": v for k, v in params.items()})
            return executor

        def submit(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> List[Any]:
            """Submit the jobs as hydra-submitit-launcher's ``launch`` does (one job array)."""
            executor = self.executor()
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
            if "mode" in self.config.hydra.sweep:
                os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
            job_params = []
            for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
                log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
                job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
            return executor.map_array(self, *zip(*job_params))

        def lost_return(self, lost: Any, overrides: List[str], idx: int) -> JobReturn:
            """A failed ``JobReturn`` for a lost job, after ending the run it left RUNNING."""
            from runner.sweeps.slurm_wait import SlurmJobLost

            job_dir = self.job_dir(overrides, idx, lost.job_id)
            self.end_runs(lost, job_dir)
            return JobReturn(overrides=overrides, working_dir=str(job_dir), status=JobStatus.FAILED,
                             _return_value=SlurmJobLost(lost.message()))

        def job_dir(self, overrides: List[str], idx: int, job_id: str) -> Path:
            """The job's output folder (``hydra.sweep.dir``/``hydra.sweep.subdir``), as the job had it."""
            from runner.sweeps.compose import compose_job

            config = compose_job(self.hydra_context.config_loader, self.config, overrides)
            with open_dict(config):
                config.hydra.job.num = idx
                config.hydra.job.id = job_id
            return Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)

        def end_runs(self, lost: Any, job_dir: Path) -> None:
            """End the lost job's run (through this process's MLflow writer, which the sweep opened)."""
            tracking = self.config.get("tracking")
            if tracking is None or not tracking.enabled:
                return
            from runner.tracking import writer
            from runner.tracking.store import StoreError, resolve_uri

            files = {"trajectory.csv": str(job_dir / "trajectory.csv")}
            try:
                ended = writer.writer().run_function("runner.tracking.scheduler:end_job_runs", resolve_uri(tracking.uri),
                                                     tracking.experiment, lost.job_id, lost.state, lost.message(), files)
            except StoreError as exc:
                log.warning(f"SLURM job {lost.job_id}: its run could not be ended: {exc}")
                return
            for run_id, status in ended:
                log.warning(f"SLURM job {lost.job_id}: run {run_id} is {status} (slurm.state={lost.state})")

    def quiet_time_warning(params: Dict[str, Any]) -> Dict[str, Any]:
        """``additional_parameters`` with ``signal: URG@<signal_delay_s>`` unless it names a signal.

        submitit asks SLURM for ``--signal=USR2@<signal_delay_s>`` (120 s): SLURM sends it to every
        process of the job, and submitit's handler then requeues the job or, when it may not
        (``max_num_timeout=0``; a runner job has no checkpoint to resume from anyway), raises in the
        middle of it. The job ended ``signal_delay_s`` early, at once when the limit is shorter
        (``timeout_min=1`` was killed during its imports), and the runner's writer process, which has
        no handler for SIGUSR2, died of it. SIGURG (SLURM accepts URG, not WINCH) is ignored by every
        process that does not ask for it: the job runs until SLURM stops it at its limit, and the
        launcher ends its run KILLED with ``slurm.state=TIMEOUT``."""
        extra = dict(params.get("additional_parameters") or {})
        extra.setdefault("signal", f"URG@{params.get('signal_delay_s', 120)}")
        return extra

    def collect(job: Any, overrides: List[str]) -> JobReturn:
        """The job's ``JobReturn`` from its result file; an error there becomes a failed one."""
        from submitit.core.utils import FailedJobError, UncompletedJobError

        try:
            return job.results()[0]
        except (FailedJobError, UncompletedJobError) as exc:
            return JobReturn(overrides=overrides, status=JobStatus.FAILED, _return_value=exc)
