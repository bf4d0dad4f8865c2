"""The public functions: :func:`tune`, :func:`train`, :func:`register_best`,
:func:`load_study`, :func:`load_trials`. The CLI, the MLproject entry points, notebooks and
``bench/`` all come in through here.

A study is described once, in the study-file schema: a YAML file, a dict, or keywords (every
study-file key has one), merged in that order. Heavy libraries are imported only when a
function runs, so ``import mltune`` stays cheap.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from mltune._errors import ConfigError
from mltune._results import Registration, RunResult, StudyResult
from mltune._types import Config
from mltune._usercode import UserCode

if TYPE_CHECKING:
    import optuna
    import pandas as pd

__all__ = ["load_config", "load_studies", "load_study", "load_trials", "register_best",
           "run_worker", "train", "tune"]

StudySpec = Union[str, "os.PathLike[str]", Mapping[str, Any], Config, None]

# Keyword -> study-file key.
_STUDY_KEYS = {
    "study_name": "study.name", "metric": "study.metric", "direction": "study.direction",
    "objectives": "study.objectives", "sampler": "study.sampler",
    "sampler_options": "study.sampler_options", "pruner": "study.pruner",
    "pruner_options": "study.pruner_options", "selection_tolerance": "study.selection_tolerance",
    "n_trials": "study.n_trials", "timeout": "study.timeout", "seed": "study.seed",
    "experiment": "study.experiment", "heartbeat_interval": "study.heartbeat_interval",
    "grace_period": "study.grace_period", "retry_failed": "study.retry_failed",
    "max_consecutive_failures": "study.max_consecutive_failures",
    "trial_process": "study.trial_process", "warm_start": "study.warm_start",
    "validation_split": "data.validation_split", "test_split": "data.test_split",
    "max_samples": "data.max_samples", "num_classes": "data.num_classes",
    "label_column": "data.label_column", "image_size": "data.image_size",
    "color_mode": "data.color_mode", "data_seed": "data.seed", "resize": "data.resize",
    "cache": "data.cache",
}
_TRAINING_KEYS = ("optimizer", "learning_rate", "momentum", "weight_decay", "lr_schedule",
                  "lr_decay_rate", "batch_size", "epochs", "early_stopping_patience",
                  "mixed_precision", "jit_compile", "warmup_epochs", "fine_tune_learning_rate",
                  "metrics", "class_weight")


def tune(
    study: StudySpec = None,
    /,
    *,
    model: Callable[..., Any] | str | None = None,
    data: Any = None,
    validation_data: Any = None,
    test_data: Any = None,
    search_space: Mapping[str, Mapping[str, Any]] | None = None,
    model_params: Mapping[str, Any] | None = None,
    study_name: str | None = None,
    metric: str | None = None,
    direction: str | None = None,
    objectives: Sequence[Mapping[str, str]] | None = None,
    sampler: str | None = None,
    sampler_options: Mapping[str, Any] | None = None,
    pruner: str | None = None,
    pruner_options: Mapping[str, Any] | None = None,
    selection_tolerance: float | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    seed: int | None = None,
    experiment: str | None = None,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    retry_failed: int | None = None,
    max_consecutive_failures: int | None = None,
    trial_process: str | None = None,
    warm_start: Mapping[str, str] | None = None,
    validation_split: float | None = None,
    test_split: float | None = None,
    max_samples: int | None = None,
    num_classes: int | None = None,
    label_column: str | None = None,
    image_size: Sequence[int] | None = None,
    color_mode: str | None = None,
    data_seed: int | None = None,
    resize: str | None = None,
    cache: str | None = None,
    optimizer: str | None = None,
    learning_rate: float | None = None,
    momentum: float | None = None,
    weight_decay: float | None = None,
    lr_schedule: str | None = None,
    lr_decay_rate: float | None = None,
    batch_size: int | None = None,
    epochs: int | None = None,
    early_stopping_patience: int | None = None,
    mixed_precision: bool | None = None,
    jit_compile: bool | str | None = None,
    warmup_epochs: int | None = None,
    fine_tune_learning_rate: float | None = None,
    metrics: Sequence[str] | None = None,
    class_weight: str | Mapping[Any, float] | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    callbacks: Sequence[Any] = (),
    fit_kwargs: Mapping[str, Any] | None = None,
    trial_callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
    workers: int = 1,
    gpus: Sequence[str] | None = None,
    trials_per_gpu: int = 1,
    trials_per_process: int | None = None,
    progress: bool | None = None,
) -> StudyResult:
    """Run (or resume) an Optuna study; every trial is an MLflow child run of one parent run.

    Args:
        study: A study file (path), a dict in the study-file schema, a :class:`Config`, or
            None (keywords only). The keywords below override its keys.
        model: Your model builder ``build(params, *, input_shape, num_classes) ->
            keras.Model``, or its reference ``"models.py:build"`` /
            ``"package.module:build"``. ``params`` holds the trial's values: sampled ones,
            ``model_params`` and the training settings. Return it uncompiled (mltune compiles
            it with the training settings) or compiled (kept; mltune adds its callbacks).
            Default: the built-in CNN (``model_params`` are then its settings).
        data: ``(x, y)`` NumPy arrays, a batched ``tf.data.Dataset`` or
            ``keras.utils.PyDataset`` of ``(x, y)`` batches, a built-in data set name or
            a path (``data.source``), or a function returning a dict of arrays
            (``data.loader``).
        validation_data: Like ``data``; needed for streams. Arrays without it are split by
            ``validation_split``.
        test_data: Like ``data``: evaluated when a model is registered or trained once.
        search_space: ``{name: {"type": "float"|"int"|"categorical", ...}}``; names are free
            with your own builder.
        model_params: Fixed values for the builder (the study file's ``model:`` section).
        study_name, metric, direction, objectives, sampler, sampler_options, pruner,
            pruner_options, selection_tolerance, n_trials, timeout, seed, experiment,
            heartbeat_interval, grace_period, retry_failed, max_consecutive_failures,
            trial_process, warm_start: the ``study:`` keys (README). ``trial_process="fork"`` (the
            default on Linux) trains each trial in a process forked from this one;
            ``"none"`` in this process.
            ``metric`` may be any metric your compiled model reports (``val_auc``).
        validation_split, test_split, max_samples, num_classes, label_column, image_size,
            color_mode, data_seed, resize, cache: the ``data:`` keys (``data_seed`` is
            ``data.seed``).
        optimizer, learning_rate, momentum, weight_decay, lr_schedule, lr_decay_rate,
            batch_size, epochs, early_stopping_patience, mixed_precision, jit_compile,
            warmup_epochs, fine_tune_learning_rate, metrics, class_weight: the ``training:``
            settings, fixed for every trial. The built-in model's settings (``backbone``,
            ``weights``, ``augment_*``...) go in ``model_params``.
        storage: Optuna storage: a database URL or a journal file (default: the journal
            file ``optuna_journal.log`` beside the MLflow store when that is a local file,
            else in the current folder).
        tracking_uri: MLflow tracking URI (default: the one you set with
            ``mlflow.set_tracking_uri``/``MLFLOW_TRACKING_URI``, else
            ``sqlite:///mlflow.db``). The process-wide URI is never changed.
        callbacks: Extra Keras callbacks for every fit (they reach the trials' processes).
        fit_kwargs: Extra ``model.fit`` arguments (``class_weight``...).
        trial_callbacks: Optuna callbacks ``f(study, trial)`` after each trial.
        workers, gpus, trials_per_gpu: how many trials run at once, each in its own
            process (``gpus``: ``trials_per_gpu`` on each listed GPU, which is all its
            process sees). trials_per_process: ``trial_process="spawn"``: worker processes
            started afresh, which reload the builder and data by reference, each replaced
            after this many trials (see the README).
        progress: A live display (True), plain lines (False), or decide (None: live on a
            terminal or in Jupyter).

    Returns:
        A :class:`StudyResult`: ``best_value``, ``best_params``, ``best_run_id``,
        ``load_best_model()``...

    Raises:
        ConfigError: a bad key, value, builder or loader reference; nothing was written.
        DataError: data that cannot be used; nothing was written.
        MltuneError: the study cannot go on (e.g. the tracking server stays unreachable).
    """
    values = {k: v for k, v in locals().items() if k in _STUDY_KEYS or k in _TRAINING_KEYS}
    config, user = _config(study, model=model, data=data, validation_data=validation_data,
                           test_data=test_data, search_space=search_space,
                           model_params=model_params, values=values, for_study=True)
    _check_fit_kwargs(fit_kwargs, config.source)
    from mltune._progress import make_progress
    from mltune._study import run_study

    parallel = workers != 1 or gpus is not None or bool(trials_per_process)
    with _library_quiet():
        return run_study(
            config, storage=storage, tracking_uri=tracking_uri,
            progress=make_progress(config.study.metric, live=False if parallel else progress),
            workers=workers, gpus=list(gpus) if gpus else None, trials_per_gpu=trials_per_gpu,
            callbacks=tuple(trial_callbacks), trials_per_process=trials_per_process,
            user=user, keras_callbacks=tuple(callbacks), fit_kwargs=dict(fit_kwargs or {}))


def train(
    study: StudySpec = None,
    /,
    *,
    model: Callable[..., Any] | str | None = None,
    data: Any = None,
    validation_data: Any = None,
    test_data: Any = None,
    model_params: Mapping[str, Any] | None = None,
    study_name: str | None = None,
    metric: str | None = None,
    seed: int | None = None,
    experiment: str | None = None,
    tracking_uri: str | None = None,
    callbacks: Sequence[Any] = (),
    fit_kwargs: Mapping[str, Any] | None = None,
    progress: bool | None = None,
    **training: Any,
) -> RunResult:
    """Train once with fixed settings (no study): one MLflow run with the model and, when
    there is test data, its test metrics. Searched settings that are not fixed take their
    defaults. Arguments as for :func:`tune`; ``training`` takes the ``training:`` settings
    (``epochs=3``...).

    Returns:
        A :class:`RunResult`: ``run_id``, ``test_metrics``, ``load_model()``.

    Raises:
        ConfigError, DataError: bad input; nothing was written.
    """
    unknown = [k for k in training if k not in _TRAINING_KEYS]
    if unknown:
        raise ConfigError(unknown[0], "is not a training setting; the settings are "
                          f"{', '.join(_TRAINING_KEYS)}")
    values = {"study_name": study_name, "metric": metric, "seed": seed,
              "experiment": experiment, **training}
    config, user = _config(study, model=model, data=data, validation_data=validation_data,
                           test_data=test_data, search_space=None, model_params=model_params,
                           values=values, for_study=False)
    _check_fit_kwargs(fit_kwargs, config.source)
    from mltune._progress import make_progress
    from mltune._session import prepare, train_run

    with _library_quiet():
        session = prepare(config, tracking_uri, user=user, callbacks=tuple(callbacks),
                          fit_kwargs=dict(fit_kwargs or {}))
        return train_run(session, progress=make_progress(config.study.metric, live=progress))


def register_best(*, study_name: str, name: str, storage: str | None = None,
                  tracking_uri: str | None = None, test_data: Any = None) -> Registration:
    """Register the best trial of a study as a new version of registered model ``name``.

    The model is evaluated on the study's test split (or ``test_data``), logged as a
    python_function model that takes raw images (with your code, for a custom builder),
    and the new version gets the alias ``champion`` when it beats the current champion on
    the test metric, else ``challenger``. Registering the same trial again returns the
    existing version.

    Raises:
        ConfigError: no such study, or no test data to evaluate on.
        MltuneError: the study has no completed trial with a logged model.
    """
    from mltune._registry import register_best as register

    with _library_quiet():
        return register(study_name=study_name, name=name, storage=storage,
                        tracking_uri=tracking_uri, test_data=test_data)


def load_config(path: str | os.PathLike[str], overrides: Sequence[str] = (), *,
                for_study: bool = True, data: str | None = None, **study: Any) -> Config:
    """Read and validate a study file, as ``mltune tune``/``train`` do.

    Args:
        path: The study file (YAML). Relative paths in it are relative to its folder.
        overrides: ``key.path=value`` strings (``--set``); values are read as YAML.
        for_study: False for one training run (no search space needed).
        data: ``data.source`` instead of the file's (``--data``).
        study: ``study:`` keys (``sampler="grid"``, ``n_trials=5``); None means not given.

    Raises:
        ConfigError: the file is missing, not YAML, or breaks a rule (the message names the
            key and the file).
    """
    from mltune._config import load_config as load

    return load(path, list(overrides), for_study=for_study, data=data, **study)


def run_worker(*, study_name: str, storage: str | None = None,
               tracking_uri: str | None = None, max_trials: int | None = None) -> int:
    """Join a running study (``mltune worker``): its settings, builder and loader references
    are stored with it; run its trials until it has enough (or ``max_trials``). Returns how
    many trials this worker ran.

    Raises:
        ConfigError: no such study, or one whose builder/loader cannot be imported here.
    """
    from mltune._study import run_worker as run

    with _library_quiet():
        return run(study_name=study_name, storage=storage, tracking_uri=tracking_uri,
                   max_trials=max_trials)


def load_study(study_name: str, storage: str | None = None, *,
               tracking_uri: str | None = None) -> optuna.Study:
    """The Optuna study ``study_name`` from ``storage``; by default the journal file beside
    the MLflow store (``tracking_uri``, else the one set, else ``sqlite:///mlflow.db``), as
    :func:`tune` chose it.

    Raises:
        ConfigError: no such storage or study (the message says where it looked and lists
            the studies there).
    """
    from mltune._study import find_study

    return find_study(study_name, storage, tracking_uri=tracking_uri)[0]


def load_trials(study_name: str, storage: str | None = None, *,
                tracking_uri: str | None = None) -> pd.DataFrame:
    """The trials of a study as a table: number, state, value(s), params, duration, worker,
    error and MLflow run id (``mltune trials`` prints it). Storage as :func:`load_study`."""
    from mltune._study import load_trials as load

    return load(study_name, storage, tracking_uri=tracking_uri)


def load_studies(storage: str | None = None, *, tracking_uri: str | None = None
                 ) -> pd.DataFrame:
    """The studies in a storage (default as :func:`load_study`) as a table: name, trial
    counts by state, metric and direction, best value and trial, MLflow experiment and
    parent run (``mltune studies`` prints it)."""
    from mltune._study import load_studies as load

    return load(storage, tracking_uri=tracking_uri)


def _config(study: StudySpec, *, model: Any, data: Any, validation_data: Any, test_data: Any,
            search_space: Any, model_params: Any, values: dict[str, Any], for_study: bool
            ) -> tuple[Config, UserCode]:
    """The validated study, and what was passed from Python that the study file can only
    name: the builder, the data loader, the data."""
    from mltune._config import parse_config, read_study_file, set_key
    from mltune._usercode import reference

    if isinstance(study, Config):
        raw, source = copy.deepcopy(study.raw), study.source
    elif isinstance(study, Mapping):
        raw, source = copy.deepcopy(dict(study)), "<dict>"
    elif study is not None:
        raw, source = read_study_file(study), str(study)
    else:
        raw, source = {}, "<keywords>"
    for key, value in values.items():
        if value is not None:
            path = _STUDY_KEYS.get(key, f"training.{key}")
            raw = set_key(raw, path, value)  # tuples become lists in _plain below
    if search_space is not None:
        raw["search_space"] = copy.deepcopy(dict(search_space))
    if model_params:
        raw = set_key(raw, "model", {**(raw.get("model") or {}), **dict(model_params)})
    builder = None
    if callable(model):
        builder = model
        raw = set_key(raw, "model.builder", reference(model))
    elif model is not None:
        raw = set_key(raw, "model.builder", _absolute_ref(str(model)))
    arrays, loader = None, None
    section = {k: v for k, v in (raw.get("data") or {}).items()
               if k not in ("source", "loader")}
    if isinstance(data, (str, os.PathLike)):
        from mltune._config import BUILTIN_DATASETS

        name = str(data)
        raw["data"] = {**section, "source": name if name in BUILTIN_DATASETS else
                       str(Path(name).resolve())}
    elif _is_loader(data):
        loader = data
        raw["data"] = {**section, "loader": reference(data)}
    elif data is not None:
        raw["data"] = section
        arrays = (data, validation_data, test_data)
    raw.setdefault("study", {})
    if isinstance(raw["study"], dict):
        raw["study"].setdefault("name", "study")
    raw = _plain(raw)
    config = parse_config(raw, source=source, for_study=for_study,
                          data_given=arrays is not None)
    return config, UserCode(builder, loader, arrays)


def _plain(value: Any) -> Any:
    """``value`` with NumPy scalars made Python numbers and tuples lists, as a study file
    would give them (values computed in Python are often ``np.int64``); the study is stored
    as JSON."""
    import numpy as np

    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _is_loader(data: Any) -> bool:
    """A plain function (a loader), not a data set object (which may be callable)."""
    import inspect

    return inspect.isfunction(data) or inspect.ismethod(data)


def _absolute_ref(ref: str) -> str:
    """``models.py:build`` relative to the current folder, as a path that works anywhere."""
    path, sep, name = ref.rpartition(":")
    if sep and path.endswith(".py") and not Path(path).is_absolute():
        return f"{Path(path).resolve()}:{name}"
    return ref


def _check_fit_kwargs(fit_kwargs: Mapping[str, Any] | None, source: str) -> None:
    from mltune._names import FIT_OWNED

    for key in fit_kwargs or {}:
        if key in FIT_OWNED:
            raise ConfigError(f"fit_kwargs.{key}", "is set by mltune (from the data and the "
                              "training settings); set it there instead", source=source)


@contextlib.contextmanager
def _library_quiet() -> Iterator[None]:
    """Optuna logs each trial's end (a failed one with its traceback, as a warning); mltune's
    progress display says the same in one line. Its verbosity is put back afterwards. What is
    printed meanwhile passes mltune's redaction (passwords of the storage and tracking URLs)."""
    import optuna

    from mltune._secrets import scrubbed_console

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(before, optuna.logging.ERROR))
    try:
        with scrubbed_console():
            yield
    finally:
        optuna.logging.set_verbosity(before)
