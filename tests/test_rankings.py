"""A sweep's children grouped by objective and ranked within each (runner.sweeps.children, summary)."""

from __future__ import annotations

import hashlib
import math

from runner.sweeps import children, summary


def child(run, loss=(3.0, 1.0), status="FINISHED", outcome="max_steps", min_value=None, **objective):
    """A child run named ``run`` of the objective whose params are ``objective`` (name=..., expr=...)."""
    params = {f"objective.{k}": str(v) for k, v in objective.items()}
    tags = {} if min_value is None else {"objective.min_value": repr(min_value)}
    return children.Child(run_id=run + "-id", name=run, status=status, outcome=outcome, steps=len(loss) - 1,
                          params=params, tags=tags, start_time=0, loss_steps=list(range(len(loss))), loss=list(loss))


def tag(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:6]


def test_groups_are_named_as_run_names_name_objectives():
    runs = [
        child("f-a", name="f", init="[0.0]"),
        child("f-b", name="f", init="[1.0]"),  # another start point: the same function
        child("c-1", name="custom", expr="(a-1)**2 + b**2", target="null", vars="null"),
        child("c-2", name="custom", expr="(a-1)**2+b**2", target="null", vars="null"),  # spaces aside: the same
        child("c-3", name="custom", expr="a**2", target="null", vars="null"),
        child("r2", name="rosenbrock", dim="2"),
        child("r10", name="rosenbrock", dim="10"),
    ]
    groups = children.groups_by_objective(runs)
    assert {label: [c.name for c in group] for label, group in groups.items()} == {
        "f": ["f-a", "f-b"],
        f"custom-{tag('(a-1)**2+b**2')}": ["c-1", "c-2"],
        f"custom-{tag('a**2')}": ["c-3"],
        "rosenbrock-dim2": ["r2"],
        "rosenbrock-dim10": ["r10"],
    }


def test_best_within_each_objective_and_the_tags_that_say_so():
    f1, f2 = child("f-1", loss=(-1.0, -1.3), min_value=-4 / 3, name="f"), child("f-2", loss=(-1.0, -4 / 3), name="f")
    g1, g2 = child("g-1", loss=(63.0, 1e-9), name="g"), child("g-2", loss=(63.0, 2.0), outcome="diverged", name="g")
    failed = child("g-3", loss=(63.0, 1e-30), status="FAILED", name="g")
    best = summary.best_by_objective([f1, f2, g1, g2, failed])
    assert best == {"f": f2, "g": g1}  # f's −4/3 < g's 1e-9, but they do not compare
    assert summary.best_tags(best, 2) == {
        "best_child.f": "f-2", "best_child_run_id.f": "f-2-id", "best_final_loss.f": repr(-4 / 3),
        "best_child.g": "g-1", "best_child_run_id.g": "g-1-id", "best_final_loss.g": "1e-09",
    }
    assert summary.best_tags({"g": g1}, 1) == {"best_child": "g-1", "best_child_run_id": "g-1-id", "best_final_loss": "1e-09"}
    assert summary.best_text(best) == (
        "ranked within each objective: best of f: f-2 (final loss -1.33333); best of g: g-1 (final loss 1e-09)")
    assert summary.best_text({"g": g1}) == "best: g-1, final loss 1e-09"
    assert math.isinf(g2.final_loss) and g2.loss_curve() == ([0, 1], [63.0, 2.0])  # no diverged_step tag


def test_a_diverged_childs_curve_ends_where_it_diverged():
    c = child("f", loss=(-1.0, 4.0, 4.0), outcome="diverged", name="f")
    c.tags["diverged_step"] = "3"
    assert c.loss_curve() == ([0, 1, 2, 3], [-1.0, 4.0, 4.0, math.inf])
    assert child("f", min_value=-4 / 3).min_value == -4 / 3 and child("g").min_value is None
