"""Faults of the machine under a run's record (a full disk, a folder that cannot be written), as one
line that names the path, instead of the tracebacks SQLAlchemy and the OS would print.

A full disk shows up as ``OSError: [Errno 28] No space left on device`` (a file written by this
process or copied by MLflow into the artifact store), or as SQLite's ``database or disk is full``
wrapped in SQLAlchemy's and MLflow's exceptions (the database, its journal or its WAL file).
"""

from __future__ import annotations

import errno
from pathlib import Path

FULL = (errno.ENOSPC, errno.EDQUOT)
SQLITE_FULL = "database or disk is full"
READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


def chain(exc: BaseException):
    """``exc`` and the exceptions it was raised from or while handling, once each."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def os_error(exc: BaseException) -> OSError | None:
    """The first OSError with an errno in the chain of ``exc``."""
    return next((e for e in chain(exc) if isinstance(e, OSError) and e.errno is not None), None)


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says that a disk (or a quota) is full."""
    found = os_error(exc)
    if found is not None and found.errno in FULL:
        return True
    return any(SQLITE_FULL in str(e) for e in chain(exc))


def describe(exc: BaseException, path: str | Path | None = None) -> str | None:
    """One line for a fault of the disk under ``path`` (or the file the error names); None when
    ``exc`` is not such a fault."""
    found = os_error(exc)
    where = str(path) if path is not None else (str(found.filename) if found is not None and found.filename else "")
    at = f" ({where})" if where else ""
    if disk_full(exc):
        return f"no space left on the disk{at}"
    if found is not None and found.errno in READ_ONLY:
        return f"cannot write{at}: {found.strerror}"
    return None
