"""A disk that fills up mid-run: a small tmpfs mounted under the run's folder (needs root).

Three places fill up: the artifact store (``outputs/mlartifacts``), the folder of the run's
trajectory.csv (``outputs/hydra``), and all of ``outputs/`` (the SQLite store included). Each time:
one line on stderr naming the path and saying how the run was recorded and where its steps are, exit
status 1, no traceback (none of SQLAlchemy's), the run FAILED (never RUNNING: with the store's disk
full, the store's 256 KB reserve pays for the end), and no truncated file among its artifacts.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.infra.runner_proc import Runner
from tests.sweep_helpers import client_for, loss_history

pytestmark = pytest.mark.slow

ARGS = ["objective=f", "lr=0.1", "tracking.log_every=1", "progress=false"]
NAME = "f-manual-lr0.1"
PNG_END = b"IEND\xaeB`\x82"


@contextmanager
def tmpfs(path: Path, size: str):
    """A tmpfs of ``size`` mounted at ``path`` for the block; skips where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)


def run_until_done(workdir: Path, *args: str) -> Runner:
    r = Runner(workdir, *ARGS, *args)
    try:
        r.wait(timeout=600)
        assert r.leftovers() == []
    finally:
        r.cleanup()
    return r


def one_line(r: Runner) -> str:
    assert r.proc.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "sqlalchemy" not in r.stderr.lower(), r.stderr
    (line,) = r.stderr.splitlines()
    return line


def the_run(workdir: Path):
    client = client_for(workdir)
    (run,) = client.search_runs([client.get_experiment_by_name("runner").experiment_id])
    assert (run.info.run_name, run.info.status, run.data.tags["outcome"]) == (NAME, "FAILED", "failed")
    return client, run


def trajectory_file(workdir: Path) -> Path:
    (path,) = workdir.glob("outputs/hydra/*/*/trajectory.csv")
    return path


def whole_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a trajectory.csv that must end with a whole line; its steps 0, 1, 2, …; f(x) each."""
    data = path.read_bytes()
    assert data.endswith(b"\n")
    with open(path, newline="") as table:
        rows = list(csv.DictReader(table))
    assert [int(row["step"]) for row in rows] == list(range(len(rows)))
    for row in rows:
        x = float(row["x/x"])
        assert float(row["loss"]) == pytest.approx(3 * x * x + 2 * x - 1, rel=1e-12, abs=1e-15)
    return rows


def test_the_artifact_store_fills_up(tmp_path, empty_store):
    (tmp_path / "outputs").mkdir()
    shutil.copy(empty_store, tmp_path / "outputs" / "mlflow.db")
    artifacts = tmp_path / "outputs" / "mlartifacts"
    with tmpfs(artifacts, "64k"):
        r = run_until_done(tmp_path, "steps=20000")
        client, run = the_run(tmp_path)
        folder = artifacts / run.info.run_id / "artifacts"
        left = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        for name in left:  # whatever is there is whole
            data = (folder / name).read_bytes()
            if name.endswith(".png"):
                assert data.endswith(PNG_END), name
            elif name == "trajectory.csv":
                assert data == trajectory_file(tmp_path).read_bytes()
            else:
                assert name == "config.yaml" and b"lr: 0.1\n" in data
        line = one_line(r)
    csv_path = trajectory_file(tmp_path)
    assert line.startswith(f"error: tracking: cannot write the artifacts of run {run.info.run_id}: "
                           f"no space left on the disk ({folder})")
    assert line.endswith(f"; run {NAME} recorded as FAILED at step 20000; its steps are in {csv_path}")
    assert "no space left on the disk" in run.data.tags["error"]
    assert run.data.tags["final_step"] == "20000"
    assert len(loss_history(client, run.info.run_id)) == 20001  # every metric is in the store
    assert len(whole_rows(csv_path)) == 20001


def test_the_trajectory_disk_fills_up(tmp_path, empty_store):
    (tmp_path / "outputs").mkdir()
    shutil.copy(empty_store, tmp_path / "outputs" / "mlflow.db")
    with tmpfs(tmp_path / "outputs" / "hydra", "64k"):
        r = run_until_done(tmp_path, "steps=20000")
        csv_path = trajectory_file(tmp_path)
        kept = whole_rows(csv_path)  # cut after its last whole row
        line = one_line(r)
    client, run = the_run(tmp_path)
    k = int(run.data.tags["final_step"])
    assert line == (f"error: no space left on the disk ({csv_path}); run {NAME} recorded as FAILED at step {k}; "
                    f"its steps are in {csv_path}")
    assert str(csv_path) in run.data.tags["error"]
    history = loss_history(client, run.info.run_id)
    assert len(history) == k + 1  # the metrics of every step computed
    logged = whole_rows(Path(client.download_artifacts(run.info.run_id, "trajectory.csv")))
    assert logged == kept and len(kept) <= k + 1
    assert [float(row["loss"]) for row in kept] == history[: len(kept)]


def test_the_disk_of_the_store_fills_up(tmp_path, empty_store):
    outputs = tmp_path / "outputs"
    with tmpfs(outputs, "1600k"):  # the store (0.95 MB empty), its artifacts and the run's folder
        shutil.copy(empty_store, outputs / "mlflow.db")
        r = run_until_done(tmp_path, "steps=100000")
        line = one_line(r)
        client, run = the_run(tmp_path)  # the reserve paid for its end
        assert not (outputs / "mlflow.db.reserve").exists()
        csv_path = trajectory_file(tmp_path)
        kept = whole_rows(csv_path)
        history = loss_history(client, run.info.run_id)
        k = int(run.data.tags["final_step"])
        assert line.startswith(f"error: no space left on the disk ({outputs}/")
        assert f"; run {NAME} recorded as FAILED at step {k}" in line
        assert line.endswith(f"; its steps are in {csv_path}")
        # up to the write that failed: none at all when the run's trajectory.csv filled the disk before
        # the writer's first batch reached the store (it races the writer; on a loaded machine it wins)
        assert len(history) <= k + 1
        assert k > 0 and len(kept) >= 1
        assert [float(row["loss"]) for row in kept[: len(history)]] == history[: len(kept)]
        assert "no space left on the disk" in run.data.tags.get("record_error", "") + run.data.tags["error"]
