"""Checks ``python -m runner.serve`` makes before it starts ``mlflow server``: one line that says what is
wrong instead of a traceback ten seconds later, and no password printed.

- :func:`redact`: a store URI with its password replaced by ``***`` (``postgresql://runner:***@db/mlflow``),
  for what the server prints.
- :func:`store_problem`: a ``postgresql://`` (or ``mysql://``) store needs a driver SQLAlchemy can
  load: SQLAlchemy 2.1 maps a plain ``postgresql://`` to psycopg 3 (``postgresql+psycopg2://`` to
  psycopg2); the project's ``server`` extra installs both.
- :func:`auth_problem`: ``--app-name basic-auth`` needs ``mlflow[auth]`` (Flask-WTF) and, when an
  ``--auth-config`` file is named, a readable ini file with an ``[mlflow]`` section.
"""

from __future__ import annotations

import configparser
import importlib.util
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

# SQLAlchemy's default driver for each dialect (2.1), and the module each driver needs.
DEFAULT_DRIVERS = {"postgresql": "psycopg", "mysql": "mysqldb", "mssql": "pyodbc"}
DRIVER_MODULES = {"psycopg": "psycopg", "psycopg2": "psycopg2", "pg8000": "pg8000", "asyncpg": "asyncpg",
                  "mysqldb": "MySQLdb", "pymysql": "pymysql", "mysqlconnector": "mysql.connector", "pyodbc": "pyodbc"}


def redact(uri: str) -> str:
    """``uri`` with the password (if any) shown as ``***``."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def store_problem(uri: str) -> str | None:
    """Why ``mlflow server --backend-store-uri uri`` cannot load a database driver here, or None."""
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    dialect, _, driver = scheme.partition("+")
    if dialect not in DEFAULT_DRIVERS:
        return None
    driver = driver or DEFAULT_DRIVERS[dialect]
    module = DRIVER_MODULES.get(driver)
    if module is None or importlib.util.find_spec(module.split(".")[0]) is not None:
        return None
    hint = ('; pip install -e ".[server]" installs psycopg 3 (postgresql://) and psycopg2 (postgresql+psycopg2://)'
            if dialect == "postgresql" else "")
    return (f"--store {redact(uri)}: SQLAlchemy needs the {driver} driver for {scheme}://, "
            f"and the module {module!r} is not installed{hint}")


def auth_problem(app_name: str | None, config_path: str | None) -> str | None:
    """Why ``--app-name app_name`` with the auth ini file ``config_path`` cannot start, or None."""
    if app_name is None:
        if config_path is not None:
            return "--auth-config is for --app-name basic-auth"
        return None
    if app_name != "basic-auth":
        return None
    if importlib.util.find_spec("flask_wtf") is None:
        return '--app-name basic-auth needs MLflow\'s auth extra: pip install "mlflow[auth]" (or -e ".[server]")'
    if config_path is None:
        return None
    path = Path(config_path)
    parser = configparser.ConfigParser()
    try:
        read = parser.read(path)
    except configparser.Error as exc:
        return f"--auth-config {path}: not an ini file ({str(exc).splitlines()[0]})"
    if not read:
        return f"--auth-config {path}: no such readable file"
    if "mlflow" not in parser:
        return f"--auth-config {path}: no [mlflow] section (see docs/sweeps.md, 'A shared server behind basic auth')"
    return None
