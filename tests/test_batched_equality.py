"""The batched launcher records what the job-by-job (``cached``) launcher records.

Two sweeps, each run once with ``hydra/launcher=cached`` and once with ``hydra/launcher=batched``, in
float64, read back through MlflowClient:

- 2 objectives × 3 optimizers (sgd, adam, rmsprop) × 3 lrs × 2 start points (36 jobs), with runs
  that converge, diverge (sgd at lr 0.02) or run out of steps;
- 2 objectives × 3 optimizers (manual, adamw, adagrad) × 2 lrs × 2 step counts × 2 tolerances
  (48 jobs: rows of one descent stop at their own ``steps`` and ``tol``).

Every child has the same name, params, tags (outcome, final_step, log_every, warning, …) and status,
and every metric history the same steps with values equal to 1e-10 relative; every job's folder has
the same ``.hydra/config.yaml`` and ``overrides.yaml``; the parents' summaries agree.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import yaml
from conftest import run_cli
from sweep_helpers import client_for, make_workdir, summary_table, sweep_runs

pytestmark = pytest.mark.slow

SWEEPS = {
    "sgd-adam-rmsprop": ["objective=rosenbrock,himmelblau", "optimizer=sgd,adam,rmsprop", "lr=0.0005,0.002,0.02",
                         "objective.init=[-1.2,1.0],[0.5,-0.5]", "steps=150", "tol=1e-6", "tracking.log_every=4"],
    "manual-adamw-adagrad": ["objective=g,booth", "optimizer=manual,adamw,adagrad", "lr=0.01,0.05", "steps=40,77",
                             "tol=null,0.5", "tracking.log_every=auto"],
}
TAGS = ("outcome", "final_step", "log_every", "diverged_step", "warning", "objective", "optimizer", "backend",
        "device", "dtype", "task", "compiled", "logged_coords")


def run_sweep(workdir: Path, launcher: str, args: list[str]):
    started = time.time()
    result = run_cli("-m", f"hydra/launcher={launcher}", *args, "tracking.artifacts=false", cwd=workdir)
    print(f"{launcher}: {time.time() - started:.1f} s")
    assert result.returncode == 0, result.stderr[-3000:]
    client = client_for(workdir)
    parent, children = sweep_runs(client)
    return result, client, parent, {c.info.run_name: c for c in children}


@pytest.fixture(scope="module", params=list(SWEEPS))
def both(request, tmp_path_factory, empty_store):
    args = SWEEPS[request.param]
    runs = {}
    for launcher in ("cached", "batched"):
        workdir = make_workdir(tmp_path_factory.mktemp(f"{request.param}-{launcher}"), empty_store)
        runs[launcher] = (workdir, *run_sweep(workdir, launcher, args))
    return runs


def histories(client, run) -> dict[str, list[tuple[int, float]]]:
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)) for key in run.data.metrics}


def close(a: float, b: float, rel: float = 1e-10) -> bool:
    return a == b or abs(a - b) <= rel * max(abs(a), abs(b))


def test_every_child_has_the_same_record(both):
    _, _, cached_client, cached_parent, cached = both["cached"]
    _, _, batched_client, batched_parent, batched = both["batched"]
    assert sorted(batched) == sorted(cached) and len(cached) in (36, 48)
    outcomes = set()
    for name, expected in cached.items():
        got = batched[name]
        assert got.info.status == expected.info.status == "FINISHED", name
        assert got.data.params == expected.data.params, name
        assert {k: got.data.tags.get(k) for k in TAGS} == {k: expected.data.tags.get(k) for k in TAGS}, name
        assert got.data.tags["mlflow.parentRunId"] == batched_parent.info.run_id
        want, have = histories(cached_client, expected), histories(batched_client, got)
        assert set(have) == set(want), name
        for key, points in want.items():
            assert [s for s, _ in have[key]] == [s for s, _ in points], (name, key)
            assert all(close(a, b) for (_, a), (_, b) in zip(have[key], points)), (name, key)
        outcomes.add(expected.data.tags["outcome"])
    assert len(outcomes) >= 2, outcomes  # the sweeps do stop rows in different ways


def test_every_job_folder_has_the_same_hydra_files(both):
    for num in range(len(both["cached"][4])):
        folders = {launcher: Path(run[3].data.tags["sweep.dir"]) / str(num) / ".hydra" for launcher, run in both.items()}
        for name in ("config.yaml", "overrides.yaml"):
            cached, batched = (yaml.safe_load((folders[k] / name).read_text()) for k in ("cached", "batched"))
            assert batched == cached, (num, name)
        cached, batched = (yaml.safe_load((folders[k] / "hydra.yaml").read_text())["hydra"] for k in ("cached", "batched"))
        for key in ("num", "id", "override_dirname", "name", "env_set", "chdir"):
            assert batched["job"][key] == cached["job"][key], (num, key)
        assert batched["overrides"]["task"] == cached["overrides"]["task"]
        assert batched["runtime"]["output_dir"] == str(folders["batched"].parent)
        assert batched["runtime"]["choices"]["hydra/launcher"] == "batched"


def test_the_parents_summaries_agree(both):
    rows = {}
    for launcher, (workdir, result, client, parent, children) in both.items():
        assert parent.info.status == "FINISHED"
        assert parent.data.tags["sweep.launcher"] == launcher
        assert parent.data.tags["sweep.children"] == str(len(children))
        rows[launcher] = {r["run_name"]: r for r in summary_table(client, parent.info.run_id)}
    for name, row in rows["cached"].items():
        got = rows["batched"][name]
        assert (got["outcome"], got["final_step"], got["status"]) == (row["outcome"], row["final_step"], row["status"])
        a, b = float(got["final_loss"]), float(row["final_loss"])
        assert (math.isinf(a) and math.isinf(b)) or close(a, b), name
    # the best child (one per objective when the sweep spans several), by name
    best = {k: {t: v for t, v in both[k][3].data.tags.items() if t.startswith(("best_child", "best_final_loss"))
                and not t.startswith("best_child_run_id")} for k in both}
    assert best["batched"] and best["batched"].keys() == best["cached"].keys()
    assert {t: v for t, v in best["batched"].items() if t.startswith("best_child")} == \
        {t: v for t, v in best["cached"].items() if t.startswith("best_child")}


def test_the_lines_printed_are_the_jobs_lines(both):
    """Each job prints the line (and stable-step warning) it prints under the cached launcher."""
    lines = {k: [ln for ln in run[1].stdout.splitlines() if ": " in ln and " at step " in ln] for k, run in both.items()}
    assert lines["batched"] == lines["cached"]
    warnings = {k: [ln for ln in run[1].stderr.splitlines() if ln.startswith("warning: lr=")] for k, run in both.items()}
    assert warnings["batched"] == warnings["cached"]
