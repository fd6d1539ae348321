#!/usr/bin/env python
"""The batched launcher's speed against its yardsticks, measured in one run (issue 14).

    python benchmarks/batched_bench.py [--jobs 1000] [--cached-jobs 20] [--rows 10000] [--json out.json]

The sweep: ``python -m runner -m objective=rosenbrock optimizer=sgd steps=1000 lr=<10 values>
objective.init=<100 start points> tracking.log_every=20 tracking.artifacts=false`` (1,000 jobs).

  (1) end to end with ``hydra/launcher=batched``, every child FINISHED in the SQLite store (checked
      through MlflowClient), against the ``cached`` launcher with the same options on ``--cached-jobs``
      of them, extrapolated: F + jobs · (T_cached − F) / cached_jobs, F the import floor.
                                                                              target ≤ 60 s
  (2) the same batched sweep against the store floor plus the import floor: a bare MlflowClient loop
      writing the same runs (a parent; each child: create_run with its tags, one log_batch with its
      params and metric points, set_terminated), timed around the loop, plus
      ``python -c "import torch, mlflow, hydra, omegaconf"``.                   target ≤ 1.3
  (3) the batched compute alone (``runner.descent.loop.descend`` with the batched SGD rule, per-row
      lr, every step kept as the sweep keeps it) for ``--rows`` such trajectories, against the bare
      batched PyTorch loop (the same objective function, autograd, ``x ← x − lr·g`` on ``(B, 2)``,
      loss, x and gradient of every step stored in preallocated tensors); medians of alternating
      repetitions.                                                              target ≤ 1.5

Every command runs as a fresh process in a temporary folder on a copy of an already migrated store,
timed until it and every process it started (its process group) have ended. The exit code is 0 even
when a target is missed: this is a report. Times depend on the machine and its load; the ratios are
what the targets judge.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FLOOR_CODE = "import torch, mlflow, hydra, omegaconf"
OPTIONS = ["objective=rosenbrock", "optimizer=sgd", "steps=1000", "tracking.log_every=20", "tracking.artifacts=false"]
METRICS = ("loss", "grad_norm", "x/x1", "x/x2", "grad/x1", "grad/x2")


def sweep_values(jobs: int) -> tuple[list[float], list[list[float]]]:
    """10 lrs and jobs/10 start points on a grid around the Rosenbrock valley."""
    lrs = [float(f"{v:.6g}") for v in np.linspace(1e-4, 1e-3, 10)]
    side = int(np.ceil(np.sqrt(jobs // 10)))
    grid = [[float(f"{x:.4g}"), float(f"{y:.4g}")] for x in np.linspace(-2, 2, side) for y in np.linspace(-1, 3, side)]
    return lrs, grid[: jobs // 10]


def sweep_args(lrs, starts) -> list[str]:
    inits = ",".join(f"[{x},{y}]" for x, y in starts)
    return [*OPTIONS, "lr=" + ",".join(map(str, lrs)), f"objective.init={inits}"]


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="runner-batched-bench-"))
        self.env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        self.env["PYTHONPATH"] = os.pathsep.join([str(REPO), self.env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self.template = self.tmp / "template.db"
        code = f"from mlflow import MlflowClient; MlflowClient(tracking_uri='sqlite:///{self.template}').search_experiments()"
        subprocess.run([sys.executable, "-c", code], env=self.env, check=True, capture_output=True)
        self.n = 0
        self.logs: dict[str, Path] = {}

    def folder(self, name: str) -> Path:
        d = self.tmp / name
        (d / "outputs").mkdir(parents=True)
        shutil.copy(self.template, d / "outputs" / "mlflow.db")
        return d

    def timed(self, label: str, cmd: list[str], cwd: Path, env: dict | None = None) -> float:
        """Wall seconds of ``cmd`` until it and its process group have ended; its log kept."""
        self.n += 1
        log = self.logs[label] = self.tmp / f"{self.n:02d}-{label}.log"
        with open(log, "wb") as out:
            started = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=cwd, env={**self.env, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            rc = proc.wait()
            while _alive(proc.pid):
                time.sleep(0.005)
            seconds = time.perf_counter() - started
        if rc != 0:
            raise SystemExit(f"{label} exited with {rc}; log: {log}\n" + log.read_text(errors="replace")[-3000:])
        print(f"  {label}: {seconds:.1f} s (log {log})", flush=True)
        return seconds


def _alive(pgid: int) -> bool:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                return True
    return False


def children_of_sweep(db: Path) -> tuple[dict, list]:
    """(parent, children) of the one sweep in a store, through MlflowClient."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("runner")
    runs, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token)
        runs += page
        token = page.token
        if not token:
            break
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return parents[0], [r for r in runs if r is not parents[0]]


# -- (2) the store floor: a bare MlflowClient loop, run as its own process --------------------------------
def store_floor(source_db: str, target_db: str, jobs: int, out: str) -> None:
    """Write ``jobs`` children like the sweep's (a child of ``source_db`` as the model: its params and
    tags; metric points at the same steps) with MlflowClient, one create_run, log_batch and
    set_terminated each; the loop's seconds to ``out``."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    model = MlflowClient(tracking_uri=f"sqlite:///{source_db}")
    exp = model.get_experiment_by_name("runner")
    child = next(r for r in model.search_runs([exp.experiment_id], max_results=5) if "mlflow.parentRunId" in r.data.tags)
    history = {k: [(m.step, m.value) for m in model.get_metric_history(child.info.run_id, k)] for k in METRICS}
    client = MlflowClient(tracking_uri=f"sqlite:///{target_db}")
    started = time.perf_counter()
    experiment = client.create_experiment("runner")
    parent = client.create_run(experiment, run_name="sweep").info.run_id
    for i in range(jobs):
        tags = {**{k: v for k, v in child.data.tags.items() if not k.startswith("mlflow.")}, "mlflow.parentRunId": parent}
        run = client.create_run(experiment, run_name=f"{child.info.run_name}-{i}", tags=tags).info.run_id
        now = int(time.time() * 1000)
        metrics = [Metric(k, v * (1 + 1e-9 * i), now, s) for k, points in history.items() for s, v in points]
        params = [Param(k, v) for k, v in child.data.params.items()]
        client.log_batch(run, metrics=metrics, params=params, synchronous=True)
        client.set_terminated(run, "FINISHED")
    client.set_terminated(parent, "FINISHED")
    Path(out).write_text(json.dumps({"loop_s": time.perf_counter() - started, "points": len(metrics), "params": len(params)}))


def store_breakdown(source_db: str, target_db: str, jobs: int, out: str) -> None:
    """Where a child's store time goes: the floor's loop with params and metric points in separate
    ``log_batch`` calls, each call timed; ms per child to ``out``."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    model = MlflowClient(tracking_uri=f"sqlite:///{source_db}")
    exp = model.get_experiment_by_name("runner")
    child = next(r for r in model.search_runs([exp.experiment_id], max_results=5) if "mlflow.parentRunId" in r.data.tags)
    history = {k: [(m.step, m.value) for m in model.get_metric_history(child.info.run_id, k)] for k in METRICS}
    client = MlflowClient(tracking_uri=f"sqlite:///{target_db}")
    experiment = client.create_experiment("runner")
    parent = client.create_run(experiment, run_name="sweep").info.run_id
    spent = {"create_run (with tags)": 0.0, "params": 0.0, "metric points": 0.0, "set_terminated": 0.0}
    clock = time.perf_counter
    for i in range(jobs):
        tags = {**{k: v for k, v in child.data.tags.items() if not k.startswith("mlflow.")}, "mlflow.parentRunId": parent}
        t0 = clock()
        run = client.create_run(experiment, run_name=f"{child.info.run_name}-{i}", tags=tags).info.run_id
        t1 = clock()
        client.log_batch(run, params=[Param(k, v) for k, v in child.data.params.items()], synchronous=True)
        t2 = clock()
        now = int(time.time() * 1000)
        client.log_batch(run, metrics=[Metric(k, v, now, s) for k, points in history.items() for s, v in points], synchronous=True)
        t3 = clock()
        client.set_terminated(run, "FINISHED")
        for key, (a, b) in zip(spent, ((t0, t1), (t1, t2), (t2, t3), (t3, clock()))):
            spent[key] += b - a
    Path(out).write_text(json.dumps({k: 1000 * v / jobs for k, v in spent.items()}))


def profile_lines(log: Path) -> list[str]:
    """The batched run's own account of its time (``RUNNER_BATCHED_PROFILE``, ``RUNNER_WRITER_PROFILE``)."""
    keep = ("batched launch of", "batched: ", "writer: ", "  log_children", "  runner.sweeps.summary", "  log_trajectory_table", "  open:")
    return [line for line in log.read_text(errors="replace").splitlines() if line.startswith(keep)]


# -- (3) compute ---------------------------------------------------------------------------------------
def compute_inputs(rows: int):
    import torch

    lrs, starts = sweep_values(10 * 100)
    g = torch.Generator().manual_seed(0)
    x0 = torch.tensor(starts, dtype=torch.float64)[torch.randint(len(starts), (rows,), generator=g)]
    lr = torch.tensor(lrs, dtype=torch.float64)[torch.randint(len(lrs), (rows,), generator=g)].reshape(-1, 1)
    return x0, lr


def bare_loop(x0, lr, steps: int = 1000) -> float:
    """The bare batched loop: autograd, x ← x − lr·g, every step's loss, x and g stored; the same
    objective function (``objectives``' batch-first Rosenbrock), so that the ratio is the loop's."""
    import torch

    import objectives

    rosenbrock = objectives.get("rosenbrock").fn
    x = x0.clone().requires_grad_(True)
    losses = torch.empty(steps + 1, x.shape[0], dtype=x.dtype)
    xs = torch.empty(steps + 1, *x.shape, dtype=x.dtype)
    grads = torch.empty(steps + 1, *x.shape, dtype=x.dtype)
    started = time.perf_counter()
    for k in range(steps + 1):
        loss = rosenbrock(x)
        (grad,) = torch.autograd.grad(loss.sum(), x)
        with torch.no_grad():
            losses[k], xs[k], grads[k] = loss, x, grad
            if k < steps:
                x -= lr * grad
    return time.perf_counter() - started


def runner_loop(x0, lr, steps: int = 1000) -> float:
    """The runner's batched descent of the same rows (what a group of the sweep runs)."""
    import torch
    from omegaconf import OmegaConf

    from runner.descent import batched_optimizers as bo
    from runner.descent.backends import Autograd
    from runner.descent.loop import descend
    from runner.descent.problem import build_problem

    spec = OmegaConf.create({"name": "rosenbrock", "init": None, "dim": None, "expr": None, "vars": None, "target": None, "wrt": None})
    problem = build_problem(spec, dtype=torch.float64, device=torch.device("cpu"))
    rows = x0.shape[0]
    hyper = bo.hyper_tensors(bo.SGD, [bo.SGD.defaults] * rows, torch.float64, x0.device)
    started = time.perf_counter()
    descend(problem, Autograd(), lambda p: bo.BatchedOptimizer(p, bo.SGD, hyper, lr), steps=steps, x0=x0, record_every=1)
    return time.perf_counter() - started


def compute_case(rows: int, repeat: int) -> dict:
    """Both loops with the torch threads the batched launcher's descent uses beside the writer
    (:func:`runner.batched.group.beside_the_writer`: one core fewer than the machine has)."""
    from runner.batched.group import beside_the_writer

    x0, lr = compute_inputs(rows)
    bare, ours = [], []
    with beside_the_writer(True):
        for _ in range(repeat):
            bare.append(bare_loop(x0, lr))
            ours.append(runner_loop(x0, lr))
    return {"bare_s": statistics.median(bare), "runner_s": statistics.median(ours), "samples": {"bare": bare, "runner": ours}}


# -- the report ---------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--cached-jobs", type=int, default=20)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of the compute case")
    parser.add_argument("--json")
    parser.add_argument("--breakdown-jobs", type=int, default=200, help="children of the store time breakdown")
    parser.add_argument("--store-floor", nargs=4, metavar=("SOURCE_DB", "TARGET_DB", "JOBS", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--store-breakdown", nargs=4, metavar=("SOURCE_DB", "TARGET_DB", "JOBS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.store_floor or args.store_breakdown:
        source, target, jobs, out = args.store_floor or args.store_breakdown
        (store_floor if args.store_floor else store_breakdown)(source, target, int(jobs), out)
        return
    bench = Bench(args)
    print(f"batched bench in {bench.tmp} on {platform.node()} ({os.cpu_count()} CPUs), load {os.getloadavg()[0]:.1f}", flush=True)
    lrs, starts = sweep_values(args.jobs)
    floor = statistics.median(bench.timed(f"import-floor-{i}", [sys.executable, "-c", FLOOR_CODE], bench.tmp) for i in range(3))
    work = bench.folder("batched")
    batched = bench.timed("batched", [sys.executable, "-m", "runner", "-m", "hydra/launcher=batched", *sweep_args(lrs, starts)], work,
                          env={"RUNNER_BATCHED_PROFILE": "1", "RUNNER_WRITER_PROFILE": "1"})
    parent, children = children_of_sweep(work / "outputs" / "mlflow.db")
    finished = sum(c.info.status == "FINISHED" for c in children)
    per = args.cached_jobs // 10 if args.cached_jobs >= 10 else 1
    cached = bench.timed("cached", [sys.executable, "-m", "runner", "-m", "hydra/launcher=cached",
                                    *sweep_args(lrs[: args.cached_jobs // per], starts[:per])], bench.folder("cached"))
    cached_jobs = (args.cached_jobs // per) * per
    extrapolated = floor + args.jobs * (cached - floor) / cached_jobs
    floor_dir = bench.folder("floor")
    out = bench.tmp / "floor.json"
    bench.timed("store-floor", [sys.executable, __file__, "--store-floor", str(work / "outputs" / "mlflow.db"),
                                str(floor_dir / "outputs" / "mlflow.db"), str(args.jobs), str(out)], bench.tmp)
    store = json.loads(out.read_text())
    parts = bench.tmp / "breakdown.json"
    bench.timed("store-breakdown", [sys.executable, __file__, "--store-breakdown", str(work / "outputs" / "mlflow.db"),
                                    str(bench.folder("breakdown") / "outputs" / "mlflow.db"), str(args.breakdown_jobs), str(parts)], bench.tmp)
    compute = compute_case(args.rows, args.repeat)
    report = {
        "machine": {"node": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
        "jobs": args.jobs, "children": len(children), "finished": finished, "parent_status": parent.info.status,
        "batched_s": batched, "cached_jobs": cached_jobs, "cached_s": cached, "cached_extrapolated_s": extrapolated,
        "import_floor_s": floor, "store_floor_s": store["loop_s"], "store_points_per_child": store["points"],
        "whole_over_floor": batched / (store["loop_s"] + floor), "compute": compute,
        "compute_ratio": compute["runner_s"] / compute["bare_s"], "folder": str(bench.tmp),
        "store_ms_per_child": json.loads(parts.read_text()), "batched_profile": profile_lines(bench.logs["batched"]),
    }
    print(f"(1) {args.jobs} jobs batched: {batched:.1f} s, {finished}/{len(children)} children FINISHED "
          f"(target ≤ 60 s: {'met' if batched <= 60 and finished == args.jobs else 'MISSED'}); cached: {cached:.1f} s for "
          f"{cached_jobs} jobs, ~{extrapolated:.0f} s for {args.jobs} extrapolated ({extrapolated / batched:.1f}× the batched)")
    print(f"(2) whole sweep / (store floor {store['loop_s']:.1f} s + import floor {floor:.1f} s) = {report['whole_over_floor']:.2f} "
          f"(target ≤ 1.3: {'met' if report['whole_over_floor'] <= 1.3 else 'MISSED'})")
    print(f"(3) compute of {args.rows} trajectories: runner {compute['runner_s']:.3f} s / bare {compute['bare_s']:.3f} s = "
          f"{report['compute_ratio']:.2f} (target ≤ 1.5: {'met' if report['compute_ratio'] <= 1.5 else 'MISSED'})")
    print("store, ms per child (separate calls): " + ", ".join(f"{k} {v:.1f}" for k, v in report["store_ms_per_child"].items()))
    print("\n".join(report["batched_profile"]))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
