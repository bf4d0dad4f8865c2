"""What only TensorFlow does: the ``tf.data`` input pipelines for arrays and image files, GPU
memory growth and the GPU's name. The one module that imports ``tensorflow``; nothing here runs
under another Keras backend."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["array_inputs", "array_tensors", "configure_gpus", "gpu_name", "image_files",
           "runtime_started"]

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


def array_tensors(*arrays: np.ndarray) -> None:
    """Make the arrays tensors now (what :func:`array_inputs` takes from then on)."""
    for array in arrays:
        if array is not None:
            _tensor(array)


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


# What tf.io.decode_image reads (first frame of a GIF); other files (TIFF) go through PIL.
_NATIVE = r".*\.(png|jpe?g|bmp|gif|webp)"
# Shuffled batches of a disk cache come from a buffer of this many images (the files are
# cached in a seeded random order, so a window of it is well mixed).
_DISK_SHUFFLE = 1024


def image_files(paths: tuple[str, ...], labels: tuple[int, ...], *,
                image_size: tuple[int, int], channels: int, resize: str, batch_size: int,
                shuffle: bool, seed: int, cache: str | None,
                decode: Callable[[bytes, int], np.ndarray]) -> Any:
    """Batches of ``(images, labels)`` read from image files as they are needed.

    Each file is read and decoded (``decode(path, channels)``, PIL, for what TensorFlow
    cannot decode), converted to ``channels`` and resized to ``image_size`` by
    ``keras.layers.Resizing`` (``resize``: stretch, or crop/pad to the aspect ratio), the
    layer a served model's images pass through too. Pixels stay 0-255 (float32): the model
    scales them. Only file names are held; decoded images are held only by a ``cache``:
    None (none), "" (memory) or a file prefix (disk). ``shuffle``: a new order each epoch.
    """
    import keras
    import tensorflow as tf

    auto = tf.data.AUTOTUNE
    height, width = image_size
    resizing = keras.layers.Resizing(height, width, crop_to_aspect_ratio=resize == "crop",
                                     pad_to_aspect_ratio=resize == "pad")

    def native(path: Any) -> Any:
        return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)

    def with_pil(path: Any) -> Any:
        image = tf.numpy_function(lambda p: decode(p, 3), [path], tf.uint8, stateful=False)
        return tf.reshape(image, tf.stack([tf.shape(image)[0], tf.shape(image)[1], 3]))

    # A branch per image only where some file needs PIL: a cond in every element halves
    # the images per second of an all-JPEG folder.
    mixed = any(not re.fullmatch(_NATIVE, p.lower()) for p in paths)

    def load(path: Any, label: Any) -> tuple[Any, Any]:
        if mixed:
            image = tf.cond(tf.strings.regex_full_match(tf.strings.lower(path), _NATIVE),
                            lambda: native(path), lambda: with_pil(path))
        else:
            image = native(path)
        image = tf.cast(image, tf.float32)
        if channels == 1:
            image = tf.round(tf.image.rgb_to_grayscale(image))
        image = resizing(image)
        image.set_shape((height, width, channels))
        return image, label

    files = tf.data.Dataset.from_tensor_slices((list(paths), np.asarray(labels, np.int64)))
    n = len(paths)
    if cache is None:
        if shuffle:  # file names only: a full shuffle costs no image memory
            files = files.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        images = files.map(load, num_parallel_calls=auto)
    else:
        if shuffle:  # cached in one seeded order, reshuffled below
            files = files.shuffle(n, seed=seed, reshuffle_each_iteration=False)
        images = files.map(load, num_parallel_calls=auto).cache(cache)
        if shuffle:
            images = images.shuffle(n if cache == "" else min(n, _DISK_SHUFFLE), seed=seed,
                                    reshuffle_each_iteration=True)
    return images.batch(batch_size).prefetch(auto)


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
