"""Coverage-guided fuzzing of ``parse_expression`` with atheris (libFuzzer); not run by pytest.

    pip install atheris
    python tests/fuzz/atheris_expression.py -max_total_time=120      # or -runs=100000
    python tests/fuzz/atheris_expression.py CORPUS_DIR -max_total_time=120   # keep a corpus

Each input is read one of three ways (its first byte chooses): raw bytes decoded as the command
line would decode them (UTF-8 with ``surrogateescape``, so invalid bytes become lone surrogates),
atheris' own Unicode strings, or bytes mapped to grammar tokens (to reach deeper parses).  The
contract is the one in ``tests/test_fuzz_expression.py``: an ``ExpressionError`` whose message is
one printable line starting with ``objective.expr`` that encodes to UTF-8, or an expression that
evaluates to a float64 tensor of shape ``(3,)``; no audit event but the ``compile`` of
``ast.parse``; no warning; a parse under one second.  Anything else raises, and libFuzzer reports the input.
A line on stderr every 20000 inputs counts them.
"""
from __future__ import annotations

import collections
import gc
import sys
import threading
import time
import warnings
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports(include=["objectives"]):
    from objectives.expression import Expression, ExpressionError, parse_expression

import torch  # after the instrumented import (which imports it, uninstrumented)

TOKENS = ["x", "y", "z1", "e", "pi", "sin", "exp", "hypot", "min", "pow", "log", "sqrt", "abs", "(", ")",
          ",", "+", "-", "*", "/", "**", " ", "0", "1", "2.5", "1e308", "9", "**9", "_", "__class__", ".",
          "[", "]", "'", "lambda", ":", "for", "in", "if", "else", "not", "and", "%", "//", "<", "=", "~",
          "open", "__import__", "#", "\\", "\n", "\t", "\u00a0", "\u0445", "\uff45", "\u2212", "\udcff",
          "\x00", "\u202e", "j", "0x", "_0", "{", "}", "@", ";"]
COUNTS: collections.Counter = collections.Counter()
AUDIT: dict = {"thread": None, "events": []}


def _hook(event: str, args: tuple) -> None:
    if AUDIT["thread"] == threading.get_ident():
        AUDIT["events"].append((event, args))


def _text(data: bytes) -> str:
    if not data:
        return ""
    mode, rest = data[0] % 3, data[1:]
    if mode == 0:
        return rest.decode("utf-8", "surrogateescape")
    if mode == 1:
        return atheris.FuzzedDataProvider(rest).ConsumeUnicode(len(rest))
    return "".join(TOKENS[b % len(TOKENS)] for b in rest)


def test_one_input(data: bytes) -> None:
    text = _text(data)
    AUDIT["events"], AUDIT["thread"] = [], threading.get_ident()
    gc.disable()
    try:
        start = time.perf_counter()
        try:
            expr, message = parse_expression(text), None
        except ExpressionError as exc:
            expr, message = None, str(exc)
        elapsed = time.perf_counter() - start
        gc.enable()
        if expr is not None:
            y = expr(torch.linspace(-2.0, 3.0, 3 * len(expr.variables), dtype=torch.float64)
                     .reshape(3, len(expr.variables)))
    finally:
        AUDIT["thread"] = None
        gc.enable()
    events = [(e, a) for e, a in AUDIT["events"] if not (e == "compile" and a[1] == "<unknown>")]
    compiles = [a for e, a in AUDIT["events"] if e == "compile"]
    if events or len(compiles) > 1:
        raise AssertionError(f"audit events for {text!a}: {events!a}")
    if elapsed > 1.0:
        raise AssertionError(f"parse took {elapsed:.2f} s for {text[:200]!a}")
    if message is not None:
        if not (message.startswith("objective.expr") and message.isprintable()
                and len(message.splitlines()) == 1):
            raise AssertionError(f"bad message {message!a} for {text!a}")
        message.encode("utf-8")
        COUNTS["refused"] += 1
    else:
        if not (isinstance(expr, Expression) and isinstance(y, torch.Tensor) and y.shape == (3,)
                and y.dtype == torch.float64):
            raise AssertionError(f"bad value {y!a} for {text!a}")
        if not expr.sources[0].isascii():
            raise AssertionError(f"non-ASCII source accepted: {text!a}")
        COUNTS["accepted"] += 1
    total = COUNTS["accepted"] + COUNTS["refused"]
    if total % 20000 == 0:
        print(f"expression fuzz: {total} inputs, {COUNTS['accepted']} accepted, "
              f"{COUNTS['refused']} refused, 0 contract failures", file=sys.stderr, flush=True)


def main() -> None:
    warnings.simplefilter("error")  # a warning (e.g. a SyntaxWarning on stderr) is a finding too
    sys.addaudithook(_hook)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
