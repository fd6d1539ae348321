#!/usr/bin/env python
"""The runner's speed, side by side with its yardsticks, in one run (issues 5 and 12).

    python benchmarks/bench.py [--repeat N] [--only a,b,c,d,e] [--json out.json] [--keep]
    python benchmarks/bench.py --only r --compare /path/to/another/checkout   (before/after)

Cases (each a ratio of medians, runner over yardstick, measured in this one run):

  (a) ``python -m runner objective=g optimizer=sgd lr=0.1`` on a store that exists, against
      * the parallel floor: the larger of the imports of the runner's two processes, the main one
        (``import torch, hydra, omegaconf``) and the MLflow writer (``import mlflow, matplotlib``),
        each timed alone;                                                               target ≤ 1.3
      * the serial floor ``import torch, mlflow, hydra, omegaconf`` in one process.   target ≤ 1.25
  (b) the 16-job multirun ``python -m runner -m objective=f,g optimizer=sgd,manual
      lr=0.01,0.03,0.1,0.3`` against the same sweep of the hand-written Hydra app in
      ``benchmarks/baseline_app``, each side on its own fresh, already migrated store, all 16 runs
      checked in MLflow on every side:
      * the competent app (``logging=batch``: one ``log_batch`` per run);             target ≤ 0.5
      * the obvious app (``logging=per_value``: one ``log_metric`` per value).         target ≤ 0.2
  (c) 20,000 steps of f, ``lr=0.01``:
      * in one process (``benchmarks/step_cost.py``): a step through ``descend`` with the run's
        record stride and its ``RunStream`` (metrics pickled, every step to trajectory.csv) against a
        step of the bare PyTorch loop (``benchmarks/bare_loop.py``), alternated;       target ≤ 1.2
      * wall time: ``python -m runner objective=f steps=20000 lr=0.01`` against the parallel floor
        plus the bare loop; the ratio is (runner − parallel floor) / loop.            target ≤ 1.5
  (d) with CUDA: Rosenbrock n = 1e8, float32, ``backend.compile=true``, the runner's step time against
      the bare compiled step and against the bandwidth floor (``benchmarks/gpu_step.py``).
                                                                           targets ≤ 1.1 and ≤ 1.7
  (e) the runner's FiniteDifference gradient of Rosenbrock, n = 2048, against one hand-written
      batched central-difference evaluation, in this process.                         target ≤ 1.5

  (r) with ``--compare PATH``: case (b)'s runner sweep with this checkout against the same sweep
      with the checkout at PATH (its code first on PYTHONPATH), alternated.             target ≤ 1.1

Every command runs as a fresh process in a temporary folder, timed from its start until it and every
process it started (same process group) have ended, so that work left to a background process counts.
Runner and yardstick repetitions alternate (A B A B …) and each side's median is taken, so that the
noise of a shared machine hits both alike. Before timing, each command runs once unmeasured (disk
cache, and the store's experiment for (a) and (c)). The exit code is 0 even when a target is missed:
this is a report. ``--json`` writes every sample.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
APP = HERE / "baseline_app" / "app.py"

FLOOR_CODE = "import torch, mlflow, hydra, omegaconf"  # the serial floor: everything in one process
MAIN_FLOOR_CODE = "import torch, hydra, omegaconf"  # what the runner's main process must import
WRITER_FLOOR_CODE = "import mlflow, matplotlib"  # what its MLflow writer process must import
CMD_A = ["objective=g", "optimizer=sgd", "lr=0.1"]
CMD_B = ["-m", "objective=f,g", "optimizer=sgd,manual", "lr=0.01,0.03,0.1,0.3"]
CMD_C = ["objective=f", "steps=20000", "lr=0.01"]
SWEEP = {(o, opt, lr) for o in ("f", "g") for opt in ("sgd", "manual") for lr in (0.01, 0.03, 0.1, 0.3)}
VARS = {"f": ["x"], "g": ["x1", "x2"]}
E_DIM = 2048

TITLES = {
    "a": "one run of g vs parallel import floor",
    "a/serial": "one run of g vs serial import floor",
    "b": "16-job sweep vs competent app (log_batch)",
    "b/per_value": "16-job sweep vs per-value-logging app",
    "c": "a step of f in-process vs bare loop",
    "c/wall": "20,000 steps of f: (runner − parallel floor) / bare loop",
    "d": "Rosenbrock n=1e8 GPU step",
    "e": f"FD gradient, Rosenbrock n={E_DIM}",
    "r": "16-job sweep: this checkout vs --compare",
}
TARGETS = {"a": 1.3, "a/serial": 1.25, "b": 0.5, "b/per_value": 0.2, "c": 1.2, "c/wall": 1.5,
           "d/bare": 1.1, "d/floor": 1.7, "e": 1.5, "r": 1.1}
CASES = "abcder"


class CaseError(Exception):
    """A case could not be measured (a command failed, a check failed)."""


@dataclass
class Row:
    case: str
    what: str
    unit: str = "s"
    runner: float | None = None
    baseline: float | None = None
    ratio: float | None = None
    target: float | None = None
    status: str = ""  # PASS | FAIL | SKIP | ERROR
    note: str = ""

    def judge(self) -> None:
        if self.ratio is not None and self.target is not None and not self.status:
            self.status = "PASS" if self.ratio <= self.target else "FAIL"


@dataclass
class Report:
    machine: dict = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    samples: dict = field(default_factory=dict)
    checks: dict = field(default_factory=dict)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


# -- processes ----------------------------------------------------------------------------------


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc (empty where there is no /proc)."""
    alive = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return alive
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            alive.append(int(entry))
    return alive


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.repo = Path(args.repo).resolve()
        self.tmp = Path(tempfile.mkdtemp(prefix="runner-bench-"))
        self.logs = self.tmp / "logs"
        self.logs.mkdir()
        self.env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        self.env["PYTHONPATH"] = os.pathsep.join([str(self.repo), self.env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self.report = Report()
        self._n = 0
        self._template: Path | None = None
        self.current_group: int | None = None  # process group of the command being timed

    def kill_current(self) -> None:
        """End the timed command's whole process group (it runs in its own session)."""
        if self.current_group is not None:
            try:
                os.killpg(self.current_group, signal.SIGKILL)
            except OSError:
                pass

    # one timed process
    def timed(self, label: str, cmd: list[str], cwd: Path, timeout: float = 1800, env: dict | None = None) -> float:
        """Wall seconds of ``cmd`` in ``cwd`` until it and its process group have ended."""
        self._n += 1
        log = self.logs / f"{self._n:03d}-{label}.log"
        with open(log, "wb") as out:
            out.write((" ".join(cmd) + f"\n(cwd {cwd})\n").encode())
            out.flush()
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=cwd, env=env or self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            self.current_group = proc.pid
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill_current()
                proc.wait()
                raise CaseError(f"{label}: still running after {timeout:.0f} s; killed (log: {log})") from None
            finally:
                if proc.returncode is None:  # interrupted: take the command's processes down with us
                    self.kill_current()
            t_exit = time.perf_counter()
            deadline = t_exit + 120
            while _group_members(proc.pid):
                if time.perf_counter() > deadline:
                    break
                time.sleep(0.005)
            t_done = time.perf_counter()
            self.current_group = None
        if t_done - t_exit > 0.05:
            self.report.checks.setdefault("lingering_children_s", []).append({"label": label, "seconds": t_done - t_exit})
        if rc != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-12:]
            raise CaseError(f"{label} exited with status {rc}:\n    " + "\n    ".join(tail))
        return t_done - t0

    # folders and stores
    def template_store(self) -> Path:
        """An empty, already migrated SQLite store, made once; every case copies it."""
        if self._template is None:
            folder = self.tmp / "template"
            folder.mkdir()
            db = folder / "mlflow.db"
            code = f"from mlflow import MlflowClient; MlflowClient(tracking_uri={('sqlite:///' + str(db))!r}).search_experiments()"
            subprocess.run([sys.executable, "-c", code], env=self.env, check=True, capture_output=True)
            self._template = db
        return self._template

    def folder(self, name: str) -> Path:
        """A new folder with ``outputs/mlflow.db``, a copy of the migrated template store."""
        d = self.tmp / name
        (d / "outputs").mkdir(parents=True)
        shutil.copy(self.template_store(), d / "outputs" / "mlflow.db")
        return d

    def runner(self, *overrides: str) -> list[str]:
        return [sys.executable, "-m", "runner", *overrides]

    def baseline(self, *overrides: str) -> list[str]:
        return [sys.executable, str(APP), *overrides]

    floor = [sys.executable, "-c", FLOOR_CODE]

    main_floor = [sys.executable, "-c", MAIN_FLOOR_CODE]
    writer_floor = [sys.executable, "-c", WRITER_FLOOR_CODE]

    def floors(self, d: Path) -> dict[str, Callable[[int], tuple[list[str], Path]]]:
        """The import floors, as commands for :meth:`interleave`: each process's and the serial one."""
        return {"main floor": lambda r: (self.main_floor, d), "writer floor": lambda r: (self.writer_floor, d),
                "serial floor": lambda r: (self.floor, d)}

    def interleave(self, case: str, commands: dict[str, Callable[[int], tuple]], repeat: int) -> dict[str, list[float]]:
        """Time each command once per repetition, in turn (A B A B …); the samples of each. A command
        is ``(cmd, cwd)`` or ``(cmd, cwd, env)``."""
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for rep in range(repeat):
            shown = []
            for name, make in commands.items():
                cmd, cwd, *env = make(rep)
                t = self.timed(f"{case}-{name}-{rep}".replace(" ", "_"), cmd, cwd, env=env[0] if env else None)
                samples[name].append(t)
                shown.append(f"{name} {t:.2f} s")
            print(f"  ({case}) {rep + 1}/{repeat}: " + ", ".join(shown), flush=True)
        self.report.samples[case] = samples
        return samples

    # -- MLflow checks ----------------------------------------------------------------------------
    def read_runs(self, db: Path, experiment: str) -> list[dict]:
        """Every run of ``experiment`` in the store ``db``: status, params, tags, metric history steps."""
        import logging

        for name in ("alembic", "mlflow", "sqlalchemy"):
            logging.getLogger(name).setLevel(logging.WARNING)
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{db}")
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return []
        runs = []
        for run in client.search_runs([exp.experiment_id], max_results=10000):
            histories = {}
            for key in run.data.metrics:
                histories[key] = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
            runs.append(
                {
                    "id": run.info.run_id,
                    "name": run.info.run_name,
                    "status": run.info.status,
                    "params": dict(run.data.params),
                    "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.") or k == "mlflow.parentRunId"},
                    "metrics": histories,
                }
            )
        return runs

    def check_sweep(self, db: Path, experiment: str, side: str) -> dict:
        """All 16 jobs of the sweep are FINISHED runs with every step of loss, x/<v> and grad/<v>."""
        runs = self.read_runs(db, experiment)
        parents = {r["tags"]["mlflow.parentRunId"] for r in runs if "mlflow.parentRunId" in r["tags"]}
        jobs = [r for r in runs if r["id"] not in parents]  # a multirun's parent run is not a job
        problems, combos, values = [], set(), 0
        for r in jobs:
            p = r["params"]
            obj = p.get("objective.name", p.get("objective"))
            opt = p.get("optimizer.name", p.get("optimizer"))
            try:
                combos.add((obj, opt, float(p.get("lr", "nan"))))
            except ValueError:
                problems.append(f"{r['name']}: lr param {p.get('lr')!r}")
            if r["status"] != "FINISHED":
                problems.append(f"{r['name']}: status {r['status']}")
            steps = int(p.get("steps", 100))
            last = int(r["tags"].get("final_step", steps))
            for key in ["loss"] + [f"{k}/{v}" for k in ("x", "grad") for v in VARS.get(obj, [])]:
                got = r["metrics"].get(key)
                if got is None:
                    problems.append(f"{r['name']}: no metric {key}")
                    continue
                values += len(got)
                full = got == list(range(last + 1))
                # a diverged run may skip its last, non-finite values
                if not full and not (r["tags"].get("outcome") == "diverged" and got == list(range(last))):
                    shown = f"{len(got)} steps {got[:1]}…{got[-1:]}" if got else "no steps"
                    problems.append(f"{r['name']}: {key} has {shown}, expected 0…{last}")
        missing = sorted(SWEEP - combos)
        if missing:
            problems.append(f"missing jobs: {missing}")
        if len(jobs) != len(SWEEP):
            problems.append(f"{len(jobs)} job runs, expected {len(SWEEP)}")
        return {
            "side": side,
            "runs": len(runs),
            "jobs": len(jobs),
            "metric_values": values,
            "ok": not problems,
            "problems": problems[:20],
            "parent_runs": len(runs) - len(jobs),
        }

    def check_runs(self, db: Path, expected: int, min_loss_points: int) -> dict:
        runs = self.read_runs(db, "runner")
        problems = []
        if len(runs) != expected:
            problems.append(f"{len(runs)} runs in the store, expected {expected}")
        for r in runs:
            if r["status"] != "FINISHED":
                problems.append(f"{r['name']}: status {r['status']}")
            n = len(r["metrics"].get("loss", []))
            if n < min_loss_points:
                problems.append(f"{r['name']}: {n} loss values, expected ≥ {min_loss_points}")
        return {"runs": len(runs), "ok": not problems, "problems": problems[:20]}

    # -- the cases --------------------------------------------------------------------------------
    def warm_up(self) -> None:
        """One unmeasured run of each kind of command: the disk cache, Python's, the store template."""
        print("warming up (unmeasured): import floor, runner, baseline app …", flush=True)
        d = self.folder("warmup")
        self.timed("warmup-floor", self.floor, d)
        self.timed("warmup-writer-floor", self.writer_floor, d)
        self.timed("warmup-runner", self.runner("objective=g", "steps=2"), d)
        self.timed("warmup-baseline", self.baseline("objective=g", "steps=2"), d)

    def case_a(self, repeat: int) -> list[Row]:
        d = self.folder("a")
        self.timed("a-warmup-runner", self.runner(*CMD_A), d)  # the store now has the experiment
        optim = [sys.executable, "-c", MAIN_FLOOR_CODE + "; torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)"]
        s = self.interleave("a", {"runner": lambda r: (self.runner(*CMD_A), d), **self.floors(d),
                                  "main floor + SGD": lambda r: (optim, d)}, repeat)
        check = self.check_runs(d / "outputs" / "mlflow.db", 1 + repeat, 101)
        self.report.checks["a"] = check
        run, main, writer, serial = (median(s[k]) for k in ("runner", "main floor", "writer floor", "serial floor"))
        parallel = max(main, writer)
        rows = [Row("(a)", TITLES["a"], runner=run, baseline=parallel, ratio=run / parallel, target=TARGETS["a"]),
                Row("(a)", TITLES["a/serial"], runner=run, baseline=serial, ratio=run / serial, target=TARGETS["a/serial"])]
        rows[0].note = (f"parallel floor = max(main process {main:.2f} s, writer {writer:.2f} s); the main process's imports "
                        f"and torch.optim.SGD's first construction (it imports torch._dynamo): {median(s['main floor + SGD']):.2f} s")
        rows[1].note = f"{check['runs']} runs FINISHED" if check["ok"] else "CHECK FAILED: " + "; ".join(check["problems"][:3])
        if not check["ok"]:
            for row in rows:
                row.status = "ERROR"
        return rows

    def sweep_sides(self, case: str, sides: dict[str, tuple], repeat: int) -> tuple[dict[str, list[float]], list[dict]]:
        """Time 16-job sweeps, alternated; each side is ``(command, experiment, env or None)`` and each
        repetition gets a fresh store, whose 16 runs are then checked. (samples, checks)."""
        checks = []

        def side(name: str, cmd: list[str], experiment: str, env: dict | None):
            def command(rep: int):
                d = self.folder(f"{case}-{name.replace(' ', '_')}-{rep}")
                checks.append((name, d / "outputs" / "mlflow.db", experiment))
                return cmd, d, env

            return command

        s = self.interleave(case, {name: side(name, *spec) for name, spec in sides.items()}, repeat)
        results = [self.check_sweep(db, exp, name) for name, db, exp in checks]
        self.report.checks[case] = results
        return s, results

    def case_b(self, repeat: int) -> list[Row]:
        s, results = self.sweep_sides("b", {
            "runner": (self.runner(*CMD_B), "runner", None),
            "app log_batch": (self.baseline(*CMD_B, "logging=batch"), "baseline", None),
            "app per value": (self.baseline(*CMD_B, "logging=per_value"), "baseline", None),
        }, repeat)
        run, batch, per_value = (median(s[k]) for k in ("runner", "app log_batch", "app per value"))
        rows = [Row("(b)", TITLES["b"], runner=run, baseline=batch, ratio=run / batch, target=TARGETS["b"]),
                Row("(b)", TITLES["b/per_value"], runner=run, baseline=per_value, ratio=run / per_value, target=TARGETS["b/per_value"])]
        bad = [r for r in results if not r["ok"]]
        if bad:
            for row in rows:
                row.status = "ERROR"
            rows[0].note = "CHECK FAILED: " + "; ".join(f"{r['side']}: {p}" for r in bad for p in r["problems"][:2])[:300]
        else:
            per = {r["side"]: r for r in results}
            rows[0].note = (
                f"16/16 runs complete on every side, every repetition ({per['runner']['metric_values']} metric values per "
                f"sweep for the runner, {per['app log_batch']['metric_values']} for each app)"
            )
        return rows

    def case_r(self, repeat: int) -> list[Row]:
        """The same sweep with this checkout and with ``--compare``'s, alternated (a regression check)."""
        if not self.args.compare:
            return [Row("(r)", TITLES["r"], status="SKIP", note="skipped: needs --compare PATH")]
        other = Path(self.args.compare).resolve()
        env = dict(self.env, PYTHONPATH=os.pathsep.join([str(other), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        s, results = self.sweep_sides("r", {"this": (self.runner(*CMD_B), "runner", None),
                                            "compared": (self.runner(*CMD_B), "runner", env)}, repeat)
        this, compared = median(s["this"]), median(s["compared"])
        row = Row("(r)", TITLES["r"], runner=this, baseline=compared, ratio=this / compared, target=TARGETS["r"])
        row.note = f"compared with {other} (commit {machine_info(other).get('commit')})"
        bad = [r for r in results if not r["ok"]]
        if bad:
            row.status = "ERROR"
            row.note = "CHECK FAILED: " + "; ".join(f"{r['side']}: {p}" for r in bad for p in r["problems"][:2])[:300]
        return [row]

    def case_c(self, repeat: int) -> list[Row]:
        d = self.folder("c")
        self.timed("c-warmup-runner", self.runner("objective=f", "steps=2"), d)  # the store now has the experiment
        loop_files: list[Path] = []

        def bare(rep: int):
            out = self.tmp / f"c-bare-{rep}.json"
            loop_files.append(out)
            return [sys.executable, str(HERE / "bare_loop.py"), "--steps", "20000", "--lr", "0.01", "--out", str(out)], d

        step_file = self.tmp / "c-step-cost.json"
        step_cmd = [sys.executable, str(HERE / "step_cost.py"), "--steps", "20000", "--lr", "0.01",
                    "--repeat", str(max(5, 2 * repeat)), "--out", str(step_file)]
        print(f"  (c) in one process: {' '.join(step_cmd[1:])}", flush=True)
        self.timed("c-step-cost", step_cmd, d)
        steps = json.loads(step_file.read_text())
        self.report.samples["c/step"] = steps["samples"]
        s = self.interleave(
            "c",
            {"runner": lambda r: (self.runner(*CMD_C), d), "main floor": lambda r: (self.main_floor, d),
             "writer floor": lambda r: (self.writer_floor, d), "serial floor": lambda r: (self.floor, d), "bare": bare},
            repeat,
        )
        loops = [json.loads(path.read_text())["loop_s"] for path in loop_files]
        self.report.samples["c"]["bare_loop_in_process"] = loops
        check = self.check_runs(d / "outputs" / "mlflow.db", 1 + repeat, 1)
        self.report.checks["c"] = check
        run, loop, serial = median(s["runner"]), median(loops), median(s["serial floor"])
        floor = max(median(s["main floor"]), median(s["writer floor"]))
        per = {name: value * 1e6 for name, value in steps["per_step_s"].items()}
        rows = [Row("(c)", TITLES["c"], unit="µs", runner=per["runner"], baseline=per["bare"], ratio=per["runner"] / per["bare"],
                    target=TARGETS["c"]),
                Row("(c)", TITLES["c/wall"], runner=run, baseline=floor + loop, ratio=(run - floor) / loop, target=TARGETS["c/wall"])]
        cpu = {name: value * 1e6 for name, value in steps["cpu_per_step_s"].items()}
        rows[0].note = (f"medians of {len(steps['samples']['runner'])} alternated descents of 20,000 steps each; CPU time of "
                        f"the thread: {cpu['runner']:.1f} µs vs {cpu['bare']:.1f} µs, {cpu['runner'] / cpu['bare']:.2f}×")
        rows[1].note = (f"parallel floor {floor:.2f} s + bare loop {loop:.2f} s ({loop / 20001 * 1e6:.0f} µs/step); bare process "
                        f"{median(s['bare']):.2f} s; with the serial floor {serial:.2f} s: {(run - serial) / loop:.2f}×")
        if not check["ok"]:
            rows[1].status = "ERROR"
            rows[1].note = "CHECK FAILED: " + "; ".join(check["problems"][:3])
        return rows

    def case_d(self, repeat: int) -> list[Row]:
        import torch

        device = self.args.d_device
        if device == "cuda" and not torch.cuda.is_available():
            return [Row("(d)", TITLES["d"], status="SKIP", note="skipped: no CUDA")]
        out = self.tmp / "d.json"
        cmd = [sys.executable, str(HERE / "gpu_step.py"), "--repo", str(self.repo), "--device", device, "--dim", str(self.args.d_dim), "--repeat", str(repeat), "--out", str(out)]
        print(f"  (d) {' '.join(cmd[1:])}", flush=True)
        error = None
        try:
            self.timed("d-gpu-step", cmd, self.tmp, timeout=1200)
        except CaseError as exc:
            error = str(exc)
        res = json.loads(out.read_text()) if out.exists() else {}
        self.report.samples["d"] = res
        what = f"Rosenbrock n={self.args.d_dim:.0e} {device} step"
        if device != "cuda":
            what += " (smoke test)"
        unit = "ms"
        runner = res.get("runner_step_s")
        bare = res.get("bare_step_s")
        floor = res.get("bandwidth_floor_s")
        errs = [e for e in [error, res.get("bare_error"), res.get("bandwidth_error")] + res.get("runner_errors", []) if e]
        rows = []
        for key, label, ref in (("d/bare", "vs bare compiled step", bare), ("d/floor", "vs bandwidth floor", floor)):
            row = Row("(d)", f"{what} {label}", unit=unit, target=TARGETS[key])
            row.runner = None if runner is None else runner * 1e3
            row.baseline = None if ref is None else ref * 1e3
            if runner is not None and ref:
                row.ratio = runner / ref
            else:
                row.status = "ERROR"
            notes = []
            if key == "d/bare" and res:
                notes.append(f"runner via {res.get('runner_how', '—')}, dynamo frames compiled by the runner: {res.get('runner_dynamo_frames', '?')}")
            if key == "d/floor" and "bandwidth_Bps" in res:
                notes.append(f"copy bandwidth {res['bandwidth_Bps'] / 1e9:.0f} GB/s (read + write)")
            if errs:
                notes.append("errors: " + " | ".join(errs)[:400])
            row.note = "; ".join(notes)
            rows.append(row)
        return rows

    def case_e(self, repeat: int) -> list[Row]:
        import torch

        sys.path.insert(0, str(self.repo))
        device = torch.device(self.args.e_device)
        runner_call, how = runner_finite_difference(self.repo, E_DIM, str(device))
        x = torch.tensor([-1.2 if i % 2 == 0 else 1.0 for i in range(E_DIM)], dtype=torch.float64, device=device)

        def sync():
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        # the two agree (same formula, same steps)
        _, g_runner = runner_call()
        g_bare = bare_central_difference(x)
        diff = float((g_runner.reshape(-1) - g_bare).abs().max())
        scale = float(g_bare.abs().max())
        for _ in range(2):
            runner_call()
            bare_central_difference(x)
        n = max(10, 10 * repeat)
        samples: dict[str, list[float]] = {"runner": [], "bare": []}
        for _ in range(n):
            for name, fn in (("runner", runner_call), ("bare", lambda: bare_central_difference(x))):
                sync()
                t0 = time.perf_counter()
                fn()
                sync()
                samples[name].append(time.perf_counter() - t0)
        self.report.samples["e"] = samples
        run, bare = median(samples["runner"]) * 1e3, median(samples["bare"]) * 1e3
        print(f"  (e) {n} interleaved calls each: runner {run:.1f} ms, bare {bare:.1f} ms (medians)", flush=True)
        row = Row("(e)", f"FD gradient, Rosenbrock n={E_DIM} ({device.type})", unit="ms", runner=run, baseline=bare, ratio=run / bare, target=TARGETS["e"])
        row.note = f"runner via {how}; max |Δgrad| {diff:.1e} (max |grad| {scale:.1e})"
        return [row]


# -- (e) helpers -------------------------------------------------------------------------------


def rosenbrock(x):
    """Chained Rosenbrock over the last dimension, written by hand."""
    head, tail = x[..., :-1], x[..., 1:]
    return (100.0 * (tail - head * head) ** 2 + (1.0 - head) ** 2).sum(-1)


def bare_central_difference(x):
    """∇f(x) by central differences, all 2n perturbed points in one batched evaluation.

    h = ε^(1/3)·max(1, |x|) per coordinate (the usual choice for central differences, the runner's too).
    """
    import torch

    n = x.shape[-1]
    h = torch.finfo(x.dtype).eps ** (1.0 / 3.0) * x.abs().clamp(min=1.0)
    h = (x + h) - x  # the step actually taken
    shifts = torch.diag(h)
    values = rosenbrock(torch.cat([x + shifts, x - shifts]))
    return (values[:n] - values[n:]) / (2 * h)


def runner_finite_difference(repo: Path, dim: int, device: str):
    """A zero-argument call of the runner's finite-difference backend on its Rosenbrock problem.

    Through the composed config and ``runner.descent.build.build`` (what a run does); if that fails, the
    ``FiniteDifference`` class on the registered objective directly. Returns (call, how).
    """
    overrides = ["objective=rosenbrock", f"objective.dim={dim}", "backend=finite_diff", f"backend.device={device}"]
    try:
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        from runner.config import register_configs
        from runner.descent.build import build

        register_configs()
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(repo / "conf"), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        problem, backend, _ = build(cfg)
        base = problem.x0.reshape(1, -1)
        loss = problem.loss(base)
        p = problem.params(base)
        if type(backend).__name__ != "FiniteDifference":
            raise TypeError(f"backend=finite_diff built {type(backend).__name__}")
        return (lambda: backend.value_and_grad(loss, p)), "runner.descent.build.build → FiniteDifference.value_and_grad"
    except Exception as exc:  # noqa: BLE001 - fall back, and say so
        import torch

        import objectives
        from runner.descent.backends import FiniteDifference

        fn = objectives.get("rosenbrock").fn
        p = torch.tensor([[-1.2 if i % 2 == 0 else 1.0 for i in range(dim)]], dtype=torch.float64, device=device)
        backend = FiniteDifference()
        return (lambda: backend.value_and_grad(fn, p)), f"FiniteDifference directly ({type(exc).__name__}: {exc})"[:200]


# -- report ------------------------------------------------------------------------------------


def machine_info(repo: Path) -> dict:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_avg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    try:
        from importlib.metadata import version

        for pkg in ("torch", "mlflow", "hydra-core", "omegaconf"):
            try:
                info[pkg] = version(pkg)
            except Exception:  # noqa: BLE001
                info[pkg] = None
    except ImportError:
        pass
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10).stdout.strip() or "n/a"
    except Exception:  # noqa: BLE001
        info["commit"] = "n/a"
    return info


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "µs":
        return f"{value:.1f}"
    return f"{value:.3f}" if unit == "ms" and value < 10 else f"{value:.2f}"


def table(rows: list[Row]) -> str:
    head = ["case", "what", "runner", "baseline", "ratio", "target", "result"]
    lines = []
    for r in rows:
        unit = f" {r.unit}"
        lines.append(
            [
                r.case,
                r.what,
                fmt(r.runner, r.unit) + (unit if r.runner is not None else ""),
                fmt(r.baseline, r.unit) + (unit if r.baseline is not None else ""),
                "—" if r.ratio is None else f"{r.ratio:.2f}×",
                "—" if r.target is None else f"≤ {r.target:g}×",
                r.status,
            ]
        )
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(head)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |", "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for l in lines:
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(l, widths)) + " |")
    notes = [f"{r.case} {r.note}" for r in rows if r.note]
    return "\n".join(out) + ("\n\nnotes:\n" + "\n".join(f"  {n}" for n in notes) if notes else "")


def summary(rows: list[Row]) -> str:
    judged = [r for r in rows if r.status in ("PASS", "FAIL")]
    passed = [r for r in judged if r.status == "PASS"]
    def label(r: Row) -> str:
        if r.case == "(d)":
            return r.case + (" bare" if "bare compiled" in r.what else " floor" if "bandwidth" in r.what else "")
        key = next((k for k, title in TITLES.items() if title == r.what), "")
        return r.case + (f" {key.split('/')[1]}" if "/" in key else "")

    parts = [f"{label(r)} {r.status}" for r in rows]
    return f"summary: {len(passed)} of {len(judged)} measured targets met — " + ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The runner's speed against its yardsticks (issue 5).", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions per side (medians are reported); default 3")
    parser.add_argument("--only", default="a,b,c,d,e", help="comma-separated cases to run, e.g. a,c (default: a,b,c,d,e; "
                        "r, the before/after sweep, runs with --compare)")
    parser.add_argument("--compare", help="another checkout of the runner: case (r) times case (b)'s sweep with it and with this one")
    parser.add_argument("--json", help="also write the table, every sample and the checks to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (stores, logs)")
    parser.add_argument("--repo", default=str(HERE.parent), help="the runner checkout to measure (default: this one)")
    parser.add_argument("--d-device", default="cuda", help=argparse.SUPPRESS)  # cpu: smoke-test (d)'s code
    parser.add_argument("--d-dim", type=int, default=100_000_000, help=argparse.SUPPRESS)
    parser.add_argument("--e-device", default="cpu", help="device of case (e) (default cpu; cuda on a GPU machine)")
    args = parser.parse_args(argv)
    cases = [c.strip().lower() for c in args.only.split(",") if c.strip()]
    if args.compare and "r" not in cases:
        cases.append("r")
    unknown = [c for c in cases if c not in CASES or len(c) != 1]
    if unknown or args.repeat < 1:
        parser.error(f"--only takes letters among {','.join(CASES)} (got {unknown}); --repeat ≥ 1")

    bench = Bench(args)
    report = bench.report

    def on_term(signum, frame):  # e.g. `timeout` ending the benchmark: report, leave nothing running
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    report.machine = machine_info(bench.repo)
    print(f"runner benchmark: {bench.repo} (commit {report.machine.get('commit')}, working tree as is), {report.machine['cpus']} CPUs, "
          f"repeat {args.repeat}, temporary folder {bench.tmp}", flush=True)
    started = time.perf_counter()
    try:
        if any(c in cases for c in "abcr"):
            bench.warm_up()
        for case in CASES:
            if case not in cases:
                continue
            print(f"case ({case}) …", flush=True)
            t0 = time.perf_counter()
            try:
                rows = getattr(bench, f"case_{case}")(args.repeat)
            except CaseError as exc:
                rows = [Row(f"({case})", TITLES[case], status="ERROR", note=str(exc).replace("\n", " / ")[:600])]
                print(f"  ({case}) failed: {exc}", flush=True)
            except Exception as exc:  # noqa: BLE001 - one broken case must not hide the others
                rows = [Row(f"({case})", TITLES[case], status="ERROR", note=f"{type(exc).__name__}: {exc}"[:600])]
                print(f"  ({case}) failed: {type(exc).__name__}: {exc}", flush=True)
            for r in rows:
                r.judge()
            report.rows.extend(rows)
            print(f"  ({case}) took {time.perf_counter() - t0:.0f} s", flush=True)
    except KeyboardInterrupt:
        print("interrupted; reporting what was measured", flush=True)
    finally:
        report.machine["load_avg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
        report.machine["bench_seconds"] = time.perf_counter() - started
        print()
        print(table(report.rows))
        print()
        print(summary(report.rows))
        load = report.machine.get("load_avg_start"), report.machine.get("load_avg_end")
        if all(load):
            print(f"machine: {report.machine['cpus']} CPUs, load average {load[0][0]:.1f} at the start, {load[1][0]:.1f} at the end; "
                  f"{report.machine['bench_seconds']:.0f} s in all")
        if args.json:
            Path(args.json).write_text(json.dumps({"machine": report.machine, "rows": [asdict(r) for r in report.rows], "samples": report.samples, "checks": report.checks}, indent=1, default=str))
            print(f"wrote {args.json}")
        if args.keep:
            print(f"kept {bench.tmp}")
        else:
            shutil.rmtree(bench.tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
