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
    parent and name it from the swept keys (:func:`runner.job.swept_extras`).

``on_multirun_end``
    summarises the children on the parent and ends it (:func:`runner.summary.finish_sweep`).

Hydra does not call ``on_multirun_end`` when a job fails or the sweep is interrupted, so a small guard
process (:func:`runner.summary.guard`) holds a pipe from this process and ends the parent, FAILED or
KILLED with the summary of what was recorded, if the pipe closes before the sweep said it is done.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

# The names runner.job reads (not imported from there: that would import torch here).
PARENT_ENV = "RUNNER_PARENT_RUN_ID"
SWEPT_ENV = "RUNNER_SWEPT_KEYS"
NAMED_FIRST = ("objective", "optimizer", "lr")  # the parts every run name starts with


# -- what the sweep varies -------------------------------------------------------------------------
def parse_overrides(overrides: list[str]) -> list:
    """Hydra's parse of a command line's overrides (cached: naming, counting and describing a sweep
    each read the same ones)."""
    return list(_parse(tuple(overrides)))


@lru_cache(maxsize=8)
def _parse(overrides: tuple[str, ...]) -> tuple:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return tuple(OverridesParser.create().parse_overrides(list(overrides)))


def _key(override) -> str:
    return override.key_or_group


def _text(override) -> str:
    """The value as written on the command line (``0.01,0.1``, ``range(1,4)``)."""
    return override.input_line.split("=", 1)[1] if override.input_line and "=" in override.input_line else str(override.value())


def sweeper_params(config: DictConfig) -> dict[str, str]:
    """Search spaces given to the sweeper (``hydra.sweeper.params``, as Optuna's sweeper takes)."""
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None)
    return {str(k): str(v) for k, v in params.items()} if params else {}


def swept_keys(config: DictConfig) -> list[str]:
    """Keys that take several values in this sweep, in command-line order."""
    keys = [_key(o) for o in parse_overrides(list(config.hydra.overrides.task)) if o.is_sweep_override()]
    keys += [k for k in sweeper_params(config) if k not in keys]
    return keys


def expected_jobs(config: DictConfig) -> int | None:
    """How many jobs the sweep will launch, when that is known up front."""
    n_trials = OmegaConf.select(config, "hydra.sweeper.n_trials", default=None)
    if sweeper_params(config) or n_trials is not None:
        return int(n_trials) if n_trials is not None else None
    count = 1
    try:
        for o in parse_overrides(list(config.hydra.overrides.task)):
            if o.is_sweep_override():
                count *= len(list(o.sweep_iterator()))
    except Exception:  # noqa: BLE001 - interval or glob sweeps: not countable here
        return None
    return count


def sweep_name(config: DictConfig) -> str:
    """``sweep-<objective>-<optimizer>-lr<lr>`` with each swept part written ``{v1,v2,...}``,
    then ``-<key>{values}`` for the other swept keys."""
    from runner.tracking import format_number

    given = {_key(o): o for o in parse_overrides(list(config.hydra.overrides.task))}
    space = sweeper_params(config)

    def part(key: str, default: Any) -> str:
        if key in space:
            return "{" + space[key].replace(" ", "") + "}"
        o = given.get(key)
        if o is None:
            return format_number(default) if isinstance(default, float) else str(default)
        return "{" + _text(o) + "}" if o.is_sweep_override() else _text(o)

    optimizer = OmegaConf.select(config, "optimizer.name", default=None) or "optimizer"
    parts = ["sweep", part("objective", config.objective.name), part("optimizer", optimizer), "lr" + part("lr", float(config.lr))]
    for key in swept_keys(config):
        if key not in NAMED_FIRST:
            parts.append(key.rsplit(".", 1)[-1] + part(key, ""))
    return "-".join(parts)[:250]


def sweep_params(config: DictConfig) -> dict[str, str]:
    """The parent's params: every task override as written (``lr: 0.01,0.1``) and the sweeper's
    search spaces (``lr: tag(log, interval(0.0001, 1.0))``)."""
    params = {_key(o).lstrip("+~"): _text(o) for o in parse_overrides(list(config.hydra.overrides.task))}
    params.update(sweeper_params(config))
    return params


def command_line() -> str:
    program = sys.argv[0]
    head = "python -m runner" if program.endswith("__main__.py") or program == "-m" else Path(program).name
    return " ".join([head] + [shlex.quote(a) for a in sys.argv[1:]])


def enable_wal(uri: str) -> None:
    """Switch a SQLite store to write-ahead logging: parallel jobs then write while others read.

    The mode is stored in the database file and persists; MLflow's 20 s busy timeout handles the
    remaining single-writer waits.
    """
    from runner.store import sqlite_path

    path = sqlite_path(uri)
    if path is None or not path.exists():
        return
    import sqlite3
    from contextlib import closing

    try:
        with closing(sqlite3.connect(path, timeout=20)) as db:
            db.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as exc:  # e.g. a file system without shared memory: keep the rollback journal
        print(f"warning: {uri}: cannot switch to write-ahead logging ({exc}); parallel jobs will wait longer", file=sys.stderr)


def in_process_launcher(config: DictConfig) -> bool:
    """Whether the jobs run in this process (Hydra's basic launcher)."""
    return str(OmegaConf.select(config, "hydra.launcher._target_", default="")).endswith("BasicLauncher")


def optimizer_choices(config: DictConfig) -> set[str]:
    """The optimizer config choices the sweep's jobs will use."""
    for o in parse_overrides(list(config.hydra.overrides.task)):
        if _key(o) == "optimizer":
            return {str(v) for v in (o.sweep_iterator() if o.is_sweep_override() else [o.value()])}
    return {str(OmegaConf.select(config, "hydra.runtime.choices.optimizer", default="manual"))}


def warm_up(config: DictConfig) -> None:
    """Import what the first job would (torch; torch.optim's lazy import of torch._dynamo, ~1.5 s,
    unless every job uses the hand-written update), while the writer is still getting ready."""
    import runner.job  # noqa: F401 - torch and the runner's modules

    if optimizer_choices(config) != {"manual"}:
        import torch._dynamo  # noqa: F401
    import gc

    gc.freeze()  # what was imported lives as long as the process: no collection need walk it again


# -- the guard -------------------------------------------------------------------------------------
class Guard:
    """A process that ends the parent run if this process goes away before the sweep ends it."""

    def __init__(self, uri: str, token: str) -> None:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runner.summary", "--guard", uri, token],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # a Ctrl-C or hang-up of the terminal does not reach it
        )
        self._previous = None
        try:
            self._previous = signal.signal(signal.SIGINT, self._on_interrupt)
        except ValueError:  # not the main thread
            pass

    def _say(self, word: str) -> None:
        try:
            self.proc.stdin.write(word.encode() + b"\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):
            pass

    def _on_interrupt(self, signum, frame) -> None:
        self._say("interrupted")
        if callable(self._previous):
            return self._previous(signum, frame)
        raise KeyboardInterrupt

    def release(self, done: bool = True) -> None:
        """Stop guarding; ``done``: the sweep ended its parent, the guard exits doing nothing."""
        if self._previous is not None:
            try:
                signal.signal(signal.SIGINT, self._previous)
            except ValueError:
                pass
        if done:
            self._say("done")
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait()


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

    def __getstate__(self) -> dict:
        # Launchers pickle the callbacks to their workers; the run and the guard stay here.
        return {"enabled": self.enabled, "wal": self.wal, "_uri": None, "_run_id": None, "_experiment": "", "_guard": None}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled or not config.tracking.enabled:
            return
        from runner import tracking
        from runner.errors import report_and_exit
        from runner.store import StoreError, check_reachable, resolve_uri

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
        # Through the writer process (runner.store_process), which imports MLflow and opens the store
        # (~3-5 s on 2 cores) while this process imports what the jobs need. With the basic launcher
        # nothing here waits for the writer: the jobs of this process name the parent run by a handle
        # that the writer maps to MLflow's id. Jobs in other processes need the id itself.
        in_process = in_process_launcher(config)
        try:
            check_reachable(uri)  # a bad URI fails now, not after the jobs
            store = tracking.writer()
            store.open(uri, config.tracking.experiment)
            if self.wal:
                store.run_function("runner.sweep:enable_wal", uri, _wait=False)
            handle = tracking.new_handle()
            store.start_run(sweep_name(config), sweep_params(config), tags, description=description, handle=handle, _wait=False)
            parent = handle if in_process else store.resolve(handle)
        except StoreError as exc:
            report_and_exit(exc)
        self._uri, self._run_id, self._experiment = uri, parent, config.tracking.experiment
        self._guard = Guard(uri, token)
        os.environ[PARENT_ENV] = parent
        os.environ[SWEPT_ENV] = ",".join(swept)
        if in_process:
            warm_up(config)
        else:
            self._announce()

    def _announce(self) -> None:
        print(f"sweep: parent run {self._run_id} in experiment '{self._experiment}' at {self._uri}", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._run_id is None:
            return
        from runner import tracking
        from runner.store import StoreError
        from runner.summary import contour_grids, finish_sweep, result_line

        os.environ.pop(PARENT_ENV, None)
        os.environ.pop(SWEPT_ENV, None)
        ended = False
        try:
            # In the writer, after everything the jobs of this process sent it (a barrier): the
            # summary's MLflow reads and figures need no imports there.
            try:
                writer = tracking.writer()
                if tracking.is_handle(self._run_id):
                    self._run_id = writer.resolve(self._run_id)
                    self._announce()
                experiment_id = writer.get_experiment_id()
                contours = None
                if "torch" in sys.modules:  # the jobs ran here: evaluate the paths figures' grids here
                    contours = contour_grids(writer.run_function("runner.summary:contour_inputs_of", self._uri, self._run_id))
                status, outcome, best = writer.run_function(
                    "runner.summary:finish_sweep", self._uri, self._run_id, "completed", contours
                )
            except StoreError as exc:
                if tracking.is_handle(self._run_id):  # the writer is gone; the guard ends the parent
                    from runner.errors import report_and_exit

                    report_and_exit(exc)
                status, outcome, best = finish_sweep(self._uri, self._run_id, "completed")
                experiment_id = ""
            ended = True
        finally:  # if the summary could not end the parent, the guard tries once more
            if self._guard is not None:
                self._guard.release(done=ended)
        print(f"sweep: {result_line(self._run_id, status, outcome, best)}", flush=True)
        page = f"#/experiments/{experiment_id}/runs/{self._run_id}"
        if self._uri.startswith(("http://", "https://")):
            print(f"  compare the runs at {self._uri.rstrip('/')}/{page}", flush=True)
        else:
            from runner.store import DEFAULT_URI

            serve = "python -m runner.serve" + ("" if self._uri == DEFAULT_URI else f" --store {self._uri}")
            print(f"  compare the runs: {serve}, then open http://127.0.0.1:5000/{page}", flush=True)
        self._run_id = None
        stop_idle_workers()


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
