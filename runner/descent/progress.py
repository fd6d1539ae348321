"""A progress bar for long runs: steps/s and the current loss, on a terminal only.

``progress=auto`` shows it when stderr is a terminal and the run is long enough to watch
(≥ 2000 steps); logs, pipes and CI stay quiet. ``progress=true`` forces it, ``false`` hides it.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

MIN_STEPS = 2000


def make_progress(setting: Any, steps: int, label: str, mininterval: float = 0.25) -> Callable[[int, float], None] | None:
    """A ``progress(k, loss)`` callback for :func:`runner.descent.loop.descend`, or None for no bar."""
    if setting in (False, "false") or (setting in ("auto", None) and not (sys.stderr.isatty() and steps >= MIN_STEPS)):
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    bar = tqdm(total=steps, desc=label, unit="step", file=sys.stderr, mininterval=mininterval, leave=False)
    state = {"k": -1}

    def update(k: int, loss: float) -> None:
        bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        bar.update(k - max(state["k"], 0))
        state["k"] = k
        if k >= steps:
            bar.close()

    return update
