"""The model and training settings: one table for fixed values and searched ranges.

Every setting has a name that means the same thing under ``model:``/``training:`` (a fixed
value) and under ``search_space:`` (a searched range). This module knows the names, their
types, defaults and allowed values; it imports neither Keras nor Optuna.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["AUGMENT_KEYS", "BACKBONES", "OPTIMIZERS", "SETTINGS", "Setting", "default_settings"]

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad")
LR_SCHEDULES = ("constant", "cosine", "exponential", "plateau")
ACTIVATIONS = ("relu", "elu", "gelu", "selu", "silu", "swish", "tanh", "leaky_relu")
POOLINGS = ("max", "avg")
FLIPS = ("none", "horizontal", "vertical", "horizontal_and_vertical")
# The backbones of the built-in model: ``cnn`` (mltune's own stack of convolution blocks) or a
# keras.applications model, with the file name under which Keras caches its ImageNet weights
# (without the classifier) in ~/.keras/models, so validation can tell whether they are there
# without importing Keras.
BACKBONES: dict[str, str | None] = {
    "cnn": None,
    "mobilenet_v3_small": "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
    "mobilenet_v3_large": "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
    "efficientnet_b0": "efficientnetb0_notop.h5",
    "efficientnet_b1": "efficientnetb1_notop.h5",
    "efficientnet_b2": "efficientnetb2_notop.h5",
    "efficientnet_b3": "efficientnetb3_notop.h5",
    "resnet50": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "convnext_tiny": "convnext_tiny_notop.h5",
}
# ``model.augment: {rotation: 0.1}`` is short for ``model.augment_rotation: 0.1``.
AUGMENT_KEYS = ("flip", "rotation", "zoom", "translation", "contrast", "brightness")

Kind = Literal["int", "float", "bool", "str", "choice"]


@dataclass(frozen=True)
class Setting:
    """One model or training setting.

    ``low``/``high`` are inclusive bounds unless ``high_exclusive`` is set.
    """

    name: str
    section: Literal["model", "training"]
    kind: Kind
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    high_exclusive: bool = False
    nullable: bool = False

    def check(self, value: Any) -> str | None:
        """Return why ``value`` is not allowed, or None when it is."""
        if value is None:
            return None if self.nullable else "must be set, but got null"
        if self.kind == "bool":
            ok = isinstance(value, bool)
        elif self.kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif self.kind == "float":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif self.kind == "str":
            ok = isinstance(value, str)
        else:  # "choice": any of ``choices``, whatever its type
            ok = True
        if not ok:
            return f"must be of type {self.kind}, but got {value!r}"
        if self.choices is not None and not any(
                value == c and type(value) is type(c) for c in self.choices):
            shown = ", ".join(str(c).lower() if isinstance(c, bool) else str(c)
                              for c in self.choices)
            return f"must be one of {shown}, but got {value!r}"
        if self.kind in ("int", "float"):
            if not math.isfinite(value):
                return f"must be finite, but got {value!r}"
            if self.low is not None and value < self.low:
                return f"must be >= {self.low:g}, but got {value!r}"
            if self.high is not None:
                if self.high_exclusive and value >= self.high:
                    return f"must be < {self.high:g}, but got {value!r}"
                if not self.high_exclusive and value > self.high:
                    return f"must be <= {self.high:g}, but got {value!r}"
        return None


def _s(name: str, section: Literal["model", "training"], kind: Kind, default: Any, help: str,
       **kw: Any) -> Setting:
    return Setting(name=name, section=section, kind=kind, default=default, help=help, **kw)


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in [
        # model
        _s("conv_blocks", "model", "int", 2, "number of convolution blocks", low=1, high=8),
        _s("filters", "model", "int", 32, "filters of the first block", low=1, high=4096),
        _s("filter_growth", "model", "float", 2.0,
           "factor by which the filters grow from one block to the next", low=1.0, high=4.0),
        _s("convs_per_block", "model", "int", 1, "convolution layers per block", low=1, high=4),
        _s("kernel_size", "model", "int", 3, "convolution kernel size", low=1, high=11),
        _s("activation", "model", "str", "relu", "activation function", choices=ACTIVATIONS),
        _s("batch_norm", "model", "bool", False, "batch normalisation after each convolution"),
        _s("pooling", "model", "str", "max", "2x2 pooling at the end of each block",
           choices=POOLINGS),
        _s("dropout", "model", "float", 0.25, "dropout rate before the dense layers",
           low=0.0, high=1.0, high_exclusive=True),
        _s("dense_units", "model", "int", 128, "units of the hidden dense layer (0: none)",
           low=0, high=65536),
        _s("l2", "model", "float", 0.0, "L2 weight decay of the kernels", low=0.0, high=1.0),
        _s("backbone", "model", "str", "cnn", "the convolutional base: cnn (conv_blocks...) or "
           "a keras.applications model", choices=tuple(BACKBONES)),
        _s("weights", "model", "str", "imagenet", "initial weights of a keras.applications "
           "backbone: imagenet, null (random) or a .h5/.weights.h5 file", nullable=True),
        _s("head_pooling", "model", "str", "avg", "global pooling of a keras.applications "
           "backbone's features", choices=POOLINGS),
        _s("fine_tune_layers", "model", "int", 0, "top layers of a keras.applications backbone "
           "unfrozen after the warm-up (0: frozen throughout, -1: all)", low=-1, high=100000),
        _s("augment_flip", "model", "str", "none", "random flips in training",
           choices=FLIPS),
        _s("augment_rotation", "model", "float", 0.0,
           "random rotation in training, a fraction of a full turn (0: off)", low=0.0, high=1.0),
        _s("augment_zoom", "model", "float", 0.0,
           "random zoom in training, a fraction of the size (0: off)", low=0.0, high=1.0,
           high_exclusive=True),
        _s("augment_translation", "model", "float", 0.0,
           "random shift in training, a fraction of the size (0: off)", low=0.0, high=1.0),
        _s("augment_contrast", "model", "float", 0.0,
           "random contrast change in training, a fraction (0: off)", low=0.0, high=1.0),
        _s("augment_brightness", "model", "float", 0.0,
           "random brightness change in training, a fraction of the pixel range (0: off)",
           low=0.0, high=1.0),
        # training
        _s("optimizer", "training", "str", "adam", "optimizer", choices=OPTIMIZERS),
        _s("learning_rate", "training", "float", 1e-3, "initial learning rate",
           low=0.0, high=10.0),
        _s("momentum", "training", "float", 0.9, "momentum of sgd momentum/nesterov",
           low=0.0, high=1.0, high_exclusive=True),
        _s("weight_decay", "training", "float", 0.004, "decoupled weight decay of adamw",
           low=0.0, high=1.0),
        _s("lr_schedule", "training", "str", "constant", "learning-rate schedule",
           choices=LR_SCHEDULES),
        _s("lr_decay_rate", "training", "float", 0.9,
           "exponential: factor per epoch; plateau: factor on a plateau", low=0.0, high=1.0,
           high_exclusive=True),
        _s("batch_size", "training", "int", 64, "batch size", low=1, high=1 << 20),
        _s("epochs", "training", "int", 5, "maximum number of epochs", low=1, high=100000),
        _s("early_stopping_patience", "training", "int", None,
           "stop after this many epochs without improvement of the study metric "
           "(null: never stop early)", low=0, high=100000, nullable=True),
        _s("warmup_epochs", "training", "int", 1, "epochs that train the head alone, the "
           "keras.applications backbone frozen, before fine_tune_layers are unfrozen",
           low=0, high=100000),
        _s("fine_tune_learning_rate", "training", "float", None, "learning rate once the "
           "backbone's top layers are unfrozen (null: learning_rate / 10)",
           low=0.0, high=10.0, nullable=True),
        _s("mixed_precision", "training", "bool", False,
           "mixed float16 compute with float32 weights (Keras policy mixed_float16): faster "
           "on GPUs with tensor cores, slower on CPUs"),
        _s("jit_compile", "training", "choice", "auto",
           "compile the train step with XLA: true, false or auto (Keras decides)",
           choices=(True, False, "auto")),
    ]
}


def default_settings() -> dict[str, Any]:
    """The value every setting takes when neither fixed nor searched."""
    return {name: s.default for name, s in SETTINGS.items()}
