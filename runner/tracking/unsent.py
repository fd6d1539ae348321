"""What a tracking server did not receive, kept on disk until ``python -m runner.upload`` sends it.

When the MLflow server stops answering mid-run (:func:`server_gone`: MLflow's HTTP retries are
spent), the writer stops calling it for the rest of the process and writes what the run still
had to send into the job's output folder instead, ``<job folder>/unsent/``:

- ``run.json``: the tracking URI, the run's id and name, and once known its ``end`` (the status and
  final tags the run should have had). A run the server never saw (a batched sweep's child written
  after the server went away) has no id yet but a ``create`` (experiment, start time, tags: the
  upload creates it, under its parent); a sweep's parent has a ``sweep_end`` (how the sweep ended:
  the upload summarises the sweep, once its children are in, and ends the parent as the sweep would
  have);
- ``records.jsonl``: one JSON object per line, in the order the calls came: ``{"params": {k: v}}``,
  ``{"tags": {k: v}}``, ``{"metrics": [[key, value, timestamp_ms, step], ...]}``;
- ``artifacts/``: the artifact files, under the paths they have in the run.

:func:`replay` logs all of it into the same run, with MLflow's client, and ends the run with the
recorded status: the run then holds what it would have held had the server never gone away.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

FOLDER = "unsent"
STAND_IN_TAG = "record.stand_in"  # on a run the upload created: the id that named it before (``unsent-…``)
BATCH = 1000  # MLflow's limit of metrics (and tags) per log_batch call
PARAMS_BATCH = 100  # … and of params


def server_gone(exc: BaseException) -> bool:
    """Whether ``exc`` (a failed MLflow call) says that the server cannot be reached: a refused or
    reset connection, a timeout, or HTTP errors that outlasted MLflow's retries. Not an answer the
    server gave (a refused write, a bad value): that one is the run's error, not a missing server."""
    import requests

    from runner.tracking.faults import chain

    if any(isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                          requests.exceptions.RetryError, ConnectionError, TimeoutError)) for e in chain(exc)):
        return True
    return any("Max retries exceeded" in str(e) for e in chain(exc))


def reason(exc: BaseException) -> str:
    """The cause of a failed request in a few words (``Connection refused``), not urllib3's paragraph."""
    import re

    from runner.tracking.faults import chain

    for e in chain(exc):
        found = re.search(r"\[Errno -?\d+\] ([^\"')]+)", str(e))
        if found:
            return found.group(1).strip()
        found = re.search(r"Error\(\d+, '([^']+)'\)", str(e))  # ConnectionResetError(104, 'Connection reset by peer')
        if found:
            return found.group(1)
        found = re.search(r"too many (\d{3}) error responses", str(e))
        if found:
            return f"it answered HTTP {found.group(1)} to every try"
        found = re.search(r"failed with error code (\d{3})", str(e))
        if found:
            return f"it answered HTTP {found.group(1)}"
        found = re.search(r"timed out\. \((\w+) timeout=([\d.]+)\)", str(e))
        if found:
            return f"no answer within its {found.group(1)} timeout, {found.group(2)} s (MLFLOW_HTTP_REQUEST_TIMEOUT)"
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class Spill:
    """The unsent records of one run, in ``folder`` (created on the first write)."""

    folder: Path
    uri: str
    run_id: str
    name: str
    metric_points: int = 0
    artifact_files: int = 0
    end: dict[str, Any] | None = None
    create: dict[str, Any] | None = None  # a run the server has not seen: how the upload creates it
    sweep_end: str | None = None  # a sweep's parent: how the sweep ended (the upload summarises it)

    def _ready(self) -> None:
        if not (self.folder / "run.json").exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            self._write_run()

    def _write_run(self) -> None:
        run = {"tracking_uri": self.uri, "run_id": None if self.create else self.run_id, "name": self.name, "end": self.end}
        if self.create:
            run["create"] = self.create
            run["stand_in"] = self.run_id  # the id that names it until then (in its sweep's table)
        if self.sweep_end:
            run["sweep_end"] = self.sweep_end
        write_run(self.folder, run)

    def _append(self, record: dict[str, Any]) -> None:
        self._ready()
        with open(self.folder / "records.jsonl", "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")

    def params(self, params: Mapping[str, str]) -> None:
        self._append({"params": dict(params)})

    def tags(self, tags: Mapping[str, str]) -> None:
        self._append({"tags": {k: str(v) for k, v in tags.items()}})

    def metrics(self, points: list[tuple[str, float, int, int]]) -> None:
        """``(key, value, timestamp_ms, step)`` points."""
        if points:
            self._append({"metrics": [list(p) for p in points]})
            self.metric_points += len(points)

    def files(self, staged: Path) -> None:
        """Copy the staged artifact folder (as :meth:`MlflowStore.log_files` built it) in."""
        self._ready()
        dest = self.folder / "artifacts"
        shutil.copytree(staged, dest, dirs_exist_ok=True)
        self.artifact_files = sum(1 for p in dest.rglob("*") if p.is_file())

    def set_end(self, status: str, tags: Mapping[str, str] | None) -> None:
        self._ready()
        self.end = {"status": status, "tags": {k: str(v) for k, v in (tags or {}).items()}}
        self._write_run()

    def keep_creation(self, create: dict[str, Any]) -> None:
        """A run the server has not seen: what creates it (experiment id, start time, tags)."""
        self.create = create
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write_run()

    def set_sweep_end(self, ended: str) -> None:
        """A sweep's parent: the sweep ended (``completed``, ``aborted``, ``interrupted``) with the
        server gone; the upload summarises the sweep and ends the parent as the sweep would have."""
        self._ready()
        self.sweep_end = ended
        self._write_run()

    def line(self) -> str:
        """The one line that says what is in the folder and how to send it."""
        parts = [plural(self.metric_points, "metric point")] if self.metric_points else []
        if self.artifact_files:
            parts.append(plural(self.artifact_files, "artifact file"))
        parts.append(f"its end ({self.end['status']})" if self.end else "no end (its process died first)")
        known = "not in the server yet" if self.create else self.run_id
        return (f"tracking: the MLflow server at {self.uri} stopped answering; what run {self.name} ({known}) "
                f"did not send ({', '.join(parts)}) is in {self.folder}; it reads RUNNING there until you upload it "
                f"once the server is back: python -m runner.upload {self.folder}")


def keep_parent_end(folder: Path, uri: str, token: str, ended: str) -> Path:
    """A sweep's guard could not end its parent (the tracking server does not answer): keep the
    sweep's end in ``folder`` (beside what the parent's writer kept there, if anything), with the
    parent's ``sweep.token`` tag for the upload to find it by. The folder."""
    folder = Path(folder)
    path = folder / "run.json"
    run = json.loads(path.read_text()) if path.exists() else {"tracking_uri": uri, "run_id": None, "name": f"sweep {token}", "end": None}
    run.setdefault("sweep_end", ended)
    run["token"] = token
    folder.mkdir(parents=True, exist_ok=True)
    write_run(folder, run)
    return folder


def write_run(folder: Path, run: Mapping[str, Any]) -> None:
    """``folder/run.json``, replaced whole (written aside, then renamed): never half-written."""
    tmp = folder / "run.json.tmp"
    tmp.write_text(json.dumps(run, indent=1) + "\n")
    tmp.replace(folder / "run.json")


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


@dataclass
class Unsent:
    """A spill folder read back."""

    folder: Path
    run: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def artifacts(self) -> Path:
        return self.folder / "artifacts"


def folders(path: Path) -> list[Path]:
    """The spill folders at ``path``: itself if it holds ``run.json``, else those below it."""
    path = Path(path)
    if (path / "run.json").is_file():
        return [path]
    return sorted(p.parent for p in path.rglob("run.json"))


def load(folder: Path) -> Unsent:
    """Read a spill folder; a line at the end of ``records.jsonl`` cut by a crash is left out."""
    folder = Path(folder)
    run = json.loads((folder / "run.json").read_text())
    records = []
    path = folder / "records.jsonl"
    if path.exists():
        for text in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(text))
            except json.JSONDecodeError:  # the last line, half-written when the process died
                break
    return Unsent(folder, run, records)


def replay(client: Any, unsent: Unsent, end: bool = True, default_status: str = "FAILED",
           default_tags: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Log the unsent records into their run through ``client`` (an :class:`mlflow.MlflowClient`),
    in their order, then (``end``) end the run: with the recorded end, else ``default_status`` and
    ``default_tags`` (a run whose process died before its end). What was sent, counted."""
    from mlflow.entities import Metric, Param, RunTag

    run_id = unsent.run["run_id"] or create(client, unsent)
    sent = {"run_id": run_id, "metric_points": 0, "tags": 0, "params": 0, "artifact_files": 0}
    for record in unsent.records:
        if "params" in record:
            items = [Param(k, v) for k, v in record["params"].items()]
            for chunk in _chunks(items, PARAMS_BATCH):
                client.log_batch(run_id, params=chunk, synchronous=True)
            sent["params"] += len(items)
        if "tags" in record:
            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in record["tags"].items()], synchronous=True)
            sent["tags"] += len(record["tags"])
        if "metrics" in record:
            points = [Metric(key, float(value), int(ts), int(step)) for key, value, ts, step in record["metrics"]]
            for chunk in _chunks(points, BATCH):
                client.log_batch(run_id, metrics=chunk, synchronous=True)
            sent["metric_points"] += len(points)
    if unsent.artifacts.is_dir():
        client.log_artifacts(run_id, str(unsent.artifacts))
        sent["artifact_files"] = sum(1 for p in unsent.artifacts.rglob("*") if p.is_file())
    if end and unsent.run.get("sweep_end"):
        return sent  # the caller summarises the sweep, which ends the parent
    if end:
        final = unsent.run.get("end") or {"status": default_status, "tags": dict(default_tags or {})}
        if final["tags"]:
            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in final["tags"].items()], synchronous=True)
        client.set_terminated(run_id, status=final["status"])
        sent["status"] = final["status"]
    return sent


def create(client: Any, unsent: Unsent) -> str:
    """Create the run a spill folder holds for a server that never saw it; its id goes into
    ``run.json`` at once, so an upload stopped half-way and run again does not create it twice.
    The run is tagged with the stand-in id (``record.stand_in``) that named it in its sweep's
    trajectory table until then, so that the upload can put its real id there."""
    spec = unsent.run["create"]
    tags = {**spec["tags"], **({STAND_IN_TAG: unsent.run["stand_in"]} if unsent.run.get("stand_in") else {})}
    run = client.create_run(spec["experiment_id"], start_time=spec["start_time"], tags=tags, run_name=unsent.run["name"])
    unsent.run["run_id"] = run.info.run_id
    write_run(unsent.folder, unsent.run)
    return run.info.run_id


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
