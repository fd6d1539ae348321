"""An ``mlflow server`` for tests, optionally with basic auth:
``with mlflow_server("sqlite:///...", tmp_path, auth=BasicAuth()) as server: server.url``.

The server runs ``python -m mlflow server --backend-store-uri URI --host 127.0.0.1 --port <free>
--workers 1 --artifacts-destination <base>/artifacts [--app-name basic-auth]`` in its own session
(``start_new_session``), with ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` (MLflow 3 otherwise
starts GenAI job-runner processes nobody here needs). MLflow 3.17 serves with uvicorn: the
``mlflow server`` process plus one ``uvicorn`` worker process, both in that process group. Once
``/health`` answers, the context yields a :class:`Server`; on exit the whole group gets SIGTERM
(SIGKILL after 10 s), and the fixture checks that no process of the group, and none carrying its
marker (see ``_proc``), is left. Environment variables that would redirect it
(``MLFLOW_TRACKING_URI``, ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``, ``MLFLOW_AUTH_*``) are
removed from its environment.

Basic auth (``auth=BasicAuth(...)``; needs ``pip install "mlflow[auth]"``, which adds Flask-WTF
1.3 and WTForms 3.3; without them the server dies with "The MLflow basic auth app requires the
Flask-WTF package"). The app reads an ini file named by ``MLFLOW_AUTH_CONFIG_PATH`` (default:
``mlflow/server/auth/basic_auth.ini`` in the package); its section ``[mlflow]`` has, in 3.17:

- ``default_permission``: a permission name: READ, USE, EDIT, MANAGE, DENY, NO_PERMISSIONS
  (the shipped file: READ);
- ``database_uri``: the users/permissions store (shipped: ``sqlite:///basic_auth.db``, relative
  to the server's working folder; here ``sqlite:///<base>/basic_auth.db``);
- ``admin_username`` (shipped: admin) and ``admin_password`` (no default any more: the server
  refuses to start without it, or ``MLFLOW_AUTH_ADMIN_PASSWORD``; the environment variables
  ``MLFLOW_AUTH_ADMIN_USERNAME``/``PASSWORD`` override the file even when empty). Passwords
  must have at least 12 characters. Both only matter when the admin user is first created;
- ``authorization_function`` (``mlflow.server.auth:authenticate_request_basic_auth``);
- optional: ``grant_default_workspace_access``, ``read_database_uri``,
  ``workspace_cache_max_size``/``ttl_seconds``, ``auth_cache_max_size``/``ttl_seconds``.

The app also needs ``MLFLOW_FLASK_SERVER_SECRET_KEY`` (CSRF) or it refuses to start; the fixture
sets a random one. Clients authenticate with ``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` in their
environment; admins create users with ``POST /api/2.0/mlflow/users/create``
(``{"username", "password"}``) or ``mlflow.server.get_app_client("basic-auth", url).create_user``.

Permissions (READ and the explicit grant checked in tests/test_infra.py, EDIT by hand): without
credentials API calls are refused with 401 (``/health`` stays open). An authenticated non-admin
user who *creates* an experiment gets MANAGE on it, so it can log runs there with
``default_permission = READ`` (lower defaults not tried). To log
into an experiment someone else created (e.g. one the admin made for a sweep, or ``Default``) a
user needs ``default_permission = EDIT`` (or MANAGE), or an explicit grant
(``get_app_client("basic-auth", url).grant_user_permission(username, "experiment", experiment_id,
"EDIT")``; 3.17's client has no ``create_experiment_permission`` any more); with READ, ``create_run``
there is refused with 403 PERMISSION_DENIED.

Measured here (2 cores; ``import mlflow.server`` alone takes ~6 s of CPU, and the server imports
it twice: CLI and worker): ``/health`` answers 11 s after start over an existing SQLite store,
13-14 s with basic auth, 12-20 s with basic auth over a fresh PostgreSQL database (MLflow migrates
both databases first). Stop: ~2 s (uvicorn stops at once; the ``mlflow server`` process, which
forwards SIGTERM to it, exits ~2 s later). With basic auth every request checks the password against
its salted hash: 0.5-1 s per request here; ``BasicAuth(auth_cache_ttl_seconds=300)`` (the ini key of the
same name) caches successful logins and brings requests back to ~0.05-0.2 s.
"""

from __future__ import annotations

import configparser
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ._proc import (
    TAG_VAR,
    free_port,
    kill_tagged,
    new_tag,
    pids_in_group,
    stop_group,
    tail,
    wait_for,
)

_SCRUB = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
          "MLFLOW_AUTH_CONFIG_PATH", "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD")


@dataclass
class BasicAuth:
    """Settings for ``--app-name basic-auth`` (written to the ini file ``MLFLOW_AUTH_CONFIG_PATH``)."""

    default_permission: str = "READ"
    admin_username: str = "admin"
    admin_password: str = field(default_factory=lambda: "adm-" + secrets.token_hex(8))
    database_uri: str | None = None  # default: sqlite:///<base>/basic_auth.db
    # > 0: cache successful password checks this long (MLflow's default 0 hashes every request,
    # ~0.5 s of PBKDF2 on this machine's cores).
    auth_cache_ttl_seconds: int = 0

    def ini(self, base: Path) -> str:
        config = configparser.ConfigParser()
        config["mlflow"] = {
            "default_permission": self.default_permission,
            "database_uri": self.database_uri or f"sqlite:///{base / 'basic_auth.db'}",
            "admin_username": self.admin_username,
            "admin_password": self.admin_password,
            "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        }
        if self.auth_cache_ttl_seconds > 0:
            config["mlflow"]["auth_cache_ttl_seconds"] = str(self.auth_cache_ttl_seconds)
        from io import StringIO

        out = StringIO()
        config.write(out)
        return out.getvalue()


def auth_available() -> str | None:
    """Why basic auth cannot run here (Flask-WTF missing), or None."""
    import importlib.util

    if importlib.util.find_spec("flask_wtf") is None:
        return 'basic auth needs Flask-WTF: pip install "mlflow[auth]"'
    return None


@dataclass
class Server:
    url: str
    port: int
    base: Path
    log: Path
    tag: str
    auth: BasicAuth | None = None
    start_seconds: float = 0.0
    stop_seconds: float = 0.0
    leftovers: list[int] = field(default_factory=list)
    _proc: subprocess.Popen | None = field(default=None, repr=False)
    _stopped: bool = False

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def pgid(self) -> int:
        return self._proc.pid  # its own session: the group id is its pid

    def processes(self) -> list[int]:
        return pids_in_group(self.pgid)

    def credentials_env(self, username: str | None = None, password: str | None = None) -> dict[str, str]:
        """``MLFLOW_TRACKING_*`` variables for a client of this server (the admin's by default)."""
        env = {"MLFLOW_TRACKING_URI": self.url}
        if self.auth is not None or username is not None:
            env["MLFLOW_TRACKING_USERNAME"] = username or self.auth.admin_username
            env["MLFLOW_TRACKING_PASSWORD"] = password or self.auth.admin_password
        return env

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL after 10 s; check that nothing of it is left."""
        if self._stopped:
            return
        self._stopped = True
        t0 = time.monotonic()
        try:
            if self._proc is not None:
                survivors = stop_group(self.pgid, timeout=10)
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(timeout=5)
                left = pids_in_group(self.pgid)
                self.leftovers = survivors + kill_tagged(self.tag)
                if left:
                    raise RuntimeError(f"mlflow server processes {left} survived SIGKILL of their group")
        finally:
            self.stop_seconds = time.monotonic() - t0


def _health(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as answer:
            return answer.status == 200
    except (OSError, urllib.error.URLError):
        return False


def start(server: Server, cmd: list[str], env: dict[str, str], timeout: float) -> None:
    """Start ``cmd`` (a tracking server) in its own session in ``server.base``, logging to ``server.log``;
    return once ``server.url/health`` answers (``server.start_seconds`` after the start)."""
    t0 = time.monotonic()
    with open(server.log, "wb") as log:
        server._proc = subprocess.Popen(cmd, cwd=server.base, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def up() -> bool:
        if server._proc.poll() is not None:
            raise RuntimeError(f"{cmd[2:4]} exited with {server._proc.returncode}:\n{tail(server.log)}")
        return _health(server.url)

    try:
        wait_for(up, timeout, f"the server at {server.url}/health", 0.2)
    except TimeoutError as e:
        raise TimeoutError(f"{e}\n{tail(server.log)}") from None
    server.start_seconds = time.monotonic() - t0


@contextmanager
def mlflow_server(backend_store_uri: str, base: Path | None = None, *, auth: BasicAuth | None = None,
                  artifacts: str | None = None, workers: int = 1, env: dict[str, str] | None = None,
                  extra_args: tuple[str, ...] = (), timeout: float = 180.0, port: int | None = None) -> Iterator[Server]:
    """Start ``mlflow server`` over ``backend_store_uri`` on 127.0.0.1:<free port>; yield a :class:`Server`.

    ``base``: a folder for the log, the artifacts and the auth files (a temporary one, removed at
    the end, if None). ``auth``: serve ``--app-name basic-auth`` with these settings. ``port``: this
    one instead of a free one (a server restarted where its clients look for it).
    """
    own_base = base is None
    base = Path(tempfile.mkdtemp(prefix="mlflow-server-")) if own_base else Path(base)
    base.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    tag = new_tag("mlflow")
    url = f"http://127.0.0.1:{port}"
    server = Server(url=url, port=port, base=base, log=base / f"mlflow-server-{port}.log", tag=tag, auth=auth)
    full_env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    full_env.update({TAG_VAR: tag, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "PYTHONUNBUFFERED": "1"})
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri,
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
           "--artifacts-destination", artifacts or str(base / "artifacts")]
    if auth is not None:
        ini = base / "basic_auth.ini"
        ini.write_text(auth.ini(base))
        ini.chmod(0o600)
        full_env["MLFLOW_AUTH_CONFIG_PATH"] = str(ini)
        full_env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_hex(16))
        cmd += ["--app-name", "basic-auth"]
    cmd += list(extra_args)
    full_env.update(env or {})
    try:
        start(server, cmd, full_env, timeout)
        yield server
    finally:
        server.stop()
        if own_base:
            shutil.rmtree(base, ignore_errors=True)


__all__ = ["BasicAuth", "Server", "mlflow_server", "auth_available", "start"]
