"""``python -m runner.rerun RUN_ID [KEY=VALUE ...]``: make a recorded run again and compare.

The store is the one a run would use (``tracking.uri=...`` among the arguments, else
``$MLFLOW_TRACKING_URI``, else ``sqlite:///outputs/mlflow.db``). The run's recorded config (its
``config.yaml``, else its params) is run again, with the given ``KEY=VALUE`` changes, into the same
experiment, as a new run tagged ``rerun_of=<RUN_ID>``; then one line says whether the final loss and
the final point are identical to the recorded ones, and the largest difference when they are not::

    rerun of 6f1e…: identical final loss and final point (g-sgd-lr0.1, 100 steps)

The runner is deterministic: on the same machine, with the same versions (recorded as the run's
``versions.*`` tags), a float64 run is made again bit for bit.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any


def parse(argv: list[str]) -> tuple[str, list[str], str | None]:
    """The run id, the ``KEY=VALUE`` changes (Hydra's override syntax) and ``tracking.uri`` if given."""
    from runner.errors import UserError

    if not argv or argv[0].startswith("-") or "=" in argv[0]:
        raise UserError("usage: python -m runner.rerun RUN_ID [KEY=VALUE ...]")
    changes, uri = [], None
    for token in argv[1:]:
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise UserError(f"{token!r} is not KEY=VALUE (for example lr=0.05)")
        if key == "tracking.uri":
            uri = value
        else:
            changes.append(token)
    return argv[0], changes, uri


def recorded_run(uri: str, run_id: str):
    """(client, run, experiment name) of the run to make again."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from runner.errors import UserError
    from runner.tracking.store import quiet_mlflow_logs

    quiet_mlflow_logs()
    client = MlflowClient(tracking_uri=uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise UserError(f"run {run_id}: no such run in {uri}") from None
    return client, run, client.get_experiment(run.info.experiment_id).name


def recorded_overrides(recorded: dict[str, Any]) -> list[str]:
    """Overrides that compose the recorded config again from ``conf/``: its group choices, then
    every value that differs from what those choices compose. A value that the defaults derive
    (``optimizer.lr: ${lr}``) and that the run did not change stays derived, so that a change of
    ``lr`` reaches the optimizer as it does on the command line."""

    from runner.composition import compose

    groups = {"objective": "name", "backend": "name", "optimizer": "name", "schedule": "name"}
    choices = [f"{g}={recorded[g][k] or CUSTOM_CHOICE[g]}" for g, k in groups.items() if isinstance(recorded.get(g), dict)]
    leaves = [(key, value) for key, value in _leaves(recorded) if key.split(".")[0] not in ("hydra", "resume")]
    base = compose(choices)
    derived = {key for key, _ in leaves if _derived(base, key)}
    overrides = _differing(base, [(k, v) for k, v in leaves if k not in derived])
    # Derived values are compared with what the run's own values derive them to.
    overrides += _differing(compose(choices + overrides), [(k, v) for k, v in leaves if k in derived])
    return choices + overrides


def _derived(base, key: str) -> bool:
    """Whether the composed config derives this key from another (an interpolation, ``${lr}``)."""
    from omegaconf import DictConfig, OmegaConf

    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(base, parent_key, default=None) if parent_key else base
    return isinstance(parent, DictConfig) and leaf in parent and OmegaConf.is_interpolation(parent, leaf)


def _differing(base, leaves) -> list[str]:
    """Overrides for the leaves whose value ``base`` does not have (``+key`` for a key it lacks)."""
    from omegaconf import OmegaConf

    from runner.composition import hydra_value

    overrides = []
    for key, value in leaves:
        node = OmegaConf.select(base, key, default=_ABSENT, throw_on_missing=False)
        if node is _ABSENT:
            overrides.append(f"+{key}={hydra_value(value)}")
        elif node != value:
            overrides.append(f"{key}={hydra_value(value)}")
    return overrides


CUSTOM_CHOICE = {"optimizer": "torch_optim", "schedule": "torch_scheduler", "objective": "custom", "backend": "autograd"}
_ABSENT = object()


def _leaves(node: Any, prefix: str = ""):
    """(dotted key, value) of every leaf of a nested dict; lists are leaves."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], node


def rerun_config(recorded: dict[str, Any], changes: list[str], uri: str, experiment: str):
    """The recorded config, composed again with the changes, recording into the same store and
    experiment."""
    from runner.composition import compose, hydra_value

    return compose(recorded_overrides(recorded) + changes + [f"tracking.uri={hydra_value(uri)}", f"tracking.experiment={hydra_value(experiment)}"])


def comparison(run_id: str, before: tuple[float, dict[str, float]], after: tuple[float, dict[str, float]]) -> str:
    """One line: identical, or the largest difference and where."""
    (loss0, x0), (loss1, x1) = before, after
    pairs = [("loss", loss0, loss1)] + [(f"x/{k}", v, x1[k]) for k, v in x0.items() if k in x1]
    differing = [(name, a, b) for name, a, b in pairs if not (a == b or (math.isnan(a) and math.isnan(b)))]
    if not differing:
        return f"rerun of {run_id}: identical final loss and final point"
    name, a, b = max(differing, key=lambda p: abs(p[1] - p[2]) if math.isfinite(p[1] - p[2]) else math.inf)
    return f"rerun of {run_id}: differs; largest difference {abs(a - b):.3g} in {name} ({a!r} recorded, {b!r} now)"


def main(argv: list[str] | None = None) -> None:
    from runner.errors import UserError, report_and_exit
    from runner.tracking import writer
    from runner.tracking.recorded import recorded_config, recorded_end
    from runner.tracking.store import StoreError, check_reachable, resolve_uri

    argv = sys.argv[1:] if argv is None else argv
    status = 0
    try:
        run_id, changes, given_uri = parse(argv)
        uri = resolve_uri(given_uri)
        check_reachable(uri)
        client, run, experiment = recorded_run(uri, run_id)
        cfg = rerun_config(recorded_config(client, run), changes, uri, experiment)
        from runner.job import optimize, report

        done = optimize(cfg, extra_tags={"rerun_of": run_id})
        report(done.plan, done.traj, done.recorder)
        now = (done.traj.final_loss(0), {str(n): float(v) for n, v in zip(done.plan.problem.var_names, done.traj.x_final[0])})
        print(comparison(run_id, recorded_end(client, run), now))
    except (UserError, StoreError) as exc:
        report_and_exit(exc)
    finally:
        writer.close_writer()
    sys.stdout.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
