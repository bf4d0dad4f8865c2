"""What the public functions return. Plain data (light to import: ``import mltune`` stays
cheap), with the one convenience of loading the model a result points at."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mltune._errors import MltuneError

__all__ = ["Registration", "RunResult", "StudyResult"]


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
