"""``python -m runner KEY=VALUE ...``: the Hydra entry point.

The MLflow writer process starts before anything heavy is imported, so that MLflow's imports and the
store's opening overlap with torch's import here (see :mod:`runner.tracking.writer`). Command-line
mistakes are caught before Hydra composes (:mod:`runner.cli`, which also answers ``--help``), so they
read as one line; bad values
are caught by :func:`runner.validate.validate`. When the job is done and the writer has flushed, the
process ends with ``os._exit``: finalising torch's and MLflow's modules would add ~1.5 s and write
nothing.

SIGINT and SIGTERM (:mod:`runner.interrupts`), from the first line on: the run being recorded ends
KILLED with what it recorded (``outcome=interrupted``), one line says so on stderr, and the process
exits 130 or 143. However the process ends, no run it started is left RUNNING while the store can
take the write (:func:`end_open_runs`).
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    from runner import interrupts

    interrupts.install(main=True)
    status = 0
    try:
        status = run()
    except interrupts.Interrupted as exc:
        status = exc.exit_status
    finally:
        interrupts.hold()  # ending now: a signal from here on is only noted
        status = close(status)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


_REPORTED: list[str] = []  # the error line this process printed, if any


def run() -> int:
    """Check the command line, start the writer, run Hydra; the exit status."""
    import gc

    from runner.processes import GC_THRESHOLD

    gc.set_threshold(*GC_THRESHOLD)
    from runner import cli
    from runner.errors import UserError
    from runner.tracking import writer

    if cli.wants_help(sys.argv[1:]):  # the runner's own help, before Hydra's (see runner.cli)
        sys.stdout.write(cli.help_text())
        sys.stdout.flush()
        return 0
    try:
        cli.preflight(sys.argv[1:])
    except UserError as exc:
        return report(exc)
    if cli.wants_tracking(sys.argv[1:]):
        writer.start_writer()

    import hydra

    from runner import overrides_check
    from runner.config import register_configs

    register_configs()
    try:
        overrides_check.check(cli.overrides_of(sys.argv[1:]), cli.CONF)
    except UserError as exc:
        return report(exc)

    # An absolute folder: a relative config_path would be read as a Python package when main() is
    # imported (the `runner` console script) rather than run as `python -m runner`.
    @hydra.main(version_base="1.3", config_path=str(cli.CONF), config_name="config")
    def app(cfg) -> float:
        from runner import interrupts
        from runner.tracking.store import StoreError
        from runner.validate import validate

        interrupts.install()  # in a launcher's worker process (joblib, submitit): not yet done there
        try:
            with interrupts.job():
                validate(cfg)
                from runner.job import run_job

                return run_job(cfg)
        except (UserError, StoreError) as exc:
            raise SystemExit(report(exc, note=isinstance(exc, StoreError))) from None
        except OSError as exc:  # a full disk under the run's trajectory.csv: one line, exit 1
            if fault_line(exc) is None:
                raise
            raise SystemExit(report(fault_line(exc), 1, note=True)) from None
        except interrupts.Interrupted as exc:
            if interrupts.in_worker():  # its run is ended: this worker ends with it
                os._exit(close(exc.exit_status))
            raise

    try:
        app()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def report(error: BaseException | str, status: int | None = None, note: bool = False) -> int:
    """Print ``error: <message>`` as one line; the exit status (2 for bad input, 1 for a fault of
    the disk under the store: the error's ``exit_status``). ``note``: add how the run this process
    was recording ended and where its steps are."""
    from runner.errors import EXIT_USAGE, printable

    message = printable(str(error))
    _REPORTED.append(message)
    if note:
        message += run_note(message)
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    return status if status is not None else getattr(error, "exit_status", EXIT_USAGE)


def run_note(said: str = "") -> str:
    """``; run <name> recorded as FAILED at step k; its steps are in <trajectory.csv>``, or '' (a
    write of the record that failed is named unless ``said`` is that error already)."""
    from runner.tracking.recorder import current_run

    run = current_run()
    if run is None:
        return ""
    if run.status in ("FINISHED", "KILLED", "FAILED"):
        note = f"; run {run.name} recorded as {run.status} at step {run.last_step}"
        if run.record_error and run.record_error not in said:
            note += f" (the store missed part of it: {run.record_error.removeprefix('tracking: ')})"
    else:
        note = f"; run {run.name} could not be ended ({run.end_error or 'the store failed'}): it reads RUNNING"
    path = run.kept.get("trajectory.csv")
    return note + (f"; its steps are in {path}" if path else "")


def fault_line(exc: BaseException) -> str | None:
    from runner.tracking.faults import describe

    return describe(exc)


def close(status: int) -> int:
    """End what this process started: the runs left open (KILLED after a signal, FAILED after an
    error), the writer, the launcher's worker processes. Print the interrupt's line; the status."""
    from runner import interrupts
    from runner.tracking import writer

    signum = interrupts.received()
    if signum is not None:
        status = 128 + signum
    ended = end_open_runs(writer.current(), signum, status)
    if signum is not None:
        from runner.errors import printable

        sys.stderr.write(printable(interrupt_line(signum, ended)) + "\n")
    if status == 0 and unsent_runs(writer.current()):
        status = 1  # the writer said which folder holds what the server did not receive
    writer.close_writer()
    if "runner.sweeps.callback" in sys.modules:
        sys.modules["runner.sweeps.workers"].kill_leftovers()
        sys.modules["runner.sweeps.callback"].stop_idle_workers()  # joblib's would outlive os._exit
    return status


def end_open_runs(store, signum: int | None, status: int) -> list[dict]:
    """Have the writer end the runs this process started and nobody ended (not a sweep's parent:
    its guard ends it): KILLED after a signal, FAILED after an error. What it ended."""
    if store is None or not getattr(store, "runs_started", 0) or (signum is None and status == 0):
        return []
    from runner.tracking.store import StoreError

    if signum is not None:
        final, tags = "KILLED", {"outcome": "interrupted", "signal": __import__("signal").Signals(signum).name}
    else:
        final, tags = "FAILED", {"outcome": "failed", "error": (_REPORTED[-1] if _REPORTED else f"exit status {status}")[:500]}
    try:
        return store.end_open_runs(final, tags)
    except StoreError as exc:
        if not _REPORTED:  # else the store's failure was reported already, in that line
            sys.stderr.write(f"error: {exc}\n")
        return []


def unsent_runs(store) -> dict[str, str]:
    """Runs whose record the tracking server did not receive (kept for ``python -m runner.upload``)."""
    if store is None or not getattr(store, "runs_started", 0):
        return {}
    from runner.tracking.store import StoreError

    try:
        return store.unsent_runs()
    except StoreError:
        return {}


def interrupt_line(signum: int, ended: list[dict]) -> str:
    """``interrupted: run <name> recorded as KILLED at step k``, for the run this process was
    recording (or the runs its writer ended), else what there was to say."""
    from runner.tracking.recorder import current_run

    runs = [(r["name"], "KILLED", r["last_step"], r["error"]) for r in ended]
    run = current_run()
    if run is not None and run.name not in {name for name, *_ in runs}:
        runs.insert(0, (run.name, run.status, run.last_step, run.end_error))
    parts = []
    for name, status, step, error in runs:
        at = f"at step {step}" if step >= 0 else "before its first step"
        part = f"run {name} recorded as {status} {at}"
        parts.append(part if not error else f"run {name} could not be ended ({error}); it reads RUNNING")
    from runner import interrupts
    from runner.tracking.naming import PARENT_ENV

    if os.environ.get(PARENT_ENV) and not interrupts.in_worker():  # this process's sweep was under way
        parts.append("the sweep's guard ends its parent run KILLED")
    return "interrupted: " + ("; ".join(parts) if parts else "no run was recorded")


if __name__ == "__main__":
    main()
