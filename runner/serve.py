"""``python -m runner.serve [--port 5000]``: an MLflow tracking server (and UI) over the project's store.

It runs::

    mlflow server --backend-store-uri sqlite:///outputs/mlflow.db \\
        --serve-artifacts --artifacts-destination outputs/mlartifacts \\
        --host 127.0.0.1 --port 5000 --workers 1

in the directory it is started in (with ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` unless set: the
server's GenAI job runners are not needed), and prints the page to open: the runs table of the
experiment ``runner`` in the UI's model-training view (:mod:`runner.tracking.links`). Then

- the UI shows every run of the store, and the artifacts of runs logged straight into the SQLite
  file (their experiment's artifact location is ``file://…/outputs/mlartifacts``, which this server
  reads from disk);
- jobs can log through it: ``python -m runner -m ... tracking.uri=http://127.0.0.1:5000``.
  Experiments created through the server store their artifacts as ``mlflow-artifacts:/`` URIs,
  uploaded over HTTP into ``--artifacts-destination``, so the jobs need no access to the disk.

For a server other machines use (a cluster), bind another interface and name the hosts allowed in
requests: ``--host 0.0.0.0 --allowed-hosts 'login1:5000,login1.example.org:5000'`` (MLflow 3 refuses
other ``Host`` headers), and give it a database that takes concurrent writers if the sweeps are large
(``--store postgresql://...``). See docs/sweeps.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from runner.cli import default_experiment
from runner.tracking import links
from runner.tracking.store import DEFAULT_URI, sqlite_path


def command(args: argparse.Namespace) -> list[str]:
    """The ``mlflow server`` command line for these options."""
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", args.store,
        "--serve-artifacts", "--artifacts-destination", args.artifacts,
        "--host", args.host, "--port", str(args.port),
        "--workers", str(args.workers),
    ]
    if args.allowed_hosts:
        cmd += ["--allowed-hosts", args.allowed_hosts]
    return cmd


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m runner.serve", description="Serve the runner's MLflow store and UI.")
    parser.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--store", default=os.environ.get("MLFLOW_BACKEND_STORE_URI", DEFAULT_URI),
                        help=f"backend store URI (default {DEFAULT_URI})")
    parser.add_argument("--artifacts", default="outputs/mlartifacts",
                        help="where artifacts uploaded through the server go (default outputs/mlartifacts)")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    parser.add_argument("--allowed-hosts", default=None, help="Host headers to accept when binding another interface")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    db = sqlite_path(args.store)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    if "://" not in args.artifacts:
        Path(args.artifacts).mkdir(parents=True, exist_ok=True)
    print(links.serve_lines(args.store, f"http://{args.host}:{args.port}", default_experiment()), flush=True)
    cmd = command(args)
    # MLflow 3's server also starts seven job-runner processes (huey) for its GenAI features; the
    # runner needs none of them, and on a small machine they double the start-up time.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    os.execv(cmd[0], cmd)  # the server replaces this process: signals (Ctrl-C) reach it directly


if __name__ == "__main__":
    main()
