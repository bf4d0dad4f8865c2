"""One process's setup for a study (or a training run), shared by ``tune``, ``worker`` and
``train``: the checks that come before anything is written (the tracking store, the user's
code, the data), and one model's build, fit and logging."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mltune._errors import ConfigError
from mltune._names import Tag
from mltune._results import RunResult
from mltune._usercode import UserCode, code_paths, resolve

if TYPE_CHECKING:
    from collections.abc import Callable

    from mltune._data import Dataset
    from mltune._progress import PlainProgress
    from mltune._tracking import Tracker
    from mltune._types import Config

__all__ = ["Session", "fit_and_log", "prepare", "train_run"]


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

    def log_model(self, run_id: str, model: Any) -> str:
        return self.tracker.log_model(run_id, model, self.data.example(5), code=self.code)


def prepare(config: Config, tracking_uri: str | None, *, user: UserCode | None = None,
            callbacks: tuple[Any, ...] = (), fit_kwargs: dict[str, Any] | None = None
            ) -> Session:
    """The checks that come before anything is written: the tracking store, the user's
    builder and loader (imported), then the data (loaded once per process). GPUs are set up
    before TensorFlow touches them.

    ``user`` holds what was passed from Python (builder, loader, data); what it lacks is
    imported or loaded as ``config`` says."""
    from mltune._data import from_python, load_data
    from mltune._device import configure_gpus
    from mltune._tracking import Tracker

    sc = config.study
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
    configure_gpus()
    images = builder is None  # the built-in CNN takes images
    dataset = (from_python(*data, cfg=config.data, seed=sc.seed, images=images)
               if data is not None else load_data(config.data, seed=sc.seed, loader=loader))
    code: tuple[list[str], list[str]] = ([], [])
    if builder is None:
        from mltune._model import build_model

        builder = functools.partial(build_model, pixel_max=dataset.pixel_max)
    else:
        code = code_paths(builder)
    return Session(config, tracker, dataset, builder=builder, code=code,
                   callbacks=tuple(callbacks), fit_kwargs=dict(fit_kwargs or {}))


def fit_and_log(session: Session, settings: dict[str, Any], run_id: str, on_epoch: Any,
                seed: int | None) -> tuple[Any, Any]:
    """Build and train a model, logging its final metrics to ``run_id``."""
    import keras

    from mltune._model import build
    from mltune._trainer import train

    sc, data = session.config.study, session.data
    if seed is not None:
        # Before building, so the initial weights are seeded as well as shuffling and dropout.
        keras.utils.set_random_seed(seed)
    model = build(session.builder, settings, input_shape=data.input_shape,
                  num_classes=data.num_classes)
    result = train(model, settings, data=data, metric=sc.metric,
                   maximize=sc.direction == "maximize", on_epoch=on_epoch,
                   callbacks=session.callbacks, fit_kwargs=session.fit_kwargs)
    session.tracker.log_metrics(run_id, {
        f"best_{sc.metric}": result.best_value,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "train_seconds": result.train_seconds,
        "param_count": model.count_params(),
    })
    return model, result


def train_run(session: Session, *, progress: PlainProgress | None = None) -> RunResult:
    """One MLflow run with fixed settings, no study (``mltune train``).

    Searched settings that are not fixed take their defaults. The model is evaluated on the
    test split, when there is one, and logged.
    """
    from mltune._device import device_name
    from mltune._progress import PlainProgress
    from mltune._tracking import project_run_id
    from mltune._trainer import evaluate, release

    config, tracker = session.config, session.tracker
    sc = config.study
    progress = progress or PlainProgress(sc.metric)
    settings = dict(config.settings)
    run_id = tracker.start_parent(name=f"train-{sc.name}", params=settings, tags={
        Tag.STUDY_NAME: sc.name, Tag.METRIC: sc.metric, Tag.KIND: "train",
        Tag.BUILDER: session.builder_name, Tag.DEVICE: device_name()},
        project_run_id=project_run_id())
    epochs = int(settings["epochs"])
    progress.trial_started(0, {})

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        tracker.log_metrics(run_id, metrics, step=epoch)
        progress.epoch_ended(0, epoch, epochs, metrics)
        progress.message(f"epoch {epoch + 1}/{epochs}: " + " ".join(
            f"{k}={v:.4g}" for k, v in metrics.items()))

    status = "FAILED"
    try:
        model, _ = fit_and_log(session, settings, run_id, on_epoch, sc.seed)
        test: dict[str, float] = {}
        if session.data.has_test:
            test = {f"test_{k}": v for k, v in evaluate(model, session.data).items()}
            tracker.log_metrics(run_id, test)
        uri = session.log_model(run_id, model)
        status = "FINISHED"
        return RunResult(run_id=run_id, test_metrics=test, model_uri=uri,
                         tracking_uri=tracker.uri)
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
