"""The python_function loader of a registered mltune model: raw images in, probabilities out.

MLflow imports this module (shipped with the model as ``mltune_serving``) when the model is
loaded by ``mlflow.pyfunc.load_model`` or served by ``mlflow models serve``. It imports
Keras and NumPy only, so the model needs no mltune installation where it is served.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

__all__ = ["ImageClassifier", "to_batch"]

KERAS_FILE = "model.keras"
META_FILE = "input.json"


def to_batch(data: Any, input_shape: tuple[int, ...]) -> np.ndarray:
    """A float32 batch of shape (N, H, W, C) from what a caller may send.

    Accepts uint8 or float pixels as the training data stored them, with or without the
    channel axis (for one channel), a single image, nested lists (REST), or rows of
    flattened pixels (a DataFrame or a 2-D array).
    """
    if hasattr(data, "to_numpy"):  # pandas DataFrame or Series
        data = data.to_numpy()
        if data.dtype == object:  # one column holding an image per row
            data = np.stack([np.asarray(v) for v in data.ravel()])
    x = np.asarray(data)
    shape = tuple(input_shape)
    if len(shape) != 3:  # not images: a custom model's own input
        size = int(np.prod(shape))
        if x.shape == shape:
            x = x[None]
        elif x.ndim == 2 and x.shape[1] == size:
            x = x.reshape((len(x), *shape))
        return x.astype(np.float32, copy=False)
    h, w, c = shape
    if x.ndim == 2 and x.shape[1] == h * w * c:  # flattened rows
        x = x.reshape((len(x), *shape))
    elif x.shape == shape or (c == 1 and x.shape == (h, w)):  # one image
        x = x.reshape((1, *shape))
    elif c == 1 and x.ndim == 3 and x.shape[1:] == (h, w):  # no channel axis
        x = x[..., None]
    if x.ndim != 4 or x.shape[1:] != shape:
        raise ValueError(f"expected images of shape {shape} (or {shape[:2]} for one channel), "
                         f"optionally flattened, but got an array of shape {x.shape}")
    return x.astype(np.float32, copy=False)


class ImageClassifier:
    """Class probabilities (N, classes) for a batch of raw images."""

    def __init__(self, model: Any, input_shape: tuple[int, ...], class_names: list[str]
                 ) -> None:
        self.model = model
        self.input_shape = tuple(input_shape)
        self.class_names = class_names

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        x = to_batch(data, self.input_shape)
        return np.asarray(self.model.predict(x, verbose=0), dtype=np.float32)


def _load_pyfunc(path: str) -> ImageClassifier:
    import importlib

    import keras

    with open(os.path.join(path, META_FILE), encoding="utf-8") as f:
        meta = json.load(f)
    for module in meta.get("modules", []):  # the user's code: registers its custom layers
        importlib.import_module(module)
    model = keras.saving.load_model(os.path.join(path, KERAS_FILE), compile=False)
    return ImageClassifier(model, tuple(meta["input_shape"]), list(meta["class_names"]))
