"""Real services started locally for integration tests: a one-node SLURM cluster, a throwaway
PostgreSQL server and an MLflow tracking server (optionally with basic auth).

Each is a context manager that starts the service by itself (no systemd), binds it to the loopback
interface, keeps its files in a temporary folder, and on exit stops every process it started by pid
and checks that none is left. Pytest fixtures over them are in :mod:`infra.fixtures`.

- :func:`infra.slurm.slurm_cluster`
- :func:`infra.postgres.postgres_server`
- :func:`infra.mlflow_server.mlflow_server`
"""
