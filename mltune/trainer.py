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
from typing import Any

import keras
import numpy as np

from mltune.errors import NonFiniteLossError

__all__ = ["TrainResult", "evaluate", "inputs", "latency_ms", "make_optimizer", "release",
           "train"]

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
        self.history: dict[str, list[float]] = {}
        self._epoch = 0
        self._start = 0.0
        self._lr = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch
        self._start = time.perf_counter()
        self._lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True
            raise NonFiniteLossError(f"loss became {float(loss)} at batch {batch + 1} of "
                                     f"epoch {self._epoch + 1}")

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        metrics = {k: float(v) for k, v in (logs or {}).items() if k != "learning_rate"}
        metrics["learning_rate"] = self._lr
        metrics["epoch_seconds"] = time.perf_counter() - self._start
        self.epochs_run = epoch + 1
        for k, v in metrics.items():
            self.history.setdefault(k, []).append(v)
        value = metrics[self.metric]
        better = value > self.best_value if self.maximize else value < self.best_value
        if math.isfinite(value) and (better or self.best_epoch < 0):
            self.best_value, self.best_epoch = value, epoch
            self.best_weights = self.model.get_weights()
        if self.on_epoch is not None:  # may raise to stop the fit (a pruned trial)
            self.on_epoch(epoch, metrics)
        waited = epoch - self.best_epoch
        if self.patience is not None and waited > 0 and waited >= self.patience:
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.best_weights is not None and self.best_epoch != self.epochs_run - 1:
            self.model.set_weights(self.best_weights)


def train(
    model: keras.Model,
    settings: dict[str, Any],
    *,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    metric: str = "val_accuracy",
    maximize: bool = True,
    on_epoch: EpochHook | None = None,
) -> TrainResult:
    """Fit ``model``; afterwards it holds the weights of the best epoch by ``metric``.

    ``on_epoch(epoch, metrics)`` is called after each epoch (0-based) and may raise to stop
    training (a pruned trial). A non-finite loss stops training at the batch where it
    appears, with :class:`NonFiniteLossError`.
    """
    batch_size = int(settings["batch_size"])
    steps = max(1, math.ceil(len(x_train) / batch_size))
    model.compile(optimizer=make_optimizer(settings, steps),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  jit_compile=settings["jit_compile"])
    epochs = _Epochs(metric, maximize, settings["early_stopping_patience"], on_epoch)
    callbacks: list[keras.callbacks.Callback] = []
    if settings["lr_schedule"] == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=metric, mode="max" if maximize else "min",
            factor=float(settings["lr_decay_rate"]), patience=1))
    callbacks.append(epochs)
    start = time.perf_counter()
    train_data, val_data = inputs(x_train, y_train, x_val, y_val, batch_size)
    x, y = train_data
    model.fit(x, y, batch_size=None if y is None else batch_size, shuffle=y is not None,
              epochs=int(settings["epochs"]), validation_data=val_data,
              callbacks=callbacks, verbose=0)
    return TrainResult(
        best_value=epochs.best_value,
        best_epoch=epochs.best_epoch,
        epochs_run=epochs.epochs_run,
        train_seconds=time.perf_counter() - start,
        history=epochs.history,
    )


# The data as TensorFlow tensors, made once per process and keyed by the arrays (the data
# module keeps them for the process), and the batched validation sets built from them.
_CACHE_SIZE = 8
_TENSORS: dict[int, tuple[np.ndarray, Any]] = {}
_VAL_SETS: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray, Any]] = {}


def _cached(cache: dict[Any, Any], key: Any, arrays: tuple[np.ndarray, ...],
            make: Callable[[], Any]) -> Any:
    hit = cache.get(key)
    if hit is None or any(a is not b for a, b in zip(hit, arrays, strict=False)):
        if len(cache) >= _CACHE_SIZE:
            cache.clear()
        hit = cache[key] = (*arrays, make())
    return hit[-1]


def _tensor(array: np.ndarray) -> Any:
    import tensorflow as tf

    def make() -> Any:
        with tf.device("/CPU:0"):  # host memory: the GPU keeps its memory for the model
            return tf.constant(array)

    return _cached(_TENSORS, id(array), (array,), make)


def inputs(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
           batch_size: int) -> tuple[tuple[Any, Any], Any]:
    """What ``model.fit`` gets: ``((x, y), validation_data)`` for NumPy arrays, or
    ``((dataset, None), val_dataset)`` under TensorFlow.

    Under TensorFlow the arrays become tensors once per process; each epoch gathers
    shuffled batches from them in a ``tf.data`` pipeline that prefetches the next batch
    while the current one trains, and the validation batches are cached after the first
    pass. Other backends take the arrays (Keras feeds them batch by batch itself).
    """
    if keras.backend.backend() != "tensorflow":
        return (x_train, y_train), (x_val, y_val)
    import tensorflow as tf

    xt, yt = _tensor(x_train), _tensor(y_train)
    auto = tf.data.AUTOTUNE
    train = (tf.data.Dataset.range(len(x_train))
             .shuffle(len(x_train), reshuffle_each_iteration=True)
             .batch(batch_size)
             .map(lambda i: (tf.gather(xt, i), tf.gather(yt, i)), num_parallel_calls=auto)
             .prefetch(auto))
    val = _cached(_VAL_SETS, (id(x_val), id(y_val), batch_size), (x_val, y_val), lambda: (
        tf.data.Dataset.from_tensor_slices((_tensor(x_val), _tensor(y_val)))
        .batch(batch_size).cache().prefetch(auto)))
    return (train, None), val


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 256
             ) -> dict[str, float]:
    """Loss and accuracy of a compiled model on (x, y)."""
    logs = model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
    return {k: float(v) for k, v in logs.items()}


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
