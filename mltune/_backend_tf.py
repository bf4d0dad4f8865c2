"""What only TensorFlow does: the ``tf.data`` input pipeline for arrays, GPU memory growth
and the GPU's name. The one module that imports ``tensorflow``; nothing here runs under
another Keras backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["array_inputs", "configure_gpus", "gpu_name", "runtime_started"]

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


def array_inputs(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
                 y_val: np.ndarray, batch_size: int) -> tuple[Any, Any]:
    """``(train_dataset, val_dataset)`` for ``model.fit``.

    The arrays become tensors once per process; each epoch gathers shuffled batches from
    them in a ``tf.data`` pipeline that prefetches the next batch while the current one
    trains, and the validation batches are cached after the first pass.
    """
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
    return train, val


def configure_gpus() -> None:
    """Let TensorFlow grow GPU memory as needed instead of taking all of it at start."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised: memory growth is fixed by then
            pass


def gpu_name() -> str | None:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    return str(tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU"))


def runtime_started() -> bool:
    """Whether TensorFlow's eager context (its thread pools and devices) exists in this
    process. TensorFlow has no public check that does not create it; a later version
    without this attribute raises AttributeError, which counts as started."""
    from tensorflow.python.eager import context

    return context.context()._context_handle is not None
