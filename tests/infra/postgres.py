"""A throwaway PostgreSQL server for tests: ``with postgres_server(tmp_path) as pg: pg.uri``.

Debian's PostgreSQL (the ``postgresql`` package; ``/usr/lib/postgresql/<newest>/bin``, 15 on
Debian 12; ``/usr/local/bin/initdb`` here is only a symlink to it). ``initdb`` and ``postgres``
refuse to run as root, so as root they run as the ``postgres`` user (``runuser -u postgres`` for
initdb, ``setpriv`` for the server so that the server is our child: it is stopped with
``pg_ctl stop -m fast`` and then reaped by pid); as any other user they run as that user.

The cluster lives in a fresh ``/tmp/pg-XXXX`` folder owned by the server's user (pytest's
``/tmp/pytest-of-root`` is 0700, which the postgres user cannot enter), removed at the end; with
``base`` given, the server log is copied to ``base/postgres.log`` first. The server listens on
127.0.0.1 only, on a free port, its UNIX socket is in that folder, ``fsync`` is off (throwaway
data), and every connection needs a password (``scram-sha-256``): the superuser ``runner``
(password ``pw``) owns a database ``mlflow``.

``pg.uri`` is ``postgresql://runner:pw@127.0.0.1:PORT/mlflow``. Note the driver: SQLAlchemy 2.1
(installed with MLflow 3.17 here) maps a plain ``postgresql://`` to **psycopg 3** (``pip install
"psycopg[binary]"``), not psycopg2; with only ``psycopg2-binary`` installed, ``mlflow server``
dies with ``ModuleNotFoundError: No module named 'psycopg'``. ``pg.url("psycopg2")`` gives
``postgresql+psycopg2://...`` for psycopg2. ``pg.driver_uri()`` picks whichever is installed.

Measured here (2 cores): initdb ~1.6 s, server up ~0.2 s later, database created ~0.1 s:
``start_seconds`` 1.2-3.5 s in all (varies with the machine's load); ``stop_seconds``
(``pg_ctl stop -m fast`` and the reaping) 0.13-0.15 s.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ._proc import (
    TAG_VAR,
    descendants,
    free_port,
    kill_pids,
    kill_tagged,
    new_tag,
    tail,
    wait_for,
)

USER = "runner"
PASSWORD = "pw"
DATABASE = "mlflow"


def find_bindir() -> Path | None:
    """Debian's newest ``/usr/lib/postgresql/<ver>/bin`` with initdb, else the folder of ``initdb`` on PATH."""
    base = Path("/usr/lib/postgresql")
    if base.is_dir():
        versions = sorted((p for p in base.iterdir() if (p / "bin" / "initdb").exists()),
                          key=lambda p: [int(x) for x in p.name.split(".") if x.isdigit()], reverse=True)
        if versions:
            return versions[0] / "bin"
    initdb = shutil.which("initdb")
    return Path(os.path.realpath(initdb)).parent if initdb else None


def missing() -> str | None:
    """Why the server cannot be started here, or None."""
    bindir = find_bindir()
    if bindir is None:
        return "PostgreSQL is not installed (no initdb; apt-get install postgresql)"
    for tool in ("initdb", "postgres", "pg_ctl", "pg_isready", "psql"):
        if not (bindir / tool).exists() and not shutil.which(tool):
            return f"PostgreSQL tool {tool} not found in {bindir}"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
        if shutil.which("runuser") is None or shutil.which("setpriv") is None:
            return "running as root needs runuser and setpriv (util-linux) to run as postgres"
    return None


def installed_driver() -> str | None:
    """The PostgreSQL driver SQLAlchemy can use here: 'psycopg' (3), 'psycopg2', or None."""
    for module in ("psycopg", "psycopg2"):
        if importlib.util.find_spec(module) is not None:
            return module
    return None


@dataclass
class PG:
    root: Path
    port: int
    bindir: Path
    tag: str
    host: str = "127.0.0.1"
    user: str = USER
    password: str = PASSWORD
    database: str = DATABASE
    base: Path | None = None
    start_seconds: float = 0.0
    stop_seconds: float = 0.0
    leftovers: list[int] = field(default_factory=list)
    _proc: subprocess.Popen | None = field(default=None, repr=False)
    _stopped: bool = False

    @property
    def uri(self) -> str:
        return self.url()

    def url(self, driver: str | None = None, database: str | None = None) -> str:
        scheme = "postgresql" if driver is None else f"postgresql+{driver}"
        return f"{scheme}://{self.user}:{self.password}@{self.host}:{self.port}/{database or self.database}"

    def driver_uri(self, database: str | None = None) -> str:
        """The URI for the driver that is installed (psycopg 3 preferred, as SQLAlchemy 2.1 does)."""
        driver = installed_driver()
        if driver is None:
            raise RuntimeError('no PostgreSQL driver: pip install "psycopg[binary]" or psycopg2-binary')
        return self.url(None if driver == "psycopg" else driver, database)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL with psql over TCP; its output (unaligned, tuples only)."""
        res = subprocess.run(
            [str(self.bindir / "psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", self.host, "-p", str(self.port),
             "-U", self.user, "-d", database, "-c", sql],
            env={**os.environ, "PGPASSWORD": self.password}, capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            raise RuntimeError(f"psql failed ({res.returncode}): {res.stderr}")
        return res.stdout

    def stop(self) -> None:
        """``pg_ctl stop -m fast``, reap the server by pid, kill any straggler, remove the folder."""
        if self._stopped:
            return
        self._stopped = True
        t0 = time.monotonic()
        try:
            # Postgres rewrites its children's process titles over their environment, so they are
            # found as the server's descendants rather than by the marker.
            children = descendants(self._proc.pid) if self._proc is not None else []
            if self._proc is not None and self._proc.poll() is None:
                subprocess.run(_as_server_user([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast",
                                                "-w", "-t", "20", "stop"]),
                               capture_output=True, text=True, timeout=30)
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(timeout=10)
            self.leftovers = kill_pids(children) + kill_tagged(self.tag)
        finally:
            self.stop_seconds = time.monotonic() - t0
            if self.base is not None and self.log.exists():
                shutil.copy(self.log, self.base / "postgres.log")
            shutil.rmtree(self.root, ignore_errors=True)


def _as_server_user(cmd: list[str], exec_: bool = False) -> list[str]:
    """``cmd`` run as postgres when we are root (runuser forks; setpriv execs: the pid is the server)."""
    if os.geteuid() != 0:
        return cmd
    if exec_:
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", *cmd]
    return ["runuser", "-u", "postgres", "--", *cmd]


@contextmanager
def postgres_server(base: Path | None = None, timeout: float = 60.0) -> Iterator[PG]:
    """initdb a fresh cluster, start it on 127.0.0.1:<free port>, create user ``runner`` and
    database ``mlflow``; yield a :class:`PG`; stop it and remove everything."""
    why = missing()
    if why:
        raise FileNotFoundError(why)
    t0 = time.monotonic()
    bindir = find_bindir()
    root = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))
    root.chmod(0o700)
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
    tag = new_tag("postgres")
    pg = PG(root=root, port=free_port(), bindir=bindir, tag=tag, base=base)
    env = {**os.environ, TAG_VAR: tag, "LC_ALL": "C.UTF-8"}
    env.pop("PGDATA", None)
    try:
        pwfile = root / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        init = subprocess.run(
            _as_server_user([str(bindir / "initdb"), "-D", str(pg.data), "-U", USER, f"--pwfile={pwfile}",
                             "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
                             "--no-instructions"]),
            env=env, capture_output=True, text=True, timeout=120, cwd=root)
        pwfile.unlink()
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")
        with open(pg.log, "ab") as log:
            if os.geteuid() == 0:
                os.chown(pg.log, pw.pw_uid, pw.pw_gid)
            pg._proc = subprocess.Popen(
                _as_server_user([str(bindir / "postgres"), "-D", str(pg.data), "-p", str(pg.port),
                                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={root}",
                                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                                 "-c", "max_connections=50"], exec_=True),
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                cwd=root)

        def ready() -> bool:
            if pg._proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {pg._proc.returncode}:\n{tail(pg.log)}")
            return subprocess.run([str(bindir / "pg_isready"), "-q", "-h", pg.host, "-p", str(pg.port)],
                                  timeout=10).returncode == 0

        wait_for(ready, timeout, "postgres to accept connections", 0.05)
        pg.psql(f"CREATE DATABASE {DATABASE}")
        pg.start_seconds = time.monotonic() - t0
        yield pg
    finally:
        pg.stop()


__all__ = ["PG", "postgres_server", "missing", "installed_driver", "find_bindir"]
