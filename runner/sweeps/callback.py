"""The sweep callback: one MLflow parent run per Hydra multirun, every job its child, a summary at the end.

Configured in ``conf/config.yaml`` (``hydra.callbacks.sweep``). It runs in the launching process:

``on_multirun_start``
    opens the store the jobs will use (the same rule as the jobs: ``tracking.uri``, else
    ``$MLFLOW_TRACKING_URI``, else ``sqlite:///outputs/mlflow.db``), creating it and the experiment
    before any job starts (parallel jobs on a new SQLite store would otherwise race through MLflow's
    schema migrations), switches a SQLite store to WAL, and starts the parent run: named after the
    sweep (``sweep-rosenbrock-adam-lr{0.001,0.01,0.1}``), its params the sweep's overrides, its
    description the command. It then exports ``RUNNER_PARENT_RUN_ID`` and ``RUNNER_SWEPT_KEYS``:
    jobs in this process (basic launcher) and in processes started after it (joblib's workers,
    submitit's jobs, SLURM jobs submitted from this environment) make their run a child of the
    parent and name it from the swept keys (:func:`runner.tracking.naming.swept_extras`).

``on_multirun_end``
    summarises the children on the parent and ends it (:func:`runner.sweeps.summary.finish_sweep`).

Hydra does not call ``on_multirun_end`` when a job fails or the sweep is interrupted, so a small guard
process (:mod:`runner.sweeps.guard`) holds a pipe from this process and ends the parent, FAILED or
KILLED with the summary of what was recorded, if the pipe closes before the sweep said it is done.
When the jobs run in other processes (joblib, submitit), a SIGINT or SIGTERM of this process is first
passed on to them (:mod:`runner.sweeps.workers`), so that the running jobs end their runs KILLED.
"""

from __future__ import annotations

import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from runner import interrupts
from runner.sweeps import workers
from runner.sweeps.describe import command_line, expected_jobs, parse_overrides, sweep_name, sweep_params, swept_keys
from runner.sweeps.guard import Guard
from runner.tracking.naming import PARENT_ENV, SWEPT_ENV
from runner.tracking.writer import IN_PROCESS_LAUNCHERS


def in_process_launcher(config: DictConfig) -> bool:
    """Whether the jobs run in this process (Hydra's basic launcher, the cached and batched ones)."""
    return str(OmegaConf.select(config, "hydra.launcher._target_", default="")).endswith(IN_PROCESS_LAUNCHERS)


def optimizer_choices(config: DictConfig) -> set[str]:
    """The optimizer config choices the sweep's jobs will use."""
    for o in parse_overrides(list(config.hydra.overrides.task)):
        if o.key_or_group == "optimizer":
            return {str(v) for v in (o.sweep_iterator() if o.is_sweep_override() else [o.value()])}
    return {str(OmegaConf.select(config, "hydra.runtime.choices.optimizer", default="manual"))}


def warm_up(config: DictConfig) -> None:
    """Import what the first job would (torch; torch.optim's lazy import of torch._dynamo, ~1.5 s,
    unless every job uses the hand-written update), while the writer is still getting ready."""
    import runner.descent.build  # noqa: F401 - torch and the descent code

    if optimizer_choices(config) != {"manual"}:
        import torch._dynamo  # noqa: F401
    import gc

    gc.freeze()  # what was imported lives as long as the process: no collection need walk it again


# -- the callback ----------------------------------------------------------------------------------
class SweepCallback(Callback):
    """Parent run per multirun (see the module docstring). ``enabled: false`` turns it off."""

    def __init__(self, enabled: bool = True, wal: bool = True) -> None:
        self.enabled = enabled
        self.wal = wal
        self._uri: str | None = None
        self._run_id: str | None = None  # MLflow's id of the parent run, or the writer's handle for it
        self._experiment = ""
        self._guard: Guard | None = None
        self._unhook = None  # removes the hook that passes a signal on to the jobs' processes

    def __getstate__(self) -> dict:
        # Launchers pickle the callbacks to their workers; the run and the guard stay here.
        return {"enabled": self.enabled, "wal": self.wal, "_uri": None, "_run_id": None, "_experiment": "", "_guard": None, "_unhook": None}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled or not config.tracking.enabled:
            return
        from runner.errors import report_and_exit
        from runner.tracking import writer as tracking
        from runner.tracking.store import StoreError, check_reachable, is_server, resolve_uri

        uri = resolve_uri(config.tracking.uri)
        choices = OmegaConf.select(config, "hydra.runtime.choices", default={}) or {}
        swept = swept_keys(config)
        tags = {
            "sweep.swept": ",".join(swept),
            "sweep.launcher": str(choices.get("hydra/launcher", "basic")),
            "sweep.sweeper": str(choices.get("hydra/sweeper", "basic")),
            "sweep.dir": str(Path(str(config.hydra.sweep.dir)).resolve()),
        }
        jobs = expected_jobs(config)
        if jobs is not None:
            tags["sweep.jobs"] = str(jobs)
        description = f"Sweep: `{command_line()}`"
        # The guard finds the parent by this tag: it may have to end it before this process knows
        # MLflow's id of it.
        token = uuid.uuid4().hex
        tags["sweep.token"] = token
        # Through the writer process (runner.tracking.writer), which imports MLflow and opens the store
        # (~3-5 s on 2 cores) while this process imports what the jobs need. With the basic launcher
        # nothing here waits for the writer: the jobs of this process name the parent run by a handle
        # that the writer maps to MLflow's id. Jobs in other processes need the id itself.
        in_process = in_process_launcher(config)
        try:
            check_reachable(uri)  # a bad URI fails now, not after the jobs
            store = tracking.writer()
            store.open(uri, config.tracking.experiment, http_retries=config.tracking.http_retries)
            if self.wal:
                store.run_function("runner.tracking.store:enable_wal", uri, _wait=False)
            handle = tracking.new_handle()
            store.start_run(sweep_name(config), sweep_params(config), tags, description=description, handle=handle,
                            guarded=True, _wait=False, folder=tags["sweep.dir"], files={"sweep.yaml": sweep_file(config)})
            # Over a tracking server, wait for the parent: a server that cannot store its artifacts
            # fails the sweep now, before any descent.
            parent = handle if in_process and not is_server(uri) else store.resolve(handle)
        except StoreError as exc:
            report_and_exit(exc)
        self._uri, self._run_id, self._experiment = uri, parent, config.tracking.experiment
        self._guard = Guard(uri, token, tags["sweep.dir"], config.tracking.http_retries)
        os.environ[PARENT_ENV] = parent
        os.environ[SWEPT_ENV] = ",".join(swept)
        if not tracking.is_handle(parent):
            self._announce()
        if in_process:
            warm_up(config)
        else:
            self._unhook = interrupts.on_interrupt(workers.forward)

    def _announce(self) -> None:
        print(f"sweep: parent run {self._run_id} in experiment '{self._experiment}' at {self._uri}", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._run_id is None:
            return
        from runner.sweeps.summary import result_line

        os.environ.pop(PARENT_ENV, None)
        os.environ.pop(SWEPT_ENV, None)
        if self._unhook is not None:
            self._unhook()
        ended = None
        try:
            ended = self._end_parent()
        finally:  # if the summary could not end the parent, the guard tries once more
            if self._guard is not None:
                self._guard.release(done=ended is not None)
        if ended.kept is not None:
            self._run_id = None
            stop_idle_workers()
            print(f"error: {ended.kept}", file=sys.stderr, flush=True)
            raise SystemExit(1)
        print(f"sweep: {result_line(self._run_id, ended.status, ended.outcome, ended.best)}", flush=True)
        if ended.experiment_id:
            print(sweep_links(self._uri, ended.experiment_id, self._run_id), flush=True)
        self._run_id = None
        stop_idle_workers()

    def _end_parent(self) -> "ParentEnd":
        """Summarise the sweep on its parent and end it; with the tracking server gone, keep the
        parent's end for ``python -m runner.upload`` instead (:meth:`_keep_for_upload`)."""
        from runner.sweeps.summary import contour_grids, finish_sweep
        from runner.tracking import writer as tracking
        from runner.tracking.store import StoreError

        writer = None
        try:
            # In the writer, after everything the jobs of this process sent it (a barrier): the
            # summary's MLflow reads and figures need no imports there.
            writer = tracking.writer()
            if tracking.is_handle(self._run_id):
                self._run_id = writer.resolve(self._run_id)
                self._announce()
            experiment_id = writer.get_experiment_id()
            if writer.server_gone():
                return self._keep_for_upload(writer)
            contours = None
            if "torch" in sys.modules:  # the jobs ran here: evaluate the paths figures' grids here
                contours = contour_grids(writer.run_function("runner.sweeps.summary:contour_inputs_of", self._uri, self._run_id))
            return ParentEnd(*writer.run_function("runner.sweeps.summary:finish_sweep", self._uri, self._run_id, "completed", contours),
                             experiment_id)
        except StoreError as exc:
            if tracking.is_handle(self._run_id):  # the writer is gone; the guard ends the parent
                from runner.errors import report_and_exit

                report_and_exit(exc)
            if writer is not None and _asks_gone(writer):
                return self._keep_for_upload(writer)
            return ParentEnd(*finish_sweep(self._uri, self._run_id, "completed"), "")

    def _keep_for_upload(self, writer: Any) -> "ParentEnd":
        """The server went away: the parent's end (the sweep's summary) joins what the sweep's runs
        did not send, in their ``unsent/`` folders under the sweep's folder; the line that says so."""
        folder = Path(writer.keep_sweep_end(self._run_id, "completed"))
        runs = len(writer.unsent_runs()) - 1
        sweep_dir = folder.parent
        what = f"{runs} run{'s' if runs != 1 else ''} of this sweep and its summary are" if runs else "this sweep's summary is"
        return ParentEnd(kept=(f"tracking: the MLflow server at {self._uri} stopped answering; {what} kept in unsent/ "
                               f"folders under {sweep_dir}; they read RUNNING there until you upload them once the server is "
                               f"back: python -m runner.upload {sweep_dir}"))


@dataclass
class ParentEnd:
    """How the sweep's end went: the parent's status, outcome and best children, or ``kept``: the
    line that says where the parent's end waits for ``python -m runner.upload``."""

    status: str = ""
    outcome: str = ""
    best: dict = field(default_factory=dict)
    experiment_id: str = ""
    kept: str | None = None


def _asks_gone(writer: Any) -> bool:
    """Whether the tracking server does not answer now (asked through the writer)."""
    from runner.tracking.store import StoreError

    try:
        return writer.server_gone(True) is not None
    except StoreError:
        return False


def sweep_file(config: DictConfig) -> str:
    """The parent's ``sweep.yaml``: the command and the sweep's overrides (what runs the sweep again)."""
    return OmegaConf.to_yaml({"command": command_line(), "overrides": list(config.hydra.overrides.task)})


def sweep_links(uri: str, experiment_id: str, parent_id: str) -> str:
    """Where to look: the experiment's runs (the sweep's children grouped under its parent) and the
    parent run (the summary), both in the UI's model-training view (:mod:`runner.tracking.links`)."""
    from runner.tracking import links

    server = links.server_url(uri)
    return (f"  compare the runs: {links.how_to_open(uri, links.runs_page(server, experiment_id))}\n"
            f"  the sweep's summary: {links.run_page(server, experiment_id, parent_id)}")


def stop_idle_workers() -> None:
    """Stop joblib's (loky's) reusable worker processes now.

    They would otherwise idle for 300 s after the sweep, holding the terminal's (or a caller's
    pipe's) stdout open, because ``python -m runner`` ends with ``os._exit`` and so skips the
    ``atexit`` hook that stops them.
    """
    module = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(module, "_executor", None) if module is not None else None
    if executor is not None:
        # joblib's MemmappingExecutor.terminate also removes its temporary folder (else the resource
        # tracker warns about a "leaked folder" at exit); plain loky executors only shut down.
        getattr(executor, "terminate", executor.shutdown)()
