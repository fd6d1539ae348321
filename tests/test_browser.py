"""The MLflow UI in a real browser: Debian's chromium, driven headless by Playwright's Python package.

A small sweep is logged into the project's SQLite store and ``python -m runner.serve`` serves it. A new
browser profile (a new context: no remembered workflow, MLflow 3's default is GenAI) opens the address
``runner.serve`` prints and must land on the experiment's runs table in the model-training view, with
the sweep's parent and, expanded, its four children; the sweep's own summary link must show the parent
with its children. Then the children's compare page (names, lr and final loss of each child must
appear) and the parent run's artifacts (its summary figures listed, the loss figure previewed).
Screenshots go to each test's tmp folder (docs/img/compare.png and sweep-summary.png are two of them).
Skips where /usr/bin/chromium or playwright is missing.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.parse

import pytest
from conftest import run_cli
from sweep_helpers import CHROMIUM, CHROMIUM_ARGS, client_for, loss_history, make_workdir, mlflow_server, sweep_runs

pytestmark = [pytest.mark.browser, pytest.mark.slow]
TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def ui(tmp_path_factory, empty_store):
    """(url, experiment id, parent, children with their final loss, page, browser, what the sweep and
    the server printed) over a served sweep."""
    if not CHROMIUM.exists():
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the Python package) is not installed")
    workdir = make_workdir(tmp_path_factory.mktemp("browser"), empty_store)
    result = run_cli("-m", "objective=himmelblau", "optimizer=sgd,adam", "lr=0.005,0.02", cwd=workdir)
    assert result.returncode == 0, result.stderr
    client = client_for(workdir)
    parent, children = sweep_runs(client)
    finals = {c.info.run_id: loss_history(client, c.info.run_id)[-1] for c in children}
    with mlflow_server(workdir) as url, sync_api.sync_playwright() as pw:
        served = (workdir / f"mlflow-server-{url.rsplit(':', 1)[1]}.log").read_text()
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = fresh_page(browser)
            yield url, parent.info.experiment_id, parent, children, finals, page, browser, result.stdout, served
        finally:
            browser.close()


def fresh_page(browser):
    """A page in a new browser context: a fresh profile, nothing remembered (localStorage empty)."""
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    return page


def printed_link(text: str, before: str) -> str:
    """The address on the line of ``text`` that contains ``before``."""
    line = next(line for line in text.splitlines() if before in line)
    return re.search(r"http://\S+", line).group(0)


def assert_model_training_view(page) -> None:
    """The sidebar of MLflow 3's model-training workflow (Runs, Models), not GenAI's (Traces, Judges …)."""
    body = page.inner_text("body")
    assert "Model training" in body and "Judges" not in body and "Evaluation runs" not in body, body[:500]


def test_the_address_runner_serve_prints_opens_on_the_sweeps_runs(ui, tmp_path):
    url, experiment_id, parent, children, finals, _, browser, _, served = ui
    link = printed_link(served, "open the runs of experiment 'runner'")
    assert link == f"{url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    page = fresh_page(browser)
    page.goto(link)
    page.get_by_text(parent.info.run_name, exact=True).first.wait_for()
    assert_model_training_view(page)
    # The children are grouped under their parent: expand it.
    row = page.locator("[role=row]", has_text=parent.info.run_name).first
    row.locator("button[data-component-id*='runnamecellrenderer']").first.click()
    for c in children:
        page.get_by_text(c.info.run_name, exact=True).first.wait_for()
    close_assistant(page)
    page.wait_for_timeout(1000)
    page.screenshot(path=str(tmp_path / "runs.png"))
    assert f"{len(children) + 1} matching runs" in page.inner_text("body")
    print(f"screenshot in {tmp_path / 'runs.png'}")


def test_the_sweeps_summary_link_opens_the_parent_with_its_children(ui, tmp_path):
    url, experiment_id, parent, children, finals, _, browser, stdout, _ = ui
    link = printed_link(stdout, "the sweep's summary:").replace("http://127.0.0.1:5000", url)
    assert link == f"{url}/#/experiments/{experiment_id}/runs/{parent.info.run_id}?workflowType=machine_learning"
    page = fresh_page(browser)
    page.goto(link)
    page.get_by_text("Child runs", exact=True).first.wait_for()
    assert_model_training_view(page)
    for c in children:
        page.get_by_text(re.compile(re.escape(c.info.run_name))).first.wait_for()
    close_assistant(page)
    page.screenshot(path=str(tmp_path / "parent.png"))


def close_assistant(page) -> None:
    """Hide MLflow 3's assistant side panel, if shown, so that screenshots show the runs."""
    from playwright.sync_api import Error as PlaywrightError  # its timeouts too

    button = page.locator("button[aria-label='Close']").first
    try:
        if button.is_visible(timeout=1000):
            button.click()
    except PlaywrightError:  # only cosmetic: MLflow's UI changes from version to version
        pass


def show_swept_params(page) -> None:
    """Parallel coordinates over what the sweep varies (lr, optimizer.name) instead of the UI's first
    picks; cosmetic, for the screenshot."""
    from playwright.sync_api import Error as PlaywrightError

    try:
        for name in ("optimizer._target_", "optimizer.amsgrad"):
            tag = page.locator(".du-bois-light-select-selection-item", has_text=name)
            if tag.count():
                tag.locator(".du-bois-light-select-selection-item-remove").click(timeout=5000)
        page.locator("input[aria-description^='lr']").first.click(force=True, timeout=5000)
        page.keyboard.type("optimizer.name")
        page.wait_for_timeout(500)
        page.keyboard.press("Enter")
        page.keyboard.press("Escape")
        page.mouse.click(1300, 600)
        page.wait_for_timeout(1500)
    except PlaywrightError:  # only cosmetic, as above
        pass


def section(text: str, start: str, end: str) -> list[str]:
    """Non-empty stripped lines of ``text`` between the line ``start`` and the line ``end``."""
    lines = [line.strip() for line in text.splitlines()]
    i = lines.index(start)
    j = lines.index(end, i + 1)
    return [line for line in lines[i + 1 : j] if line]


def is_number(text: str) -> bool:
    return re.fullmatch(r"-?\d+(\.\d+)?(e[-+]?\d+)?", text) is not None


def test_compare_page_shows_every_child(ui, tmp_path):
    url, experiment_id, parent, children, finals, page, *_ = ui
    ids = [c.info.run_id for c in children]
    query = urllib.parse.urlencode({"runs": json.dumps(ids), "experiments": json.dumps([experiment_id]), "workflowType": "machine_learning"})
    started = time.time()
    page.goto(f"{url}/#/compare-runs?{query}")
    for c in children:
        page.get_by_text(c.info.run_name, exact=True).first.wait_for()
    page.locator(".js-plotly-plot").first.wait_for()  # the parallel-coordinates plot
    close_assistant(page)
    show_swept_params(page)
    page.wait_for_timeout(1500)  # let the plot finish drawing
    page.screenshot(path=str(tmp_path / "compare.png"))
    page.screenshot(path=str(tmp_path / "compare-full.png"), full_page=True)
    print(f"compare page rendered in {time.time() - started:.1f} s; screenshots in {tmp_path}")

    text = page.inner_text("body")
    run_id_line = next(line for line in text.splitlines() if line.startswith("Run ID:"))
    columns = run_id_line.split("\t")[1:]
    assert sorted(columns) == sorted(ids)
    # Parameters: one row "lr<TAB>v1<TAB>v2…", columns in the order of the Run ID row.
    lr_line = next(line for line in text.splitlines() if line.startswith("lr\t"))
    shown_lr = dict(zip(columns, lr_line.split("\t")[1:]))
    # Metrics: the names, then the values row by row (the grid is virtualised, so it reads that way).
    lines = section(text, "Metrics", "Artifacts")
    lines = [line for line in lines if line != "Show diff only"]
    names = [line for line in lines if not is_number(line)]
    values = [float(line) for line in lines if is_number(line)]
    assert len(values) == len(names) * len(columns), (names, values)
    row = names.index("loss")
    shown_loss = dict(zip(columns, values[row * len(columns) : (row + 1) * len(columns)]))
    for c in children:
        assert c.info.run_name in text
        assert shown_lr[c.info.run_id] == c.data.params["lr"]
        assert math.isclose(shown_loss[c.info.run_id], finals[c.info.run_id], rel_tol=1e-3), c.info.run_name


def test_parent_run_lists_its_summary(ui, tmp_path):
    url, experiment_id, parent, children, finals, page, *_ = ui
    page.goto(f"{url}/#/experiments/{experiment_id}/runs/{parent.info.run_id}/artifacts?workflowType=machine_learning")
    page.get_by_text(parent.info.run_name, exact=True).first.wait_for()
    for name in ("summary_table.json", "summary_loss.png", "summary_paths.png",
                 "summary_final_loss_lr.png", "summary_final_loss_optimizer.png"):
        page.get_by_text(name, exact=True).first.wait_for()
    page.get_by_text("summary_loss.png", exact=True).first.click()
    # The preview: the PNG fetched from the server, shown as a blob: image of the figure's width.
    width = page.wait_for_function(
        "() => Array.from(document.images).filter(i => i.src.startsWith('blob:') && i.complete)"
        ".map(i => i.naturalWidth).find(w => w > 100)"
    ).json_value()
    close_assistant(page)
    page.screenshot(path=str(tmp_path / "parent-artifacts.png"))
    assert width > 300  # the loss figure (6.4 in at 110 dpi, trimmed: ~690 px)
