"""Write ``docs/tutorial.ipynb`` (the TensorFlow GradientTape tutorial, redone with the runner's
Python API) and execute it in a fresh kernel, so that the notebook in the repository has its outputs.

    python docs/make_tutorial.py          # writes and executes docs/tutorial.ipynb (~1 min)

The cells are below, in order; ``tests/test_notebook.py`` executes the notebook again from a clean
kernel and checks the tutorial's numbers in the outputs.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent

CELLS: list[tuple[str, str]] = [
    ("md", """# Derivatives and gradient descent, from a tape to a runner

This notebook walks through a short TensorFlow 2 tutorial ("custom derivatives and gradient descent
with `tf.GradientTape`") with the runner's Python API: finite differences against automatic
derivatives, partial derivatives, watched variables, a list of targets, second derivatives, and
gradient descent by hand and with an optimizer. Every run is recorded in MLflow
(`outputs/mlflow.db` next to the notebook) unless `tracking.enabled=false`.

The two functions of the tutorial are the runner's objectives `f` and `g`:

* f(x) = 3x² + 2x − 1, minimum −4/3 at x = −1/3;
* g(x1, x2) = (x1 + 5)·x2², at (2, 3) in the tutorial."""),
    ("code", """%matplotlib inline
import runner"""),
    ("md", """## 1. Finite differences by definition, and the exact derivative

The central difference (f(x + ε) − f(x − ε)) / 2ε with ε = 10⁻³ at x = 1, in plain Python floats, is
off in the last digits; the exact derivative f'(1) = 6·1 + 2 = 8. The runner's `autograd` backend
gives the exact value; its `finite_diff` backend picks the step from the dtype and reports an error bar."""),
    ("code", """def f(x):
    return 3 * x**2 + 2 * x - 1

eps = 1e-3
print("central difference f'(1):", (f(1 + eps) - f(1 - eps)) / (2 * eps))
print("autograd f'(1):", runner.derivatives("objective=f", objective__init=[1.0], tracking__enabled=False).grad["x"])
fd = runner.derivatives("objective=f", "backend=finite_diff", objective__init=[1.0], tracking__enabled=False)
print("finite_diff backend f'(1):", fd.grad["x"])"""),
    ("md", """## 2. Partial derivatives of g

Holding one variable fixed and differencing the other gives the partial derivatives; the exact
gradient at (2, 3) is (x2², 2(x1 + 5)x2) = (9, 42)."""),
    ("code", """def g(x1, x2):
    return (x1 + 5) * x2**2

print("central differences:", ((g(2 + eps, 3) - g(2 - eps, 3)) / (2 * eps), (g(2, 3 + eps) - g(2, 3 - eps)) / (2 * eps)))
print("autograd:", runner.derivatives("objective=g", tracking__enabled=False).grad)"""),
    ("md", """## 3. Watched variables

A tape differentiates a constant only when told to `watch` it. In the runner, `objective.wrt` names
the variables that are differentiated and moved; the others stay constants. With x1 held at 2,
dg/dx2 = 2(2 + 5)x2 = 14·x2, and descent shrinks x2 by the factor 1 − 0.14 at every step."""),
    ("code", """watched = runner.derivatives("objective=g", objective__wrt=["x2"], tracking__enabled=False)
print("gradient with respect to x2 only:", watched.grad)
held = runner.run("objective=g", objective__wrt=["x2"], lr=0.01)
print("x1 stays:", held.x_final["x1"], "| x2 after 100 steps:", held.x_final["x2"], "=", 3 * 0.86**100)
held"""),
    ("md", """## 4. A list of targets

The gradient of a list of targets [z1, z2] is the gradient of their sum: for z1 = 3x and z2 = x² at
x = 5, 3 + 10 = 13."""),
    ("code", """targets = runner.derivatives(objective="custom", objective__expr=["3*x", "x**2"], objective__init=[5.0], tracking__enabled=False)
print("gradient of the list:", targets.grad["x"])
print("each target:", [t["grad"]["x"] for t in targets.targets])"""),
    ("md", """## 5. Second derivatives

Nested tapes give the Hessian of g at (2, 3): [[None, 6], [6, 14]]. TensorFlow answers `None` for
d²g/dx1² because dg/dx1 = x2² does not involve x1 at all: a structural zero, which the runner reports
as `None` too (a zero that is computed is `0.0`). Its eigenvalues give the largest stable step of plain
gradient descent, 2/λ_max."""),
    ("code", """hessian = runner.derivatives("objective=g", tracking__enabled=False)
print("Hessian:", hessian.hessian_matrix())
print("eigenvalues:", hessian.eigenvalues, "| stable lr:", hessian.stable_lr)
print(hessian)"""),
    ("md", """## 6. Gradient descent, by hand and with an optimizer

The tutorial's loop is `x.assign_sub(lr * grad)`, 100 times with lr = 0.1 from x = 0: the runner's
`manual` optimizer. With `optimizer=sgd` (torch's SGD) the path is the same, bit for bit."""),
    ("code", """by_hand = runner.run("objective=f", "optimizer=manual", lr=0.1, steps=100)
with_sgd = runner.run("objective=f", "optimizer=sgd", lr=0.1, steps=100)
print("by hand: x =", by_hand.x_final["x"], "f =", by_hand.final_loss)
print("with SGD: x =", with_sgd.x_final["x"], "| same path:", (by_hand.trajectory["x/x"] == with_sgd.trajectory["x/x"]).all())
by_hand.trajectory.head()"""),
    ("code", """loss_figure, _ = by_hand.plot()
loss_figure"""),
    ("md", """## 7. A sweep, and how the step size matters

f'' = 6, so plain gradient descent on f is stable only for lr < 2/6 = 1/3; lr = 1/6 lands on the
minimum in one step, lr = 0.5 and beyond diverge. A multirun records every learning rate as a child of
one parent run, with a summary; `runner.runs` lists them."""),
    ("code", """sweep = runner.multirun("objective=f", lr="0.01,0.1,0.16666666666666666,0.3,0.5", steps=50)
sweep.table"""),
    ("code", """table = runner.runs(parent=sweep.parent_run_id)
table[["run_name", "params.lr", "tags.outcome", "tags.final_step", "metrics.loss"]]"""),
]


def build() -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for kind, source in CELLS:
        cell = nbformat.v4.new_markdown_cell(source) if kind == "md" else nbformat.v4.new_code_cell(source)
        notebook.cells.append(cell)
    return notebook


def execute(notebook: nbformat.NotebookNode, folder: Path, timeout: int = 600) -> nbformat.NotebookNode:
    """Run every cell in a fresh kernel whose working folder is ``folder``."""
    NotebookClient(notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    return notebook


if __name__ == "__main__":
    executed = execute(build(), HERE)
    for cell in executed.cells:  # run ids and times differ from one execution to the next
        cell.get("metadata", {}).pop("execution", None)
    nbformat.write(executed, HERE / "tutorial.ipynb")
    print(f"wrote {HERE / 'tutorial.ipynb'}")
