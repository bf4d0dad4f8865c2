"""Register a study's best model: evaluate it on the held-out test split, log a serving
model, create a registered-model version, and give it an alias.

Aliases, not stages (MLflow deprecated stages): the new version becomes ``champion`` only if
its test accuracy beats the current champion's; otherwise it is the ``challenger``.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from mltune._config import parse_config
from mltune._errors import ConfigError, MltuneError
from mltune._names import Attr, Tag
from mltune._results import Registration
from mltune._selection import best_trial, own_trials
from mltune._selection import rule as selection_rule
from mltune._storage import stored_config
from mltune._tracking import CHALLENGER, CHAMPION

__all__ = ["register_best"]


def register_best(*, study_name: str, name: str, storage: str | None = None,
                  tracking_uri: str | None = None, test_data: Any = None) -> Registration:
    """Register the best trial of study ``study_name`` as a new version of ``name``."""
    from mltune._device import backend, native_logs_muted

    backend()  # Keras imported with TensorFlow's start-up lines muted, before _trainer does
    from mltune._session import prepare
    from mltune._study import find_study
    from mltune._trainer import compile_model, evaluate, predicted_classes, release
    from mltune._usercode import UserCode

    study, store = find_study(study_name, storage, tracking_uri=tracking_uri)
    raw = stored_config(study, store)
    if raw is None:
        raise ConfigError("--study", f"study {study_name!r} was not made by `mltune tune`: "
                          "it has no study file to rebuild its model and data from")
    config = parse_config(raw, source=f"study {study_name!r}",
                          for_study=False, data_given=test_data is not None)
    best = best_trial(study, config.study)  # among the study's own trials
    if best is None:
        seeded = len(study.trials) - len(own_trials(study))
        raise MltuneError(f"study {study_name!r} has no completed trial to register" + (
            f" (its {seeded} warm-start trials are another study's: register that study's "
            "best)" if seeded else ""))
    run_id = best.user_attrs.get(Attr.RUN_ID)
    keras_uri = best.user_attrs.get(Attr.MODEL_URI)
    if not run_id or not keras_uri:
        raise MltuneError(f"the best trial ({best.number}) of study {study_name!r} has no "
                          "logged model to register")
    # The same checks and user code as the study's (builder imported, data loaded), with the
    # test data passed from Python in place of the study's own.
    # A builder defined in a script or notebook cannot be imported here; it ships no code.
    script = config.builder is not None and config.builder.startswith("__main__:")
    session = prepare(config, tracking_uri, user=UserCode(
        builder=_script_builder if script else None,
        data=None if test_data is None else (test_data, test_data, test_data)),
        training=False)
    tracker, data = session.tracker, session.data
    if not tracker.run_exists(run_id):
        raise ConfigError("--tracking-uri", f"the best trial's MLflow run {run_id} is not in "
                          f"this tracking store; pass the one the study was run with")
    done = tracker.versions_of_run(name, run_id)
    if done:
        v = tracker.client.get_model_version(name, str(done[0].version))
        return Registration(name=name, version=str(v.version), alias=_alias_of(v),
                            model_uri=str(v.source), test_metrics={}, previous_champion=None,
                            already_registered=True)
    if not data.has_test:
        raise ConfigError("test_data", f"study {study_name!r} has no test split to evaluate "
                          "the model on; pass test_data=(x_test, y_test)")
    # TensorFlow's C++ lines (CUDA probing at the first op) ignore TF_CPP_MIN_LOG_LEVEL:
    # muted as in a study's trials; an exception still shows once the block is left.
    with native_logs_muted():
        model = tracker.load_keras_model(keras_uri)
        # The built-in model is compiled again: a saved model keeps only Keras' own metrics
        # (mltune._trainer.compile_model), and training.metrics may name mltune's.
        if not model.compiled or config.builder is None:
            compile_model(model, config.settings, one_hot=data.one_hot)
        test = {f"test_{k}": v for k, v in evaluate(model, data).items()}
        classes = predicted_classes(model, data)
    tracker.log_metrics(run_id, test)
    if classes is not None:
        with tempfile.TemporaryDirectory(prefix="mltune-report-") as folder:
            write_class_report(folder, *classes, class_names=list(data.class_names))
            tracker.log_artifacts(run_id, folder)
    serving_uri = tracker.log_serving_model(
        run_id, model, input_shape=data.input_shape, class_names=list(data.class_names),
        example=data.example(2) if data.x_test is None else data.x_test[:2], code=session.code,
        resize=data.folder.resize if data.folder is not None else None)
    release()

    parent = study.user_attrs.get(Attr.STUDY_PARENT_RUN, "")
    values = {o.metric: v for o, v in zip(config.study.objectives, best.values, strict=True)}
    tags = {
        Tag.STUDY_NAME: study_name,
        Tag.PARENT_RUN_ID: parent,
        Tag.RUN_ID: run_id,
        Tag.TRIAL_NUMBER: best.number,
        Tag.SELECTION_RULE: selection_rule(config.study),
        **{f"mltune.{k}": v for k, v in values.items()},
        **test,
    }
    description = (
        f"Trial {best.number} of Optuna study '{study_name}' (MLflow parent run {parent}, "
        f"trial run {run_id}), chosen as the {selection_rule(config.study)}: "
        + ", ".join(f"{k}={v:.4g}" for k, v in {**values, **test}.items())
        + " on the held-out test data. Predicts class probabilities for "
        f"raw images of shape {data.input_shape} (uint8 or float; the channel axis may be "
        "left out for one channel).")
    version = tracker.register_version(name, serving_uri, run_id=run_id, tags=tags,
                                       description=description)
    current = tracker.champion(name)
    previous = str(current.version) if current is not None else None
    key, maximize = _score(config.study.metric, config.study.direction, test)
    score = test[key] if maximize else -test[key]
    if current is None or key not in current.tags:
        alias = CHAMPION
    else:
        theirs = float(current.tags[key])
        alias = CHAMPION if score > (theirs if maximize else -theirs) else CHALLENGER
    tracker.set_alias(name, alias, version)
    return Registration(name=name, version=version, alias=alias, model_uri=serving_uri,
                        test_metrics=test, previous_champion=previous)


REPORT_FILE = "per_class_report.csv"
MATRIX_FILE = "confusion_matrix.csv"
MATRIX_PLOT = "confusion_matrix.png"


def write_class_report(folder: str, y_true: Any, y_pred: Any, *, class_names: list[str]
                       ) -> None:
    """Per-class precision, recall, F1 and support on the test split (``per_class_report.csv``,
    one row per class, then the macro and weighted averages), and the confusion matrix, rows
    the true class and columns the predicted one (``confusion_matrix.csv`` and ``.png``)."""
    import csv

    import numpy as np
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    with open(os.path.join(folder, REPORT_FILE), "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["class", "precision", "recall", "f1_score", "support"])
        for i, name in enumerate(class_names):
            out.writerow([name, f"{precision[i]:.6g}", f"{recall[i]:.6g}", f"{f1[i]:.6g}",
                          int(support[i])])
        total = int(support.sum())
        for label, weights in (("macro avg", None), ("weighted avg", support)):
            out.writerow([label, *(f"{np.average(v, weights=weights):.6g}" if total else "0"
                                   for v in (precision, recall, f1)), total])
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    with open(os.path.join(folder, MATRIX_FILE), "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["true \\ predicted", *class_names])
        for name, row in zip(class_names, matrix, strict=True):
            out.writerow([name, *(int(v) for v in row)])
    _plot_matrix(os.path.join(folder, MATRIX_PLOT), matrix, class_names)


def _plot_matrix(path: str, matrix: Any, class_names: list[str]) -> None:
    # A Figure of its own, not pyplot: no global backend or figure state is touched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(class_names)
    side = min(4 + 0.45 * n, 40)
    fig = Figure(figsize=(side + 1.5, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("Confusion matrix on the test split")
    if n <= 60:  # beyond, the labels would overlap
        ax.set_xticks(range(n), class_names, rotation=90 if n > 10 else 0)
        ax.set_yticks(range(n), class_names)
    if n <= 30:
        threshold = matrix.max() / 2 if matrix.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if matrix[i, j] > threshold else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _script_builder(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError  # never called: registration builds no model


def _score(metric: str, direction: str, test: dict[str, float]) -> tuple[str, bool]:
    """The test metric that decides champion or challenger: the study metric's test value
    (``val_accuracy`` -> ``test_accuracy``), else the test loss."""
    key = "test_" + metric.removeprefix("val_")
    if key in test:
        return key, direction == "maximize"
    return "test_loss", False


def _alias_of(version: object) -> str:
    aliases = list(getattr(version, "aliases", []) or [])
    return aliases[0] if aliases else ""
