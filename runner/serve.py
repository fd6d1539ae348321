"""``python -m runner.serve [--port 5000]``: an MLflow tracking server (and UI) over the project's store.

It runs (as its child, ended when ``runner.serve`` ends, even by ``kill -9``)::

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
(``--store postgresql://...``; the password is printed as ``***``, and a driver that is not installed
is refused in one line). ``--app-name basic-auth --auth-config basic_auth.ini`` puts MLflow's basic
auth in front of it (``mlflow[auth]``; clients set ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``). See
docs/sweeps.md.
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
    if args.app_name:
        cmd += ["--app-name", args.app_name]
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
    parser.add_argument("--app-name", default=None, help="an MLflow server app, e.g. basic-auth (needs mlflow[auth])")
    parser.add_argument("--auth-config", default=None,
                        help="the basic-auth ini file (sets MLFLOW_AUTH_CONFIG_PATH); see docs/sweeps.md")
    return parser.parse_args(argv)


def check(args: argparse.Namespace) -> None:
    """One line on stderr and exit 2 when the store's driver or the auth app cannot load here."""
    from runner.tracking.serving import auth_problem, store_problem

    problem = store_problem(args.store) or auth_problem(args.app_name, args.auth_config)
    if problem:
        print(f"runner.serve: {problem}", file=sys.stderr)
        sys.exit(2)


def auth_environment(args: argparse.Namespace) -> None:
    """The environment the basic-auth app reads: its ini file, and a secret key for its forms'
    CSRF tokens (MLflow refuses to start without one; a random one unless it is set)."""
    if args.auth_config:
        os.environ["MLFLOW_AUTH_CONFIG_PATH"] = str(Path(args.auth_config).resolve())
    if args.app_name == "basic-auth" and not os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY"):
        import secrets

        os.environ["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_hex(32)


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    check(args)
    auth_environment(args)
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
    sys.exit(supervise(cmd))


def supervise(cmd: list[str]) -> int:
    """Run the server as this process's child and wait for it; its exit status.

    Not ``exec``: MLflow's server runs its app in a uvicorn child process, which a ``kill -9`` of the
    server's own process would leave serving. Here the server gets SIGTERM when this process dies, however
    it dies (Linux's parent-death signal), and ends its uvicorn child as on any SIGTERM; SIGINT, SIGTERM
    and SIGHUP sent to this process are passed on to it."""
    import signal
    import subprocess

    parent = os.getpid()

    def die_with_parent() -> None:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the line above: end now
            os.kill(os.getpid(), signal.SIGTERM)

    server = subprocess.Popen(cmd, preexec_fn=die_with_parent)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda sig, _frame: server.send_signal(sig))
    while True:
        try:
            status = server.wait()
        except KeyboardInterrupt:  # pragma: no cover - SIGINT is handled above
            continue
        return status if status >= 0 else 128 - status


if __name__ == "__main__":
    main()
