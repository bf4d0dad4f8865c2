"""The training metrics a study can name (``training.metrics``), with ``keras.*`` only, so they
run under TensorFlow, JAX or PyTorch.

mltune's labels are class indices unless the data is one-hot; Keras' ``F1Score``, ``AUC``,
``Precision`` and ``Recall`` want one-hot labels, and its ``Precision``/``Recall`` judge each
class output against a threshold (a multi-label view). The classes here take either kind of
label, judge a prediction by its most probable class, and average over the classes (macro),
as scikit-learn's ``f1_score(average="macro")`` does. They exist only while a model trains:
:func:`compile_model` leaves them out of the compile configuration a saved model keeps, so a
model loads where mltune is not installed.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from mltune._config import TOP_K, TRAINING_METRICS

__all__ = ["MacroAUC", "MacroF1", "MacroPrecision", "MacroRecall", "make_metrics",
           "saved_metrics"]


def _indices(y_true: Any, sparse: bool) -> Any:
    """Class indices as int32 of shape (batch,)."""
    if sparse:
        return ops.cast(ops.reshape(y_true, (-1,)), "int32")
    return ops.cast(ops.argmax(y_true, axis=-1), "int32")


def _row_weights(sample_weight: Any, like: Any) -> Any:
    if sample_weight is None:
        return ops.ones_like(like)
    return ops.cast(ops.reshape(sample_weight, (-1,)), like.dtype)


class _ClassCounts(keras.metrics.Metric):
    """True positives, false positives and false negatives per class, the predicted class
    being the most probable one; ``result`` is a macro average of them."""

    def __init__(self, num_classes: int, sparse: bool = True, name: str | None = None,
                 dtype: Any = None) -> None:
        super().__init__(name=name, dtype=dtype)
        self.num_classes, self.sparse = int(num_classes), bool(sparse)
        shape = (self.num_classes,)
        self.tp = self.add_variable(shape=shape, initializer="zeros", name="tp")
        self.fp = self.add_variable(shape=shape, initializer="zeros", name="fp")
        self.fn = self.add_variable(shape=shape, initializer="zeros", name="fn")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        true = ops.one_hot(_indices(y_true, self.sparse), self.num_classes, dtype=self.dtype)
        pred = ops.one_hot(ops.argmax(y_pred, axis=-1), self.num_classes, dtype=self.dtype)
        w = ops.expand_dims(_row_weights(sample_weight, true[:, 0]), -1)
        self.tp.assign_add(ops.sum(true * pred * w, axis=0))
        self.fp.assign_add(ops.sum((1 - true) * pred * w, axis=0))
        self.fn.assign_add(ops.sum(true * (1 - pred) * w, axis=0))

    def _ratio(self, num: Any, den: Any) -> Any:
        # A class never predicted (or never present) scores 0, as scikit-learn's
        # zero_division=0 does; every class counts in the average.
        return ops.mean(ops.divide_no_nan(num, den))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_classes": self.num_classes, "sparse": self.sparse}


@keras.saving.register_keras_serializable(package="mltune")
class MacroPrecision(_ClassCounts):
    """Precision per class (of the most probable class), averaged over the classes."""

    def __init__(self, num_classes: int, sparse: bool = True, name: str = "precision",
                 dtype: Any = None) -> None:
        super().__init__(num_classes, sparse, name=name, dtype=dtype)

    def result(self) -> Any:
        return self._ratio(self.tp, self.tp + self.fp)


@keras.saving.register_keras_serializable(package="mltune")
class MacroRecall(_ClassCounts):
    """Recall per class, averaged over the classes (balanced accuracy)."""

    def __init__(self, num_classes: int, sparse: bool = True, name: str = "recall",
                 dtype: Any = None) -> None:
        super().__init__(num_classes, sparse, name=name, dtype=dtype)

    def result(self) -> Any:
        return self._ratio(self.tp, self.tp + self.fn)


@keras.saving.register_keras_serializable(package="mltune")
class MacroF1(_ClassCounts):
    """F1 per class, averaged over the classes (``f1_score(average="macro")``)."""

    def __init__(self, num_classes: int, sparse: bool = True, name: str = "f1_score",
                 dtype: Any = None) -> None:
        super().__init__(num_classes, sparse, name=name, dtype=dtype)

    def result(self) -> Any:
        return self._ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)


@keras.saving.register_keras_serializable(package="mltune")
class MacroAUC(keras.metrics.AUC):
    """ROC AUC of each class against the rest, averaged over the classes (Keras' ``AUC``
    with ``multi_label``), from class indices or one-hot labels."""

    def __init__(self, num_classes: int, sparse: bool = True, name: str = "auc",
                 **kwargs: Any) -> None:
        kwargs.pop("multi_label", None)
        kwargs.pop("num_labels", None)
        super().__init__(name=name, multi_label=True, num_labels=int(num_classes), **kwargs)
        self.num_classes, self.sparse = int(num_classes), bool(sparse)

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        if self.sparse:
            y_true = ops.one_hot(_indices(y_true, True), self.num_classes, dtype=y_pred.dtype)
        if sample_weight is not None:  # one weight per row, for every class
            sample_weight = ops.broadcast_to(
                ops.expand_dims(_row_weights(sample_weight, y_true[:, 0]), -1),
                ops.shape(y_true))
        super().update_state(y_true, y_pred, sample_weight)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_classes": self.num_classes, "sparse": self.sparse}


def make_metrics(names: list[str] | tuple[str, ...], *, num_classes: int | None,
                 one_hot: bool) -> list[Any]:
    """The Keras metrics for ``training.metrics`` names, logged under those names."""
    unknown = [n for n in names if n not in TRAINING_METRICS]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r}; choose from "
                         f"{', '.join(TRAINING_METRICS)}")
    made: list[Any] = []
    for name in names:
        if name == "accuracy":
            made.append("accuracy")  # Keras picks the sparse or categorical one
        elif name == "top_k_accuracy":
            top = (keras.metrics.TopKCategoricalAccuracy if one_hot else
                   keras.metrics.SparseTopKCategoricalAccuracy)
            made.append(top(k=TOP_K, name=name))
        else:
            if num_classes is None:
                raise ValueError(f"metric {name!r} needs the model's number of classes: a "
                                 "model with one output of shape (batch, classes)")
            classes: dict[str, Any] = {"precision": MacroPrecision, "recall": MacroRecall,
                                       "f1_score": MacroF1, "auc": MacroAUC}
            made.append(classes[name](num_classes, sparse=not one_hot))
    return made


def saved_metrics(made: list[Any]) -> list[Any]:
    """Those of ``made`` that Keras itself knows: what a saved model's compile configuration
    keeps, so it loads with ``keras.saving.load_model`` where mltune is not installed."""
    return [m for m in made if not isinstance(m, (_ClassCounts, MacroAUC))]
