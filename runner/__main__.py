"""``python -m runner KEY=VALUE ...``: the Hydra entry point.

The MLflow writer process starts before anything heavy is imported, so that MLflow's imports and the
store's opening overlap with torch's import here (see :mod:`runner.tracking.writer`). Command-line
mistakes are caught before Hydra composes (:mod:`runner.cli`, which also answers ``--help``), so they
read as one line; bad values
are caught by :func:`runner.validate.validate`. When the job is done and the writer has flushed, the
process ends with ``os._exit``: finalising torch's and MLflow's modules would add ~1.5 s and write
nothing.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    import gc

    from runner.processes import GC_THRESHOLD

    gc.set_threshold(*GC_THRESHOLD)
    from runner import cli
    from runner.errors import UserError, report_and_exit
    from runner.tracking import writer

    if cli.wants_help(sys.argv[1:]):  # the runner's own help, before Hydra's (see runner.cli)
        sys.stdout.write(cli.help_text())
        sys.stdout.flush()
        return
    try:
        cli.preflight(sys.argv[1:])
    except UserError as exc:
        report_and_exit(exc)
    if cli.wants_tracking(sys.argv[1:]):
        writer.start_writer()

    import hydra

    from runner.config import register_configs

    register_configs()

    # An absolute folder: a relative config_path would be read as a Python package when main() is
    # imported (the `runner` console script) rather than run as `python -m runner`.
    @hydra.main(version_base="1.3", config_path=str(cli.CONF), config_name="config")
    def app(cfg) -> float:
        from runner.tracking.store import StoreError
        from runner.validate import validate

        try:
            validate(cfg)
            from runner.job import run_job

            return run_job(cfg)
        except (UserError, StoreError) as exc:
            report_and_exit(exc)

    status = 0
    try:
        app()
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        writer.close_writer()
        if "runner.sweeps.callback" in sys.modules:  # joblib's idle workers would outlive os._exit
            sys.modules["runner.sweeps.callback"].stop_idle_workers()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
