"""``python -m runner KEY=VALUE ...``: the Hydra entry point.

The MLflow writer process starts before anything heavy is imported, so that MLflow's imports and the
store's opening overlap with torch's import here (see :mod:`runner.store_process`). Command-line
mistakes are caught before Hydra composes (:mod:`runner.cli`), so they read as one line; bad values
are caught by :func:`runner.job.validate`. When the job is done and the writer has flushed, the
process ends with ``os._exit``: finalising torch's and MLflow's modules would add ~1.5 s and write
nothing.
"""

from __future__ import annotations

import os
import sys


# Collect garbage cycles every 50,000 net allocations instead of 700. Importing torch, Hydra and the
# jobs' configs (OmegaConf makes many small objects) triggered ~930 collections, ~0.9 s of a 16-job
# sweep on the 2-core dev box; with this, ~12 collections and ~0.2 s. Memory stays bounded: a
# collection still runs every 50,000 objects.
GC_THRESHOLD = (50_000, 20, 100)


def main() -> None:
    import gc

    gc.set_threshold(*GC_THRESHOLD)
    from runner import cli, tracking
    from runner.errors import UserError, report_and_exit

    try:
        cli.preflight(sys.argv[1:])
    except UserError as exc:
        report_and_exit(exc)
    if cli.wants_tracking(sys.argv[1:]):
        tracking.start_writer()

    import hydra

    from runner import compose_cache
    from runner.config import register_configs

    register_configs()
    compose_cache.install()  # a sweep's jobs reuse compositions (~140 ms saved per job, twice)

    # An absolute folder: a relative config_path would be read as a Python package when main() is
    # imported (the `runner` console script) rather than run as `python -m runner`.
    @hydra.main(version_base="1.3", config_path=str(cli.CONF), config_name="config")
    def app(cfg) -> float:
        from runner.store import StoreError
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
        tracking.close_writer()
        if "runner.sweep" in sys.modules:  # joblib's idle workers would outlive os._exit
            sys.modules["runner.sweep"].stop_idle_workers()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
