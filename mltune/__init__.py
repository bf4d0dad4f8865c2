"""mltune: tune Keras models with Optuna and record every trial in MLflow.

The public API is what this module exports; everything else (the ``mltune._*`` modules) is
private and may change. Quick start::

    import mltune

    result = mltune.tune(model=build, data=(x, y), search_space={...}, n_trials=20)
    model = result.load_best_model()
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from mltune._api import (
    load_config,
    load_studies,
    load_study,
    load_trials,
    register_best,
    run_worker,
    train,
    tune,
)
from mltune._compare import compare
from mltune._errors import ConfigError, DataError, MltuneError, NonFiniteLossError, TrialError
from mltune._results import ComparisonResult, Registration, RunResult, StudyResult
from mltune._types import Config, DataConfig, ObjectiveSpec, StudyConfig

try:
    __version__ = version("mltune")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "ComparisonResult",
    "Config",
    "ConfigError",
    "DataConfig",
    "DataError",
    "MltuneError",
    "NonFiniteLossError",
    "ObjectiveSpec",
    "Registration",
    "RunResult",
    "StudyConfig",
    "StudyResult",
    "TrialError",
    "__version__",
    "compare",
    "load_config",
    "load_studies",
    "load_study",
    "load_trials",
    "register_best",
    "run_worker",
    "train",
    "tune",
]
