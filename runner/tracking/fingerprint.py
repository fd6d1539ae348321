"""The config fingerprint: one hex digest that is equal for two runs exactly when their resolved
configs can give the same numbers.

Canonical form: the resolved config as a JSON object, without the keys that cannot change the
numbers (``tracking`` — where and how the run is recorded —, ``progress`` and ``resume``), with its
keys sorted at every level, no whitespace (``separators=(",", ":")``), floats written by Python's
``repr`` (the shortest text that reads back as the same double), integers as integers, lists in
order, ``null`` for None; encoded as UTF-8; the fingerprint is its SHA-256, in hex. So it does not
depend on the order of keys, the process, or the machine. ``backend.device=auto`` stays ``auto``:
the device it resolved to is recorded beside it (the tag ``device``), and resuming a sweep compares
both. What the fingerprint cannot see: the code of a user's ``objective.target`` function, and the
versions of the libraries (recorded as ``versions.*`` tags).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

EXCLUDED = ("tracking", "progress", "resume")


def canonical(config: Mapping[str, Any]) -> str:
    """The canonical JSON text of a resolved config (see the module docstring)."""
    kept = {k: v for k, v in config.items() if k not in EXCLUDED}
    return json.dumps(kept, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)


def fingerprint(config: Mapping[str, Any]) -> str:
    """SHA-256 of :func:`canonical`, in hex (64 characters)."""
    return hashlib.sha256(canonical(config).encode("utf-8")).hexdigest()
