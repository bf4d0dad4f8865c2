"""What a finished study leaves behind: the trials table and Optuna's plots."""

from __future__ import annotations

import logging
import warnings
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    import pandas as pd

__all__ = ["trials_table", "write_report"]

logger = logging.getLogger(__name__)

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
    ``pareto_front.png`` shows the trade-off (two or three objectives)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    table = trials_table(study)
    table.to_csv(folder / "trials.csv", index=False)
    written.append("trials.csv")
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not complete:
        return written

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    # With several objectives, the single-objective plots show the first.
    first: dict[str, Any] = {} if len(study.directions) == 1 else {
        "target": lambda t: t.values[0], "target_name": (metrics or ["value"])[0]}
    plots: dict[str, Any] = {"optimization_history": partial(ovm.plot_optimization_history,
                                                             **first)}
    if len(complete) >= 2 and complete[0].params:
        plots["parallel_coordinate"] = partial(ovm.plot_parallel_coordinate, **first)
        plots["param_importances"] = partial(ovm.plot_param_importances, **first)
    if 2 <= len(study.directions) <= 3:
        plots["pareto_front"] = partial(ovm.plot_pareto_front, target_names=metrics)
    (folder / "plots").mkdir(exist_ok=True)
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = plot(study)
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.set_size_inches(10, 6)
            fig.tight_layout()
            fig.savefig(folder / "plots" / f"{name}.png", dpi=100)
            plt.close(fig)
            written.append(f"plots/{name}.png")
        except Exception as e:  # a plot the trials cannot support (e.g. no variance)
            logger.info("skipped plot %s: %s", name, e)
    return written
