"""The CNN, built from settings with ``keras.*`` only (runs on TensorFlow, JAX or PyTorch).

Knows nothing of Optuna or MLflow. Scaling of raw pixels is the model's first layer, so
the saved model takes images as the data set stores them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from mltune._errors import TrialError

__all__ = ["build", "build_model"]


def _activation(name: str) -> keras.layers.Layer:
    if name == "leaky_relu":
        return keras.layers.LeakyReLU()
    return keras.layers.Activation(name)


Builder = Callable[..., "keras.Model"]


def build(builder: Builder, params: dict[str, Any], *, input_shape: tuple[int, ...],
          num_classes: int) -> keras.Model:
    """``builder(params, input_shape=..., num_classes=...)``, checked to return a
    ``keras.Model``.

    With ``mixed_precision`` the builder runs under Keras' ``mixed_float16`` policy (layers
    compute in float16, keep float32 weights); the global policy is restored afterwards,
    whatever happens.
    """
    previous = keras.config.dtype_policy()
    if params.get("mixed_precision"):
        keras.config.set_dtype_policy("mixed_float16")
    try:
        model = builder(params, input_shape=tuple(input_shape), num_classes=num_classes)
    finally:
        keras.config.set_dtype_policy(previous)
    if not isinstance(model, keras.Model):
        name = getattr(builder, "__qualname__", repr(builder))
        raise TrialError(f"the model builder {name} must return a keras.Model, but returned "
                         f"{type(model).__name__}")
    return model


def build_model(
    settings: dict[str, Any],
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    pixel_max: float = 255.0,
) -> keras.Model:
    """The built-in CNN: a Conv-[BN]-Act(-Conv...)-Pool stack per block, then Dense layers
    with softmax (float32, so Keras scales the loss under mixed precision)."""
    return _build(settings, input_shape, num_classes, pixel_max)


def _build(settings: dict[str, Any], input_shape: tuple[int, ...], num_classes: int,
           pixel_max: float) -> keras.Model:
    l2 = float(settings["l2"])
    reg = keras.regularizers.L2(l2) if l2 > 0 else None
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Rescaling(1.0 / pixel_max, name="scale")(inputs)
    height, width = input_shape[:2]
    pool = keras.layers.MaxPooling2D if settings["pooling"] == "max" else (
        keras.layers.AveragePooling2D)
    for block in range(int(settings["conv_blocks"])):
        filters = max(1, round(settings["filters"] * settings["filter_growth"] ** block))
        for _ in range(int(settings["convs_per_block"])):
            x = keras.layers.Conv2D(filters, settings["kernel_size"], padding="same",
                                    use_bias=not settings["batch_norm"],
                                    kernel_regularizer=reg)(x)
            if settings["batch_norm"]:
                x = keras.layers.BatchNormalization()(x)
            x = _activation(settings["activation"])(x)
        # Pool only while the feature map is at least 2x2, so deep stacks fit small images.
        if height >= 2 and width >= 2:
            x = pool(2)(x)
            height, width = height // 2, width // 2
    x = keras.layers.Flatten()(x)
    if settings["dropout"] > 0:
        x = keras.layers.Dropout(settings["dropout"])(x)
    if settings["dense_units"] > 0:
        x = keras.layers.Dense(settings["dense_units"], kernel_regularizer=reg)(x)
        x = _activation(settings["activation"])(x)
        if settings["dropout"] > 0:
            x = keras.layers.Dropout(settings["dropout"])(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities",
                                 dtype="float32")(x)
    return keras.Model(inputs, outputs, name="mltune_cnn")
