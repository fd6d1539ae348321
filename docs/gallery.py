"""Write the gallery of the runner's figures: ``docs/img/gallery-*.png`` and ``docs/gallery.md``.

Every figure is one that a real command records: the script runs each command below in a new
temporary folder (its own ``outputs/mlflow.db``), reads the figure back from the run's artifacts (or
the sweep's parent run's) through ``MlflowClient``, and copies it here, with the command beside it in
``docs/gallery.md``. Run it from the repository root (about two minutes on 2 cores)::

    python docs/gallery.py
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMG = ROOT / "docs" / "img"
PAGE = ROOT / "docs" / "gallery.md"


@dataclass
class Command:
    """One command and the figures (artifact path -> gallery file, caption) it records."""

    args: list[str]
    figures: list[tuple[str, str, str]]


COMMANDS = [
    Command(["objective=f", "lr=0.1"], [(
        "plots/loss.png", "gallery-loss-gap.png",
        "A known minimum: f's minimum value is −4/3, so the figure shows loss − min on a log axis (the "
        "loss itself is negative). The gap shrinks 0.16× a step until it is within rounding of 0, where "
        "the dotted line says the minimum was reached.")]),
    Command(["objective=g", "optimizer=sgd", "lr=0.1"], [
        ("plots/loss.png", "gallery-loss-log.png",
         "No known minimum (g is unbounded below), a loss that stays positive: the loss on a log axis, "
         "labelled every 20 decades down to 1e-142, every label inside the figure."),
        ("plots/path.png", "gallery-path.png",
         "A 2-D objective's path over a contour of it; log-spaced levels because g spans decades here.")]),
    Command(["objective=f", "lr=0.5", "steps=1000"], [(
        "plots/loss.png", "gallery-loss-diverged.png",
        "A diverged run (lr = 0.5 > 1/3, the stable step for f): its finite part, and the step where "
        "the loss became inf marked with a dashed line and a cross.")]),
    Command(["objective=custom", "objective.expr='exp(x) - 10*x'", "objective.init=[8.0]", "lr=0.001", "steps=200"], [(
        "plots/loss.png", "gallery-loss-symlog.png",
        "No known minimum (a custom expression) and a loss that changes sign over decades: a symmetric "
        "log axis, linear between −1 and 1, every label with its sign.")]),
    Command(["-m", "objective=f,g", "optimizer=manual,sgd", "lr=0.01,0.1"], [
        ("summary_loss.png", "gallery-sweep-loss-panels.png",
         "A sweep over two objectives: one panel per objective, each with its own axis (f's gap to its "
         "minimum, g's loss). Manual descent and SGD take identical paths, so their lines coincide."),
        ("summary_final_loss_lr.png", "gallery-sweep-final-loss-panels.png",
         "Final loss against lr, one panel per objective, one line per optimizer."),
        ("summary_paths_g.png", "gallery-sweep-paths-g.png",
         "The paths of the 2-D objective's runs on one contour (one file per 2-D objective).")]),
    Command(["-m", "objective=rosenbrock", "optimizer=sgd,adam", "lr=0.001,0.002"], [
        ("summary_loss.png", "gallery-sweep-loss.png",
         "A sweep over one objective: all runs on one axis (Rosenbrock's minimum is 0: the loss itself)."),
        ("summary_paths.png", "gallery-sweep-paths.png",
         "Their paths in Rosenbrock's valley (log-spaced levels of the objective above its lowest value)."),
        ("summary_final_loss_optimizer.png", "gallery-sweep-final-loss-optimizer.png",
         "Final loss against a swept choice: categories, one series per lr.")]),
    Command(["-m", "objective=f", "lr=0.01,0.1,0.3,0.5", "steps=1000"], [
        ("summary_loss.png", "gallery-sweep-loss-diverged.png",
         "A sweep with a diverged run: the axis is scaled to the runs that did not diverge, the diverged "
         "one runs off the top, with its legend entry and a dashed line and a cross at its step."),
        ("summary_final_loss_lr.png", "gallery-sweep-final-loss-diverged.png",
         "Final loss against lr: the diverged run is a red cross on the top edge, not a missing point.")]),
    Command(["-m", "objective=rosenbrock", "optimizer=sgd,adam,rmsprop", "lr=0.0001,0.0002,0.0005,0.001,0.002,0.005,0.01,0.02,0.05,0.1",
             "steps=300"], [
        ("summary_loss.png", "gallery-sweep-loss-many.png",
         "30 runs on one axis: beyond eight the legend stands beside the axes, 20 entries a column, and "
         "the figure grows to hold it and the title; beyond 20 runs the colours repeat dashed. Four SGD "
         "runs diverged (to 1e300, then inf): they run off the top instead of flattening the others. "
         "Beyond 40 runs the curves are coloured by run order, with a colour bar instead of a legend.")]),
]


def run(command: Command, folder: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    done = subprocess.run([sys.executable, "-m", "runner", *command.args], cwd=folder, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"python -m runner {' '.join(command.args)} failed:\n{done.stderr}")


def recorded_run(folder: Path):
    """The client and the one run (or the sweep's parent) the command recorded in ``folder``."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'outputs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("runner")
    runs = client.search_runs([experiment.experiment_id])
    runs = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]  # a sweep's children have it
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return client, runs[0]


def collect(command: Command, work: Path) -> list[str]:
    """Run the command, copy its figures into docs/img; the gallery page's section for it."""
    folder = Path(tempfile.mkdtemp(dir=work))
    run(command, folder)
    client, found = recorded_run(folder)
    shown = "python -m runner " + " ".join(shlex.quote(a) if "'" not in a else f'"{a}"' for a in command.args)
    lines = []
    for artifact, name, caption in command.figures:
        shutil.copyfile(client.download_artifacts(found.info.run_id, artifact, str(folder)), IMG / name)
        lines += [f"### {name.removeprefix('gallery-').removesuffix('.png')}", "", caption, "",
                  f"`{shown}` → `{artifact}`", "", f"![{caption}](img/{name})", ""]
    print(f"{shown}: {len(command.figures)} figure(s)")
    return lines


def main() -> None:
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # downloads print no progress bars
    IMG.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Gallery: the figures a run and a sweep record",
        "",
        "Written by `python docs/gallery.py`, which runs each command below in a new folder and copies the",
        "figures from the runs' artifacts. How a loss axis is chosen (the gap to a known minimum, a log,",
        "symmetric-log or linear scale) is explained in `runner/tracking/loss_axis.py`.",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="runner-gallery-") as work:
        for command in COMMANDS:
            lines += collect(command, Path(work))
    PAGE.write_text("\n".join(lines))
    print(f"wrote {PAGE.relative_to(ROOT)} and {sum(len(c.figures) for c in COMMANDS)} figures in {IMG.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
