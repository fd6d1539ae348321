"""``python -m runner.upload FOLDER``: send what a tracking server did not receive into its run.

When the MLflow server of a run stopped answering, the writer kept the rest of the run (metrics,
tags, params, artifacts and the run's end) in ``<job folder>/unsent/`` and named this command
(:mod:`runner.tracking.unsent`). Once the server is back, this logs all of it into the same run, in
the order it was recorded, ends the run with the status it should have had (FINISHED, KILLED or
FAILED, with its final tags), tags it ``record.uploaded`` and removes the folder::

    $ python -m runner.upload outputs/hydra/2026-11-27/17-02-11-123456/unsent
    uploaded run rosenbrock-manual-lr0.001 (6f1e…) into http://127.0.0.1:5000: 1001 metric points, 5 artifact files; it ends FINISHED

``FOLDER`` may also be a folder above several such folders (a sweep's): each is uploaded. Exit
status: 0 when everything was uploaded, 1 when the server still cannot take it (the folder stays,
run the command again later), 2 for a folder that holds nothing to upload.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

USAGE = "usage: python -m runner.upload FOLDER  (the unsent/ folder a run's line named)"
DIED = {"outcome": "failed", "error": "the run's process died before ending it; its records were uploaded by runner.upload"}


def upload(folder: Path) -> str:
    """Upload one spill folder into its run; the line that says what was sent."""
    from mlflow import MlflowClient

    from runner.tracking import unsent
    from runner.tracking.store import check_reachable, http_settings, quiet_mlflow_logs

    record = unsent.load(folder)
    uri, run_id = record.run["tracking_uri"], record.run["run_id"]
    check_reachable(uri)
    http_settings()
    quiet_mlflow_logs()
    client = MlflowClient(tracking_uri=uri)
    sent = unsent.replay(client, record, default_tags=DIED)
    what = f"{unsent.plural(sent['metric_points'], 'metric point')}, {unsent.plural(sent['artifact_files'], 'artifact file')}"
    client.set_tag(run_id, "record.uploaded", f"{what}, sent later by python -m runner.upload")
    shutil.rmtree(folder)
    return (f"uploaded run {record.run['name']} ({run_id}) into {uri}: {unsent.plural(sent['metric_points'], 'metric point')}, "
            f"{unsent.plural(sent['artifact_files'], 'artifact file')}; it ends {sent['status']}")


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
    for folder in found:
        try:
            print(upload(folder))
        except StoreError as exc:
            print(f"error: {printable(str(exc))}; {folder} stays: run this again once the server answers", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
