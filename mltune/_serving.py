"""The python_function loader of a registered mltune model: raw images in, probabilities out.

MLflow imports this module (shipped with the model as ``mltune_serving``) when the model is
loaded by ``mlflow.pyfunc.load_model`` or served by ``mlflow models serve``. It imports
Keras and NumPy only, so the model needs no mltune installation where it is served; MLflow,
there wherever a python_function model is loaded, only for the error a bad input raises.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["ImageClassifier", "native_logs_muted", "to_batch"]

KERAS_FILE = "model.keras"
META_FILE = "input.json"


def to_batch(data: Any, input_shape: tuple[int, ...], resize: str | None = None
             ) -> np.ndarray:
    """A float32 batch of shape (N, H, W, C) from what a caller may send.

    Accepts uint8 or float pixels as the training data stored them, with or without the
    channel axis (for one channel), a single image, nested lists (REST), or rows of
    flattened pixels (a DataFrame or a 2-D array). Anything else raises ValueError naming
    the expected shape and the one received.

    ``resize`` (a model trained on an image folder: stretch, crop or pad) also accepts
    images of any size, one or a batch or a list of differing ones, grayscale, RGB or RGBA:
    each is converted to the model's channels and resized as in training
    (``keras.layers.Resizing``).
    """
    try:
        return _exact(data, input_shape)
    except ValueError:
        images = _loose_images(data) if resize is not None and len(input_shape) == 3 else None
        if images is None:
            raise
    return _resized(images, tuple(input_shape), str(resize))


_RESIZING: dict[tuple[int, int, str], Any] = {}


def _loose_images(data: Any) -> list[np.ndarray] | None:
    """The images in ``data``, each (h, w) or (h, w, channels) of its own size, or None."""
    if hasattr(data, "to_numpy"):
        data = data.to_numpy()
        if data.dtype == object:
            data = list(data.ravel())
    if isinstance(data, np.ndarray) and data.dtype == object:
        data = data.tolist()
    try:
        x = np.asarray(data, dtype=np.float32)
    except (ValueError, TypeError):  # ragged: a list of images of differing sizes
        x = None
    if x is not None:
        if x.ndim == 2 or (x.ndim == 3 and x.shape[-1] in (1, 3, 4)):
            return [x]
        return list(x) if x.ndim in (3, 4) and len(x) else None
    if not isinstance(data, (list, tuple)) or not data:
        return None
    images = []
    for item in data:
        try:
            image = np.asarray(item, dtype=np.float32)
        except (ValueError, TypeError):
            return None
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (1, 3, 4)):
            return None
        images.append(image)
    return images


def _resized(images: list[np.ndarray], shape: tuple[int, ...], resize: str) -> np.ndarray:
    import keras

    h, w, c = shape
    key = (h, w, resize)
    if key not in _RESIZING:
        _RESIZING[key] = keras.layers.Resizing(h, w, crop_to_aspect_ratio=resize == "crop",
                                               pad_to_aspect_ratio=resize == "pad")
    out = []
    for image in images:
        if image.ndim == 2:
            image = image[..., None]
        if image.shape[-1] == 4:  # RGBA: the alpha channel is dropped, as in training
            image = image[..., :3]
        if c == 3 and image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        elif c == 1 and image.shape[-1] == 3:  # ITU-R 601 luma, as training's conversion
            image = np.round(image @ np.asarray([[0.2989], [0.587], [0.114]], np.float32))
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"{_expected(shape)} (of any size), but got an image of shape "
                             f"{image.shape}")
        out.append(keras.ops.convert_to_numpy(_RESIZING[key](image.astype(np.float32))))
    return np.stack(out).astype(np.float32, copy=False)


def _exact(data: Any, input_shape: tuple[int, ...]) -> np.ndarray:
    shape = tuple(input_shape)
    if hasattr(data, "to_numpy"):  # pandas DataFrame or Series
        data = data.to_numpy()
        if data.dtype == object:  # one column holding an image per row
            data = [np.asarray(v) for v in data.ravel()]
    try:
        x = np.asarray(data)
        if x.dtype == object:  # nested lists, as MLflow parses a REST request
            x = np.asarray(x.tolist(), dtype=np.float32)
    except (ValueError, TypeError):  # ragged lists, or values that are no numbers
        raise ValueError(f"{_expected(shape)}, but got {_received(data)}") from None
    if len(shape) != 3:  # not images: a custom model's own input
        size = int(np.prod(shape))
        if x.shape == shape:
            x = x[None]
        elif x.ndim == 2 and x.shape[1] == size:
            x = x.reshape((len(x), *shape))
        if x.shape[1:] != shape:
            raise ValueError(f"{_expected(shape)}, but got an array of shape {x.shape}")
        return _floats(x, shape)
    h, w, c = shape
    if x.ndim == 2 and x.shape[1] == h * w * c:  # flattened rows
        x = x.reshape((len(x), *shape))
    elif x.shape == shape or (c == 1 and x.shape == (h, w)):  # one image
        x = x.reshape((1, *shape))
    elif c == 1 and x.ndim == 3 and x.shape[1:] == (h, w):  # no channel axis
        x = x[..., None]
    if x.ndim != 4 or x.shape[1:] != shape:
        raise ValueError(f"{_expected(shape)}, but got an array of shape {x.shape}")
    return _floats(x, shape)


def _floats(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    try:
        return x.astype(np.float32, copy=False)
    except (ValueError, TypeError):  # strings that are no numbers
        kind = "str" if x.dtype.kind in "US" else x.dtype
        raise ValueError(f"{_expected(shape)}, but got values of type {kind}") from None


def _expected(shape: tuple[int, ...]) -> str:
    if len(shape) != 3:
        return f"expected inputs of shape {shape}, optionally flattened"
    return (f"expected images of shape {shape} (or {shape[:2]} for one channel), "
            "optionally flattened")


def _received(data: Any) -> str:
    """What a caller sent that is no array of numbers: nested lists of uneven lengths, with
    the length of each level or its range (``(2, 8, 7..8)``), or values of another type."""
    levels: list[tuple[int, int]] = []
    items = [data]
    while items and all(_is_sequence(v) for v in items):
        lengths = [len(v) for v in items]
        levels.append((min(lengths), max(lengths)))
        items = [v for seq in items for v in seq]
    mixed = any(_is_sequence(v) for v in items)  # numbers and lists side by side
    dims = [str(lo) if lo == hi else f"{lo}..{hi}" for lo, hi in levels]
    if levels and (mixed or any(lo != hi for lo, hi in levels)):
        return (f"nested lists of uneven lengths, of shape ({', '.join(dims)}"
                f"{', ...' if mixed else ''})")
    kinds = sorted({type(v.item() if isinstance(v, np.ndarray) else v).__name__
                    for v in items[:1000]})
    return f"values of type {', '.join(kinds) or 'none'}"


def _is_sequence(value: Any) -> bool:
    return isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim > 0)


class ImageClassifier:
    """Class probabilities (N, classes) for a batch of raw images."""

    def __init__(self, model: Any, input_shape: tuple[int, ...], class_names: list[str],
                 resize: str | None = None) -> None:
        self.model = model
        self.input_shape = tuple(input_shape)
        self.class_names = class_names
        self.resize = resize  # images of other sizes are resized so (see to_batch)

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        try:
            x = to_batch(data, self.input_shape, self.resize)
        except ValueError as e:
            # MLflow's scoring server answers an MlflowException with its own message and
            # HTTP status (INVALID_PARAMETER_VALUE: 400); any other exception with a generic
            # message. mlflow is there wherever MLflow loads this model.
            from mlflow.exceptions import MlflowException

            raise MlflowException.invalid_parameter_value(str(e)) from None
        return np.asarray(self.model.predict(x, verbose=0), dtype=np.float32)


@contextlib.contextmanager
def native_logs_muted() -> Iterator[None]:
    """TensorFlow's C++ start-up lines (oneDNN, CUDA probing, at import and at the first op)
    ignore TF_CPP_MIN_LOG_LEVEL; when that variable asks for quiet, hold stderr's file
    descriptor shut meanwhile. (Here, as this module ships alone with a model; mltune's
    other modules take it from ``mltune._device``.)"""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") < "2":
        yield
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _load_pyfunc(path: str) -> ImageClassifier:
    import importlib

    with open(os.path.join(path, META_FILE), encoding="utf-8") as f:
        meta = json.load(f)
    input_shape = tuple(meta["input_shape"])
    # Quiet unless the user asks otherwise (as mltune's own commands are): a served model's
    # log shows no TensorFlow start-up lines. The caller's environment is put back after.
    before = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with native_logs_muted():
            import keras

            for module in meta.get("modules", []):  # the user's code: its custom layers
                importlib.import_module(module)
            model = keras.saving.load_model(os.path.join(path, KERAS_FILE), compile=False)
            # One prediction, so the runtime's first-op lines (a GPU's libraries) are muted
            # too and the first request pays no start-up.
            model.predict(np.zeros((1, *input_shape), np.float32), verbose=0)
    finally:
        if before is None:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return ImageClassifier(model, input_shape, list(meta["class_names"]), meta.get("resize"))
