"""Pytest fixtures over the services in this package. Import the ones a test module needs::

    from infra.fixtures import slurm, postgres, auth_server  # noqa: F401  (pytest finds them by name)

They skip (with the reason) only when the software is not installed; a service that is installed
but fails to start is an error. Each is session-scoped: started once, stopped at the end of the
session, and its stop checks that no process is left behind.
"""

from __future__ import annotations

import pytest

from . import mlflow_server as _mlflow
from . import postgres as _pg
from . import slurm as _slurm


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A running one-node SLURM cluster (:class:`infra.slurm.Cluster`); pass ``slurm.env`` to clients."""
    missing = _slurm.missing_binaries()
    if missing:
        pytest.skip(f"SLURM not installed (missing {', '.join(missing)}; "
                    "apt-get install slurmctld slurmd slurm-client munge)")
    with _slurm.slurm_cluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster
    assert not cluster.leftovers, f"processes left after stopping the cluster: {cluster.leftovers}"


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """A running PostgreSQL server (:class:`infra.postgres.PG`): ``postgres.uri``, ``postgres.driver_uri()``."""
    why = _pg.missing()
    if why:
        pytest.skip(why)
    with _pg.postgres_server(tmp_path_factory.mktemp("postgres")) as pg:
        yield pg
    assert not pg.leftovers, f"processes left after stopping postgres: {pg.leftovers}"


@pytest.fixture(scope="session")
def auth_server(postgres, tmp_path_factory):
    """``mlflow server --app-name basic-auth`` over the ``postgres`` fixture's server
    (:class:`infra.mlflow_server.Server`): runs in database ``mlflow``, users and permissions in
    ``mlflow_auth``, ``default_permission = READ``, successful logins cached for 300 s; the admin's credentials are in ``auth_server.auth``
    (``auth_server.credentials_env()`` gives the ``MLFLOW_TRACKING_*`` variables).

    One server for both because each start costs ~15 s here (MLflow migrates a new database)."""
    why = _mlflow.auth_available() or (None if _pg.installed_driver() else
                                        'no PostgreSQL driver for SQLAlchemy: pip install -e ".[server]"')
    if why:
        pytest.skip(why)
    postgres.psql("CREATE DATABASE mlflow_auth")
    base = tmp_path_factory.mktemp("auth-server")
    auth = _mlflow.BasicAuth(database_uri=postgres.driver_uri("mlflow_auth"), auth_cache_ttl_seconds=300)
    with _mlflow.mlflow_server(postgres.driver_uri(), base, auth=auth) as server:
        yield server
    assert not server.leftovers and not server.processes(), "mlflow server processes left behind"
