"""Case (d): one descent step of chained Rosenbrock, n = 1e8, float32, on the GPU.

    python benchmarks/gpu_step.py --out d.json [--device cuda] [--dim 100000000] [--repeat 3]

Three numbers, measured in this one process, and written to ``--out`` as JSON:

* ``bandwidth_floor_s``: reading x once and writing it once (2·n·4 bytes) at the device's memory
  bandwidth, the bandwidth measured as a large device-to-device copy (bytes read + bytes written over
  the copy's time).
* ``bare_step_s``: ``torch.compile`` of the step ``x − lr·torch.func.grad(rosenbrock)(x)``, written by
  hand, timed over K steps after compilation.
* ``runner_step_s``: the runner's own job (``runner.job.run_job``) on the composed config
  ``objective=rosenbrock objective.dim=N backend.device=cuda backend.dtype=float32
  backend.compile=true lr=1e-4`` (tracking off: this case is about the step), as the difference of two
  runs, steps = S and steps = S + K, divided by K. The difference cancels everything a run does once
  (building x, compiling, the summary); what remains is the runner's per-step cost, its records and
  host synchronisations included. lr = 1e-4 keeps the descent finite: with the default lr = 0.1
  Rosenbrock diverges in a few steps and the runner stops.

When the runner's job cannot be called that way (its API changed, ``backend.compile`` is not a key…),
the error is recorded and the step is measured through ``runner.descent.build.build`` + ``runner.descent.loop.descend``
if that works; the JSON says which (``runner_how``) and what failed (``runner_errors``).

``--device cpu --dim 100000`` runs the same code on the CPU: a smoke test of this script, not case (d).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

TARGET_LONG_S = 1.5  # aim for the long run to take about this long beyond the short one


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rosenbrock(x: torch.Tensor) -> torch.Tensor:
    """Chained Rosenbrock, written by hand: Σ 100(xᵢ₊₁ − xᵢ²)² + (1 − xᵢ)²."""
    head, tail = x[:-1], x[1:]
    return (100.0 * (tail - head * head) ** 2 + (1.0 - head) ** 2).sum()


def start_point(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(−1.2, 1, −1.2, 1, …), the runner's start for Rosenbrock."""
    x = torch.ones(n, dtype=dtype, device=device)
    x[0::2] = -1.2
    return x


def measure_bandwidth(device: torch.device, nbytes: int, repeat: int = 10) -> dict:
    """Device memory bandwidth from a large device-to-device copy: (read + written bytes) / time."""
    n = nbytes // 4
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = []
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        sync(device)
        times.append(time.perf_counter() - t0)
    if device.type == "cuda":  # CUDA events: no host timer overhead in the copy's time
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        ev = []
        for _ in range(repeat):
            start.record()
            dst.copy_(src)
            end.record()
            end.synchronize()
            ev.append(start.elapsed_time(end) / 1000.0)
        times = ev
    t = statistics.median(times)
    del src, dst
    return {"copy_bytes": 4 * n, "copy_s": t, "bandwidth_Bps": 2 * 4 * n / t}


def timed_steps(step, x: torch.Tensor, k: int, device: torch.device) -> tuple[float, torch.Tensor]:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(k):
        x = step(x)
    sync(device)
    return time.perf_counter() - t0, x


def bare_compiled(n: int, dtype: torch.dtype, device: torch.device, lr: float, repeat: int) -> dict:
    """The hand-written compiled step: torch.compile of x − lr·torch.func.grad(rosenbrock)(x)."""
    grad = torch.func.grad(rosenbrock)

    def step(x: torch.Tensor) -> torch.Tensor:
        return x - lr * grad(x)

    compiled = torch.compile(step)
    x = start_point(n, dtype, device)
    sync(device)
    t0 = time.perf_counter()
    x = compiled(x)
    sync(device)
    compile_s = time.perf_counter() - t0
    for _ in range(3):
        x = compiled(x)
    probe, x = timed_steps(compiled, x, 20, device)
    k = int(min(5000, max(50, math.ceil(TARGET_LONG_S / max(probe / 20, 1e-7)))))
    per_step = []
    for _ in range(repeat):
        t, x = timed_steps(compiled, x, k, device)
        per_step.append(t / k)
    eager_t, x = timed_steps(step, x, 5, device)  # for reference: the same step without compile
    finite = bool(torch.isfinite(x).all())
    return {
        "bare_step_s": statistics.median(per_step),
        "bare_step_samples_s": per_step,
        "bare_steps_per_sample": k,
        "bare_compile_s": compile_s,
        "bare_eager_step_s": eager_t / 5,
        "bare_finite": finite,
    }


def compose(repo: Path, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from runner.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(repo / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def runner_step(repo: Path, overrides: list[str], device: torch.device, repeat: int, short: int = 10) -> dict:
    """The runner's per-step time: (run of short + K steps − run of short steps) / K."""
    out: dict = {"runner_overrides": overrides, "runner_errors": []}
    fixed = ["tracking.enabled=false", "tracking.artifacts=false", "progress=false"]

    def via_job():
        from runner.job import run_job

        cfgs: dict[int, object] = {}

        def call(steps: int) -> float:
            if steps not in cfgs:
                cfgs[steps] = compose(repo, overrides + fixed + [f"steps={steps}"])
            sync(device)
            t0 = time.perf_counter()
            run_job(cfgs[steps])
            sync(device)
            return time.perf_counter() - t0

        return call

    def via_api():
        from runner.descent.build import build
        from runner.descent.loop import descend
        from runner.descent.optimizers import make_optimizer

        cfg = compose(repo, overrides + fixed)
        problem, backend, _ = build(cfg)

        def call(steps: int) -> float:
            sync(device)
            t0 = time.perf_counter()
            traj = descend(
                problem,
                backend,
                lambda params: make_optimizer(cfg.optimizer, params),
                steps=steps,
                tol=cfg.tol,
                max_coords=cfg.tracking.max_coords,
            )
            sync(device)
            if traj.outcome[0] == "diverged":
                out["runner_errors"].append(f"the runner's descent diverged at step {int(traj.final_step[0])}")
            return time.perf_counter() - t0

        return call

    for how, make in (("runner.job.run_job", via_job), ("runner.descent.build.build + runner.descent.loop.descend", via_api)):
        try:
            call = make()
            first = call(short)  # compiles (when the runner compiles)
            call(short)
            t_short = call(short)
            t_probe = call(short + 50)
            est = max((t_probe - t_short) / 50, 1e-7)
            k = int(min(5000, max(100, math.ceil(TARGET_LONG_S / est))))
            shorts, longs, per_step = [], [], []
            for _ in range(repeat):
                a = call(short)
                b = call(short + k)
                shorts.append(a)
                longs.append(b)
                per_step.append((b - a) / k)
            out.update(
                runner_how=how,
                runner_step_s=statistics.median(per_step),
                runner_step_samples_s=per_step,
                runner_steps_difference=k,
                runner_short_steps=short,
                runner_short_run_s=shorts,
                runner_long_run_s=longs,
                runner_first_run_s=first,
            )
            return out
        except Exception as exc:  # noqa: BLE001 - reported, then the next way is tried
            out["runner_errors"].append(f"{how}: {type(exc).__name__}: {exc}".splitlines()[0][:500])
            out["runner_traceback"] = traceback.format_exc()[-3000:]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=str(Path(__file__).resolve().parent.parent))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dim", type=int, default=100_000_000)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--copy-bytes", type=int, default=2**31)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    repo = Path(args.repo).resolve()
    sys.path.insert(0, str(repo))
    device = torch.device(args.device)
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    result: dict = {"dim": args.dim, "dtype": args.dtype, "device": str(device), "lr": args.lr, "torch": torch.__version__}
    if device.type == "cuda":
        result["device_name"] = torch.cuda.get_device_name(device)

    def save() -> None:
        Path(args.out).write_text(json.dumps(result, indent=1))

    try:
        result.update(measure_bandwidth(device, args.copy_bytes))
        itemsize = torch.empty(0, dtype=dtype).element_size()
        result["bandwidth_floor_s"] = 2 * args.dim * itemsize / result["bandwidth_Bps"]
    except Exception as exc:  # noqa: BLE001
        result["bandwidth_error"] = f"{type(exc).__name__}: {exc}"
    save()
    try:
        result.update(bare_compiled(args.dim, dtype, device, args.lr, args.repeat))
    except Exception as exc:  # noqa: BLE001
        result["bare_error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        result["bare_traceback"] = traceback.format_exc()[-3000:]
    save()
    if device.type == "cuda":
        torch.cuda.empty_cache()

    overrides = [
        "objective=rosenbrock",
        f"objective.dim={args.dim}",
        f"backend.device={args.device}",
        f"backend.dtype={args.dtype}",
        "backend.compile=true",
        f"lr={args.lr}",
    ]
    from torch._dynamo.utils import counters

    frames_before = counters["frames"].get("ok", 0)
    result.update(runner_step(repo, overrides, device, args.repeat))
    result["runner_dynamo_frames"] = counters["frames"].get("ok", 0) - frames_before
    save()


if __name__ == "__main__":
    main()
