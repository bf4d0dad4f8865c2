"""The built-in model, built from settings with ``keras.*`` only (runs on TensorFlow, JAX or
PyTorch): mltune's CNN or a keras.applications backbone with a classification head.

Knows nothing of Optuna or MLflow. Augmentation (active in training only) and the scaling
of raw pixels are the model's first layers, so the saved model takes images as the data set
stores them. Only Keras' own layers are used: the saved model loads where mltune is not
installed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from mltune._errors import TrialError
from mltune._settings import SETTINGS

__all__ = ["MIN_BACKBONE_SIZE", "backbone_input_error", "backbone_of", "build", "build_model"]

# keras.applications class and constructor options of each backbone. Each takes pixels in
# 0..255 and scales them itself (``include_preprocessing``, or always for EfficientNet),
# except ResNet50, whose "caffe" preprocessing is added in front of it (see _caffe).
APPLICATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "mobilenet_v3_small": ("MobileNetV3Small", {"include_preprocessing": True}),
    "mobilenet_v3_large": ("MobileNetV3Large", {"include_preprocessing": True}),
    "efficientnet_b0": ("EfficientNetB0", {}),
    "efficientnet_b1": ("EfficientNetB1", {}),
    "efficientnet_b2": ("EfficientNetB2", {}),
    "efficientnet_b3": ("EfficientNetB3", {}),
    "resnet50": ("ResNet50", {}),
    "convnext_tiny": ("ConvNeXtTiny", {"include_preprocessing": True}),
}
# keras.applications refuse smaller images ("Input size must be at least 32x32").
MIN_BACKBONE_SIZE = 32
_IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)


def _setting(settings: dict[str, Any], name: str) -> Any:
    return settings.get(name, SETTINGS[name].default)


def backbone_input_error(backbone: str, input_shape: tuple[int, ...]) -> str | None:
    """Why images of ``input_shape`` cannot go through ``backbone``, or None."""
    if backbone == "cnn":
        return None
    if len(input_shape) != 3 or input_shape[-1] not in (1, 3):
        return (f"backbone {backbone} takes images with 1 or 3 channels, but the data's "
                f"shape is {tuple(input_shape)}")
    height, width = input_shape[:2]
    if height < MIN_BACKBONE_SIZE or width < MIN_BACKBONE_SIZE:
        return (f"backbone {backbone} takes images of at least {MIN_BACKBONE_SIZE}x"
                f"{MIN_BACKBONE_SIZE} pixels, but the data's are {height}x{width}; resize "
                "them (data.image_size for an image folder) or use backbone: cnn")
    return None


def backbone_of(model: keras.Model) -> keras.Model | None:
    """The keras.applications backbone inside a model of :func:`build_model`, or None."""
    if not model.name.startswith("mltune_") or model.name == "mltune_cnn":
        return None
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return nested[0] if len(nested) == 1 else None


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
    """The built-in model: augmentation layers (training only), then the ``backbone``: the
    CNN (a Conv-[BN]-Act(-Conv...)-Pool stack per block, flattened) or a keras.applications
    model (its features pooled, ``head_pooling``); then Dense layers with softmax (float32,
    so Keras scales the loss under mixed precision).

    A keras.applications backbone is called in inference mode (``training=False``), so its
    BatchNormalization layers keep their statistics when its layers are fine-tuned."""
    backbone = _setting(settings, "backbone")
    inputs = keras.Input(shape=input_shape, name="image")
    x = _augment(inputs, settings, pixel_max)
    if backbone == "cnn":
        return _build(settings, inputs, x, input_shape, num_classes, pixel_max)
    return _build_backbone(settings, inputs, x, input_shape, num_classes, pixel_max)


def _augment(x: Any, settings: dict[str, Any], pixel_max: float) -> Any:
    """Keras' random preprocessing layers on raw pixels: they change images in training
    only, and pass them through unchanged at inference."""
    flip = _setting(settings, "augment_flip")
    if flip != "none":
        x = keras.layers.RandomFlip(flip, name="augment_flip")(x)
    rotation = float(_setting(settings, "augment_rotation"))
    if rotation > 0:
        x = keras.layers.RandomRotation(rotation, name="augment_rotation")(x)
    zoom = float(_setting(settings, "augment_zoom"))
    if zoom > 0:
        x = keras.layers.RandomZoom(zoom, name="augment_zoom")(x)
    shift = float(_setting(settings, "augment_translation"))
    if shift > 0:
        x = keras.layers.RandomTranslation(shift, shift, name="augment_translation")(x)
    contrast = float(_setting(settings, "augment_contrast"))
    if contrast > 0:
        x = keras.layers.RandomContrast(contrast, value_range=(0, pixel_max),
                                        name="augment_contrast")(x)
    brightness = float(_setting(settings, "augment_brightness"))
    if brightness > 0:
        x = keras.layers.RandomBrightness(brightness, value_range=(0, pixel_max),
                                          name="augment_brightness")(x)
    return x


def _head(settings: dict[str, Any], x: Any, num_classes: int,
          reg: keras.regularizers.Regularizer | None = None) -> Any:
    if settings["dropout"] > 0:
        x = keras.layers.Dropout(settings["dropout"])(x)
    if settings["dense_units"] > 0:
        x = keras.layers.Dense(settings["dense_units"], kernel_regularizer=reg)(x)
        x = _activation(settings["activation"])(x)
        if settings["dropout"] > 0:
            x = keras.layers.Dropout(settings["dropout"])(x)
    return keras.layers.Dense(num_classes, activation="softmax", name="probabilities",
                              dtype="float32")(x)


def _build_backbone(settings: dict[str, Any], inputs: Any, x: Any,
                    input_shape: tuple[int, ...], num_classes: int,
                    pixel_max: float) -> keras.Model:
    name = _setting(settings, "backbone")
    if name not in APPLICATIONS:
        raise TrialError(f"unknown backbone {name!r}; one of cnn, {', '.join(APPLICATIONS)}")
    why = backbone_input_error(name, input_shape)
    if why:
        raise TrialError(why)
    if pixel_max != 255.0:  # the applications take 0..255
        x = keras.layers.Rescaling(255.0 / pixel_max, name="scale")(x)
    if input_shape[-1] == 1:  # grey to RGB: the applications take 3 channels
        x = keras.layers.Concatenate(name="grey_to_rgb")([x, x, x])
    cls, options = APPLICATIONS[name]
    if name == "resnet50":
        x = _caffe(x)
    try:
        app = getattr(keras.applications, cls)(
            include_top=False, weights=_setting(settings, "weights"),
            input_shape=(*input_shape[:2], 3), **options)
    except ValueError as e:  # a weights file of another model
        raise TrialError(f"backbone {name} cannot be built with weights "
                         f"{_setting(settings, 'weights')!r}: {e}") from e
    x = app(x, training=False)
    pool = (keras.layers.GlobalAveragePooling2D if _setting(settings, "head_pooling") == "avg"
            else keras.layers.GlobalMaxPooling2D)
    x = pool(name="head_pooling")(x)
    return keras.Model(inputs, _head(settings, x, num_classes), name=f"mltune_{name}")


def _caffe(x: Any) -> Any:
    """ResNet50's preprocessing (keras.applications.resnet50.preprocess_input: RGB to BGR,
    minus the ImageNet means) as a fixed 1x1 convolution: a Keras layer of its own, which a
    saved model reloads without mltune (a Lambda layer would not)."""
    import numpy as np

    layer = keras.layers.Conv2D(3, 1, trainable=False, name="caffe_preprocessing")
    y = layer(x)
    kernel = np.zeros((1, 1, 3, 3), "float32")
    for rgb in range(3):
        kernel[0, 0, rgb, 2 - rgb] = 1.0
    layer.set_weights([kernel, -np.asarray(_IMAGENET_BGR_MEAN, "float32")])
    return y


def _build(settings: dict[str, Any], inputs: Any, x: Any, input_shape: tuple[int, ...],
           num_classes: int, pixel_max: float) -> keras.Model:
    l2 = float(settings["l2"])
    reg = keras.regularizers.L2(l2) if l2 > 0 else None
    x = keras.layers.Rescaling(1.0 / pixel_max, name="scale")(x)
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
    return keras.Model(inputs, _head(settings, x, num_classes, reg), name="mltune_cnn")
