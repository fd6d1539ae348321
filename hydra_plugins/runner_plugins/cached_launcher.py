"""``hydra/launcher=cached``: Hydra's basic launcher (jobs one after another, in this process), each
job composed from a cached composition (:func:`runner.sweeps.compose.compose_job`) instead of from
scratch. It is the runner's default launcher (``conf/config.yaml``); every job still gets its folder,
its ``JobReturn`` and Hydra's callbacks through Hydra's own ``run_job``.
"""


import logging
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


@dataclass
class CachedLauncherConf:
    _target_: str = "hydra_plugins.runner_plugins.cached_launcher.CachedBasicLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="cached", node=CachedLauncherConf, provider="runner")


class CachedBasicLauncher(Launcher):
    """Runs the jobs in this process, in order, as Hydra's ``BasicLauncher`` does."""

    def __init__(self) -> None:
        super().__init__()
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs locally")
        runs: List[JobReturn] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            runs.append(run_one(self.hydra_context, self.task_function, self.config, idx, list(overrides)))
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return runs


def run_one(hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig, idx: int, overrides: List[str]) -> JobReturn:
    """Job ``idx`` composed from the cached composition and run by Hydra's own ``run_job``."""
    from runner.sweeps.compose import compose_job

    sweep_config = compose_job(hydra_context.config_loader, config, overrides)
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = idx
        sweep_config.hydra.job.num = idx
    return run_job(
        hydra_context=hydra_context,
        task_function=task_function,
        config=sweep_config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
