"""The shared tracking server of tests/test_slurm.py and tests/test_shared_server.py: ``python -m
runner.serve`` over the ``postgres`` fixture's PostgreSQL, behind MLflow's basic auth, as
docs/sweeps.md tells a team to run one.

``runner_serve`` starts ``python -m runner.serve --store URI --host 127.0.0.1 --port <free>
--artifacts <base>/artifacts [--app-name basic-auth --auth-config <base>/basic_auth.ini]`` in its own
session and yields an :class:`infra.mlflow_server.Server` once ``/health`` answers; on exit the
server's process group gets SIGTERM (SIGKILL after 10 s) and nothing of it may be left. The fixture
``shared_server`` is one such server for the whole session, over the databases ``shared`` (runs)
and ``shared_auth`` (users), ``default_permission = READ``, logins cached for 300 s; clients
authenticate as its admin with ``shared_server.credentials_env()``.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from infra._proc import TAG_VAR, free_port, new_tag
from infra.mlflow_server import _SCRUB, BasicAuth, Server, auth_available, start
from infra.postgres import installed_driver

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def runner_serve(store: str, base: Path, auth: BasicAuth | None = None, timeout: float = 180.0) -> Iterator[Server]:
    """``python -m runner.serve`` over ``store`` on 127.0.0.1:<free port> (see the module docstring)."""
    base.mkdir(parents=True, exist_ok=True)
    port, tag = free_port(), new_tag("runner-serve")
    server = Server(url=f"http://127.0.0.1:{port}", port=port, base=base, log=base / f"runner-serve-{port}.log", tag=tag, auth=auth)
    cmd = [sys.executable, "-m", "runner.serve", "--store", store, "--port", str(port), "--artifacts", str(base / "artifacts")]
    if auth is not None:
        ini = base / "basic_auth.ini"
        ini.write_text(auth.ini(base))
        ini.chmod(0o600)
        cmd += ["--app-name", "basic-auth", "--auth-config", str(ini)]
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env.update({TAG_VAR: tag, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))})
    try:
        start(server, cmd, env, timeout)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def shared_server(postgres, tmp_path_factory):
    """``runner.serve --store postgresql://… --app-name basic-auth`` for the session (see the module)."""
    why = auth_available() or (None if installed_driver() else 'no PostgreSQL driver: pip install -e ".[server]"')
    if why:
        pytest.skip(why)
    postgres.psql("CREATE DATABASE shared")
    postgres.psql("CREATE DATABASE shared_auth")
    auth = BasicAuth(database_uri=postgres.driver_uri("shared_auth"), auth_cache_ttl_seconds=300)
    with runner_serve(postgres.url(database="shared"), tmp_path_factory.mktemp("shared-server"), auth) as server:
        yield server
    assert not server.leftovers and not server.processes(), "runner.serve processes left behind"
