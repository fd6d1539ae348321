"""Every built-in objective: its textbook value and gradient at its known minimum, and descent
from its customary start reaching that minimum with a suitable optimizer and step."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_problem as problem

import objectives
from runner.descent.backends import Autograd
from runner.descent.loop import descend
from runner.descent.optimizers import ManualDescent
from runner.errors import UserError

F64 = torch.float64


def lbfgs(params):
    return torch.optim.LBFGS(params, lr=1, max_iter=20, line_search_fn="strong_wolfe")


def test_registry_lists_every_objective():
    assert objectives.names() == ["ackley", "beale", "booth", "f", "g", "himmelblau", "quadratic", "rastrigin", "rosenbrock"]


# name, dim, tolerance on the gradient at the listed minima (Himmelblau's are given to 6 decimals)
MINIMA = [
    ("f", None, 1e-12),
    ("rosenbrock", 2, 0.0),
    ("rosenbrock", 7, 0.0),
    ("himmelblau", None, 1e-4),
    ("beale", None, 0.0),
    ("booth", None, 0.0),
    ("rastrigin", 2, 1e-12),
    ("rastrigin", 5, 1e-12),
    ("ackley", None, 0.0),
    ("quadratic", 4, 0.0),
]


@pytest.mark.parametrize("name, dim, grad_tol", MINIMA)
def test_value_and_gradient_at_the_known_minimum(name, dim, grad_tol):
    spec = objectives.get(name)
    d = dim or spec.default_dim
    for minimum in spec.minima(d):
        x = torch.tensor([minimum], dtype=F64)
        value, grad = Autograd().value_and_grad(spec.fn, x)
        assert abs(float(value) - spec.min_value) < (1e-9 if grad_tol else 1e-15), (name, minimum)
        assert float(grad.abs().max()) <= grad_tol, (name, minimum, grad)


def test_textbook_values_away_from_the_minimum():
    at = lambda name, point: float(objectives.get(name).fn(torch.tensor(point, dtype=F64)))  # noqa: E731
    assert at("f", [1.0]) == 4.0
    assert at("g", [2.0, 3.0]) == 63.0
    assert at("rosenbrock", [-1.2, 1.0]) == pytest.approx(24.2, abs=1e-12)
    assert at("rosenbrock", [0.0, 0.0, 0.0]) == 2.0  # chained: (1 − 0)² twice
    assert at("himmelblau", [0.0, 0.0]) == 170.0
    assert at("beale", [1.0, 1.0]) == pytest.approx(14.203125, abs=1e-12)
    assert at("booth", [0.0, 0.0]) == 74.0
    assert at("rastrigin", [1.0, 1.0]) == pytest.approx(2.0, abs=1e-12)  # 20 + 2 − 20
    assert at("ackley", [1.0, 1.0]) == pytest.approx(3.6253849384403627, abs=1e-12)
    assert at("quadratic", [1.0, 1.0, 1.0]) == 3.0  # ½(1 + 2 + 3)


def test_ackley_reports_the_subgradient_zero_at_its_cone_point():
    value, grad = Autograd().value_and_grad(objectives.get("ackley").fn, torch.zeros(1, 2, dtype=F64))
    assert abs(float(value)) < 1e-15
    assert grad.tolist() == [[0.0, 0.0]]


# name, dim, optimizer factory, steps, how close x must get to the minimum
DESCENTS = [
    ("f", None, lambda p: ManualDescent(p, 0.1), 100, 1e-7),
    ("rosenbrock", None, lbfgs, 100, 1e-4),
    ("rosenbrock", 6, lbfgs, 200, 1e-4),
    ("himmelblau", None, lambda p: ManualDescent(p, 0.01), 1000, 1e-8),
    ("beale", None, lambda p: torch.optim.Adam(p, lr=0.01), 5000, 1e-6),
    ("booth", None, lambda p: ManualDescent(p, 0.1), 500, 1e-8),
    ("rastrigin", 3, lambda p: ManualDescent(p, 0.002), 500, 1e-8),
    ("ackley", None, lambda p: ManualDescent(p, 0.001), 2000, 5e-3),  # a cone: steps circle it
    ("quadratic", 5, lambda p: ManualDescent(p, 0.3), 500, 1e-8),
]


@pytest.mark.parametrize("name, dim, make, steps, x_tol", DESCENTS)
def test_descent_from_the_customary_start_reaches_the_minimum(name, dim, make, steps, x_tol):
    spec = objectives.get(name)
    p = problem(name, dim=dim)
    assert p.x0.tolist() == torch.as_tensor(spec.start(p.dim), dtype=F64).tolist()
    traj = descend(p, Autograd(), make, steps=steps, closure=make is lbfgs)
    assert traj.outcome == ["max_steps"]
    distances = [math.dist(traj.x_final[0], m) for m in spec.minima(p.dim)]
    assert min(distances) < x_tol, (name, traj.x_final)


def test_himmelblau_from_the_origin_finds_the_minimum_at_3_2():
    traj = descend(problem("himmelblau"), Autograd(), lambda p: ManualDescent(p, 0.01), steps=1000, tol=1e-10)
    assert traj.outcome == ["converged"]
    assert traj.x_final[0].tolist() == pytest.approx([3.0, 2.0], abs=1e-10)


def test_customary_starts_and_variable_names():
    assert problem("f").var_names == ["x"] and problem("f").x0.tolist() == [0.0]
    assert problem("g").var_names == ["x1", "x2"] and problem("g").x0.tolist() == [2.0, 3.0]
    r = problem("rosenbrock", dim=5)
    assert r.var_names == ["x1", "x2", "x3", "x4", "x5"]
    assert r.x0.tolist() == [-1.2, 1.0, -1.2, 1.0, -1.2]
    assert problem("custom", expr="(b-1)**2 + a").var_names == ["a", "b"]
    assert problem("custom", expr="(b-1)**2 + a", vars=["b", "a"]).var_names == ["b", "a"]
    assert problem("custom", expr="(b-1)**2 + a").x0.tolist() == [0.0, 0.0]
    # Hydra hands numbers over as numbers: a list with one (objective.expr=[x**2,3]) is x² + 3.
    listed = problem("custom", expr=["x**2", 3])
    assert listed.var_names == ["x"] and listed.fn(torch.tensor([[2.0]], dtype=torch.float64)).tolist() == [7.0]
    # A constant is a function of the variables objective.vars names.
    assert problem("custom", expr=2, vars=["x"]).fn(torch.tensor([[5.0]])).tolist() == [2.0]


def test_custom_expression_descends_to_its_minimum():
    p = problem("custom", expr="(a-1)**2 + 3*(b+2)**2")
    traj = descend(p, Autograd(), lambda q: ManualDescent(q, 0.1), steps=200, tol=1e-12)
    assert traj.outcome == ["converged"]
    assert traj.x_final[0].tolist() == pytest.approx([1.0, -2.0], abs=1e-12)


def test_user_target_function(tmp_path, monkeypatch):
    (tmp_path / "my_objective.py").write_text("def bowl(x):\n    return ((x - 2.0) ** 2).sum(-1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    p = problem("custom", target="my_objective:bowl", init=[0.0, 1.0, 5.0])
    assert p.var_names == ["x1", "x2", "x3"]
    value, grad = Autograd().value_and_grad(p.fn, p.x0.unsqueeze(0))
    assert float(value) == 14.0 and grad.tolist() == [[-4.0, -2.0, 6.0]]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(name="g", init=[1.0, 2.0, 3.0]), "objective.init: g takes 2 value(s) (x1, x2), got 3"),
        (dict(name="g", dim=3), "objective.dim: g is 2-D only, got 3"),
        (dict(name="rosenbrock", dim=1), "objective.dim: rosenbrock needs dim ≥ 2, got 1"),
        (dict(name="g", wrt=["x3"]), "objective.wrt: unknown variable(s) x3; g's variables are: x1, x2"),
        (dict(name="custom"), "objective=custom needs exactly one of"),
        (dict(name="custom", target="nodots"), "is not of the form pkg.module:function"),
        (dict(name="custom", target="math:nope", init=[1.0]), "'math' has no function 'nope'"),
        (dict(name="custom", expr="x.__class__"), "attribute access is not allowed in 'x.__class__'"),
        (dict(name="custom", expr=2), "objective.expr: '2' has no variable"),
        (dict(name="custom", expr="pi*e"), "objective.expr: 'pi*e' has no variable"),
        (dict(name="custom", expr={"a": 1}), "objective.expr: expected an expression string or a list of them, got DictConfig"),
        (dict(name="custom", expr=True), "objective.expr: expected an expression string, got bool"),
    ],
)
def test_bad_objective_configs_say_what_is_wrong(overrides, message):
    with pytest.raises(UserError) as err:
        problem(**overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_numbered_names_behave_as_the_list_they_stand_for():
    """The lazy ``x1 … xd`` against the plain list it replaces (a second implementation): items,
    negative items, slices, positions, membership, equality, and the errors for what is not a name."""
    from objectives.registry import NumberedNames

    d = 12
    names, plain = NumberedNames(d), [f"x{i}" for i in range(1, d + 1)]
    assert len(names) == d and list(names) == plain and names == plain and names == tuple(plain)
    assert [names[i] for i in range(-d, d)] == [plain[i] for i in range(-d, d)]
    for cut in (slice(None), slice(2, 7), slice(-3, None), slice(None, None, -2), slice(1, 11, 4)):
        assert names[cut] == plain[cut]
    assert [names.index(n) for n in plain] == list(range(d))
    for bad in (d, -d - 1):
        with pytest.raises(IndexError, match=str(bad if bad >= 0 else bad + d)):
            names[bad]
    for wrong in ("x0", "x01", "x13", "y1", "x", "1", "xx1", 5, None):
        assert wrong not in names and (wrong in plain) is False
        with pytest.raises(ValueError, match=f"^{wrong!r} is not a variable$"):
            names.index(wrong)
    assert names != ["x1"] and names != plain[:-1] and (names == 5) is False


def test_register_records_what_it_is_given_and_the_documented_defaults(monkeypatch):
    """Two objectives registered into an empty registry: one with only the required facts (the
    defaults: fixed size, min_dim 1, no minima, no min_value, names x1 … xd), one with all of them;
    fixed lists come back as fresh lists of lists (a caller may change what it gets)."""
    from objectives import registry

    monkeypatch.setattr(registry, "REGISTRY", {})

    def bowl(x):
        return (x**2).sum(-1)

    def ring(x):
        return ((x**2).sum(-1) - 1.0) ** 2

    assert registry.register("bowl", dim=3, start=[1.0, 2.0, 3.0])(bowl) is bowl
    names = lambda d: ["u", "v"]  # noqa: E731
    start = lambda d: [0.5] * d  # noqa: E731
    registry.register("ring", dim=2, n_dim=True, min_dim=2, start=start, minima=[(1.0, 0.0), [0.0, 1.0]],
                      min_value=0.0, var_names=names)(ring)
    assert sorted(registry.REGISTRY) == ["bowl", "ring"]
    b, r = registry.REGISTRY["bowl"], registry.REGISTRY["ring"]
    assert (b.name, b.fn, b.default_dim, b.n_dim, b.min_dim, b.min_value) == ("bowl", bowl, 3, False, 1, None)
    assert b.start(3) == [1.0, 2.0, 3.0] and b.minima(3) == [] and list(b.var_names(3)) == ["x1", "x2", "x3"]
    assert (r.name, r.fn, r.default_dim, r.n_dim, r.min_dim, r.min_value) == ("ring", ring, 2, True, 2, 0.0)
    assert r.start is start and r.var_names is names and r.start(3) == [0.5, 0.5, 0.5]
    minima = r.minima(2)
    assert minima == [[1.0, 0.0], [0.0, 1.0]] and all(type(m) is list for m in minima)
    minima[0][0] = 7.0
    starts = b.start(3)
    starts[0] = 7.0
    assert r.minima(2) == [[1.0, 0.0], [0.0, 1.0]] and b.start(3) == [1.0, 2.0, 3.0]


def test_an_unknown_objective_is_a_key_error_that_lists_the_choices():
    with pytest.raises(KeyError) as err:
        objectives.get("nope")
    assert err.value.args == ("unknown objective 'nope'; choose one of: ackley, beale, booth, f, g, himmelblau, "
                              "quadratic, rastrigin, rosenbrock",)
