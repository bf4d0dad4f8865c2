"""What a finished study leaves behind: the trials table and Optuna's plots."""

from __future__ import annotations

import logging
import warnings
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
    if "duration" in frame:
        frame["duration"] = frame["duration"].dt.total_seconds().round(2)
    first = [c for c in ("number", "state", "value") if c in frame]
    return frame[first + [c for c in frame.columns if c not in first]]


def write_report(study: optuna.Study, folder: Path) -> list[str]:
    """Write ``trials.csv`` and the plots that the study's trials allow; return the names."""
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

    plots: dict[str, Any] = {"optimization_history": ovm.plot_optimization_history}
    if len(complete) >= 2 and study.best_trial.params:
        plots["parallel_coordinate"] = ovm.plot_parallel_coordinate
        plots["param_importances"] = ovm.plot_param_importances
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
