"""Compile, fit and evaluate a model with ``keras.*`` only.

Knows nothing of Optuna or MLflow: the caller passes ``on_epoch``, a plain function that
receives each epoch's metrics, and may raise to stop training (the objective turns
Optuna's pruning into such an exception).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from mltune._errors import ConfigError, NonFiniteLossError

if TYPE_CHECKING:
    from mltune._data import Dataset

__all__ = ["TrainResult", "compile_model", "evaluate", "fit_inputs", "latency_ms",
           "make_optimizer", "output_spec", "predicted_classes", "release", "train", "warm_up"]

EpochHook = Callable[[int, dict[str, float]], None]


@dataclass
class TrainResult:
    best_value: float
    best_epoch: int  # 0-based
    epochs_run: int
    train_seconds: float
    history: dict[str, list[float]] = field(default_factory=dict)


def make_optimizer(settings: dict[str, Any], steps_per_epoch: int) -> keras.optimizers.Optimizer:
    lr: Any = float(settings["learning_rate"])
    schedule = settings["lr_schedule"]
    if schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(
            lr, decay_steps=max(1, steps_per_epoch * int(settings["epochs"])))
    elif schedule == "exponential":
        lr = keras.optimizers.schedules.ExponentialDecay(
            lr, decay_steps=steps_per_epoch, decay_rate=float(settings["lr_decay_rate"]))
    name = settings["optimizer"]
    momentum = float(settings["momentum"])
    if name == "sgd":
        return keras.optimizers.SGD(lr)
    if name == "momentum":
        return keras.optimizers.SGD(lr, momentum=momentum)
    if name == "nesterov":
        return keras.optimizers.SGD(lr, momentum=momentum, nesterov=True)
    if name == "adam":
        return keras.optimizers.Adam(lr)
    if name == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=float(settings["weight_decay"]))
    if name == "rmsprop":
        return keras.optimizers.RMSprop(lr)
    if name == "adagrad":
        return keras.optimizers.Adagrad(lr)
    raise ValueError(f"unknown optimizer {name!r}")


class _Epochs(keras.callbacks.Callback):
    """The one callback of a fit: stops on a non-finite loss at once, reports each epoch,
    keeps the best epoch's weights and stops early."""

    # Not ``async_safe``: under JAX, a batch's logs read from Keras' callback thread may
    # already be deleted when training stops (Keras 3.15), so batches end in order here.

    def __init__(self, metric: str, maximize: bool, patience: int | None,
                 on_epoch: EpochHook | None) -> None:
        super().__init__()
        self.metric = metric
        self.maximize = maximize
        self.patience = patience
        self.on_epoch = on_epoch
        self.best_value = -math.inf if maximize else math.inf
        self.best_epoch = -1
        self.best_weights: list[np.ndarray] | None = None
        self.epochs_run = 0
        self.stopped_early = False
        self.history: dict[str, list[float]] = {}
        self._epoch = 0
        self._start = 0.0
        self._lr = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch
        self._start = time.perf_counter()
        try:
            self._lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        except (AttributeError, TypeError, ValueError):  # a builder's optimizer of its own
            self._lr = math.nan

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True
            raise NonFiniteLossError(f"loss became {float(loss)} at batch {batch + 1} of "
                                     f"epoch {self._epoch + 1}")

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        metrics = {k: float(v) for k, v in (logs or {}).items() if k != "learning_rate"}
        if math.isfinite(self._lr):
            metrics["learning_rate"] = self._lr
        metrics["epoch_seconds"] = time.perf_counter() - self._start
        self.epochs_run = epoch + 1
        for k, v in metrics.items():
            self.history.setdefault(k, []).append(v)
        if self.metric not in metrics:
            self.model.stop_training = True
            raise ConfigError("study.metric", f"the model reports no metric {self.metric!r}; "
                              f"it reports {', '.join(sorted(metrics))} (compile it with the "
                              "metric, or choose one of these)")
        value = metrics[self.metric]
        better = value > self.best_value if self.maximize else value < self.best_value
        if math.isfinite(value) and (better or self.best_epoch < 0):
            self.best_value, self.best_epoch = value, epoch
            self.best_weights = self.model.get_weights()
        if self.on_epoch is not None:  # may raise to stop the fit (a pruned trial)
            self.on_epoch(epoch, metrics)
        waited = epoch - self.best_epoch
        if self.patience is not None and waited > 0 and waited >= self.patience:
            self.model.stop_training = self.stopped_early = True

    def restore_best(self, model: keras.Model) -> None:
        """Put back the best epoch's weights (after the last phase of training, not after
        each ``fit``: fine-tuning goes on from the warm-up's last epoch)."""
        if self.best_weights is not None and self.best_epoch != self.epochs_run - 1:
            model.set_weights(self.best_weights)


def compile_model(model: keras.Model, settings: dict[str, Any], *, steps_per_epoch: int = 1,
                  one_hot: bool = False) -> None:
    """The one compile recipe: the optimizer of ``settings``, cross-entropy on class indices
    (or one-hot rows), and the metrics of ``training.metrics`` (``settings["metrics"]``,
    default accuracy; see :mod:`mltune._metrics`). A model its builder compiled is not
    compiled again."""
    made = _metrics_of(model, settings, one_hot)
    model.compile(optimizer=make_optimizer(settings, steps_per_epoch),
                  loss="categorical_crossentropy" if one_hot else
                  "sparse_categorical_crossentropy", metrics=made,
                  jit_compile=settings.get("jit_compile", "auto"))
    _keep_saved_metrics(model, made)


def _metrics_of(model: keras.Model, settings: dict[str, Any], one_hot: bool) -> list[Any]:
    from mltune._metrics import make_metrics

    names = settings.get("metrics") or ["accuracy"]
    outputs = getattr(model, "outputs", None)
    num_classes = (int(outputs[0].shape[-1]) if outputs and len(outputs) == 1
                   and outputs[0].shape[-1] is not None else None)
    try:
        return make_metrics(list(names), num_classes=num_classes, one_hot=one_hot)
    except ValueError as e:
        raise ConfigError("training.metrics", str(e)) from None


def _keep_saved_metrics(model: keras.Model, made: list[Any]) -> None:
    """Leave mltune's own metric classes out of what ``model.save`` writes: they matter
    while training, and a model that names them would not load without mltune
    (``mlflow.pyfunc.load_model`` in a bare environment). Keras keeps the arguments of
    ``compile`` for ``get_compile_config``; there is no public way to save fewer."""
    from mltune._metrics import saved_metrics

    kept = saved_metrics(made)
    config = getattr(model, "_compile_config", None)
    if config is not None and len(kept) != len(made) and isinstance(
            getattr(config, "config", None), dict):
        config.config["metrics"] = kept


def predicted_classes(model: keras.Model, data: Dataset, batch_size: int = 256
                      ) -> tuple[np.ndarray, np.ndarray] | None:
    """The true and the predicted (most probable) class index of each test example, or None
    for a model whose output is not one row of class scores per example."""
    if data.test_stream is None:
        scores = np.asarray(model.predict(data.x_test, batch_size=batch_size, verbose=0))
        if scores.ndim != 2:
            return None
        return _class_indices(data.y_test, data.one_hot), scores.argmax(axis=-1)
    trues, preds = [], []
    for batch in _batches(data.test_stream):
        scores = np.asarray(model.predict_on_batch(batch[0]))
        if scores.ndim != 2:
            return None
        trues.append(_class_indices(batch[1], data.one_hot))
        preds.append(scores.argmax(axis=-1))
    return np.concatenate(trues), np.concatenate(preds)


def _class_indices(y: Any, one_hot: bool) -> np.ndarray:
    y = np.asarray(y)
    return y.argmax(axis=-1) if one_hot else y.reshape(-1).astype(np.int64)


def _batches(stream: Any) -> Any:
    """The ``(x, y, ...)`` batches of a ``tf.data.Dataset`` (as NumPy) or a ``PyDataset``."""
    if hasattr(stream, "as_numpy_iterator"):
        return stream.as_numpy_iterator()
    if hasattr(stream, "__getitem__") and hasattr(stream, "__len__"):
        return (stream[i] for i in range(len(stream)))
    return iter(stream)


def train(
    model: keras.Model,
    settings: dict[str, Any],
    *,
    data: Dataset,
    metric: str = "val_accuracy",
    maximize: bool = True,
    on_epoch: EpochHook | None = None,
    callbacks: tuple[keras.callbacks.Callback, ...] = (),
    fit_kwargs: dict[str, Any] | None = None,
    fine_tune: bool = False,
) -> TrainResult:
    """Fit ``model`` on ``data``; afterwards it holds the weights of the best epoch by
    ``metric``. An uncompiled model is compiled with :func:`compile_model`.

    ``on_epoch(epoch, metrics)`` is called after each epoch (0-based) and may raise to stop
    training (a pruned trial). A non-finite loss stops training at the batch where it
    appears, with :class:`NonFiniteLossError`. ``callbacks`` (the user's) run before
    mltune's own; ``fit_kwargs`` go to ``model.fit`` (``class_weight``...).

    ``fine_tune``: ``model`` is the built-in model, and an uncompiled one with a
    keras.applications backbone trains in two phases (:func:`_phases`): the head alone for
    ``warmup_epochs``, then with the backbone's top ``fine_tune_layers`` unfrozen at
    ``fine_tune_learning_rate``. The epochs count on across the phases (``initial_epoch``),
    so ``on_epoch``, early stopping and the best epoch see one sequence.
    """
    from mltune._model import backbone_of

    batch_size = int(settings["batch_size"])
    stream = data.train_stream
    steps = max(1, math.ceil(len(data.x_train) / batch_size)) if stream is None else (
        len(stream) if hasattr(stream, "__len__") else 1)
    backbone = backbone_of(model) if fine_tune and not model.compiled else None
    phases = _phases(settings, backbone is not None)
    epochs = _Epochs(metric, maximize, settings["early_stopping_patience"], on_epoch)
    extra: list[keras.callbacks.Callback] = list(callbacks)
    if settings["lr_schedule"] == "plateau":
        extra.append(keras.callbacks.ReduceLROnPlateau(
            monitor=metric, mode="max" if maximize else "min",
            factor=float(settings["lr_decay_rate"]), patience=1))
    start = time.perf_counter()
    x, y, val = fit_inputs(data, batch_size)
    for first, end, phase in phases:
        if epochs.stopped_early:  # early stopping ends the sequence, in whichever phase
            break
        if backbone is not None:
            unfreeze_top(backbone, phase["unfrozen"])
        if backbone is not None or not model.compiled:
            # Trainable flags are read when the train step is made: compile after setting
            # them (a new optimizer, at this phase's learning rate).
            compile_model(model, {**settings, **phase["settings"]}, steps_per_epoch=steps,
                          one_hot=data.one_hot)
        model.fit(x, y, batch_size=None if y is None else batch_size, shuffle=y is not None,
                  initial_epoch=first, epochs=end, validation_data=val,
                  callbacks=[*extra, epochs], verbose=0, **(fit_kwargs or {}))
    epochs.restore_best(model)
    return TrainResult(
        best_value=epochs.best_value,
        best_epoch=epochs.best_epoch,
        epochs_run=epochs.epochs_run,
        train_seconds=time.perf_counter() - start,
        history=epochs.history,
    )


def _phases(settings: dict[str, Any], fine_tune: bool
            ) -> list[tuple[int, int, dict[str, Any]]]:
    """``(first epoch, end epoch, phase)`` for each ``fit``: one for a model without a
    keras.applications backbone; else the warm-up (backbone frozen, ``unfrozen`` 0) and the
    fine-tuning (its top ``fine_tune_layers`` unfrozen, -1: all), either of which may be
    empty. ``phase["settings"]`` replaces settings of that phase's compile: the learning rate,
    and the epochs a schedule spans."""
    total = int(settings["epochs"])
    if not fine_tune:
        return [(0, total, {"unfrozen": 0, "settings": {}})]
    layers = int(settings.get("fine_tune_layers", 0))
    warmup = total if layers == 0 else min(int(settings.get("warmup_epochs", 1)), total)
    rate = settings.get("fine_tune_learning_rate")
    rate = float(settings["learning_rate"]) / 10 if rate is None else float(rate)
    phases = []
    if warmup > 0:
        phases.append((0, warmup, {"unfrozen": 0, "settings": {"epochs": warmup}}))
    if warmup < total:
        phases.append((warmup, total, {"unfrozen": layers, "settings": {
            "epochs": total - warmup, "learning_rate": rate}}))
    return phases


def unfreeze_top(backbone: keras.Model, layers: int) -> int:
    """Freeze ``backbone`` but its top ``layers`` layers (-1: all of them); its
    BatchNormalization layers stay frozen (and in inference mode). Returns how many layers
    are trainable."""
    backbone.trainable = layers != 0
    count = len(backbone.layers) if layers < 0 else min(layers, len(backbone.layers))
    top = len(backbone.layers) - count
    for i, layer in enumerate(backbone.layers):
        layer.trainable = i >= top and not isinstance(layer,
                                                      keras.layers.BatchNormalization)
    return sum(layer.trainable for layer in backbone.layers)


def fit_inputs(data: Dataset, batch_size: int) -> tuple[Any, Any, Any]:
    """``(x, y, validation_data)`` for ``model.fit``.

    Streams go as they are (they are batched already). Arrays go to TensorFlow's ``tf.data``
    pipeline under TensorFlow (:mod:`mltune._backend_tf`); other backends take the arrays
    (Keras feeds them batch by batch itself)."""
    val = data.val_stream if data.val_stream is not None else (data.x_val, data.y_val)
    if data.train_stream is not None:
        return data.train_stream, None, val
    if keras.backend.backend() != "tensorflow":
        return data.x_train, data.y_train, val
    from mltune._backend_tf import array_inputs

    train_set, val_set = array_inputs(data.x_train, data.y_train, data.x_val, data.y_val,
                                      batch_size)
    return train_set, None, val_set


def warm_up(data: Dataset) -> None:
    """What the first trial of a process does before it builds its model: start the backend's
    runtime and, under TensorFlow, make the data's arrays tensors (:func:`fit_inputs` finds
    them made). A trial's process forked ahead of its trial does this while it waits."""
    if keras.backend.backend() != "tensorflow":
        return
    from mltune._backend_tf import array_tensors

    if data.folder is None and data.streams == (None, None, None) and data.x_train is not None:
        array_tensors(data.x_train, data.y_train, data.x_val, data.y_val)


def evaluate(model: keras.Model, data: Dataset, batch_size: int = 256) -> dict[str, float]:
    """The compiled metrics of ``model`` on the test split of ``data``."""
    if data.test_stream is not None:
        logs = model.evaluate(data.test_stream, verbose=0, return_dict=True)
    else:
        logs = model.evaluate(data.x_test, data.y_test, batch_size=batch_size, verbose=0,
                              return_dict=True)
    return {k: float(v) for k, v in logs.items()}


def output_spec(model: keras.Model, example: np.ndarray) -> Any:
    """What the model's signature needs of its output: ``(dtype, shape without the batch
    axis)`` of a model with one output (no predict call: that would compile the predict
    function, 0.1-0.3 s), else its predictions on ``example``."""
    outputs = getattr(model, "outputs", None)
    if outputs and len(outputs) == 1:
        out = outputs[0]
        return (str(out.dtype), tuple(None if d is None else int(d) for d in out.shape[1:]))
    return np.asarray(model.predict(example, verbose=0))


def latency_ms(model: keras.Model, x: np.ndarray, batch: int = 64, repeats: int = 5) -> float:
    """Inference time per image in milliseconds: ``predict_on_batch`` on ``batch`` images,
    best of ``repeats`` after one warm-up call."""
    x = x[:batch]
    model.predict_on_batch(x)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict_on_batch(x)
        best = min(best, time.perf_counter() - start)
    return 1000.0 * best / len(x)


def release() -> None:
    """Free what the last model held (TensorFlow still keeps its traced graphs: about 10 MB
    per fitted model, see docs/benchmarks.md).

    ``clear_session`` runs a full garbage collection itself; its cost grows with every live
    object, which is why the study freezes the objects of its start-up (``gc.freeze``).
    """
    keras.backend.clear_session(free_memory=True)
