"""A run's records as the descent hands them out: metrics to the writer, every step to a file.

The loop (:func:`runner.descent.loop.descend`) calls :meth:`RunStream.window` after each stopping
test with the records of the steps since the last one. The stream keeps nothing of them: the metric
samples (every ``stride``-th step and the final one) go to the writer in batches of about
``flush_every`` steps, so a long run's metrics are logged on the other core while it descends, and
every step goes to ``trajectory.csv`` on disk as it comes. Memory does not grow with the run's steps,
and a run that is interrupted has its trajectory on disk up to its last window.

A window is written whole or not at all when a signal arrives (:func:`runner.interrupts.deferred`);
the writer process is told where the file is, so that it can log it if this process dies. When the
run stops early (:meth:`RunStream.close` with ``stopped=True``) its last step is logged as a metric
sample too, so that the run's metrics, its ``final_step`` tag and its file end at the same step. If
the file cannot be written (a full disk), it is cut after its last whole row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from runner import interrupts
from runner.tracking import records
from runner.tracking.store import truncate_to_last_line


class RunStream:
    """The records of one row (a run) of the descent."""

    def __init__(self, recorder: Any, x_names: list[str], g_names: list[str], stride: int,
                 csv_path: Path | None = None, row: int = 0, flush_every: int = 2048) -> None:
        self.recorder, self.row, self.stride = recorder, row, stride
        self.x_names, self.g_names = x_names, g_names
        self.flush_every = flush_every
        self.pending: list[dict[str, tuple[np.ndarray, np.ndarray]]] = []
        self.pending_steps = 0
        self.last_step = -1  # the last step whose records arrived
        self.last_sampled = -1  # the last step sent as a metric sample
        self._last: tuple[int, Mapping[str, np.ndarray], int] | None = None  # the last step's window
        self.csv_path = csv_path
        self.file_error: OSError | None = None
        self._csv = None
        if csv_path is not None:
            csv_path.parent.mkdir(parents=True, exist_ok=True)
            self._csv = open(csv_path, "w", encoding="ascii")
            self._csv.write(",".join(records.table_header(x_names, g_names)) + "\n")
            if recorder is not None:
                recorder.keep_file("trajectory.csv", csv_path)

    def window(self, lo: int, window: Mapping[str, np.ndarray], finals: np.ndarray) -> None:
        """The records of steps lo, lo + 1, …; ``finals[row]`` the row's final step or -1."""
        with interrupts.deferred():
            final = int(finals[self.row])
            own, sampled = records.window_rows(lo, len(window["loss"]), final, self.stride)
            if self.recorder is not None and len(sampled):
                self.pending.append(records.window_series(lo, window, self.row, self.x_names, self.g_names, sampled))
                self.last_sampled = lo + int(sampled[-1])
            self.pending_steps += len(own)  # steps since the last flush: samples go out ≤ flush_every steps late
            if len(own):
                self.last_step = lo + int(own[-1])
                self._last = (lo, window, int(own[-1]))
                if self.recorder is not None:
                    self.recorder.last_step = self.last_step
            if self._csv is not None and len(own):
                self._write(records.table_rows(lo, window, self.row, own))
            if self.pending_steps >= self.flush_every or final >= 0:
                self.flush()

    def _write(self, rows: np.ndarray | None) -> None:
        """Rows to the file (None: flush it); a failure names the file and is kept in ``file_error``."""
        try:
            if rows is None:
                self._csv.flush()
            else:
                records.write_csv_rows(self._csv, rows)
        except OSError as exc:
            self.file_error = OSError(exc.errno, exc.strerror, str(self.csv_path))
            raise self.file_error from exc

    def flush(self) -> None:
        """Send the pending metric samples to the writer, and the trajectory file to disk."""
        self._send_metrics()
        if self._csv is not None:
            self._write(None)

    def _send_metrics(self) -> None:
        if self.pending:
            merged = {key: (np.concatenate([p[key][0] for p in self.pending]), np.concatenate([p[key][1] for p in self.pending]))
                      for key in self.pending[0]}
            self.recorder.log_metrics(merged)
            self.pending, self.pending_steps = [], 0

    def close(self, stopped: bool = False) -> Path | None:
        """Flush everything; the trajectory file's path (None without one). ``stopped``: the run
        ends before its final step (a signal, an error): its last step becomes a metric sample.
        A file that cannot be written is cut after its last whole row and closed; the error is kept
        in ``file_error`` (a run that ends normally raises it)."""
        if stopped and self.recorder is not None and self._last is not None and self.last_sampled < self.last_step:
            lo, window, at = self._last
            self.pending.append(records.window_series(lo, window, self.row, self.x_names, self.g_names, np.array([at])))
            self.last_sampled = self.last_step
        self._last = None
        self._send_metrics()
        self._close_file()
        if self.file_error is not None and not stopped:
            raise self.file_error
        return self.csv_path

    def _close_file(self) -> None:
        if self._csv is None:
            return
        csv, self._csv = self._csv, None
        try:
            csv.close()
        except OSError as exc:
            self.file_error = self.file_error or OSError(exc.errno, exc.strerror, str(self.csv_path))
        if self.file_error is not None:
            try:
                truncate_to_last_line(self.csv_path)
            except OSError:
                pass
