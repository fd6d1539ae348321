"""User-facing errors: one line saying what is wrong and what is allowed, exit status 2."""

from __future__ import annotations

import sys


class UserError(Exception):
    """Bad input. The message is one line: the key, what is wrong, what is allowed."""


EXIT_USAGE = 2


def printable(text: str) -> str:
    """``text`` as one line that prints on any terminal and any stderr encoding: line breaks become
    spaces, bytes that were not UTF-8 (Python reads them as lone surrogates) show as ``\\xff``, and
    control and other invisible characters as their escapes (``\\x07``, ``\\u200b``)."""
    out = []
    for ch in " ".join(str(text).splitlines()).strip():
        if "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def report_and_exit(error: BaseException) -> None:
    """Print ``error: <message>`` on stderr as one line and exit with status 2, no traceback."""
    sys.stderr.write(f"error: {printable(str(error))}\n")
    sys.stderr.flush()
    raise SystemExit(EXIT_USAGE)
