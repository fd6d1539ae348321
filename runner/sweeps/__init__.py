"""Multiruns: the callback that gives a sweep its MLflow parent run, the summary written on it, the
guard that ends it when the sweep's process cannot, and the cached composition of the sweep's jobs
(used by the launcher and sweeper in ``hydra_plugins/runner_plugins``)."""
