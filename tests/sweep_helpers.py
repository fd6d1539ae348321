"""Helpers for the sweep, server and browser tests: stores, a served store, reading a sweep back.

Also an objective for a job that fails mid-descent (``objective.target=tests.sweep_helpers:square_until_negative``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def square_until_negative(x):
    """sum(x²), but raises once any coordinate is negative: a job that fails after its run started."""
    if bool((x < 0).any()):
        raise RuntimeError("square_until_negative: a coordinate went negative")
    return (x**2).sum(-1)


def make_workdir(base: Path, template: Path | None) -> Path:
    """A folder to run the CLI in; with ``outputs/mlflow.db`` copied from ``template`` if given."""
    (base / "outputs").mkdir(parents=True, exist_ok=True)
    if template is not None:
        shutil.copy(template, base / "outputs" / "mlflow.db")
    return base


def client_for(workdir: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{workdir / 'outputs' / 'mlflow.db'}")


def sweep_runs(client, experiment: str = "runner"):
    """(parent, children) of the one sweep in an experiment; children in the order of its jobs
    (``sweep.job``: a batched sweep's children share one start time), then oldest first."""
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment!r} was not created"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(runs) - 1, "every other run is the parent's child"
    return parent, sorted(children, key=lambda r: (int(r.data.tags.get("sweep.job", 10**9)), r.info.start_time))


# The objectives the test sweeps use, written again by hand on a vector x, with their starts.
BY_HAND = {
    "f": (lambda x: 3.0 * x[0] ** 2 + 2.0 * x[0] - 1.0, [0.0]),
    "g": (lambda x: (x[0] + 5.0) * x[1] ** 2, [2.0, 3.0]),
    "booth": (lambda x: (x[0] + 2.0 * x[1] - 7.0) ** 2 + (2.0 * x[0] + x[1] - 5.0) ** 2, [0.0, 0.0]),
    "rosenbrock": (lambda x: 100.0 * (x[1] - x[0] ** 2) ** 2 + (1.0 - x[0]) ** 2, [-1.2, 1.0]),
}


def final_loss_by_hand(params: dict) -> float:
    """A child run's final loss computed again, apart from the runner: its objective written by hand,
    ``steps`` updates of torch.optim's class (or ``x -= lr·grad`` for ``manual``) on a plain vector,
    with the hyperparameters the run recorded, and the loss at the last point."""
    import torch

    fn, start = BY_HAND[params["objective.name"]]
    x = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    lr, name = float(params["lr"]), params["optimizer.name"]
    if name == "adam":
        betas = tuple(float(b) for b in params["optimizer.betas"].strip("[]").split(","))
        opt = torch.optim.Adam([x], lr=lr, betas=betas, eps=float(params["optimizer.eps"]))
    elif name == "sgd":
        opt = torch.optim.SGD([x], lr=lr)
    else:
        assert name == "manual", name
        opt = None
    for _ in range(int(params["steps"])):
        (x.grad,) = torch.autograd.grad(fn(x), x)
        if opt is None:
            with torch.no_grad():
                x -= lr * x.grad
        else:
            opt.step()
    with torch.no_grad():
        return float(fn(x))


def loss_history(client, run_id: str) -> list[float]:
    return [m.value for m in sorted(client.get_metric_history(run_id, "loss"), key=lambda m: m.step)]


def summary_table(client, run_id: str) -> list[dict]:
    """The parent's summary table as a list of row dicts."""
    path = client.download_artifacts(run_id, "summary_table.json")
    data = json.loads(Path(path).read_text())
    return [dict(zip(data["columns"], row)) for row in data["data"]]


def wait_until_ended(client, run_id: str, timeout: float = 60.0):
    """The run once its status is no longer RUNNING (the guard may still be ending it)."""
    deadline = time.time() + timeout
    while True:
        run = client.get_run(run_id)
        if run.info.status != "RUNNING" or time.time() > deadline:
            return run
        time.sleep(0.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@contextmanager
def mlflow_server(cwd: Path, timeout: float = 180.0):
    """``python -m runner.serve`` on a free port in ``cwd``; yields its URL; stops it afterwards."""
    port = free_port()
    log_path = cwd / f"mlflow-server-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runner.serve", "--port", str(port)],
            cwd=cwd, env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"mlflow server did not start ({'exited' if proc.poll() is not None else 'timeout'}):\n"
                                   + log_path.read_text()[-3000:])
            time.sleep(0.5)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and its workers
            proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
