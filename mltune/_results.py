"""What the public functions return. Plain data (light to import: ``import mltune`` stays
cheap), with the one convenience of loading the model a result points at."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mltune._errors import MltuneError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ComparisonResult", "Registration", "RunResult", "StudyResult"]


@dataclass(frozen=True)
class StudyResult:
    """What a study run returns: its best trial, where everything is recorded, the counts.

    ``best_value``/``best_params``/``best_run_id`` are those of the best trial (the one
    :attr:`selection_rule` chose, with several objectives), None before any trial completed.
    """

    study_name: str
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    n_trials: int  # all trials of the study, earlier sessions included
    best_trial: int | None
    best_value: float | None
    best_params: dict[str, Any]
    best_run_id: str | None
    best_model_uri: str | None
    states: dict[str, int]
    best_values: dict[str, float] = field(default_factory=dict)  # each objective's value
    selection_rule: str = ""  # how the best trial was chosen, in words

    def load_best_model(self) -> Any:
        """The best trial's logged Keras model, loaded from MLflow (the user's modules it
        ships are imported first, so custom layers load).

        Raises:
            MltuneError: the study has no completed trial with a logged model.
        """
        if self.best_model_uri is None:
            raise MltuneError(f"study {self.study_name!r} has no best trial with a logged "
                              "model")
        from mltune._tracking import Tracker

        return Tracker(self.tracking_uri).load_keras_model(self.best_model_uri)


@dataclass(frozen=True)
class RunResult:
    """One training run (:func:`mltune.train`): its MLflow run, its test metrics (empty
    without test data) and its logged model."""

    run_id: str
    test_metrics: dict[str, float]
    model_uri: str
    tracking_uri: str

    def load_model(self) -> Any:
        """The run's logged Keras model, loaded from MLflow."""
        from mltune._tracking import Tracker

        return Tracker(self.tracking_uri).load_keras_model(self.model_uri)


@dataclass(frozen=True)
class Registration:
    """A new (or the existing) registered-model version of a study's best trial."""

    name: str
    version: str
    alias: str
    model_uri: str  # the serving model: models:/<id>
    test_metrics: dict[str, float]
    previous_champion: str | None  # version number
    already_registered: bool = False


@dataclass(frozen=True, eq=False)
class ComparisonResult:
    """What :func:`mltune.compare` returns: the samplers compared on one budget, each over
    several seeds, and the winner.

    ``table`` has one row per sampler (in the order given): ``studies``, ``trials`` (the
    mean number run per study), ``best_<metric>_mean``/``_std``/``_min``/``_max`` (the
    final best value over the seeds), ``seconds_to_99_mean``/``_min``/``_max`` and
    ``trials_to_99_mean`` (how soon each study came within 1% of its own final best), and
    ``<test_metric>_mean``/``_min``/``_max`` (each study's best model on the test split;
    NaN without one). ``studies`` has one row per study with the same measures.

    ``winner`` has the best mean final value, ``margin`` is its lead over ``runner_up``,
    and ``within_spread`` says whether that lead is smaller than the spread (max - min over
    the seeds) of either of the two: then the seeds disagree more than the samplers do. None
    where it cannot be said (one sampler, or fewer than two seeds with a value).
    """

    run_id: str  # the comparison's MLflow run; the studies' parent runs are its children
    experiment_id: str
    tracking_uri: str
    metric: str
    direction: str
    samplers: tuple[str, ...]
    budget: str  # per study, in words: "20 trials" or "600 s"
    seeds: int
    table: pd.DataFrame
    studies: pd.DataFrame
    test_metric: str | None  # the table's test column (test_accuracy...), None without test
    winner: str | None
    runner_up: str | None
    margin: float | None
    within_spread: bool | None
    summary: str  # the winner and its margin, in one sentence
    output: str  # the folder with comparison.html, .png, .csv, .md
    results: tuple[StudyResult, ...] = ()
