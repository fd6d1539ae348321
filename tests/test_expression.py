"""Tests for objectives.expression: values, gradients, variables, hostile input."""
from __future__ import annotations

import math
import operator

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from objectives.expression import (
    ALLOWED_FUNCTIONS,
    CONSTANTS,
    Expression,
    ExpressionError,
    free_names,
    parse_expression,
)

F64 = torch.float64


def _value_and_grad(fn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    y = fn(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    return y.detach(), g


# (expression, variables, the same math written directly in torch on columns of x)
CASES = [
    ("x**2 + y**2", ("x", "y"), lambda x: x[..., 0] ** 2 + x[..., 1] ** 2),
    ("(1 - x)**2 + 100*(y - x**2)**2", ("x", "y"),
     lambda x: (1 - x[..., 0]) ** 2 + 100 * (x[..., 1] - x[..., 0] ** 2) ** 2),
    ("sin(x)*cos(y) + exp(-x/2) - tanh(y)", ("x", "y"),
     lambda x: torch.sin(x[..., 0]) * torch.cos(x[..., 1]) + torch.exp(-x[..., 0] / 2)
     - torch.tanh(x[..., 1])),
    ("sqrt(x**2 + 1) * log(y**2 + 2) + abs(z) - pi*e", ("x", "y", "z"),
     lambda x: torch.sqrt(x[..., 0] ** 2 + 1) * torch.log(x[..., 1] ** 2 + 2)
     + torch.abs(x[..., 2]) - math.pi * math.e),
    ("-x + +y / (1 + z**2) + 2**x", ("x", "y", "z"),
     lambda x: -x[..., 0] + x[..., 1] / (1 + x[..., 2] ** 2) + 2 ** x[..., 0]),
    ("min(x, y) + max(x, 0.5) + hypot(x, y) + atan2(y, x) + pow(x**2 + 1, 0.5)", ("x", "y"),
     lambda x: torch.minimum(x[..., 0], x[..., 1])
     + torch.maximum(x[..., 0], torch.tensor(0.5, dtype=F64))
     + torch.hypot(x[..., 0], x[..., 1]) + torch.atan2(x[..., 1], x[..., 0])
     + torch.pow(x[..., 0] ** 2 + 1, 0.5)),
    ("sigmoid(x) + log1p(x**2) + expm1(y/10) + sinh(x/3) + cosh(y/3) + atan(x)", ("x", "y"),
     lambda x: torch.sigmoid(x[..., 0]) + torch.log1p(x[..., 0] ** 2)
     + torch.expm1(x[..., 1] / 10) + torch.sinh(x[..., 0] / 3) + torch.cosh(x[..., 1] / 3)
     + torch.atan(x[..., 0])),
]


@pytest.mark.parametrize("shape", [(4,), (2, 3)])
@pytest.mark.parametrize("text,variables,direct", CASES, ids=[c[0] for c in CASES])
def test_values_and_gradients_match_direct_torch(text, variables, direct, shape):
    expr = parse_expression(text)
    assert expr.variables == variables
    assert expr.sources == (text,)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, len(variables), dtype=F64, generator=gen)
    got, got_grad = _value_and_grad(expr, x)
    want, want_grad = _value_and_grad(direct, x)
    assert got.shape == shape and got.dtype == F64
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-12, atol=1e-12)


def test_float32_input_keeps_dtype():
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float32)
    y = parse_expression("x*pi + y")(x)
    assert y.dtype == torch.float32
    assert y.item() == pytest.approx(math.pi + 2, rel=1e-6)


def test_shifted_quadratic_minimum():
    expr = parse_expression("(a-1)**2 + 3*(b+2)**2")
    assert expr.variables == ("a", "b")
    value, grad = _value_and_grad(expr, torch.tensor([[1.0, -2.0]], dtype=F64))
    assert value.tolist() == [0.0]
    assert grad.tolist() == [[0.0, 0.0]]
    value, grad = _value_and_grad(expr, torch.tensor([[2.0, 0.0]], dtype=F64))
    assert value.tolist() == [1.0 + 12.0]
    assert grad.tolist() == [[2.0, 12.0]]


def test_target_list_sums_and_gradients():
    expr = parse_expression(["3*x", "x**2"])
    assert expr.sources == ("3*x", "x**2") and expr.variables == ("x",)
    x = torch.tensor([[5.0]], dtype=F64, requires_grad=True)
    t1, t2 = expr.targets(x)
    assert t1.tolist() == [15.0] and t2.tolist() == [25.0]
    assert expr(x).tolist() == [40.0]
    assert torch.autograd.grad(expr(x).sum(), x)[0].item() == 13.0
    assert torch.autograd.grad(t1.sum(), x, retain_graph=True)[0].item() == 3.0
    assert torch.autograd.grad(t2.sum(), x)[0].item() == 10.0


def test_constant_target_has_batch_shape_and_sums():
    x = torch.full((2, 3, 1), 2.0, dtype=F64, requires_grad=True)
    expr = parse_expression(["3", "x**2", "2*pi"])
    t = expr.targets(x)
    assert [v.shape for v in t] == [torch.Size([2, 3])] * 3
    assert torch.equal(t[0], torch.full((2, 3), 3.0, dtype=F64))
    y = expr(x)
    torch.testing.assert_close(y, torch.full((2, 3), 7.0 + 2 * math.pi, dtype=F64))
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(g, torch.full((2, 3, 1), 4.0, dtype=F64))
    only_const = parse_expression("2**10")
    assert only_const.variables == ()
    assert only_const(torch.zeros(4, 0)).tolist() == [1024.0] * 4


def test_variables_order_extra_and_unknown():
    expr = parse_expression("a - 2*b", variables=["b", "a"])
    assert expr.variables == ("b", "a")
    assert expr(torch.tensor([[1.0, 10.0]])).tolist() == [8.0]
    extra = parse_expression("a**2", variables=["a", "unused"])
    x = torch.tensor([[3.0, 7.0]], dtype=F64, requires_grad=True)
    assert extra(x).tolist() == [9.0]
    assert torch.autograd.grad(extra(x).sum(), x)[0].tolist() == [[6.0, 0.0]]
    with pytest.raises(ExpressionError, match=r"unknown variables c, d .*\[a, b\]"):
        parse_expression("a + b + c*d", variables=["a", "b"])
    with pytest.raises(ExpressionError, match="duplicate"):
        parse_expression("a", variables=["a", "a"])
    with pytest.raises(ExpressionError, match="'pi'"):
        parse_expression("a", variables=["a", "pi"])
    with pytest.raises(ExpressionError, match="'sin'"):
        parse_expression("sin + 1")
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        parse_expression("a + b")(torch.zeros(3, 1))


def test_pickle_and_deepcopy_reparse():
    import copy
    import pickle

    expr = parse_expression(["a*b", "b**2"], variables=["b", "a", "c"])
    x = torch.tensor([[2.0, 3.0, 0.0]])
    for clone in (pickle.loads(pickle.dumps(expr)), copy.deepcopy(expr)):
        assert clone == expr
        assert clone(x).tolist() == [10.0]


def test_free_names_and_public_tables():
    assert free_names("sin(beta) * x + pi*e + alpha") == ["alpha", "beta", "x"]
    assert free_names(["3*x", "y**2", "x"]) == ["x", "y"]
    assert {"sin", "cos", "exp", "log", "sqrt", "tanh", "abs"} <= set(ALLOWED_FUNCTIONS)
    assert CONSTANTS == {"pi": math.pi, "e": math.e}
    x = parse_expression("x")
    assert isinstance(x, Expression) and x.variables == ("x",) and x.sources == ("x",)
    assert x(torch.tensor([[1.5], [-2.0]])).tolist() == [1.5, -2.0]
    assert issubclass(ExpressionError, ValueError)


HOSTILE = [
    ("__import__('os').system('ls')", "attribute access"),
    ("__import__('os')", "'__import__'"),
    ("open('/etc/passwd').read()", "attribute access"),
    ("open('f')", "'open'"),
    ("x.__class__.__bases__", "attribute access"),
    ("().__class__", "attribute access"),
    ("[c for c in ()]", "comprehension"),
    ("lambda: 1", "lambda"),
    ("x[0]", "subscripting"),
    ("'a'*9", "string"),
    ("9**9**9**9", "too large"),
    ("eval('1')", "'eval'"),
    ("exec('1')", "'exec'"),
    ("getattr(x, 'y')", "'getattr'"),
    ("_x + 1", "'_'"),
    ("sin(x, y)", "takes 1 argument, got 2"),
    ("sin(x=1)", "keyword"),
    ("sin(*x)", "starred"),
    ("x if x else 1", "conditional"),
    ("x < 1", "comparison"),
    ("x and y", "and/or"),
    ("(x := 2)", ":="),
    ("f'{x}'", "f-string"),
    ("[x, 1]", "list"),
    ("(x, 1)", "tuple"),
    ("{x: 1}", "dict"),
    ("{x}", "set"),
    ("x % 2", "%"),
    ("~x", "~"),
    ("True + x", "boolean"),
    ("1j * x", "complex"),
    ("pi(x)", "'pi'"),
    ("1/0 + x", "finite"),
    ("x + 1e400", "finite"),
    ("", "empty"),
    ("   ", "empty"),
    ("1 +", "cannot parse '1 \\+'.*column"),
    ("(" * 500 + "x" + ")" * 500, "nested too deeply"),
    ("-" * 5000 + "x", "nested too deeply"),
    ("x" + " + x" * 2000, "nested too deeply"),
    ("x + " * 3000 + "x", "too long"),
    ("9" * 5000, "too many digits"),
    ("x**2 # + y**2", r"comment \(#\) is not allowed, at column 6"),
    ("x + 1if x else 2", "cannot parse 'x \\+ 1if x else 2': invalid decimal literal at column 5"),
    ("x" + " " * 200_000, "too long"),
]


@pytest.mark.parametrize("text,needle", HOSTILE, ids=[repr(h[0][:30]) for h in HOSTILE])
def test_hostile_inputs_raise_one_line_error(text, needle):
    with pytest.raises(ExpressionError, match=needle) as info:
        parse_expression(text)
    message = str(info.value)
    assert "\n" not in message and message.startswith("objective.expr")
    with pytest.raises(ExpressionError):
        free_names(text)


def test_error_quotes_segment_and_lists_allowed():
    with pytest.raises(ExpressionError) as info:
        parse_expression("x.__class__ + 1")
    msg = str(info.value)
    assert "'x.__class__'" in msg and "allowed:" in msg and "sin" in msg and "**" in msg
    with pytest.raises(ExpressionError, match=r"objective\.expr\[1\]: .*'y\[0\]'"):
        parse_expression(["x", "y[0]"])
    with pytest.raises(ExpressionError, match="empty"):
        parse_expression([])
    with pytest.raises(ExpressionError, match="9\\*\\*9"):
        parse_expression("x * 9**9**9**9")


def test_constant_folding_is_bounded_but_exact():
    assert parse_expression("2**10 + x")(torch.zeros(1, 1)).tolist() == [1024.0]
    assert parse_expression("x * 10**300")(torch.ones(1, 1, dtype=F64)).item() == 1e300
    assert parse_expression("x + 0.5**2000")(torch.zeros(1, 1, dtype=F64)).item() == 0.0
    with pytest.raises(ExpressionError, match="too large"):
        parse_expression("x * 10**400")
    with pytest.raises(ExpressionError, match="too large"):
        parse_expression("x ** (0.5**-2000)")
    with pytest.raises(ExpressionError, match="finite"):
        parse_expression("x + sqrt(-1)")
    with pytest.raises(ExpressionError, match="float range"):
        parse_expression("x + 1" + "0" * 400)


# --- property test: random trees vs. direct torch evaluation -----------------

_BIN = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
        "**": operator.pow}
_FUN = {name: ALLOWED_FUNCTIONS[name] for name in ("sin", "cos", "exp", "tanh", "abs", "sqrt",
                                                   "log", "sigmoid", "atan")}
_consts = st.sampled_from([0.5, 1.0, 2.0, 3.0, 0.25, 1.5, -1.0, -2.5, 10.0])


def _trees(leaf_vars=st.sampled_from(["a", "b"])):
    """Trees with a variable in every non-leaf node, so nothing folds to a non-finite constant."""
    def extend(children):
        return st.one_of(
            st.tuples(st.just("bin"), st.sampled_from(sorted(_BIN)), children, children),
            st.tuples(st.just("bin"), st.sampled_from(sorted(_BIN)), children, _consts),
            st.tuples(st.just("bin"), st.sampled_from(sorted(_BIN)), _consts, children),
            st.tuples(st.just("neg"), children),
            st.tuples(st.just("call"), st.sampled_from(sorted(_FUN)), children),
        )
    return st.recursive(leaf_vars, extend, max_leaves=8)


def _text(tree) -> str:
    if isinstance(tree, str):
        return tree
    if isinstance(tree, float):
        return f"({tree!r})"
    if tree[0] == "bin":
        return f"({_text(tree[2])} {tree[1]} {_text(tree[3])})"
    if tree[0] == "neg":
        return f"(-{_text(tree[1])})"  # outer parens: -a**2 would mean -(a**2)
    return f"{tree[1]}({_text(tree[2])})"


def _direct(tree, x: torch.Tensor):
    if isinstance(tree, str):
        return x[..., "ab".index(tree)]
    if isinstance(tree, float):
        return tree
    if tree[0] == "bin":
        return _BIN[tree[1]](_direct(tree[2], x), _direct(tree[3], x))
    if tree[0] == "neg":
        return -_direct(tree[1], x)
    return _FUN[tree[1]](_direct(tree[2], x))


@settings(max_examples=200, deadline=None)
@given(tree=_trees(), data=st.lists(st.floats(-3, 3), min_size=6, max_size=6))
def test_random_trees_match_direct_torch(tree, data):
    x = torch.tensor(data, dtype=F64).reshape(3, 2)
    expr = parse_expression(_text(tree), variables=["a", "b"])
    got = expr(x)
    want = _direct(tree, x)
    if not isinstance(want, torch.Tensor) or want.shape != (3,):
        want = torch.as_tensor(want, dtype=F64).expand(3)
    assert got.shape == (3,)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0, equal_nan=True)


# --- characters: ASCII only, Unicode spaces read as a space -------------------

UNICODE = [
    ("\u0445x + x", ("objective.expr: the name '\u0445x' has the non-ASCII character '\u0445' "
      "(U+0445 CYRILLIC SMALL LETTER HA); names must be ASCII letters, digits and _")),
    ("\uff45\uff58\uff50(x)", ("objective.expr: the name '\uff45\uff58\uff50' has the non-ASCII character "
      "'\uff45' (U+FF45 FULLWIDTH LATIN SMALL LETTER E); names must be ASCII letters, digits and _ "
      "(did you mean 'exp'?)")),
    ("\U0001d431 + x", ("objective.expr: the name '\U0001d431' has the non-ASCII character '\U0001d431' "
      "(U+1D431 MATHEMATICAL BOLD SMALL X); names must be ASCII letters, digits and _ (did you mean 'x'?)")),
    ("2*\u03c0", ("objective.expr: the name '\u03c0' has the non-ASCII character '\u03c0' "
      "(U+03C0 GREEK SMALL LETTER PI); names must be ASCII letters, digits and _ (did you mean 'pi'?)")),
    ("x \u00d7 y", ("objective.expr: the character '\u00d7' (U+00D7 MULTIPLICATION SIGN) at column 3 "
      "is not allowed; expressions must be ASCII (write * instead)")),
    ("x \u2212 1", ("objective.expr: the character '\u2212' (U+2212 MINUS SIGN) at column 3 "
      "is not allowed; expressions must be ASCII (write - instead)")),
    ("x\u00b2", ("objective.expr: the character '\u00b2' (U+00B2 SUPERSCRIPT TWO) at column 2 "
      "is not allowed; expressions must be ASCII (write **2 instead)")),
    ("x\uff0b1", ("objective.expr: the character '\uff0b' (U+FF0B FULLWIDTH PLUS SIGN) at column 2 "
      "is not allowed; expressions must be ASCII (write + instead)")),
    ("x + \udcff", ("objective.expr: the byte 0xff at column 5 is not UTF-8 text "
      "(Python read it as '\\udcff'); expressions must be ASCII")),
    ("x + \ud800", ("objective.expr: the lone surrogate '\\ud800' (U+D800) at column 5 is not a character; "
      "expressions must be ASCII")),
    ("x\x00", ("objective.expr: the control character '\\x00' (U+0000) at column 2 is not allowed; "
      "expressions must be printable ASCII")),
    ("x\x0c+ 1", ("objective.expr: the control character '\\x0c' (U+000C) at column 2 is not allowed; "
      "expressions must be printable ASCII")),
    ("x\u202e + 1", ("objective.expr: the invisible format character '\\u202e' (U+202E RIGHT-TO-LEFT "
      "OVERRIDE) at column 2 is not allowed; expressions must be printable ASCII")),
    ("x\u0301", ("objective.expr: the name 'x\u0301' has the non-ASCII character '\\u0301' "
      "(U+0301 COMBINING ACUTE ACCENT); names must be ASCII letters, digits and _")),
]


@pytest.mark.parametrize("text,message", UNICODE, ids=[ascii(u[0]) for u in UNICODE])
def test_non_ascii_is_refused_naming_the_character(text, message):
    with pytest.raises(ExpressionError) as info:
        parse_expression(text)
    assert str(info.value) == message
    message.encode("utf-8")  # no lone surrogates: printable on a UTF-8 (or, escaped, ASCII) stderr


def test_unicode_spaces_read_as_one_space():
    expr = parse_expression("x\u00a0+\u3000y\t\n\r\u2003* 2  ")
    assert expr.sources == ("x + y * 2",) and expr.variables == ("x", "y")


def test_space_table_is_exactly_ascii_whitespace_and_category_zs():
    import sys
    import unicodedata

    from objectives.expression import _SPACES

    spaces = {chr(c) for c in range(sys.maxunicode + 1) if _SPACES.fullmatch(chr(c))}
    zs = {chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Zs"}
    assert spaces == zs | set("\t\n\r")


def test_variables_must_be_ascii_non_keyword_names():
    with pytest.raises(ExpressionError, match=r"^objective\.vars: the name '\uff58' .*did you mean 'x'"):
        parse_expression("1", variables=["\uff58"])
    invalid = r"^objective\.vars: .* is not a valid variable name$"
    for bad in ("if", "\udcff", "1x"):
        with pytest.raises(ExpressionError, match=invalid) as err:
            parse_expression("1", variables=[bad])
        str(err.value).encode("ascii")


@pytest.mark.parametrize("text", ["x", "(((x)))", "+x", "+(+y)", "(+(x))"])
def test_bare_variable_returns_a_copy_with_the_same_gradient(text):
    expr = parse_expression(text, variables=["x", "y"])
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=F64, requires_grad=True)
    j = 1 if "y" in text else 0
    for value in (expr(x), expr.targets(x)[0]):
        assert value._base is None and value.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
        assert value.tolist() == x[:, j].tolist()
        (grad,) = torch.autograd.grad(value.sum(), x)
        assert grad.tolist() == [[1.0 - j, float(j)]] * 2
    value, before = expr(x.detach()), x[:, j].tolist()
    x.data[:, j] = 100.0  # a descent step in place: the value already returned does not change
    assert value.tolist() == before
