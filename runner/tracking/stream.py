"""A run's records as the descent hands them out: metrics to the writer, every step to a file.

The loop (:func:`runner.descent.loop.descend`) calls :meth:`RunStream.window` after each stopping
test with the records of the steps since the last one. The stream keeps nothing of them: the metric
samples (every ``stride``-th step and the final one) go to the writer in batches of about
``flush_every`` steps, so a long run's metrics are logged on the other core while it descends, and
every step goes to ``trajectory.csv`` on disk as it comes. Memory does not grow with the run's steps,
and a run that is interrupted has its trajectory on disk up to its last window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from runner.tracking import records


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
        self.csv_path = csv_path
        self._csv = None
        if csv_path is not None:
            csv_path.parent.mkdir(parents=True, exist_ok=True)
            self._csv = open(csv_path, "w", encoding="ascii")
            self._csv.write(",".join(records.table_header(x_names, g_names)) + "\n")

    def window(self, lo: int, window: Mapping[str, np.ndarray], finals: np.ndarray) -> None:
        """The records of steps lo, lo + 1, …; ``finals[row]`` the row's final step or -1."""
        final = int(finals[self.row])
        own, sampled = records.window_rows(lo, len(window["loss"]), final, self.stride)
        if self.recorder is not None and len(sampled):
            self.pending.append(records.window_series(lo, window, self.row, self.x_names, self.g_names, sampled))
            self.pending_steps += len(own)
        if self._csv is not None and len(own):
            records.write_csv_rows(self._csv, records.table_rows(lo, window, self.row, own))
        if len(own):
            self.last_step = lo + int(own[-1])
        if self.pending_steps >= self.flush_every or final >= 0:
            self.flush()

    def flush(self) -> None:
        """Send the pending metric samples to the writer, and the trajectory file to disk."""
        if self.pending:
            merged = {key: (np.concatenate([p[key][0] for p in self.pending]), np.concatenate([p[key][1] for p in self.pending]))
                      for key in self.pending[0]}
            self.recorder.log_metrics(merged)
            self.pending, self.pending_steps = [], 0
        if self._csv is not None:
            self._csv.flush()

    def close(self) -> Path | None:
        """Flush everything; the trajectory file's path (None without one)."""
        self.flush()
        if self._csv is not None:
            self._csv.close()
            self._csv = None
        return self.csv_path
