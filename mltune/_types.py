"""The validated study: what :func:`mltune.tune` runs. Plain data, no behaviour beyond
derived values; made by :mod:`mltune._config`, read everywhere else."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mltune._search_space import SearchSpace

__all__ = ["Config", "DataConfig", "ObjectiveSpec", "StudyConfig"]


@dataclass(frozen=True)
class ObjectiveSpec:
    """One objective: a metric (``val_accuracy``, ``val_auc``, ``params``, ...) and whether
    to ``maximize`` or ``minimize`` it."""

    metric: str
    direction: str


@dataclass(frozen=True)
class StudyConfig:
    """The ``study:`` section. ``metric``/``direction`` are those of the first (or only)
    objective: the training metric that picks a trial's best epoch and that pruning
    watches."""

    name: str
    objectives: tuple[ObjectiveSpec, ...] = (ObjectiveSpec("val_accuracy", "maximize"),)
    sampler: str = "tpe"
    sampler_options: dict[str, Any] = field(default_factory=dict)
    pruner: str = "none"
    pruner_options: dict[str, Any] = field(default_factory=dict)
    selection_tolerance: float = 0.002
    n_trials: int | None = None
    timeout: float | None = None
    seed: int | None = None
    experiment: str | None = None
    heartbeat_interval: int = 60
    grace_period: int | None = None
    retry_failed: int = 0
    max_consecutive_failures: int = 5  # failed trials in a row that stop the study; 0: never
    trial_process: str = "fork"  # fork | spawn | none (mltune._trial_process)
    # {"study": NAME, "storage": URL} or {"experiment": NAME}: trials that seed a new study
    warm_start: dict[str, str] | None = None

    @property
    def metric(self) -> str:
        return self.objectives[0].metric

    @property
    def direction(self) -> str:
        return self.objectives[0].direction

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]


@dataclass(frozen=True)
class DataConfig:
    """The ``data:`` section. ``source`` names built-in or on-disk data, ``loader`` a
    function of the user's (``data.py:load``); with neither, the data was passed from
    Python (``mltune.tune(data=...)``) and cannot be reloaded from the study."""

    source: str | None = None
    loader: str | None = None
    validation_split: float = 0.1
    test_split: float = 0.2
    max_samples: int | None = None
    num_classes: int | None = None
    label_column: str = "label"
    image_size: tuple[int, int] | None = None
    color_mode: str | None = None
    resize: str = "stretch"  # image folder: stretch | crop | pad (to image_size)
    cache: str = "none"  # image folder: none | memory | disk (decoded, resized images)
    seed: int | None = None  # of the splits; None: study.seed


@dataclass(frozen=True)
class Config:
    """A validated study file.

    ``settings`` holds every training setting and every fixed model value (the built-in
    CNN's defaults, or a custom builder's ``model:`` keys); ``search_space`` holds the
    parameters that are searched. A setting fixed under ``model:``/``training:`` is not
    searched, even if ``search_space:`` names it. ``builder`` is where a custom model comes
    from (``models.py:build``, ``package.module:build``), None for the built-in CNN.
    """

    study: StudyConfig
    data: DataConfig
    settings: dict[str, Any]
    search_space: SearchSpace
    fixed: tuple[str, ...]
    raw: dict[str, Any]
    source: str
    builder: str | None = None
    notes: tuple[str, ...] = ()  # advice found while validating (not errors)

    def params_for(self, sampled: dict[str, Any]) -> dict[str, Any]:
        """All values of one trial: the fixed ones with the sampled ones on top."""
        return {**self.settings, **sampled}

    def fixed_settings(self) -> dict[str, Any]:
        """The settings that are not searched, as logged on the parent run."""
        return {k: v for k, v in self.settings.items() if k not in self.search_space}
