"""``python -m runner.upload FOLDER``: send what a tracking server did not receive into its run.

When the MLflow server of a run stopped answering, the writer kept the rest of the run (metrics,
tags, params, artifacts and the run's end) in ``<job folder>/unsent/`` and named this command
(:mod:`runner.tracking.unsent`). Once the server is back, this logs all of it into the same run, in
the order it was recorded, ends the run with the status it should have had (FINISHED, KILLED or
FAILED, with its final tags), tags it ``record.uploaded`` and removes the folder::

    $ python -m runner.upload outputs/hydra/2026-11-27/17-02-11-123456/unsent
    uploaded run rosenbrock-manual-lr0.001 (6f1e…) into http://127.0.0.1:5000: 1001 metric points, 5 artifact files; it ends FINISHED

``FOLDER`` may also be a folder above several such folders (a sweep's): each is uploaded, the runs
first, then the sweep's parent, which gets the summary its sweep could not give it. A run the server
never saw (a batched sweep's child written after it went away) is created, under its parent, and
the parent's trajectory table then names it by its id instead of its stand-in ``unsent-…``. Exit
status: 0 when everything was uploaded, 1 when the server still cannot take it (the folder stays,
run the command again later), 2 for a folder that holds nothing to upload.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

USAGE = "usage: python -m runner.upload FOLDER  (the unsent/ folder a run's line named)"
DIED = {"outcome": "failed", "error": "the run's process died before ending it; its records were uploaded by runner.upload"}


def upload(folder: Path, tables: set[tuple[str, str]] | None = None) -> str:
    """Upload one spill folder into its run (creating the run if the server never saw it; a sweep's
    parent is summarised and ended as the sweep would have); the line that says what was sent.
    ``tables`` collects ``(tracking uri, parent run id)`` of the sweeps whose trajectory table may
    name a run created here by its stand-in id (:func:`runner.sweeps.table.put_created_ids`)."""
    from mlflow import MlflowClient

    from runner.tracking import unsent
    from runner.tracking.store import check_reachable, http_settings, quiet_mlflow_logs

    record = unsent.load(folder)
    uri = record.run["tracking_uri"]
    check_reachable(uri)
    http_settings()
    quiet_mlflow_logs()
    client = MlflowClient(tracking_uri=uri)
    if record.run["run_id"] is None and record.run.get("token"):  # a sweep's parent its guard kept
        record.run["run_id"] = parent_by_token(uri, record.run["token"])
    parent = (record.run.get("create") or {}).get("tags", {}).get("mlflow.parentRunId")
    sent = unsent.replay(client, record, default_tags=DIED)
    run_id = sent["run_id"]
    if tables is not None and (parent or record.run.get("sweep_end")):
        tables.add((uri, parent or run_id))
    what = f"{unsent.plural(sent['metric_points'], 'metric point')}, {unsent.plural(sent['artifact_files'], 'artifact file')}"
    client.set_tag(run_id, "record.uploaded", f"{what}, sent later by python -m runner.upload")
    if record.run.get("sweep_end"):
        sent["status"] = summarise_sweep(uri, run_id, record.run["sweep_end"])
    shutil.rmtree(folder)
    return f"uploaded run {record.run['name']} ({run_id}) into {uri}: {what}; it ends {sent['status']}"


def summarise_sweep(uri: str, parent_id: str, ended: str) -> str:
    """A sweep's parent, once its children are in: the summary the sweep's end (or its guard) would
    have made (:func:`runner.sweeps.summary.finish_sweep`; children left RUNNING by a sweep that
    stopped are ended first, as its guard does), and its status."""
    from runner.sweeps.guard import end_running_children
    from runner.sweeps.summary import contour_grids, contour_inputs_of, finish_sweep

    if ended != "completed":
        end_running_children(uri, parent_id, ended)
    status, _, _ = finish_sweep(uri, parent_id, ended, contour_grids(contour_inputs_of(uri, parent_id)))
    return status


def parent_by_token(uri: str, token: str) -> str:
    from runner.sweeps.guard import find_parent
    from runner.tracking.store import StoreError

    found = find_parent(uri, token)
    if found is None:
        raise StoreError(f"tracking: no run of {uri} has the tag sweep.token={token}: the sweep's parent is not in this store")
    return found


def is_parent(folder: Path) -> bool:
    """Whether the spill folder holds a sweep's parent (its summary waits for its children)."""
    import json

    return bool(json.loads((folder / "run.json").read_text()).get("sweep_end"))


def main(argv: list[str]) -> int:
    from runner.errors import EXIT_USAGE, printable
    from runner.tracking import unsent
    from runner.tracking.store import StoreError

    if len(argv) != 1 or argv[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return EXIT_USAGE
    found = unsent.folders(Path(argv[0])) if Path(argv[0]).is_dir() else []
    if not found:
        print(f"error: {printable(argv[0])}: no unsent records here (no run.json below it); {USAGE}", file=sys.stderr)
        return EXIT_USAGE
    status = 0
    tables: set[tuple[str, str]] = set()
    parents = {folder: is_parent(folder) for folder in found}
    for folder in sorted(found, key=parents.get):  # the runs first: a parent's summary reads them
        if status and parents[folder]:
            print(f"error: {folder} stays: the sweep's runs above could not be uploaded, and its summary needs them", file=sys.stderr)
            continue
        try:
            print(upload(folder, tables))
        except Exception as exc:
            if not (isinstance(exc, StoreError) or unsent.server_gone(exc)):
                raise
            print(f"error: {printable(str(exc).splitlines()[0])}; {folder} stays: run this again once the server answers", file=sys.stderr)
            status = 1
    return status or fill_tables(tables)


def fill_tables(tables: set[tuple[str, str]]) -> int:
    """Put the ids of the runs this upload created into their sweeps' trajectory tables; 0, or 1
    with a line if a server went away meanwhile (running the upload again cannot redo it: the
    line says what the table keeps instead)."""
    from mlflow import MlflowClient

    from runner.errors import printable
    from runner.sweeps.table import put_created_ids

    for uri, parent in sorted(tables):
        try:
            replaced = put_created_ids(MlflowClient(tracking_uri=uri), parent)
        except Exception as exc:  # noqa: BLE001 - the runs are in; only the table's ids are not
            print(f"error: the trajectory table of run {parent} keeps the stand-in ids (unsent-…) of the runs created "
                  f"above ({printable(str(exc).splitlines()[0])}); each such run has its stand-in id in its tag "
                  "record.stand_in", file=sys.stderr)
            return 1
        if replaced:
            print(f"the trajectory table of run {parent} now names the {replaced} runs created above by their ids")
    return 0

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
