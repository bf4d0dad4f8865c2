"""The report a finished study leaves on its parent run: trials.csv, the PNGs and the
interactive page ``plots/study.html``, from real (tiny, Keras-free) Optuna studies."""

from __future__ import annotations

import json
import warnings
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import optuna
import pytest
from PIL import Image

from mltune._report import HTML_NAME, write_report

N_FLOATS = 8
# Long names, alike in their first 20 characters (which is all that Optuna's plot shows).
PARAMS = [f"dropout_rate_of_block_{i}" for i in range(N_FLOATS)] + ["optimizer"]
STEPS = 4
PNGS = ["plots/optimization_history.png", "plots/parallel_coordinate.png",
        "plots/param_importances.png"]


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)


class Page(HTMLParser):
    """The <script> elements of a page: their attributes and text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._open: dict[str, str | None] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self._open = dict(attrs)
            self.scripts.append((self._open, ""))

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._open = None


def _no_nan(name: str) -> Any:
    raise AssertionError(f"{name} in the figure JSON: JSON.parse would reject it")


def figures(path: Path) -> dict[str, dict[str, Any]]:
    """The page's figures, by name, parsed as the browser's JSON.parse would."""
    page = Page(path.read_text(encoding="utf-8"))
    found = {}
    for attrs, text in page.scripts:
        if "mltune-figure" in (attrs.get("class") or "").split():
            assert attrs["type"] == "application/json"
            name = (attrs["data-target"] or "").removeprefix("plot-")
            found[name] = json.loads(text, parse_constant=_no_nan)
    return found


def assert_offline(path: Path) -> None:
    """plotly.js is inside the page; nothing is loaded from elsewhere."""
    from plotly.offline import get_plotlyjs_version

    text = path.read_text(encoding="utf-8")
    page = Page(text)
    sources = [attrs["src"] for attrs, _ in page.scripts if attrs.get("src")]
    assert sources == [], sources
    assert not any("cdn.plot.ly" in (v or "") for attrs, _ in page.scripts
                   for v in attrs.values())
    (library,) = [t for _, t in page.scripts if len(t) > 1_000_000]
    assert f"v{get_plotlyjs_version()}" in library[:1000]  # plotly.js's banner
    assert "<link" not in text.replace(library, "")  # no stylesheet either


def single_objective_study(n_trials: int = 10, pruned: tuple[int, ...] = (3,)
                           ) -> optuna.Study:
    """Eight float params and a categorical one; every trial reports STEPS steps (1, 2, ...),
    as mltune reports epochs; the trials in ``pruned`` are pruned after their last step."""

    def objective(trial: optuna.Trial) -> float:
        value = sum(trial.suggest_float(name, 1e-4, 1.0, log=i % 2 == 0)
                    for i, name in enumerate(PARAMS[:N_FLOATS]))
        # A choice that would end a <script> element early, were it not escaped.
        value += trial.suggest_categorical("optimizer", ["adam", "</script><b>sgd"]) == "adam"
        for step in range(1, STEPS + 1):
            trial.report(value * step / STEPS, step)
        if trial.number in pruned:
            raise optuna.TrialPruned()
        return value

    study = optuna.create_study(direction="maximize", study_name="report-study",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=n_trials)
    return study


@pytest.fixture(scope="module")
def single_report(tmp_path_factory: pytest.TempPathFactory
                  ) -> tuple[optuna.Study, list[str], Path]:
    """The single-objective study, its report written once for the tests that read it."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = tmp_path_factory.mktemp("single_report")
    with warnings.catch_warnings():  # before the autouse fixture, which is per test
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = single_objective_study()
        return study, write_report(study, folder, ["val_accuracy"]), folder


def test_study_html_holds_every_plot_interactive(single_report) -> None:
    study, written, tmp_path = single_report
    assert written == ["trials.csv", *PNGS, f"plots/{HTML_NAME}"]
    for name in written:
        assert (tmp_path / name).is_file(), name
    path = tmp_path / "plots" / HTML_NAME
    assert_offline(path)
    assert path.stat().st_size < 6_000_000  # one plotly.js (~4.8 MB) for all the plots

    figs = figures(path)
    assert list(figs) == ["optimization_history", "parallel_coordinate", "param_importances",
                          "slice", "learning_curves"]
    for name, fig in figs.items():
        assert fig["data"], name
        assert f'<section id="{name}">' in path.read_text(encoding="utf-8")

    # The objective is named after the metric.
    history = figs["optimization_history"]
    assert {t["type"] for t in history["data"]} == {"scatter"}
    assert history["layout"]["yaxis"]["title"]["text"] == "val_accuracy"
    assert "val_accuracy" in [t.get("name") for t in history["data"]]

    # Parallel coordinates: an axis per param, named in full; wide enough for nine params.
    parallel = figs["parallel_coordinate"]
    labels = parallel["layout"]["xaxis"]["ticktext"]
    assert labels[0] == "val_accuracy"
    assert sorted(labels[1:]) == sorted(PARAMS)
    assert parallel["layout"]["width"] >= 120 * (len(PARAMS) + 1)
    assert parallel["layout"]["xaxis"]["tickangle"] != 0  # slanted: long names never touch
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    lines = [t for t in parallel["data"] if t.get("mode") == "lines"]
    assert len(lines) == len(complete)
    hover = [row[0] for row in lines[0]["customdata"]]
    assert hover == labels
    # The escaped choice reads back as it was.
    assert "</script><b>sgd" in json.dumps(parallel)

    importances = figs["param_importances"]
    assert importances["data"][0]["type"] == "bar"
    assert sorted(importances["data"][0]["y"]) == sorted(PARAMS)

    slices = figs["slice"]
    assert {t["type"] for t in slices["data"]} == {"scatter"}
    titles = {v["title"]["text"] for k, v in slices["layout"].items()
              if k.startswith("xaxis") and "title" in v}
    assert titles == set(PARAMS)

    # Learning curves: one line per trial (the pruned one too), epochs 1..STEPS.
    curves = figs["learning_curves"]
    assert [t["name"] for t in curves["data"]] == [f"trial-{t.number:03d}"
                                                   for t in study.trials]
    for trace, trial in zip(curves["data"], study.trials, strict=True):
        assert trace["type"] == "scatter"
        assert list(trace["x"]) == list(range(1, STEPS + 1))
        assert list(trace["y"]) == pytest.approx([trial.intermediate_values[s]
                                                  for s in range(1, STEPS + 1)])
    assert curves["layout"]["xaxis"]["title"]["text"] == "Epoch"
    assert curves["layout"]["yaxis"]["title"]["text"] == "val_accuracy"
    assert curves["layout"]["xaxis"]["dtick"] == 1  # whole epochs


def test_parallel_coordinate_png_widens_with_the_params(single_report) -> None:
    _, _, tmp_path = single_report
    with Image.open(tmp_path / "plots" / "parallel_coordinate.png") as png:
        width, height = png.size
    assert width >= 1300 and height == 600, png.size  # 10 axes: wider than the 1000 px default
    with Image.open(tmp_path / "plots" / "optimization_history.png") as png:
        assert png.size == (1000, 600)


def test_multi_objective_study_gets_the_pareto_front(tmp_path: Path) -> None:
    def objective(trial: optuna.Trial) -> tuple[float, float]:
        x, y = trial.suggest_float("x", 0, 1), trial.suggest_int("units", 1, 64)
        return x * y, float(y)

    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=1))
    study.optimize(objective, n_trials=8)
    written = write_report(study, tmp_path, ["val_accuracy", "params"])
    assert "plots/pareto_front.png" in written
    assert f"plots/{HTML_NAME}" in written
    figs = figures(tmp_path / "plots" / HTML_NAME)
    assert_offline(tmp_path / "plots" / HTML_NAME)
    # No intermediate values (Optuna takes them for one objective only): no learning curves.
    assert list(figs) == ["optimization_history", "parallel_coordinate", "param_importances",
                          "slice", "pareto_front"]
    pareto = figs["pareto_front"]
    assert pareto["layout"]["xaxis"]["title"]["text"] == "val_accuracy"
    assert pareto["layout"]["yaxis"]["title"]["text"] == "params"
    points = sum(len(t.get("x") or []) for t in pareto["data"])
    assert points == len(study.trials)
    # The single-objective plots show the first objective, named.
    assert figs["optimization_history"]["layout"]["yaxis"]["title"]["text"] == "val_accuracy"
    assert figs["parallel_coordinate"]["layout"]["xaxis"]["ticktext"][0] == "val_accuracy"


def test_plots_the_trials_cannot_support_are_skipped(tmp_path: Path) -> None:
    # No trial at all: the table only, no page.
    empty = optuna.create_study()
    assert write_report(empty, tmp_path / "empty") == ["trials.csv"]
    assert not (tmp_path / "empty" / "plots" / HTML_NAME).exists()

    # One trial, no params, nothing reported: its history only.
    one = optuna.create_study()
    one.optimize(lambda trial: 1.0, n_trials=1)
    written = write_report(one, tmp_path / "one", ["loss"])
    assert written == ["trials.csv", "plots/optimization_history.png", f"plots/{HTML_NAME}"]
    assert list(figures(tmp_path / "one" / "plots" / HTML_NAME)) == ["optimization_history"]

    # Every trial pruned: no PNG, but the learning curves are there.
    pruned = single_objective_study(n_trials=3, pruned=(0, 1, 2))
    written = write_report(pruned, tmp_path / "pruned", ["val_accuracy"])
    assert written == ["trials.csv", f"plots/{HTML_NAME}"]
    figs = figures(tmp_path / "pruned" / "plots" / HTML_NAME)
    assert list(figs) == ["learning_curves"]
    assert len(figs["learning_curves"]["data"]) == 3
