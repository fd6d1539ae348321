"""Shared fixtures: run the CLI in a temporary folder and read its MLflow store back.

Creating a new SQLite store runs MLflow's schema migrations (~2 s); the session makes one empty
store and each test starts from a copy of it, in its own folder (its own ``outputs/``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from infra.fixtures import auth_server, postgres, slurm  # noqa: F401  (one of each service per session)
from served_fixtures import shared_server  # noqa: F401

REPO = Path(__file__).resolve().parent.parent

if os.environ.get("MUTANT_UNDER_TEST"):
    # mutmut runs the tests in its own process first (stats), then forks a child per mutant. libgomp
    # is not fork-safe: a child entering an OpenMP region of the pool the parent started waits on its
    # barrier forever, and the mutant is reported as a timeout. One torch thread never starts a pool.
    import torch

    torch.set_num_threads(1)


# -- isolation: every test leaves the process as it found it, so that the suite passes in any order
# (CI runs it shuffled by pytest-randomly) ---------------------------------------------------------


def _stored_paths(tree: dict, prefix: tuple = ()) -> set[tuple]:
    """The paths of every config in Hydra's ConfigStore repository (a tree of dicts)."""
    paths: set[tuple] = set()
    for key, value in tree.items():
        paths |= _stored_paths(value, prefix + (key,)) if isinstance(value, dict) else {prefix + (key,)}
    return paths


def _drop_stored(tree: dict, path: tuple) -> None:
    """Remove one config from the repository, and the groups it leaves empty."""
    node = tree
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    if len(path) > 1 and not node:
        _drop_stored(tree, path[:-1])


@pytest.fixture(autouse=True)
def leave_no_global_state():
    """Undo what a test left behind in this process: environment variables (``RUNNER_PARENT_RUN_ID``,
    ``RUNNER_SWEPT_KEYS``, MLflow's …), Hydra's initialised GlobalHydra, the configs it stored in
    Hydra's ConfigStore (``runner.config.register_configs`` puts an ``objective`` group there, which
    another Hydra app's ``objective=g`` would then read as a group choice), and MLflow's tracking URI.
    Configs under ``hydra/`` stay: Hydra registers its plugins' configs there once per process."""
    from hydra.core.config_store import ConfigStore

    environ = dict(os.environ)
    stored = _stored_paths(ConfigStore.instance().repo)
    yield
    for key in set(os.environ) - set(environ):
        del os.environ[key]
    for key, value in environ.items():
        if os.environ.get(key) != value:
            os.environ[key] = value
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    repo = ConfigStore.instance().repo
    for path in sorted(_stored_paths(repo) - stored, key=len, reverse=True):
        if path[0] != "hydra":
            _drop_stored(repo, path)
    if "mlflow" in sys.modules:
        sys.modules["mlflow"].set_tracking_uri(None)


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m runner ARGS`` in ``cwd``; the result with text stdout and stderr."""
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO), full_env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its schema and no experiment of ours, made once per session."""
    folder = tmp_path_factory.mktemp("store-template")
    db = folder / "mlflow.db"
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def workdir(tmp_path, empty_store) -> Path:
    """A folder to run the CLI in, with ``outputs/mlflow.db`` already migrated."""
    (tmp_path / "outputs").mkdir()
    shutil.copy(empty_store, tmp_path / "outputs" / "mlflow.db")
    return tmp_path


@pytest.fixture
def client(workdir):
    """An MlflowClient on the workdir's default store."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{workdir / 'outputs' / 'mlflow.db'}")


def make_problem(name: str, dtype=None, **overrides):
    """A :class:`runner.descent.problem.Problem` from objective-config keys, float64 on the CPU by default."""
    import torch
    from omegaconf import OmegaConf

    from runner.descent.problem import build_problem

    cfg = dict(name=name, init=None, dim=None, expr=None, vars=None, target=None, wrt=None)
    cfg.update(overrides)
    return build_problem(OmegaConf.create(cfg), dtype=dtype or torch.float64, device=torch.device("cpu"))


def runs_of(client, experiment: str = "runner"):
    """All runs of an experiment, oldest first."""
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment!r} was not created"
    return list(reversed(client.search_runs([exp.experiment_id], max_results=1000)))
