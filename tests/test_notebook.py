"""docs/tutorial.ipynb executes from a clean kernel and shows the tutorial's numbers."""

from __future__ import annotations

import re
import shutil
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow

EXPECTED = [
    "central difference f'(1): 7.999999999999119",  # (f(1+ε) − f(1−ε)) / 2ε, ε = 1e-3, float64
    "autograd f'(1): 8.0",
    "central differences: (8.999999999993236, 41.999999999994486)",
    "autograd: {'x1': 9.0, 'x2': 42.0}",
    "gradient with respect to x2 only: {'x2': 42.0}",
    "gradient of the list: 13.0",
    "each target: [3.0, 10.0]",
    "Hessian: [[None, 6.0], [6.0, 14.0]]",
    "by hand: x = -0.3333333333333333 f = -1.3333333333333333",
    "with SGD: x = -0.3333333333333333 | same path: True",
]


def test_the_tutorial_notebook_runs_and_shows_the_tutorials_numbers(tmp_path, monkeypatch):
    import nbformat

    sys.path.insert(0, str(REPO / "docs"))
    try:
        from make_tutorial import execute
    finally:
        sys.path.remove(str(REPO / "docs"))
    notebook = nbformat.read(REPO / "docs" / "tutorial.ipynb", as_version=4)
    for cell in notebook.cells:  # from a clean slate: the stored outputs play no part
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copy(REPO / "docs" / "tutorial.ipynb", tmp_path / "tutorial.ipynb")
    execute(notebook, tmp_path)
    text = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "stream" and o.name == "stdout")
    for line in EXPECTED:
        assert line in text, line
    assert not [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error" or o.get("name") == "stderr"]
    held = re.search(r"x2 after 100 steps: (\S+) = (\S+)", text)
    assert held and float(held.group(1)) == pytest.approx(float(held.group(2)), rel=1e-12)  # 3·0.86^100
    images = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1  # the loss figure
    sweep = next(o for c in notebook.cells if "runner.multirun" in c.source for o in c.outputs if "text/plain" in o.get("data", {}))
    assert sweep["data"]["text/plain"].count("f-manual-lr") == 5
    assert (tmp_path / "outputs" / "mlflow.db").exists()  # recorded next to the notebook
