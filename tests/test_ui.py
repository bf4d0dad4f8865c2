"""The MLflow UI in a real headless Chromium: a study run over HTTP against a real
``mlflow server``, then looked at the way a user would.

Needs Chromium (Debian: ``apt-get install chromium``; elsewhere set ``CHROMIUM`` to the
binary) and the ``playwright`` package, which drives that Chromium; Playwright's own
browser download is never used. Screenshots land in ``test-artifacts/`` at the repository
root.

Run as a script against a running server, this module also takes the README's screenshots::

    python tests/test_ui.py http://127.0.0.1:5000 digits-cnn docs/images
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import QUIET_ENV

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"

# Chromium as root in a container, on a machine without internet: no sandbox, no GPU, and
# none of the background traffic that would otherwise flood refused connections.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
VIEWPORT = {"width": 1600, "height": 900}
UI_TIMEOUT_MS = 30_000  # any single wait in the browser
# Servers and the study must not try to phone home either (QUIET_ENV).


def find_chromium() -> str | None:
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which(
        "chromium-browser")


# --------------------------------------------------------------------------- browser helpers
# Selectors are MLflow 3.x UI details (ag-grid ids, the column tree, the artifact tree);
# they are all here, so that a UI change breaks one place.

def runs_page_url(base_url: str, experiment_id: str) -> str:
    # workflowType=machine_learning: MLflow 3 opens experiments in its GenAI view otherwise.
    return f"{base_url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def artifacts_page_url(base_url: str, experiment_id: str, run_id: str) -> str:
    return (f"{base_url}/#/experiments/{experiment_id}/runs/{run_id}/artifacts"
            "?workflowType=machine_learning")


def close_assistant(page: Any) -> None:
    """Close the "MLflow Assistant" side panel (open on a fresh profile); it eats 350 px."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    close = page.locator('[data-component-id="mlflow.assistant.chat_panel.close"]')
    try:
        close.wait_for(state="visible", timeout=3_000)
    except PlaywrightTimeout:  # not shown (another version, or closed before): nothing to do
        return
    close.click()
    close.wait_for(state="hidden")


def row(page: Any, run_id: str) -> Any:
    """The runs table's row of a run. ag-grid splits each row into a pinned and a scrolling
    part; both carry the run id as row-id."""
    return page.locator(f'[role="row"][row-id="{run_id}"]')


def cell(page: Any, run_id: str, col_id: str) -> Any:
    return row(page, run_id).locator(f'[role="gridcell"][col-id="{col_id}"]')


RUN_NAME_COL = "attributes.`Run Name`"


def expand(page: Any, parent_run_id: str) -> None:
    """Click the +/- button in front of a parent run's name."""
    cell(page, parent_run_id, RUN_NAME_COL).locator("button").first.click()


def set_column(page: Any, section: str, name: str, shown: bool = True) -> None:
    """Show or hide one column with the "Columns" selector, which must be open.

    The selector's search box narrows the tree; the tree then lists, in order, section
    headers ("Metrics (2)", "Parameters (1)", ...) and their entries, and a name can sit in
    two sections (learning_rate is a param and a per-epoch metric).
    """
    page.get_by_placeholder("Search columns").fill(name)
    nodes = page.locator(".du-bois-light-tree-treenode")
    nodes.filter(has_text=name).first.wait_for()
    current = None
    for node in nodes.all():
        text = node.inner_text().strip()
        if text.split(" (")[0] in ("Attributes", "Metrics", "Parameters", "Tags"):
            current = text
        elif current is not None and current.startswith(section) and text == name:
            checked = "checkbox-checked" in (node.get_attribute("class") or "")
            if checked != shown:
                node.locator(".du-bois-light-tree-checkbox").click()
            return
    raise AssertionError(f"no column {name!r} under {section!r} in the column selector")


def choose_columns(page: Any, params: list[str], metrics: list[str],
                   hide_attributes: tuple[str, ...] = ("Dataset", "Source", "Models")) -> None:
    page.get_by_role("button", name="Columns", exact=True).click()
    for name in hide_attributes:
        set_column(page, "Attributes", name, shown=False)
    for name in params:
        set_column(page, "Parameters", name)
    for name in metrics:
        set_column(page, "Metrics", name)
    page.keyboard.press("Escape")
    page.get_by_placeholder("Search columns").wait_for(state="hidden")


def column_headers(page: Any) -> list[str]:
    return [t.strip() for t in page.locator('[role="columnheader"]').all_inner_texts()]


def open_artifact(page: Any, *path: str, unfolded: int = 0) -> Any:
    """Click through the artifact tree to a file; returns the preview's <img> for images.

    ``unfolded``: how many of the path's folders are open already (a click would fold them).
    """
    for name in path[unfolded:]:
        page.locator(f'[data-testid="artifact-tree-node"][artifact-name="{name}"]').click()
    page.get_by_title("/".join(path), exact=True).wait_for()  # the preview's heading
    return page.locator('img[src^="blob:"]').first


def html_preview(page: Any) -> Any:
    """The artifact viewer's preview of an HTML file: a sandboxed iframe on a blob: URL."""
    return page.frame_locator(".mlflow-artifact-html-view iframe")


def image_size(img: Any) -> tuple[int, int]:
    """Natural size of an <img> once it has loaded and decoded; (0, 0) if it is broken."""
    img.wait_for()
    w, h = img.evaluate(
        "e => e.decode().then(() => [e.naturalWidth, e.naturalHeight], () => [0, 0])")
    return int(w), int(h)


def launch(playwright: Any, profile: Path, chromium: str) -> Any:
    context = playwright.chromium.launch_persistent_context(
        str(profile), executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
        viewport=VIEWPORT)
    context.set_default_timeout(UI_TIMEOUT_MS)
    return context


# --------------------------------------------------------------------------- fixtures

@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium context with a fresh profile."""
    chromium = find_chromium()  # the browser tier (conftest.py) skips or fails without it
    assert chromium is not None
    from playwright import sync_api
    with sync_api.sync_playwright() as playwright:
        context = launch(playwright, tmp_path / "chromium-profile", chromium)
        try:
            yield context
        finally:
            context.close()


def save_screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    path.unlink(missing_ok=True)
    page.screenshot(path=str(path))
    return path


def assert_real_png(path: Path, min_bytes: int = 20_000) -> None:
    from PIL import Image

    assert path.is_file(), path
    assert path.stat().st_size > min_bytes, (path, path.stat().st_size)
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size == (VIEWPORT["width"], VIEWPORT["height"])
        # Not one flat colour: the page rendered something.
        assert len(im.convert("L").getcolors(256) or []) > 16


# --------------------------------------------------------------------------- the test

@pytest.mark.slow
@pytest.mark.browser
def test_study_in_the_mlflow_ui(mlflow_server, browser, write_study, tmp_path,
                               monkeypatch) -> None:
    from mlflow import MlflowClient
    from typer.testing import CliRunner

    from mltune._cli import app

    # The study, run over HTTP by `mltune tune` in this process (what is looked at is the UI,
    # not the command's process): no telemetry, as for the server.
    for name, value in QUIET_ENV.items():
        monkeypatch.setenv(name, value)
    study = write_study(study={"name": "ui-study", "n_trials": 3})
    result = CliRunner().invoke(app, ["tune", str(study), "--tracking-uri", mlflow_server,
                                      "--storage", str(tmp_path / "optuna_journal.log")])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "study ui-study: 3 trials (3 complete)" in result.stdout

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("ui-study")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.info.run_name == "ui-study"]
    children = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId")
                       == parent.info.run_id), key=lambda r: r.info.run_name)
    assert [c.info.run_name for c in children] == ["trial-000", "trial-001", "trial-002"]

    page = browser.new_page()
    base = mlflow_server

    # The runs page: the parent run, collapsed, then expanded with its trials beneath it.
    page.goto(runs_page_url(base, experiment.experiment_id))
    parent_name = cell(page, parent.info.run_id, RUN_NAME_COL)
    parent_name.get_by_text("ui-study", exact=True).wait_for()
    page.get_by_text("4 matching runs").wait_for()  # all four runs are loaded, ...
    close_assistant(page)
    assert page.get_by_text("trial-000", exact=True).count() == 0  # ... the trials folded away

    expand(page, parent.info.run_id)
    for child in children:
        cell(page, child.info.run_id, RUN_NAME_COL).get_by_text(
            child.info.run_name, exact=True).wait_for()
    grid_text = page.locator('[role="treegrid"], [role="grid"]').first.inner_text()
    for name in ("ui-study", "trial-000", "trial-001", "trial-002"):
        assert name in grid_text
    # Nested: the trials come right after their parent, and their names are indented.
    indices = {r.info.run_id: int(row(page, r.info.run_id).first.get_attribute("row-index"))
               for r in [parent, *children]}
    parent_index = indices.pop(parent.info.run_id)
    assert sorted(indices.values()) == [parent_index + 1, parent_index + 2, parent_index + 3]

    def name_x(run: Any) -> float:
        link = cell(page, run.info.run_id, RUN_NAME_COL).get_by_text(run.info.run_name,
                                                                     exact=True)
        return float(link.bounding_box()["x"])

    assert all(name_x(child) > name_x(parent) + 10 for child in children)

    # Columns: the sampled params and the per-epoch metric, with each trial's values.
    choose_columns(page, params=["learning_rate", "filters"], metrics=["val_accuracy"])
    headers = column_headers(page)
    for header in ("Parameters", "Metrics", "learning_rate", "filters", "val_accuracy"):
        assert header in headers, headers
    for child in children:
        params, metrics = child.data.params, child.data.metrics
        shown = cell(page, child.info.run_id, "params.`filters`").inner_text().strip()
        assert shown == params["filters"]
        shown = cell(page, child.info.run_id, "params.`learning_rate`").inner_text().strip()
        assert float(shown) == pytest.approx(float(params["learning_rate"]))
        shown = cell(page, child.info.run_id, "metrics.`val_accuracy`").inner_text().strip()
        assert float(shown) == pytest.approx(metrics["val_accuracy"], rel=1e-6)
    assert_real_png(save_screenshot(page, "ui-runs.png"))

    # The parent's artifacts: the trials table and the plots, one of them opened.
    page.goto(artifacts_page_url(base, experiment.experiment_id, parent.info.run_id))
    tree = page.locator('[data-testid="artifact-tree-node"]')
    tree.filter(has_text="trials.csv").wait_for()
    assert {"trials.csv", "plots"} <= {n.get_attribute("artifact-name") for n in tree.all()}
    close_assistant(page)
    img = open_artifact(page, "plots", "optimization_history.png")
    listed = {n.get_attribute("artifact-name") for n in tree.all()}
    assert {"optimization_history.png", "parallel_coordinate.png", "study.html"} <= listed, listed
    width, height = image_size(img)
    assert width > 200 and height > 200, (width, height)
    page.wait_for_timeout(500)  # let the tree's unfolding animation finish for the picture
    assert_real_png(save_screenshot(page, "ui-plot.png"), min_bytes=10_000)

    # The interactive plots: one page, drawn by the plotly.js inside it (no internet here).
    open_artifact(page, "plots", "study.html", unfolded=1)
    frame = html_preview(page)
    plots = frame.locator(".plot-container")
    plots.first.wait_for()
    frame.locator("#plot-learning_curves svg.main-svg").first.wait_for()
    assert plots.count() == 5, plots.count()  # history, parallel, importances, slice, curves
    axes = frame.locator("#plot-parallel_coordinate .xtick text").all_text_contents()
    assert {"val_accuracy", "learning_rate", "filters"} <= set(axes), axes
    curves = frame.locator("#plot-learning_curves .scatterlayer .trace")
    assert curves.count() == 3, curves.count()  # one per trial
    legend = frame.locator("#plot-learning_curves .legendtext").all_text_contents()
    assert legend == ["trial-000", "trial-001", "trial-002"], legend
    assert_real_png(save_screenshot(page, "ui-html-plot.png"), min_bytes=10_000)

    # The trials table opens too, with a column per sampled param.
    open_artifact(page, "trials.csv")
    page.get_by_text("params_learning_rate").first.wait_for()


# --------------------------------------------------------------------------- README images

def readme_screenshots(base_url: str, experiment_name: str, out_dir: Path) -> list[Path]:
    """The README's two screenshots, taken from a study already on a running server."""
    from mlflow import MlflowClient
    from playwright.sync_api import sync_playwright

    client = MlflowClient(base_url)
    experiment = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time"])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    params = [p for p in ("learning_rate", "batch_size", "optimizer", "conv_blocks", "filters",
                          "dropout") if any(p in r.data.params for r in runs)]
    chromium = find_chromium()
    assert chromium, "no Chromium"
    out_dir.mkdir(parents=True, exist_ok=True)
    import tempfile

    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        context = launch(playwright, Path(profile), chromium)
        page = context.new_page()
        page.set_viewport_size({"width": 1640, "height": 700})
        page.goto(runs_page_url(base_url, experiment.experiment_id))
        cell(page, parent.info.run_id, RUN_NAME_COL).wait_for()
        close_assistant(page)
        expand(page, parent.info.run_id)
        page.get_by_text("trial-000", exact=True).wait_for()
        choose_columns(page, params=params, metrics=["val_accuracy", "best_val_accuracy"])
        page.wait_for_timeout(500)
        runs_png = out_dir / "mlflow-runs.png"
        page.screenshot(path=str(runs_png))

        page.set_viewport_size({"width": 1280, "height": 720})
        page.goto(artifacts_page_url(base_url, experiment.experiment_id, parent.info.run_id))
        page.locator('[data-testid="artifact-tree-node"][artifact-name="plots"]').wait_for()
        close_assistant(page)
        image_size(open_artifact(page, "plots", "parallel_coordinate.png"))
        page.wait_for_timeout(500)
        plot_png = out_dir / "mlflow-plot.png"
        page.screenshot(path=str(plot_png))
        context.close()
    return [runs_png, plot_png]


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python tests/test_ui.py SERVER_URL EXPERIMENT OUT_DIR")
    for written in readme_screenshots(sys.argv[1], sys.argv[2], Path(sys.argv[3])):
        print(written)
