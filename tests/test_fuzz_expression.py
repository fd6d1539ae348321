"""Fuzzing ``parse_expression`` with hostile text (hypothesis, reproducible).

Every input goes through :func:`_check`, which asserts the contract for untrusted text:

* ``parse_expression`` returns an :class:`Expression`, or raises :class:`ExpressionError` whose
  message is one printable line starting with ``objective.expr`` (``objective.`` for the
  ``variables`` fuzz) that encodes to UTF-8 (no lone surrogates) -- never any other exception;
* an accepted expression is, re-checked independently here, printable ASCII whose syntax tree
  holds only numbers, variables, the constants, ``+ - * / **``, unary ``-``/``+`` and calls of
  the whitelisted functions by name; it evaluates on a float64 batch of shape ``(3, d)`` to a
  float64 tensor of shape ``(3,)`` that shares no memory with the input, raising nothing (NaN
  and inf values are fine);
* nothing executes: while parsing and evaluating, an audit hook (``sys.addaudithook``) sees no
  event at all except the one ``compile`` event that ``ast.parse`` fires for the normalised text
  (filename ``<unknown>``) -- no ``import``, ``open``, ``exec``, ``os.system``, ...; payloads that
  would create a sentinel file leave none;
* parsing emits no warning (a ``SyntaxWarning`` would print on stderr);
* one parse takes under a second (a safety bound, not a speed claim; timed with the garbage
  collector paused, since a full collection of this process's heap is not the parser's cost).

Inputs known to be outside the grammar (each hostile case, and each generated tree with a
forbidden construct) must be refused; generated trees within the grammar must be accepted or
refused only for size or value (nesting, length, a non-finite constant).  The module prints one
line per property with how many inputs it ran and how many were accepted and refused.
"""
from __future__ import annotations

import ast
import collections
import gc
import os
import sys
import tempfile
import threading
import time
import unicodedata
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from objectives.expression import (
    ALLOWED_FUNCTIONS,
    CONSTANTS,
    MAX_DEPTH,
    MAX_LENGTH,
    Expression,
    ExpressionError,
    parse_expression,
)

SENTINEL = os.path.join(tempfile.gettempdir(), f"expr-fuzz-sentinel-{os.getpid()}")
FUZZ = settings(derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example])
COUNTS: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
SLOWEST: dict = {"parse_s": 0.0, "input": ""}
FORBIDDEN: collections.Counter = collections.Counter()  # inputs known to be outside the grammar
# refusals allowed for text within the grammar: size and value, never "is not allowed"
SIZE_OR_VALUE = ("nested too deeply", "too long", "not a finite number", "too large",
                 "exceeds float range", "too many digits")


# --- the audit hook: records every event fired by this thread while armed ----------------

_AUDIT: dict = {"thread": None, "events": []}


def _hook(event: str, args: tuple) -> None:
    if _AUDIT["thread"] == threading.get_ident():
        _AUDIT["events"].append((event, args))


sys.addaudithook(_hook)  # cannot be removed; costs one comparison per event while disarmed


def _normalised(text: str) -> str:
    """The text as parse_expression hands it to ast.parse (written independently here)."""
    spaced = "".join(" " if c in " \t\n\r" or unicodedata.category(c) == "Zs" else c for c in text)
    return " ".join(part for part in spaced.split(" ") if part)


def _allowed_event(event: str, args: tuple, sources: list[str]) -> bool:
    if event != "compile" or len(args) != 2 or args[1] != "<unknown>":
        return False
    source = args[0].decode("utf-8", "surrogatepass") if isinstance(args[0], bytes) else args[0]
    if source in sources:
        sources.remove(source)  # each text is compiled (to a syntax tree) at most once
        return True
    return False


# --- an independent whitelist check for accepted expressions -------------------------

_ALLOWED_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Call, ast.Name, ast.Constant,
                  ast.Load, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.USub, ast.UAdd)


def _assert_within_grammar(source: str) -> None:
    assert source.isascii() and source.isprintable(), ascii(source)
    for node in ast.walk(ast.parse(source, mode="eval")):
        assert isinstance(node, _ALLOWED_NODES), (type(node).__name__, source)
        if isinstance(node, ast.Name):
            assert not node.id.startswith("_"), source
        if isinstance(node, ast.Constant):
            assert type(node.value) in (int, float), source
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name) and node.func.id in ALLOWED_FUNCTIONS, source
            assert not node.keywords, source


# --- the contract ------------------------------------------------------------------------

def _check(prop: str, expr, variables=None, prefix: str = "objective.expr") -> str | None:
    """Parse (and evaluate) one input under the audit hook; the refusal message or None."""
    texts = [expr] if isinstance(expr, str) else list(expr)
    sources = [_normalised(t) for t in texts if isinstance(t, str)]
    _AUDIT["events"] = []
    _AUDIT["thread"] = threading.get_ident()
    try:
        gc.disable()  # a full collection of this process's heap (~0.2-0.5 s) is not the parser's cost
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            try:
                parsed = parse_expression(expr, variables)
            except ExpressionError as exc:
                parsed, message = None, str(exc)
        elapsed = time.perf_counter() - start
        gc.enable()
        if parsed is not None:
            message = None
            x = torch.linspace(-2.0, 3.0, 3 * len(parsed.variables), dtype=torch.float64)
            x = x.reshape(3, len(parsed.variables))
            y = parsed(x)
    finally:
        _AUDIT["thread"] = None
        gc.enable()
    events = [(e, a) for e, a in _AUDIT["events"] if not _allowed_event(e, a, sources)]
    assert not events, f"audit events while parsing {ascii(expr)[:200]}: {ascii(events)[:500]}"
    assert not warned, f"warnings while parsing {ascii(expr)[:200]}: {[str(w.message) for w in warned]}"
    assert elapsed < 1.0, f"parse took {elapsed:.2f} s: {ascii(expr)[:200]}"
    if elapsed > SLOWEST["parse_s"]:
        SLOWEST.update(parse_s=elapsed, input=ascii(expr)[:60] + f" ({len(str(expr))} chars)")
    assert not os.path.exists(SENTINEL)
    if parsed is None:
        assert message.startswith(prefix), ascii(message)
        assert message.isprintable() and len(message.splitlines()) == 1, ascii(message)
        message.encode("utf-8")
        COUNTS[prop]["refused"] += 1
        return message
    assert isinstance(parsed, Expression)
    assert isinstance(y, torch.Tensor) and y.shape == (3,) and y.dtype == torch.float64, (expr, y)
    assert y.untyped_storage().data_ptr() != x.untyped_storage().data_ptr(), expr
    for source in parsed.sources:
        _assert_within_grammar(source)
    COUNTS[prop]["accepted"] += 1
    return None


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    # warm up every function once, so that no lazy import inside torch counts as an event
    parse_expression(" + ".join(f"{f}(x{', x' * (f in ('min', 'max', 'pow', 'atan2', 'hypot'))})"
                                for f in ALLOWED_FUNCTIONS))(torch.ones(3, 1, dtype=torch.float64))
    yield
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    total = sum(sum(c.values()) for c in COUNTS.values())
    lines = [f"fuzz {prop}: {sum(c.values())} inputs, {c['accepted']} accepted, {c['refused']} refused"
             + (f" ({FORBIDDEN[prop]} forbidden by construction, all refused)" if FORBIDDEN[prop] else "")
             for prop, c in sorted(COUNTS.items())]
    lines.append(f"fuzz total: {total} inputs; slowest parse {SLOWEST['parse_s'] * 1000:.1f} ms, "
                 f"{SLOWEST['input']}")
    if capture is not None and COUNTS:
        with capture.global_and_fixture_disabled():
            print("\n" + "\n".join(lines))
    assert not os.path.exists(SENTINEL)
    # Each property that ran, ran all its examples (derandomized: the counts are fixed). Checked here,
    # when the file's tests in this process are done, whatever order they ran in; the hostile inputs
    # are one test each.
    short = {prop: sum(c.values()) for prop, c in COUNTS.items() if prop != "c_hostile" and sum(c.values()) < 100}
    assert not short, f"properties that ran fewer than 100 examples: {short}"


# --- (a) random text over a wide alphabet ------------------------------------------------

_TOKENS = ["x", "y", "a1", "_", "__", "e", "pi", "sin", "exp", "hypot", "open", "__import__", "lambda",
           "for", "in", "if", "not", "and", "(", ")", "[", "]", "{", "}", ",", ".", ":", ";", "=", ":=",
           "'", '"', "+", "-", "*", "/", "**", "%", "//", "@", "<", "==", "~", "&", "|", "^", "0", "1",
           "9", "1e308", "1e999", "0x1f", "1_0", "1j", ".5", " ", "\t", "\n", "\r", "\\", "#", "!", "?",
           "$", "`", "\x00", "\x0b", "\x0c"]
_UNICODE = ["\u0445", "\u0430", "\u0435", "\u043e", "\u0440", "\u0441", "\u03bf", "\u03b1", "\u0391",
            "\u03c0", "\uff45", "\uff58", "\uff50", "\uff0b", "\uff08", "\U0001d431", "\u212a", "\ufb01",
            "\u2212", "\u00d7", "\u00b7", "\u00a0", "\u3000", "\u2003", "\u200b", "\u200d", "\u202e",
            "\ufeff", "\u0301", "\u2028", "\u2029", "\u0085", "\u00b2", "\u00bd", "\u0660", "\udcff",
            "\udc80", "\ud800", "\U0010ffff", "\ue000"]
_pieces = st.one_of(
    st.characters(),                                       # any code point except surrogates
    st.characters(categories=["Cs"]),                      # lone surrogates (undecodable bytes)
    st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp", "Mn"]),
    st.characters(categories=["L", "N"]),                  # letters and digits of every script
    st.characters(codec="ascii"),
    st.sampled_from(_UNICODE),
    st.sampled_from(_TOKENS),
)
random_text = st.lists(_pieces, max_size=40).map("".join)


@settings(FUZZ, max_examples=1500)
@given(expr=st.one_of(random_text, st.lists(random_text, min_size=1, max_size=3)))
def test_random_text_is_parsed_or_refused_in_one_line(expr):
    _check("a_random_text", expr)


@settings(FUZZ, max_examples=300)
@given(variables=st.lists(st.one_of(random_text, st.sampled_from(["x", "y", "if", "pi", "sin", "_x"])),
                          max_size=4),
       expr=st.sampled_from(["1", "x", "x + y", "\u0445"]))
def test_random_variable_names_are_accepted_or_refused_in_one_line(variables, expr):
    _check("a_random_vars", expr, variables, prefix="objective.")


# --- (b) grammar: random trees from the allowed grammar and from forbidden constructs ---------

_NAMES = ["x", "y", "a", "b1", "theta_2", "X", "open", "print", "lambda_", "eval_"]
_NUMBERS = st.one_of(st.integers(0, 10**6).map(str),
                     st.floats(0, 1e6, allow_nan=False).map(repr),
                     st.sampled_from(["0", "1e308", "1e-320", "0x1F", "1_000", "0.5", "3.", ".25",
                                      "1e400", "9" * 400, "9" * 5000, "0o17", "0b101", "10**300"]))
_GOOD_LEAVES = st.one_of(st.sampled_from(_NAMES), st.sampled_from(sorted(CONSTANTS)), _NUMBERS)
_BAD_LEAVES = st.sampled_from([
    "'s'", '"s"', "b'x'", "True", "None", "...", "1j", "__import__", "_x", "__class__", "__builtins__",
    "f'{x}'", "sin", "exp", "x\u0445", "\uff58", "\U0001d431", f"open({SENTINEL!r}, 'w')", "globals()",
    "__import__('os').system('id')", "breakpoint()", "[]", "()", "{}", "lambda: 0", "yield",
])
_FUNCS = sorted(ALLOWED_FUNCTIONS)
_ARITY = {f: 1 if f not in ("min", "max", "pow", "atan2", "hypot") else 2 for f in _FUNCS}
_OTHER_CALLEES = ["open", "eval", "exec", "compile", "getattr", "setattr", "__import__", "globals",
                  "vars", "breakpoint", "input", "print", "type", "object", "pi", "e", "x", "sum"]


def _call(f: str, args: list[str]) -> str:
    return f"{f}({', '.join(args)})"


def _grow_good(children):
    """The allowed grammar: the tree is bad only if a child is."""
    pair = st.tuples(children, children)
    return st.one_of(
        st.builds(lambda op, ab: (f"({ab[0][0]} {op} {ab[1][0]})", ab[0][1] or ab[1][1]),
                  st.sampled_from(["+", "-", "*", "/", "**"]), pair),
        st.builds(lambda op, a: (f"({op}{a[0]})", a[1]), st.sampled_from(["-", "+"]), children),
        st.builds(lambda f, ab: (_call(f, [ab[0][0], ab[1][0]][: _ARITY[f]]),
                                 ab[0][1] or (_ARITY[f] == 2 and ab[1][1])),
                  st.sampled_from(_FUNCS), pair),
    )


def _grow(children):
    """Allowed constructs, and forbidden ones (which make the tree bad)."""
    pair = st.tuples(children, children)
    bad_templates = st.sampled_from([
        "({a} % {b})", "({a} // {b})", "({a} @ {b})", "({a} << {b})", "({a} | {b})", "({a} & {b})",
        "({a} ^ {b})", "({a} and {b})", "({a} or {b})", "({a} < {b})", "({a} == {b})", "({a} is {b})",
        "({a} in {b})", "({a} not in {b})", "(~{a})", "(not {a})",
        "({a}).real", "({a}).__class__", "({a}).__globals__", "({a}).__class__.__bases__[0]",
        "({a})[{b}]", "({a})[::]", "(lambda: {a})", "(lambda q: {a})({b})", "[{a} for q in ()]",
        "sum({a} for q in ())", "{{q: {a} for q in ()}}", "({a} if {b} else {a})", "(q := {a})",
        "[{a}, {b}]", "({a}, {b})", "{{{a}}}", "{{{a}: {b}}}", "({a}) ** (9**9**9)", "{a} * 10**400",
        "f'{{{a}}}'", "sin(x={a})", "sin(*{a})", "sin({a})({b})", "sin({a}, {b}, {a})", "hypot({a})",
        "'a' * {a}", "{a}; {b}", "{a}\n{b}", "({a}) if 1 else 2", "await {a}", "({a}).__reduce__()",
    ])
    bad = st.one_of(
        st.builds(lambda t, ab: (t.format(a=ab[0][0], b=ab[1][0]), True), bad_templates, pair),
        st.builds(lambda f, ab: (_call(f, [ab[0][0], ab[1][0]][: 1 + (f in ("getattr", "pow"))]), True),
                  st.sampled_from(_OTHER_CALLEES), pair),
    )
    return st.one_of(_grow_good(children), _grow_good(children), bad)


_good_leaf = st.tuples(_GOOD_LEAVES, st.just(False))
good_trees = st.recursive(_good_leaf, _grow_good, max_leaves=12)
mixed_trees = st.recursive(st.one_of(_good_leaf, _good_leaf, st.tuples(_BAD_LEAVES, st.just(True))),
                           _grow, max_leaves=12)
trees = st.one_of(good_trees, mixed_trees)


def _check_tree(prop: str, text: str, bad: bool) -> None:
    message = _check(prop, text)
    if bad:
        assert message is not None, f"forbidden construct accepted: {text!a}"
        FORBIDDEN[prop] += 1
    elif message is not None:
        assert any(reason in message for reason in SIZE_OR_VALUE), (ascii(text), message)


@settings(FUZZ, max_examples=1200)
@given(tree=trees)
def test_grammar_trees_are_accepted_or_refused_by_construction(tree):
    _check_tree("b_grammar_trees", *tree)


_WRAPS = ["({})", "-{}", "+{}", "sin({})", "(-{})", "--{}", "max({}, 1)", "[{}]", "x.{}"]


@settings(FUZZ, max_examples=300)
@given(tree=trees, wrap=st.sampled_from(_WRAPS),
       depth=st.one_of(st.integers(MAX_DEPTH - 8, MAX_DEPTH + 8), st.sampled_from([200, 1000, 3000])))
def test_deep_nesting_near_and_beyond_max_depth(tree, wrap, depth):
    text, bad = tree
    left, right = wrap.split("{}")
    nested = "x." * depth + "real" if wrap == "x.{}" else left * depth + text + right * depth
    _check_tree("b_deep_nesting", nested, bad or wrap in ("[{}]", "x.{}"))


def _balanced(leaves: list[str]) -> str:
    if len(leaves) == 1:
        return leaves[0]
    mid = len(leaves) // 2
    return f"({_balanced(leaves[:mid])} + {_balanced(leaves[mid:])})"


@settings(FUZZ, max_examples=120)
@given(n=st.integers(400, 2000), leaf=st.sampled_from(["x", "(x*2)", "sin(y)", "1.5", "a1"]),
       bad=st.one_of(st.none(), st.tuples(st.integers(0, 1999), _BAD_LEAVES)),
       pad=st.sampled_from(["", " ", "\t\n", "\u00a0\u3000"]))
def test_long_inputs_near_max_length(n, leaf, bad, pad):
    leaves = [leaf] * n
    if bad is not None:
        leaves[bad[0] % n] = bad[1]
    text = pad + _balanced(leaves).replace(" + ", f"{pad} +{pad} ") + pad
    message = _check("b_long_inputs", text)
    if len(_normalised(text)) > MAX_LENGTH:
        assert message is not None and "too long" in message
    elif bad is not None:
        assert message is not None, ascii(text)[:300]
        FORBIDDEN["b_long_inputs"] += 1
    else:
        assert message is None or any(reason in message for reason in SIZE_OR_VALUE), message


# --- (c) known hostile inputs ------------------------------------------------------------

HOSTILE = [
    "__import__('os').system('id')",
    f"__import__('os').system('touch {SENTINEL}')",
    "().__class__.__bases__[0].__subclasses__()",
    "(lambda: 1)()",
    "9**9**9**9",
    "'a'*10**9",
    "(" * 1000 + "x" + ")" * 1000,
    "x" * 1_000_000,
    "x + " + "1" * 1_000_000,
    "'" + "a" * 1_000_000 + "'",
    "x.real",
    "exp.__globals__",
    "sin.__self__",
    "[x for x in ()]",
    "open('/etc/passwd')",
    f"open({SENTINEL!r}, 'w')",
    f"open({SENTINEL!r}, 'w').write('x')",
    "breakpoint()",
    "getattr(x,'y')",
    "eval('1')",
    "exec('import os')",
    "compile('1', 'f', 'eval')",
    "globals()",
    "vars()",
    "__builtins__",
    "__import__",
    "x.__class__.__mro__[-1].__subclasses__()",
    "sin(x).__class__",
    "f\"{__import__('os').system('id')}\"",
    "[].__class__.__base__",
    "{}.__class__",
    "sin(x)(1)",
    "min(*[x, y])",
    "sin(x=1)",
    "(x := 1)",
    "x if x else y",
    "10**10**10",
    "1e999",
    "-1e999 + x",
    "0**-1 + x",
    "(-1)**0.5 + x",
    "9" * 5000,
    "-" * 9000 + "x",
    "x" + "**x" * 3000,
    "not " * 2400 + "x",
    "lambda:" * 1400 + "x",
    "sin(" * 200 + "x" + ")" * 200,
    "x\u0445 + x",
    "\u0445 + x",
    "\uff45\uff58\uff50(x)",
    "\U0001d41e\U0001d431\U0001d429(x)",
    "\u0455in(x)",
    "\u03bf + o",
    "x \u2212 1",
    "x\u202e + 1",
    "x\u200b + 1",
    "x + \udcff",
    "x\x00",
    "\x1b[31mx",
    "x\n+ __import__('os')",
    "# x",
    "x # comment",
    "1if x else 2",
    "x + 0x1for",
    "\\\nx",
]


@pytest.mark.parametrize("text", HOSTILE, ids=[ascii(h[:24]) for h in HOSTILE])
def test_known_hostile_inputs_are_refused(text):
    assert _check("c_hostile", text) is not None, ascii(text)[:200]
    FORBIDDEN["c_hostile"] += 1


def _import_missing() -> None:
    try:
        __import__("objectives.no_such_module_for_the_audit_control")
    except ImportError:
        pass


@pytest.mark.parametrize("evil", [
    lambda: eval("1 + 1"),  # the control: what the parser must never do
    lambda: open(SENTINEL + "-control", "w").close(),
    _import_missing,
], ids=["eval", "open", "import"])
def test_the_audit_check_catches_a_parser_that_executes(evil, monkeypatch):
    real = parse_expression
    monkeypatch.setattr(sys.modules[__name__], "parse_expression",
                        lambda text, variables=None: (evil(), real(text, variables))[1])
    try:
        with pytest.raises(AssertionError, match="audit events"):
            _check("control", "x + 1")
    finally:
        if os.path.exists(SENTINEL + "-control"):
            os.remove(SENTINEL + "-control")
