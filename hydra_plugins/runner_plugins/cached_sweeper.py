"""``hydra/sweeper=cached``: Hydra's basic sweeper, validating each batch from cached compositions.

The basic sweeper composes every job of a batch before launching it, to fail early on a job that
cannot be composed; with Hydra's own composition that costs ~140 ms a job on the 2-core dev box. This
sweeper validates the same way through :func:`runner.sweeps.compose.compose_job` (~10 ms a job); the
``cached`` launcher then reuses those compositions. It is the runner's default sweeper
(``conf/config.yaml``); everything else is Hydra's ``BasicSweeper`` (same keys: ``max_batch_size``,
``params``).

Validating a batch composes only each job's task part (:func:`runner.sweeps.compose.compose_task`; a
value override can fail nowhere else), and the ``batched`` launcher reuses those compositions.

With ``resume=true`` it first says how much of the sweep is already done: ``resume: 140 of 200 jobs
already done, running 60`` (each job then finds its earlier run itself, whichever launcher runs it).
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore


@dataclass
class CachedSweeperConf:
    _target_: str = "hydra_plugins.runner_plugins.cached_sweeper.CachedSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None


ConfigStore.instance().store(group="hydra/sweeper", name="cached", node=CachedSweeperConf, provider="runner")


class CachedSweeper(BasicSweeper):
    """Hydra's basic sweeper whose batch validation composes from cached compositions."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Compose every job (its task part where that suffices: a value override can only fail
        there) and keep the compositions for the launcher (the ``batched`` launcher reuses them)."""
        from runner.sweeps.compose import compose_job, compose_task, remember_batch

        loader = self.hydra_context.config_loader
        composed = []
        for overrides in batch:
            job = compose_task(loader, self.config, list(overrides))
            if job is None:
                compose_job(loader, self.config, list(overrides))
            else:
                composed.append(job)
        remember_batch(loader, composed)

    def sweep(self, arguments: List[str]) -> Any:
        if self.config.get("resume") and self.config.tracking.enabled:
            self.announce_resume(arguments)
        return super().sweep(arguments)

    def announce_resume(self, arguments: List[str]) -> None:
        """Print how many of the sweep's jobs have a FINISHED run with their config already."""
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from runner.job import job_key
        from runner.sweeps.compose import compose_job
        from runner.tracking.writer import writer

        loader = self.hydra_context.config_loader
        parsed = OverridesParser.create(config_loader=loader).parse_overrides(self._parse_config() + list(arguments))
        jobs = [job for batch in self.split_arguments(parsed, None) for job in batch]
        done = writer().done_keys()
        already = sum(job_key(compose_job(loader, self.config, list(job))) in done for job in jobs)
        print(f"resume: {already} of {len(jobs)} jobs already done, running {len(jobs) - already}", flush=True)
