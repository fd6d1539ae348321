"""User-facing errors: one line saying what is wrong and what is allowed, exit status 2."""

from __future__ import annotations

import sys


class UserError(Exception):
    """Bad input. The message is one line: the key, what is wrong, what is allowed."""


EXIT_USAGE = 2


def report_and_exit(error: BaseException) -> None:
    """Print ``error: <message>`` on stderr as one line and exit with status 2, no traceback."""
    message = " ".join(str(error).split("\n")).strip()
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(EXIT_USAGE)
