"""A small residual network for the 8x8 digits, built with ``keras.*`` only (any backend).

mltune calls ``build(params, input_shape=..., num_classes=...)`` once per trial. ``params``
holds the trial's values: the ones sampled from ``search_space`` (``blocks``, ``width``,
``learning_rate``), the fixed keys of the study file's ``model:`` section (``head_dropout``)
and the training settings (``epochs``, ``batch_size``...). The model is returned
uncompiled: mltune compiles it with the optimizer and learning rate of the trial.

``ResidualBlock`` is a layer of our own. It is registered with Keras (and has
``get_config``), so a saved model names it as ``custom_model>ResidualBlock`` and loads
wherever this file is imported first; mltune ships this file with every logged model.
"""

from __future__ import annotations

from typing import Any

import keras

PIXEL_MAX = 16.0  # the 8x8 digits have pixel values 0..16


@keras.saving.register_keras_serializable(package="custom_model")
class ResidualBlock(keras.layers.Layer):
    """``relu(x + BN(Conv(relu(BN(Conv(x))))))``: two 3x3 convolutions and a shortcut.

    The input must have ``width`` channels (the network's stem sees to that).
    """

    def __init__(self, width: int, kernel_size: int = 3, momentum: float = 0.9,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.width = int(width)
        self.kernel_size = int(kernel_size)
        # Batch-norm momentum 0.9 (Keras' default is 0.99): the moving statistics that
        # validation uses catch up within the few dozen steps of a short trial.
        self.momentum = float(momentum)
        self.conv1 = keras.layers.Conv2D(self.width, self.kernel_size, padding="same",
                                         use_bias=False)
        self.norm1 = keras.layers.BatchNormalization(momentum=self.momentum)
        self.conv2 = keras.layers.Conv2D(self.width, self.kernel_size, padding="same",
                                         use_bias=False)
        self.norm2 = keras.layers.BatchNormalization(momentum=self.momentum)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        # Build the sub-layers here, so a loaded model has their weights before Keras
        # restores them.
        for layer in (self.conv1, self.norm1, self.conv2, self.norm2):
            layer.build(input_shape)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        x = keras.ops.relu(self.norm1(self.conv1(inputs), training=training))
        x = self.norm2(self.conv2(x), training=training)
        return keras.ops.relu(inputs + x)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]
                             ) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "width": self.width, "kernel_size": self.kernel_size,
                "momentum": self.momentum}


def build(params: dict[str, Any], *, input_shape: tuple[int, ...], num_classes: int
          ) -> keras.Model:
    """Stem convolution to ``width`` channels, ``blocks`` residual blocks, global average
    pooling, dropout, softmax. Takes raw images (0..16): scaling is the first layer."""
    width = int(params.get("width", 16))
    blocks = int(params.get("blocks", 2))
    dropout = float(params.get("head_dropout", 0.0))

    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Rescaling(1.0 / PIXEL_MAX, name="scale")(inputs)
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name="stem")(x)
    for i in range(blocks):
        x = ResidualBlock(width, name=f"residual_{i}")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities",
                                 dtype="float32")(x)
    return keras.Model(inputs, outputs, name="digits_resnet")
