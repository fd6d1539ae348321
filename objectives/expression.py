"""Safe arithmetic expressions -> batched torch functions.

A user's objective such as ``"(a-1)**2 + 3*(b+2)**2"`` comes from a config file
or the command line, so it is untrusted text.  It is never passed to
``eval``/``exec``/``compile``: it is parsed with ``ast.parse(text, mode="eval")``
and the tree is walked against a whitelist.  The grammar is::

    expr  := number | name | constant | expr OP expr | ("-" | "+") expr
           | "(" expr ")" | FUNC "(" expr ("," expr)* ")"
    OP    := "+" | "-" | "*" | "/" | "**"

where *number* is an int or float literal (not bool, not complex), *name* is a
variable (an identifier not starting with ``_`` and not a function/constant
name), *constant* is one of ``CONSTANTS`` and *FUNC* one of
``ALLOWED_FUNCTIONS`` called by bare name with positional arguments only.
Anything else (attributes, subscripts, other calls, strings, lambdas,
comprehensions, comparisons, ``#`` comments, ...) raises :class:`ExpressionError`.

Cost bound: the text is limited to ``MAX_LENGTH`` characters (once each run
of spaces is one space; the raw text to ten times that) and ``MAX_DEPTH``
levels of nesting; constant sub-expressions are folded once, at
parse time, in float64 (never with Python's unbounded ``int ** int``), and a
constant power whose value would exceed float range (``9**9**9**9``) or any
non-finite constant is rejected.  Parsing therefore always finishes quickly.

Characters: an expression is ASCII text.  Spaces, tabs and newlines separate
tokens, and so do the Unicode space characters (category Zs, e.g. the no-break
space U+00A0 or the ideographic space U+3000): each run of them reads as one
space.  Every other character outside printable ASCII is refused with one line
that names it, its code point and its Unicode name:

* in a name: ``objective.expr: the name 'хx' has the non-ASCII character 'х'
  (U+0445 CYRILLIC SMALL LETTER HA); names must be ASCII letters, digits and _``.
  Names are ASCII letters, digits and ``_`` (not starting with a digit or
  ``_``).  This refuses look-alikes (Cyrillic ``х``, Greek ``ο``) and also the
  compatibility forms that Python's own parser would silently fold into ASCII
  names by NFKC normalisation (fullwidth ``ｅｘｐ``, mathematical ``𝐱``, the
  ligature ``ﬁ``): folding them would make two different-looking texts the same
  variable, so they are refused too, and when the NFKC form of the name is ASCII
  the message suggests it (``did you mean 'exp'?``);
* elsewhere: ``objective.expr: the character '×' (U+00D7 MULTIPLICATION SIGN)
  at column 3 is not allowed; expressions must be ASCII (write * instead)``.
  The Unicode minus U+2212 and the dashes are refused the same way (write -);
* control and invisible format characters (``\x07``, U+202E) and bytes that
  were not UTF-8 (which Python hands over as lone surrogates, ``\udcff`` for
  the byte 0xff) are refused the same way.  Such characters are shown escaped,
  so every message can be printed on a UTF-8 or ASCII stderr.

The result is a tree of small closures built once; each maps a batch ``x`` of
shape ``(..., d)`` to a tensor of shape ``(...)``.  Variable ``j`` is
``x[..., j]``; numbers stay Python floats so they keep the input dtype/device.
An expression that is only a variable (``x``, ``(((x)))``, ``+x``) returns a
copy of that column, never a view of the input, so a caller that changes the
input in place (a descent step) does not change a value it already holds;
gradients are those of ``x[..., j]``.
"""
from __future__ import annotations

import ast
import keyword
import math
import operator
import re
import unicodedata
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence, Union

import torch

__all__ = ["ExpressionError", "ALLOWED_FUNCTIONS", "CONSTANTS", "Expression",
           "parse_expression", "free_names", "MAX_LENGTH", "MAX_DEPTH"]

MAX_LENGTH = 10_000   # characters per expression
MAX_DEPTH = 100       # nesting levels (syntax tree depth and bracket depth)
_MAX_LOG10 = 300.0    # |constant power| must stay below 10**300 (float64 max ~1.8e308)
_PREFIX = "objective.expr"


class ExpressionError(ValueError):
    """One-line, user-facing message: says what is wrong and what is allowed."""


_UNARY = ["sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh", "exp", "expm1",
          "log", "log2", "log10", "log1p", "sqrt", "abs", "sigmoid"]
ALLOWED_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    **{name: getattr(torch, name) for name in _UNARY},
    "min": torch.minimum, "max": torch.maximum, "pow": torch.pow,
    "atan2": torch.atan2, "hypot": torch.hypot,
}
_ARITY: dict[str, int] = {name: (1 if name in _UNARY else 2) for name in ALLOWED_FUNCTIONS}
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}

_BINOPS: dict[type, Callable] = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
                                 ast.Div: operator.truediv, ast.Pow: operator.pow}
_FORBIDDEN: dict[type, str] = {
    ast.Attribute: "attribute access", ast.Subscript: "subscripting", ast.Lambda: "lambda",
    ast.ListComp: "a comprehension", ast.SetComp: "a comprehension", ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a generator expression", ast.Compare: "a comparison",
    ast.BoolOp: "boolean and/or", ast.IfExp: "a conditional (if/else) expression",
    ast.NamedExpr: "an assignment expression (:=)", ast.JoinedStr: "an f-string",
    ast.List: "a list", ast.Tuple: "a tuple", ast.Dict: "a dict", ast.Set: "a set",
    ast.Starred: "a starred argument", ast.Await: "await", ast.Yield: "yield",
    ast.YieldFrom: "yield", ast.Slice: "a slice", ast.FormattedValue: "an f-string",
}
_OPERATOR_TEXT: dict[type, str] = {
    ast.Mod: "%", ast.FloorDiv: "//", ast.MatMult: "@", ast.LShift: "<<", ast.RShift: ">>",
    ast.BitOr: "|", ast.BitXor: "^", ast.BitAnd: "&", ast.Not: "not", ast.Invert: "~",
}
_LITERALS: dict[type, str] = {bool: "a boolean", str: "a string", bytes: "a bytes literal",
                              complex: "a complex number"}
_ALLOWED_TEXT = ("allowed: numbers, variables, + - * / **, unary - and +, parentheses, the constants "
                 + ", ".join(sorted(CONSTANTS)) + ", and the functions "
                 + ", ".join(sorted(ALLOWED_FUNCTIONS)))

Value = Union[torch.Tensor, float]
Node = Union[float, Callable[[torch.Tensor], Value]]  # a folded constant or a closure


def _quote(text: str, limit: int = 80, show: Callable[[str], str] = ascii) -> str:
    return show(text if len(text) <= limit else text[: limit - 3] + "...")


# Runs of these read as one space: ASCII space, tab, newline, CR and the Unicode
# space separators (category Zs; tests check this list against ``unicodedata``).
_SPACES = re.compile("[ \t\n\r\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]+")
_NOT_ASCII = re.compile("[^\x20-\x7e]")  # after _SPACES: anything outside printable ASCII
_HINTS = {"\u00d7": "*", "\u00b7": "*", "\u22c5": "*", "\u2219": "*", "\u00f7": "/", "\u2215": "/",
          "\u2212": "-", "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-",
          "\u00b2": "**2", "\u00b3": "**3", "\u03c0": "pi", "\u221a": "sqrt(...)"}
_CATEGORY_TEXT = {"Cc": "the control character", "Cf": "the invisible format character",
                  "Co": "the private-use character", "Cn": "the unassigned code point"}


def _show(ch: str) -> str:
    """``ch`` quoted for a message: escaped when it is invisible, combining or not encodable."""
    visible = unicodedata.category(ch)[0] not in "CMZ"
    return f"'{ch}'" if visible else ascii(ch)


def _describe(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X}" + (f" {name}" if name else "")


def _is_name_char(ch: str) -> bool:
    return ("_" + ch).isidentifier()


def _name_error(prefix: str, name: str) -> ExpressionError | None:
    """The error for a non-ASCII name (``None`` if the name is ASCII)."""
    bad = _NOT_ASCII.search(name)
    if bad is None:
        return None
    ch = bad.group()
    folded = _HINTS.get(name, unicodedata.normalize("NFKC", name))
    hint = f" (did you mean {folded!r}?)" if folded.isascii() and folded.isidentifier() else ""
    return ExpressionError(f"{prefix}: the name {_quote(name, show=repr)} "
                           f"has the non-ASCII character {_show(ch)} ({_describe(ch)}); "
                           f"names must be ASCII letters, digits and _{hint}")


def _character_error(prefix: str, source: str, i: int) -> ExpressionError:
    """The error for the character ``source[i]``, which is not printable ASCII."""
    ch = source[i]
    at = f"at column {i + 1}"
    if 0xDC80 <= ord(ch) <= 0xDCFF:  # surrogateescape: a byte that was not UTF-8
        return ExpressionError(f"{prefix}: the byte 0x{ord(ch) - 0xDC00:02x} {at} is not UTF-8 text "
                               f"(Python read it as {ch!a}); expressions must be ASCII")
    if 0xD800 <= ord(ch) <= 0xDFFF:
        return ExpressionError(f"{prefix}: the lone surrogate {ch!a} (U+{ord(ch):04X}) {at} is not "
                               f"a character; expressions must be ASCII")
    category = unicodedata.category(ch)
    if category in _CATEGORY_TEXT:
        return ExpressionError(f"{prefix}: {_CATEGORY_TEXT[category]} {_show(ch)} ({_describe(ch)}) {at} "
                               f"is not allowed; expressions must be printable ASCII")
    if _is_name_char(ch):
        start, end = i, i + 1
        while start > 0 and _is_name_char(source[start - 1]):
            start -= 1
        while end < len(source) and _is_name_char(source[end]):
            end += 1
        while start < i and source[start].isdigit():  # '2x' is a number then a name
            start += 1
        error = _name_error(prefix, source[start:end])
        assert error is not None
        return error
    folded = unicodedata.normalize("NFKC", ch)
    hint = _HINTS.get(ch, folded if folded.isascii() and folded.isprintable() else "")
    return ExpressionError(f"{prefix}: the character {_show(ch)} ({_describe(ch)}) {at} is not allowed; "
                           f"expressions must be ASCII" + (f" (write {hint} instead)" if hint else ""))


class _Compiler:
    """Walks one parsed expression against the whitelist and builds closures."""

    def __init__(self, source: str, prefix: str) -> None:
        self.source, self.prefix = source, prefix
        self.names: set[str] = set()
        self.index: dict[str, int] = {}

    def fail(self, what: str, node: ast.AST | None = None, allowed: bool = True) -> ExpressionError:
        where = ast.get_source_segment(self.source, node) if node is not None else None
        msg = f"{self.prefix}: {what}" + (f" in {_quote(where)}" if where else "")
        return ExpressionError(msg + (f" ({_ALLOWED_TEXT})" if allowed else ""))

    def collect(self, node: ast.AST, depth: int = 0) -> None:
        """Validate the tree (whitelist, depth) and record free variable names."""
        if depth > MAX_DEPTH:
            raise self.fail(f"expression is nested too deeply (more than {MAX_DEPTH} levels)",
                            allowed=False)
        if isinstance(node, ast.Expression):
            return self.collect(node.body, depth)
        if isinstance(node, ast.Constant):
            if type(node.value) not in (int, float):
                what = _LITERALS.get(type(node.value), f"the literal {node.value!r}")
                raise self.fail(f"{what} is not allowed", node)
            return None
        if isinstance(node, ast.Name):
            if node.id.startswith("_"):
                raise self.fail("names starting with '_' are not allowed", node)
            if node.id in ALLOWED_FUNCTIONS:
                raise self.fail(f"the function name {node.id!r} cannot be used as a variable "
                                f"(call it like {node.id}(x))")
            if node.id not in CONSTANTS:
                self.names.add(node.id)
            return None
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _BINOPS:
                raise self.fail(f"the operator {_OPERATOR_TEXT.get(type(node.op), '?')} is not allowed", node)
            self.collect(node.left, depth + 1)
            return self.collect(node.right, depth + 1)
        if isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, (ast.USub, ast.UAdd)):
                raise self.fail(f"the operator {_OPERATOR_TEXT.get(type(node.op), '?')} is not allowed", node)
            return self.collect(node.operand, depth + 1)
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                self.collect(node.func, depth + 1)  # report e.g. the attribute access inside
                raise self.fail("calling a non-function expression is not allowed", node)
            name = node.func.id
            if name not in ALLOWED_FUNCTIONS:
                kind = "the constant" if name in CONSTANTS else "the function"
                raise self.fail(f"calling {kind} {name!r} is not allowed", node)
            if node.keywords:
                raise self.fail("keyword arguments are not allowed", node)
            for arg in node.args:
                if isinstance(arg, ast.Starred):
                    raise self.fail("starred arguments are not allowed", node)
            if len(node.args) != _ARITY[name]:
                n = _ARITY[name]
                raise self.fail(f"{name}() takes {n} argument{'s' if n > 1 else ''}, "
                                f"got {len(node.args)}", node)
            for arg in node.args:
                self.collect(arg, depth + 1)
            return None
        what = _FORBIDDEN.get(type(node), f"{type(node).__name__} syntax")
        raise self.fail(f"{what} is not allowed", node)

    def constant(self, value: float, node: ast.AST) -> float:
        if not math.isfinite(value):
            raise self.fail(f"constant {_quote(ast.get_source_segment(self.source, node) or '')} "
                            f"is not a finite number (it evaluates to {value})", allowed=False)
        return value

    def build(self, node: ast.AST) -> Node:
        """Fold constants (float64) and turn the validated tree into closures."""
        if isinstance(node, ast.Constant):
            try:
                return self.constant(float(node.value), node)
            except OverflowError:
                raise self.fail("number exceeds float range", node, allowed=False) from None
        if isinstance(node, ast.Name):
            if node.id in CONSTANTS:
                return CONSTANTS[node.id]
            j = self.index[node.id]
            return lambda x: x[..., j]
        if isinstance(node, ast.UnaryOp):
            inner = self.build(node.operand)
            if isinstance(node.op, ast.UAdd):
                return inner
            if isinstance(inner, float):
                return -inner
            return lambda x: -inner(x)
        if isinstance(node, ast.BinOp):
            fn = _BINOPS[type(node.op)]
            left, right = self.build(node.left), self.build(node.right)
            if isinstance(left, float) and isinstance(right, float):
                if fn is operator.pow and left != 0 and right * math.log10(abs(left)) > _MAX_LOG10:
                    raise self.fail(f"constant power {_quote(ast.get_source_segment(self.source, node) or '')}"
                                    " is too large (its value exceeds float range)", allowed=False)
                return self.fold(fn, [left, right], node)
            return _binary(fn, left, right)
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        func = ALLOWED_FUNCTIONS[node.func.id]
        args = [self.build(a) for a in node.args]
        if all(isinstance(a, float) for a in args):
            return self.fold(func, args, node)
        return _call(func, args)

    def build_root(self, tree: ast.Expression) -> Node:
        """:meth:`build` for a whole expression; a bare variable gives a copy, not a view of ``x``."""
        node, body = self.build(tree.body), tree.body
        while isinstance(body, ast.UnaryOp) and isinstance(body.op, ast.UAdd):
            body = body.operand
        if isinstance(body, ast.Name) and callable(node):
            column = node
            return lambda x: column(x).clone()
        return node

    def fold(self, fn: Callable, args: list, node: ast.AST) -> float:
        """Evaluate a constant sub-expression with the same torch op, in float64."""
        tensors = [torch.tensor(a, dtype=torch.float64) for a in args]
        return self.constant(float(fn(*tensors)), node)


def _binary(fn: Callable, left: Node, right: Node) -> Callable[[torch.Tensor], Value]:
    if isinstance(left, float):
        return lambda x: fn(left, right(x))  # type: ignore[operator]
    if isinstance(right, float):
        return lambda x: fn(left(x), right)  # type: ignore[operator]
    return lambda x: fn(left(x), right(x))  # type: ignore[operator]


def _call(func: Callable, args: list) -> Callable[[torch.Tensor], Value]:
    def run(x: torch.Tensor) -> torch.Tensor:
        vals = [a(x) if callable(a) else torch.tensor(a, dtype=x.dtype, device=x.device) for a in args]
        return func(*vals)
    return run


@dataclass(frozen=True)
class Expression:
    """Compiled objective: the sum of one or more target expressions."""

    sources: tuple[str, ...]
    variables: tuple[str, ...]
    _nodes: tuple[Node, ...] = field(repr=False, compare=False, default=())

    def targets(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each target's value on a batch ``x`` of shape ``(..., d)``; each of shape ``(...)``."""
        if x.dim() == 0 or x.shape[-1] != len(self.variables):
            raise ValueError(f"expression over variables ({', '.join(self.variables)}) expects x of "
                             f"shape (..., {len(self.variables)}), got {tuple(x.shape)}")
        out = []
        for node in self._nodes:
            if isinstance(node, float):
                out.append(torch.full(x.shape[:-1], node, dtype=x.dtype, device=x.device))
            else:
                value = node(x)
                out.append(value if isinstance(value, torch.Tensor) and value.shape == x.shape[:-1]
                           else torch.as_tensor(value, dtype=x.dtype, device=x.device).expand(x.shape[:-1]))
        return out

    def __reduce__(self) -> tuple:
        """Pickle/deepcopy by re-parsing the sources (closures are not picklable)."""
        return (parse_expression, (list(self.sources), self.variables))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The objective: sum of the targets, shape ``x.shape[:-1]``."""
        values = self.targets(x)
        total = values[0]
        for v in values[1:]:
            total = total + v
        return total


def _parse_one(text: object, prefix: str) -> tuple[str, ast.Expression, _Compiler]:
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        text = str(text)
    if not isinstance(text, str):
        raise ExpressionError(f"{prefix}: expected an expression string, got {type(text).__name__}")
    if len(text) > 10 * MAX_LENGTH:  # not worth reading through
        raise ExpressionError(f"{prefix}: expression is too long ({len(text)} > {MAX_LENGTH} characters)")
    source = _SPACES.sub(" ", text).strip(" ")  # one line: newlines/tabs from YAML become spaces
    if not source:
        raise ExpressionError(f"{prefix}: the expression is empty (write e.g. 'x**2 + y**2')")
    if len(source) > MAX_LENGTH:
        raise ExpressionError(f"{prefix}: expression is too long ({len(source)} > {MAX_LENGTH} characters)")
    bad = _NOT_ASCII.search(source)
    if bad is not None:
        raise _character_error(prefix, source, bad.start())
    if "#" in source:  # Python would drop the rest of the line: 'x**2 # + y**2' is not x**2
        raise ExpressionError(f"{prefix}: a comment (#) is not allowed, at column {source.index('#') + 1}")
    level = 0
    for ch in source:  # bracket depth check before the parser can hit its own limits
        level += (ch in "([{") - (ch in ")]}")
        if level > MAX_DEPTH:
            raise ExpressionError(f"{prefix}: expression is nested too deeply (more than {MAX_DEPTH} levels)")
    compiler = _Compiler(source, prefix)
    try:
        with warnings.catch_warnings():  # '1if x' warns on stderr by default: refuse it instead
            warnings.simplefilter("error", SyntaxWarning)
            tree = ast.parse(source, mode="eval")
    except SyntaxError as err:
        reason = err.msg or "invalid syntax"
        if "digits" in reason:  # CPython's int size limit; its hint is not for our users
            reason = "number has too many digits"
        col = err.offset if err.offset and 0 < err.offset <= len(source) else len(source) + 1
        end = " (end of expression)" if col > len(source) else ""
        raise ExpressionError(f"{prefix}: cannot parse {_quote(source)}: {reason} "
                              f"at column {col}{end}") from None
    except (RecursionError, MemoryError):
        raise ExpressionError(f"{prefix}: expression is nested too deeply "
                              f"(more than {MAX_DEPTH} levels)") from None
    compiler.collect(tree)
    return source, tree, compiler


def _parse_all(expr: object) -> list[tuple[str, ast.Expression, _Compiler]]:
    single = isinstance(expr, (str, int, float))
    if not single and (not isinstance(expr, Iterable) or isinstance(expr, Mapping)):
        raise ExpressionError(f"{_PREFIX}: expected an expression string or a list of them, "
                              f"got {type(expr).__name__}")
    texts = [expr] if single else list(expr)  # type: ignore[call-overload]
    if not texts:
        raise ExpressionError(f"{_PREFIX}: the list of expressions is empty (give at least one)")
    return [_parse_one(t, _PREFIX if single else f"{_PREFIX}[{i}]") for i, t in enumerate(texts)]


def parse_expression(expr: str | Sequence[str], variables: Sequence[str] | None = None) -> Expression:
    """Parse one expression or a list of target expressions (objective = their sum).

    ``variables`` fixes the order of the input columns; by default it is the sorted
    free names of all targets.  Raises :class:`ExpressionError` on anything outside
    the grammar in the module docstring.
    """
    parsed = _parse_all(expr)
    free = sorted(set().union(*(c.names for _, _, c in parsed)))
    if variables is None:
        order = tuple(free)
    else:
        order = tuple(variables) if not isinstance(variables, str) else (variables,)
        for v in order:
            if isinstance(v, str) and v.isidentifier():
                error = _name_error("objective.vars", v)
                if error is not None:
                    raise error
            if not isinstance(v, str) or not v.isidentifier() or v.startswith("_") or keyword.iskeyword(v):
                raise ExpressionError(f"objective.vars: {v!a} is not a valid variable name")
            if v in ALLOWED_FUNCTIONS or v in CONSTANTS:
                raise ExpressionError(f"objective.vars: {v!r} is a function or constant name, "
                                      f"not a variable")
        dups = sorted({v for v in order if order.count(v) > 1})
        if dups:
            raise ExpressionError(f"objective.vars: duplicate variables {', '.join(dups)}")
        unknown = [n for n in free if n not in order]
        if unknown:
            raise ExpressionError(f"{_PREFIX}: unknown variables {', '.join(unknown)} "
                                  f"(objective.vars is [{', '.join(order)}]; add them there)")
    nodes = []
    for _, tree, compiler in parsed:
        compiler.index = {name: j for j, name in enumerate(order)}
        nodes.append(compiler.build_root(tree))
    return Expression(tuple(s for s, _, _ in parsed), order, tuple(nodes))


def free_names(expr: str | Sequence[str]) -> list[str]:
    """Sorted free variable names of ``expr`` (not functions/constants); fully validates it."""
    return list(parse_expression(expr).variables)
