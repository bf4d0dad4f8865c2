"""One process's setup for a study (or a training run), shared by ``tune``, ``worker`` and
``train``: the checks that come before anything is written (the tracking store, the user's
code, the data), and one model's build, fit and logging."""

from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mltune._errors import ConfigError, TrialError
from mltune._names import Tag
from mltune._results import RunResult
from mltune._usercode import UserCode, code_paths, resolve

if TYPE_CHECKING:
    from collections.abc import Callable

    from mltune._data import Dataset
    from mltune._progress import PlainProgress
    from mltune._tracking import Tracker
    from mltune._trial_process import TrialLink
    from mltune._types import Config, StudyConfig

__all__ = ["MODEL_FILE", "Session", "class_weights", "final_metrics", "prepare", "train_run",
           "train_trial", "warm_up"]

MODEL_FILE = "model.keras"


@dataclass
class Session:
    """What every trial of this process shares."""

    config: Config
    tracker: Tracker
    data: Dataset
    builder: Callable[..., Any]
    code: tuple[list[str], list[str]] = ([], [])  # shipped with each model (code_paths)
    callbacks: tuple[Any, ...] = ()  # the user's Keras callbacks
    fit_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def builder_name(self) -> str:
        """``builtin``, or where the user's builder comes from (a builder passed from Python
        has its reference in ``config.builder`` too)."""
        return self.config.builder or "builtin"

    def log_model(self, run_id: str, path: str, outputs: Any) -> str:
        """Log the Keras model saved at ``path`` (by :func:`train_trial`, perhaps in another
        process); ``outputs`` describes its output (:func:`mltune._trainer.output_spec`)."""
        return self.tracker.log_model(run_id, path, self.data.example(5), outputs=outputs,
                                      code=self.code)


def prepare(config: Config, tracking_uri: str | None, *, user: UserCode | None = None,
            callbacks: tuple[Any, ...] = (), fit_kwargs: dict[str, Any] | None = None,
            training: bool = True) -> Session:
    """The checks that come before anything is written: the tracking store, the user's
    builder and loader (imported), then the data (loaded once per process). Nothing here
    starts the backend's runtime or touches a GPU: trials may be forked from this process.

    ``user`` holds what was passed from Python (builder, loader, data); what it lacks is
    imported or loaded as ``config`` says. ``training=False`` (registration: no model is
    trained) skips what only training needs: ``training.class_weight``'s weights."""
    from mltune._config import check_weights
    from mltune._data import from_python, load_data
    from mltune._device import backend
    from mltune._tracking import Tracker

    sc = config.study
    if training:
        check_weights(config)
    tracker = Tracker(tracking_uri, sc.experiment or sc.name)
    tracker.check()
    user = user or UserCode()
    builder, loader, data = user.builder, user.loader, user.data
    if builder is None and config.builder is not None:
        builder = resolve(config.builder, key="model.builder", source=config.source)
    if loader is None and config.data.loader is not None:
        loader = resolve(config.data.loader, key="data.loader", source=config.source)
    if data is None and loader is None and config.data.source is None:
        raise ConfigError("data", f"study {sc.name!r} was run with data passed from Python, "
                          "which another process cannot load; give data.source or "
                          "data.loader (a function in a .py file)", source=config.source)
    backend()  # Keras imported now, with the backend's native start-up lines muted
    images = builder is None  # the built-in CNN takes images
    dataset = (from_python(*data, cfg=config.data, seed=sc.seed, images=images)
               if data is not None else load_data(config.data, seed=sc.seed, loader=loader))
    code: tuple[list[str], list[str]] = ([], [])
    if builder is None:
        from mltune._model import build_model

        _check_backbones(config, dataset.input_shape)
        builder = functools.partial(build_model, pixel_max=dataset.pixel_max)
    else:
        code = code_paths(builder)
    fit = dict(fit_kwargs or {})
    weights = config.settings.get("class_weight")
    if weights is not None and training:
        if "class_weight" in fit:
            raise ConfigError("fit_kwargs.class_weight", "training.class_weight is set too; "
                              "give one of them", source=config.source)
        fit["class_weight"] = class_weights(weights, dataset, source=config.source)
    return Session(config, tracker, dataset, builder=builder, code=code,
                   callbacks=tuple(callbacks), fit_kwargs=fit)


def class_weights(spec: Any, data: Dataset, *, source: str = "<config>") -> dict[int, float]:
    """``training.class_weight`` as ``model.fit`` takes it: a weight for every class index.

    ``balanced`` weighs class c by n_samples / (n_classes * count of c) in the training split
    (scikit-learn's ``compute_class_weight("balanced")``); a mapping names classes by index or
    name, and the classes it leaves out weigh 1."""
    import numpy as np

    n = data.num_classes
    if spec == "balanced":
        counts = _class_counts(data, source)
        total = float(counts.sum())
        return {c: (total / (n * float(counts[c])) if counts[c] else 1.0) for c in range(n)}
    names = {name: i for i, name in enumerate(data.class_names)}
    weights = dict.fromkeys(range(n), 1.0)
    for key, weight in spec.items():
        index = names.get(key) if isinstance(key, str) else key
        if index is None and isinstance(key, str) and key.isdigit():
            index = int(key)
        if not isinstance(index, (int, np.integer)) or not 0 <= index < n:
            shown = ", ".join(data.class_names[:20]) + (", ..." if n > 20 else "")
            raise ConfigError(f"training.class_weight.{key}", f"must name a class of the data "
                              f"(an index in 0..{n - 1} or a name: {shown}), but got {key!r}",
                              source=source)
        weights[int(index)] = float(weight)
    return weights


def _class_counts(data: Dataset, source: str) -> Any:
    """How many training examples each class has: from the labels, or from the counts a
    streamed data set knows (``Dataset.class_counts``)."""
    import numpy as np

    if data.y_train is not None:
        y = np.asarray(data.y_train)
        labels = y.argmax(axis=-1) if data.one_hot else y.reshape(-1).astype(np.int64)
        return np.bincount(labels, minlength=data.num_classes)[:data.num_classes]
    counts = data.class_counts
    if counts is None:
        raise ConfigError("training.class_weight", "balanced needs the number of training "
                          "examples of each class, which this streamed data does not say; "
                          "give a mapping of class to weight instead", source=source)
    return np.asarray(counts, dtype=np.float64)


def _check_backbones(config: Config, input_shape: tuple[int, ...]) -> None:
    """Images that a keras.applications backbone of the study cannot take (too small, or
    neither grey nor RGB) are an error before any run, not a failure of every trial."""
    from mltune._model import backbone_input_error

    param = config.search_space.get("backbone")
    choices = param.grid() if param is not None else None
    for backbone in choices or [config.settings["backbone"]]:
        why = backbone_input_error(str(backbone), tuple(input_shape))
        if why:
            raise ConfigError("search_space.backbone" if param is not None else
                              "model.backbone", why, source=config.source)


def warm_up(session: Session) -> None:
    """What every trial's process does before its trial: set up the GPU, start the backend's
    runtime, make the data's tensors. A process forked ahead of its trial does it while it
    waits (:func:`mltune._trial_process.run_forked`); :func:`train_trial` finds it done."""
    from mltune._device import configure_gpus
    from mltune._trainer import warm_up as warm_inputs

    configure_gpus()
    warm_inputs(session.data)


def train_trial(session: Session, settings: dict[str, Any], seed: int | None,
                link: TrialLink, *, test: bool = False) -> Any:
    """The Keras side of a trial (or of a ``mltune train`` run): set up the GPU, build and
    train the model, tell ``link`` each epoch and the outcome, and save the model where the
    link asks. Runs in a trial's own process or in this one (:mod:`mltune._trial_process`);
    returns the model. ``test``: evaluate it on the test split, when there is one."""
    import keras

    from mltune._device import configure_gpus, device_name
    from mltune._model import build
    from mltune._trainer import evaluate, latency_ms, output_spec, train

    configure_gpus()
    link.started(device_name())
    # An image folder's streams are batched by the trial's batch size.
    sc, data = session.config.study, session.data.batched(int(settings["batch_size"]))
    if seed is not None:
        # Before building, so the initial weights are seeded as well as shuffling and dropout.
        keras.utils.set_random_seed(seed)
    model = build(session.builder, settings, input_shape=data.input_shape,
                  num_classes=data.num_classes)
    # What the untrained model already tells, so that several objectives can be compared
    # from the first epoch on (mltune._pareto). Its inference time is that of the trained
    # model (same layers, same shapes), so it is measured once, here.
    latency = None
    if any(o.metric == "latency_ms" for o in sc.objectives):
        latency = latency_ms(model, data.example(64))
    elif any(o.metric == "params" for o in sc.objectives) and not model.built:
        model.predict_on_batch(data.example(1))  # a subclassed model is built by a call
    link.built(model.count_params() if model.built else None, latency)
    result = train(model, settings, data=data, metric=sc.metric,
                   maximize=sc.direction == "maximize", on_epoch=link.epoch,
                   callbacks=session.callbacks, fit_kwargs=session.fit_kwargs,
                   fine_tune=session.config.builder is None)
    outcome: dict[str, Any] = {
        "best_value": result.best_value, "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run, "train_seconds": result.train_seconds,
        "history": result.history, "param_count": model.count_params(),
        "outputs": output_spec(model, data.example(5)),
    }
    if latency is not None:
        outcome["latency_ms"] = latency
    if test and data.has_test:
        outcome["test"] = evaluate(model, data)
    path = link.finished(outcome)
    if path is not None:
        error = None
        try:
            model.save(path)
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
        link.saved(error)
    return model


def final_metrics(sc: StudyConfig, outcome: dict[str, Any]) -> dict[str, float]:
    """The metrics a trained model's run gets once training ends (``best_epoch`` counts from
    1, as the console and the metric steps do)."""
    return {f"best_{sc.metric}": outcome["best_value"], "best_epoch": outcome["best_epoch"] + 1,
            "epochs_run": outcome["epochs_run"], "train_seconds": outcome["train_seconds"],
            "param_count": outcome["param_count"]}


def log_epoch(tracker: Tracker, run_id: str, epoch: int, metrics: dict[str, float]) -> None:
    """One epoch's metrics, at step ``epoch + 1``: epochs count from 1 wherever a user sees
    them (the console, Optuna's intermediate values, ``mltune.pruned_at_epoch``)."""
    tracker.log_metrics(run_id, metrics, step=epoch + 1)


def log_kept_epoch(tracker: Tracker, run_id: str, outcome: dict[str, Any]) -> None:
    """The kept model is the best epoch's, not the last one's: log that epoch's metrics once
    more as the last step (as MLflow's Keras autologging does when EarlyStopping restores the
    best weights), so each metric column of the runs table shows the kept model's value and
    sorting by the study metric ranks trials as Optuna does."""
    best, run = outcome["best_epoch"], outcome["epochs_run"]
    if best < 0 or best >= run - 1:
        return
    history: dict[str, list[float]] = outcome["history"]
    metrics = {k: v[best] for k, v in history.items()
               if k != "epoch_seconds" and len(v) > best}
    tracker.log_metrics(run_id, metrics, step=run + 1)


class _TrainLink:
    """``mltune train``'s side of its one run: metrics, progress and the model to MLflow."""

    def __init__(self, session: Session, run_id: str, progress: PlainProgress, epochs: int,
                 folder: str) -> None:
        self.session, self.run_id, self.progress = session, run_id, progress
        self.epochs, self.folder = epochs, folder
        self.outcome: dict[str, Any] = {}
        self.model_uri = ""

    def started(self, device: str) -> None:
        self.session.tracker.set_tags(self.run_id, {Tag.DEVICE: device})

    def built(self, param_count: int | None, latency_ms: float | None) -> None:
        pass  # a single run compares nothing while it trains

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        log_epoch(self.session.tracker, self.run_id, epoch, metrics)
        self.progress.epoch_ended(0, epoch, self.epochs, metrics)
        self.progress.message(f"epoch {epoch + 1}/{self.epochs}: " + " ".join(
            f"{k}={v:.4g}" for k, v in metrics.items()))

    def finished(self, outcome: dict[str, Any]) -> str | None:
        self.outcome = outcome
        tracker, sc = self.session.tracker, self.session.config.study
        tracker.log_metrics(self.run_id, final_metrics(sc, outcome))
        log_kept_epoch(tracker, self.run_id, outcome)
        if outcome.get("test"):
            tracker.log_metrics(self.run_id, {f"test_{k}": v for k, v in
                                              outcome["test"].items()})
        return os.path.join(self.folder, MODEL_FILE)

    def saved(self, error: str | None) -> None:
        if error is not None:
            raise TrialError(f"the trained model could not be saved: {error}")
        self.model_uri = self.session.log_model(self.run_id, os.path.join(
            self.folder, MODEL_FILE), self.outcome["outputs"])


def train_run(session: Session, *, progress: PlainProgress | None = None) -> RunResult:
    """One MLflow run with fixed settings, no study (``mltune train``), in this process.

    Searched settings that are not fixed take their defaults. The model is evaluated on the
    test split, when there is one, and logged.
    """
    from mltune._progress import PlainProgress
    from mltune._tracking import project_run_id
    from mltune._trainer import release

    config, tracker = session.config, session.tracker
    sc = config.study
    progress = progress or PlainProgress(sc.metric)
    settings = dict(config.settings)
    run_id = tracker.start_parent(name=f"train-{sc.name}", params=settings, tags={
        Tag.STUDY_NAME: sc.name, Tag.METRIC: sc.metric, Tag.KIND: "train",
        Tag.BUILDER: session.builder_name}, project_run_id=project_run_id())
    status = "FAILED"
    try:
        with tempfile.TemporaryDirectory(prefix="mltune-model-") as folder:
            link = _TrainLink(session, run_id, progress, int(settings["epochs"]), folder)
            train_trial(session, settings, sc.seed, link, test=True)
        status = "FINISHED"
        return RunResult(run_id=run_id, test_metrics={
            f"test_{k}": v for k, v in link.outcome.get("test", {}).items()},
            model_uri=link.model_uri, tracking_uri=tracker.uri)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except Exception as e:
        tracker.log_error(run_id, e)
        raise
    finally:
        tracker.end_run(run_id, status)
        progress.close()
        release()
