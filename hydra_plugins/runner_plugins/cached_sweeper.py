"""``hydra/sweeper=cached``: Hydra's basic sweeper, validating each batch from cached compositions.

The basic sweeper composes every job of a batch before launching it, to fail early on a job that
cannot be composed; with Hydra's own composition that costs ~140 ms a job on the 2-core dev box. This
sweeper validates the same way through :func:`runner.sweeps.compose.compose_job` (~10 ms a job); the
``cached`` launcher then reuses those compositions. It is the runner's default sweeper
(``conf/config.yaml``); everything else is Hydra's ``BasicSweeper`` (same keys: ``max_batch_size``,
``params``).

Validating a batch composes only each job's task part (:func:`runner.sweeps.compose.compose_task`; a
value override can fail nowhere else), and the ``batched`` launcher reuses those compositions.
"""


from dataclasses import dataclass
from typing import Dict, Optional, Sequence

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
