"""The benchmark's baseline: a Hydra + MLflow experiment script written the obvious way.

This is what a user would write without the runner, and what ``benchmarks/bench.py`` case (b) compares
the runner's sweep against: ``@hydra.main``, ``mlflow.set_tracking_uri("sqlite:///...")``,
``mlflow.start_run()``, a plain PyTorch loop (autograd, then ``torch.optim.SGD`` or the hand-written
``x -= lr * grad``), and ``mlflow.log_metric`` for the loss, each coordinate of x and each coordinate of
the gradient at every step k = 0 … steps (k = 0 is the start point, before any update), then
``mlflow.end_run()``. Metric keys follow the runner's contract: ``loss``, ``x/<var>``, ``grad/<var>``
(f has ``x``; g has ``x1, x2``).

``logging=batch`` is the competent version of the same app (case (b)'s yardstick): the values are
collected as ``mlflow.entities.Metric`` while it descends and sent in one ``MlflowClient.log_batch``
per run. ``logging=per_value`` (the default) is the obvious one, a ``log_metric`` call per value.

    python benchmarks/baseline_app/app.py objective=g optimizer=sgd lr=0.1
    python benchmarks/baseline_app/app.py -m objective=f,g optimizer=sgd,manual lr=0.01,0.03,0.1,0.3
    python benchmarks/baseline_app/app.py -m logging=batch objective=f,g optimizer=sgd,manual lr=0.01,0.03,0.1,0.3

It is deliberately not optimised (no batching, no background writer, no lazy imports): it is the
yardstick. It shares no code with the runner.
"""

from __future__ import annotations

import time

import hydra
import mlflow
import torch
from mlflow.entities import Metric
from omegaconf import DictConfig


def f(x: torch.Tensor) -> torch.Tensor:
    """f(x) = 3x² + 2x − 1."""
    return 3.0 * x[0] ** 2 + 2.0 * x[0] - 1.0


def g(x: torch.Tensor) -> torch.Tensor:
    """g(x1, x2) = (x1 + 5)·x2²."""
    return (x[0] + 5.0) * x[1] ** 2


OBJECTIVES = {"f": (f, [0.0], ["x"]), "g": (g, [2.0, 3.0], ["x1", "x2"])}


def run(cfg: DictConfig) -> float:
    """One job: descend and log every value; the final loss."""
    fn, init, names = OBJECTIVES[cfg.objective]
    x = torch.tensor(init, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([x], lr=cfg.lr) if cfg.optimizer == "sgd" else None

    mlflow.set_tracking_uri(cfg.tracking_uri)
    mlflow.set_experiment(cfg.experiment)
    batch: list[Metric] | None = [] if cfg.logging == "batch" else None

    def log(key: str, value: float, step: int) -> None:
        if batch is None:
            mlflow.log_metric(key, value, step=step)
        else:
            batch.append(Metric(key, value, int(time.time() * 1000), step))

    with mlflow.start_run(run_name=f"{cfg.objective}-{cfg.optimizer}-lr{cfg.lr}") as active:
        mlflow.log_params({"objective": cfg.objective, "optimizer": cfg.optimizer, "lr": cfg.lr, "steps": cfg.steps})
        for step in range(cfg.steps + 1):
            loss = fn(x)
            (grad,) = torch.autograd.grad(loss, x)
            log("loss", loss.item(), step)
            for name, xi, gi in zip(names, x.tolist(), grad.tolist()):
                log(f"x/{name}", xi, step)
                log(f"grad/{name}", gi, step)
            if step == cfg.steps:
                break
            if opt is not None:
                x.grad = grad
                opt.step()
            else:
                with torch.no_grad():
                    x -= cfg.lr * grad
        if batch is not None:
            mlflow.MlflowClient().log_batch(active.info.run_id, metrics=batch)
    print(f"{cfg.objective}-{cfg.optimizer}-lr{cfg.lr}: loss {loss.item():.7g}, x = {x.tolist()}")
    return loss.item()


main = hydra.main(version_base="1.3", config_path="conf", config_name="config")(run)

if __name__ == "__main__":
    main()
