"""What a finished study leaves behind: the trials table and Optuna's plots (PNG, and
interactive HTML)."""

from __future__ import annotations

import html
import logging
import warnings
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    import pandas as pd

__all__ = ["html_figures", "trials_table", "write_html", "write_report"]

logger = logging.getLogger(__name__)

HTML_NAME = "study.html"  # in plots/, beside the PNGs
TABLE_COLUMNS = ("number", "state", "value", "datetime_start", "datetime_complete", "duration")


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, value, params, duration and its MLflow run id."""
    frame = study.trials_dataframe(attrs=("number", "value", "datetime_start",
                                          "datetime_complete", "duration", "params",
                                          "user_attrs", "state"))
    if frame.empty:
        return frame
    frame = frame.rename(columns={"user_attrs_mlflow_run_id": "mlflow_run_id",
                                  "user_attrs_mltune_worker": "worker",
                                  "user_attrs_mltune_error": "error"})
    frame = frame.drop(columns=[c for c in frame.columns if c.startswith("user_attrs_")])
    # One objective, named (study.set_metric_names): Optuna calls the column value_<metric>.
    named = [c for c in frame.columns if c.startswith("value_")]
    if len(named) == 1 and "value" not in frame:
        frame = frame.rename(columns={named[0]: "value"})
    if "duration" in frame:
        # A study whose every trial is still running has no duration yet (None, not NaT).
        import pandas as pd

        frame["duration"] = pd.to_timedelta(frame["duration"]).dt.total_seconds().round(2)
    values = [c for c in frame.columns if c == "value" or c.startswith("values_")]
    first = [c for c in ("number", "state", *values) if c in frame]
    return frame[first + [c for c in frame.columns if c not in first]]


def write_report(study: optuna.Study, folder: Path, metrics: list[str] | None = None
                 ) -> list[str]:
    """Write ``trials.csv`` and the plots that the study's trials allow; return the names.

    ``metrics`` names the objectives; with several, the plots show the first, and
    ``pareto_front.png`` shows the trade-off (two or three objectives). Besides the PNGs,
    ``plots/study.html`` holds the same plots and more, interactive (see :func:`write_html`)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    table = trials_table(study)
    table.to_csv(folder / "trials.csv", index=False)
    written.append("trials.csv")
    written += _write_pngs(study, folder, metrics)
    if write_html(study, folder / "plots" / HTML_NAME, metrics):
        written.append(f"plots/{HTML_NAME}")
    return written


def _write_pngs(study: optuna.Study, folder: Path, metrics: list[str] | None) -> list[str]:
    """Optuna's matplotlib plots as PNGs in ``folder/plots``; return their names."""
    written: list[str] = []
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not complete:
        return written

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    first = _first_objective(study, metrics)
    plots: dict[str, Any] = {"optimization_history": partial(ovm.plot_optimization_history,
                                                             **first)}
    if len(complete) >= 2 and complete[0].params:
        plots["parallel_coordinate"] = partial(ovm.plot_parallel_coordinate, **first)
        plots["param_importances"] = partial(ovm.plot_param_importances, **first)
    if 2 <= len(study.directions) <= 3:
        plots["pareto_front"] = partial(ovm.plot_pareto_front, target_names=metrics)
    (folder / "plots").mkdir(exist_ok=True)
    params = _param_names(complete)
    n_axes = 1 + len(params)
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = plot(study)
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            if name == "parallel_coordinate":
                # One vertical axis per param, each with its own tick labels beside it: give
                # every axis ~1.3 inches, and slant the names so that long ones do not collide.
                fig.set_size_inches(max(10.0, min(1.3 * n_axes + 2.5, 60.0)), 6)
                names = _untruncated([t.get_text() for t in ax.get_xticklabels()], params)
                if names:
                    ax.set_xticks(ax.get_xticks(), names)
                for label in ax.get_xticklabels():
                    label.set_rotation(-30)
                    label.set_horizontalalignment("left")
                    label.set_rotation_mode("anchor")
                for other in fig.axes:  # the params' axes' grids would cross the lines
                    if other is not ax:
                        other.grid(False)
            else:
                fig.set_size_inches(10, 6)
            fig.tight_layout()
            fig.savefig(folder / "plots" / f"{name}.png", dpi=100)
            plt.close(fig)
            written.append(f"plots/{name}.png")
        except Exception as e:  # a plot the trials cannot support (e.g. no variance)
            logger.info("skipped plot %s: %s", name, e)
    return written


def _first_objective(study: optuna.Study, metrics: list[str] | None) -> dict[str, Any]:
    """Keyword arguments of Optuna's single-objective plots: the objective's name and, with
    several objectives, the first of them as the target."""
    name = (metrics or ["Objective Value"])[0]
    if len(study.directions) == 1:
        return {"target_name": name}
    return {"target": lambda t: t.values[0], "target_name": name}


def _param_names(trials: list[optuna.trial.FrozenTrial]) -> list[str]:
    return sorted({p for t in trials for p in t.params})


def _untruncated(labels: list[str], params: list[str]) -> list[str] | None:
    """The parallel-coordinate axes' names in full: Optuna cuts a param's name to 17
    characters and "...", so that names with a common start all read alike. ``labels``: the
    objective(s), then the params, sorted; None if they are not what is expected."""
    n_objectives = len(labels) - len(params)
    full = labels[:max(n_objectives, 0)] + params
    if n_objectives < 1 or not all(name.startswith(label.removesuffix("..."))
                                   for label, name in zip(labels, full, strict=True)):
        return None
    return full


def html_figures(study: optuna.Study, metrics: list[str] | None = None) -> dict[str, Any]:
    """The interactive plots that the study's trials allow, as plotly figures by name.

    A plot the trials cannot support (no completed trial, one trial or no params for the
    params' plots, no intermediate values for the learning curves, one objective for the
    Pareto front) is left out, as is one that Optuna fails to draw."""
    import optuna.visualization as ov

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    params = _param_names(complete)
    first = _first_objective(study, metrics)
    makers: dict[str, Any] = {}
    if complete:
        makers["optimization_history"] = partial(ov.plot_optimization_history, **first)
    if len(complete) >= 2 and params:
        makers["parallel_coordinate"] = partial(ov.plot_parallel_coordinate, **first)
        makers["param_importances"] = partial(ov.plot_param_importances, **first)
        makers["slice"] = partial(ov.plot_slice, **first)
    if any(t.intermediate_values for t in trials):
        makers["learning_curves"] = ov.plot_intermediate_values
    if complete and 2 <= len(study.directions) <= 3:
        makers["pareto_front"] = partial(ov.plot_pareto_front, target_names=metrics)

    figures = {}
    for name, make in makers.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fig = make(study)
        except Exception as e:  # a plot the trials cannot support (e.g. no variance)
            logger.info("skipped plot %s.html: %s", name, e)
            continue
        if not fig.data:  # Optuna's empty figure: nothing it could draw
            logger.info("skipped plot %s.html: no data", name)
            continue
        figures[name] = fig
    n_axes = 1 + len(params)
    if "parallel_coordinate" in figures:
        parallel = figures["parallel_coordinate"]
        names = _untruncated([str(t) for t in parallel.layout.xaxis.ticktext or ()], params)
        if names:
            parallel.update_xaxes(ticktext=names)
            for trace in parallel.data:  # the hover text: [axis name, value] at each axis
                rows = trace.customdata
                if rows is not None and len(rows) == len(names):
                    trace.customdata = [[n, *row[1:]] for n, row in zip(names, rows, strict=True)]
        # Each axis carries its tick values at its left: 120 px an axis, and the names slanted
        # (slanted lines 120 px apart never touch, however long the names).
        parallel.update_layout(
            width=max(900, 120 * n_axes + 250), height=560,
            xaxis={"tickangle": -30, "automargin": True, "tickfont": {"size": 13}})
    if "param_importances" in figures:
        figures["param_importances"].update_layout(height=max(450, 30 * len(params) + 160))
    if "slice" in figures:
        figures["slice"].update_layout(height=480)  # Optuna sets its width: 300 px a param
    if "optimization_history" in figures:  # whole trial numbers, about a dozen ticks
        figures["optimization_history"].update_layout(
            xaxis={"tick0": 0, "dtick": max(1, -(-len(trials) // 12))})
    if "learning_curves" in figures:
        curves = figures["learning_curves"]
        from mltune._objective import run_name

        for trace in curves.data:  # Optuna's "Trial7" is MLflow's run "trial-007"
            number = str(trace.name or "").removeprefix("Trial")
            if number.isdigit():
                trace.name = run_name(int(number))
        last = max((max(t.intermediate_values, default=1) for t in trials), default=1)
        curves.update_layout(
            title={"text": "Learning curves: every trial's per-epoch value"},
            # Whole epochs only, about a dozen ticks.
            xaxis={"title": {"text": "Epoch"}, "tick0": 0, "dtick": max(1, -(-last // 12))},
            yaxis={"title": {"text": (metrics or ["Intermediate Value"])[0]}},
            showlegend=True, height=520)
    return figures


HTML_TITLES = {
    "optimization_history": "Optimization history",
    "parallel_coordinate": "Parallel coordinates",
    "param_importances": "Parameter importances",
    "slice": "Slices",
    "learning_curves": "Learning curves",
    "pareto_front": "Pareto front",
}

_HTML_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 12px 16px; color: #222; }}
nav a {{ margin-right: 1.2em; }}
section {{ margin: 18px 0 30px; }}
.plot-scroll {{ overflow-x: auto; }}
.plot {{ width: 100%; }}
</style>
<script>window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script>
<script>{plotlyjs}</script>
</head>
<body>
<h1>{title}</h1>
<nav>{nav}</nav>
{sections}
<script>
document.querySelectorAll("script.mltune-figure").forEach(function (source) {{
  var figure = JSON.parse(source.textContent);
  Plotly.newPlot(source.dataset.target, figure.data, figure.layout || {{}},
                 {{displaylogo: false, responsive: true}});
}});
// MLflow shows the page in a sandboxed iframe on a blob: URL, where "#id" links go nowhere.
document.querySelectorAll("nav a").forEach(function (link) {{
  link.addEventListener("click", function (event) {{
    event.preventDefault();
    document.getElementById(link.getAttribute("href").slice(1)).scrollIntoView();
  }});
}});
</script>
</body>
</html>
"""

_HTML_SECTION = """<section id="{name}">
<div class="plot-scroll"><div class="plot" id="plot-{name}"></div></div>
<script type="application/json" class="mltune-figure" data-target="plot-{name}">{json}</script>
</section>"""


def write_html(study: optuna.Study, path: Path, metrics: list[str] | None = None
               ) -> list[str]:
    """Write the study's interactive plots (:func:`html_figures`) to one HTML page at
    ``path``; return the plots' names, none (and no file) if the trials allow no plot.

    One self-contained page, not a file per plot: plotly.js (~4.8 MB) is embedded once, so
    that the page works offline (no CDN: tracking servers often have no internet, and MLflow's
    artifact viewer shows the page in a sandboxed iframe), and the six plots cost one copy of
    it instead of six. Each figure is a ``<script type="application/json"
    class="mltune-figure">`` block (plotly's figure JSON, with ``data`` and ``layout``) that
    one script at the end draws; the wide plots (parallel coordinates: 120 px a parameter;
    slices: 300 px a parameter) scroll sideways on their own. Needs plotly; without it, or if
    it fails, the page is skipped with a warning (the PNGs do not need it)."""
    try:
        import plotly.io as pio
        from plotly.offline import get_plotlyjs

        figures = html_figures(study, metrics)
        if not figures:
            return []
        sections = []
        for name, fig in figures.items():
            # "<" only occurs inside JSON strings, where \\u003c means the same: no "</script>"
            # or "<!--" can end the block early.
            text = pio.to_json(fig, validate=False).replace("<", "\\u003c")
            sections.append(_HTML_SECTION.format(name=name, json=text))
        nav = " ".join(f'<a href="#{name}">{HTML_TITLES[name]}</a>' for name in figures)
        page = _HTML_PAGE.format(title=html.escape(f"Study {study.study_name}"),
                                 plotlyjs=get_plotlyjs(), nav=nav,
                                 sections="\n".join(sections))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except Exception as e:  # the PNGs and trials.csv still go to the run
        logger.warning("skipped the interactive plots (%s): %s: %s", path.name,
                       type(e).__name__, e)
        return []
    return list(figures)
