"""Register a study's best model: evaluate it on the held-out test split, log a serving
model, create a registered-model version, and give it an alias.

Aliases, not stages (MLflow deprecated stages): the new version becomes ``champion`` only if
its test accuracy beats the current champion's; otherwise it is the ``challenger``.
"""

from __future__ import annotations

from typing import Any

from mltune._config import parse_config
from mltune._errors import ConfigError, MltuneError
from mltune._names import Attr, Tag
from mltune._results import Registration
from mltune._selection import best_trial
from mltune._selection import rule as selection_rule
from mltune._storage import load_study, resolve_storage, stored_config
from mltune._tracking import CHALLENGER, CHAMPION, resolve_tracking_uri

__all__ = ["register_best"]


def register_best(*, study_name: str, name: str, storage: str | None = None,
                  tracking_uri: str | None = None, test_data: Any = None) -> Registration:
    """Register the best trial of study ``study_name`` as a new version of ``name``."""
    from mltune._device import backend, native_logs_muted

    backend()  # Keras imported with TensorFlow's start-up lines muted, before _trainer does
    from mltune._session import prepare
    from mltune._trainer import compile_model, evaluate, release
    from mltune._usercode import UserCode

    url, chosen = resolve_storage(storage, resolve_tracking_uri(tracking_uri))
    study, store = load_study(study_name, url, where=chosen)
    raw = stored_config(study, store)
    if raw is None:
        raise ConfigError("--study", f"study {study_name!r} was not made by `mltune tune`: "
                          "it has no study file to rebuild its model and data from")
    config = parse_config(raw, source=f"study {study_name!r}",
                          for_study=False, data_given=test_data is not None)
    best = best_trial(study, config.study)
    if best is None:
        raise MltuneError(f"study {study_name!r} has no completed trial to register")
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
        data=None if test_data is None else (test_data, test_data, test_data)))
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
        if not model.compiled:
            compile_model(model, config.settings, one_hot=data.one_hot)
        test = {f"test_{k}": v for k, v in evaluate(model, data).items()}
    tracker.log_metrics(run_id, test)
    serving_uri = tracker.log_serving_model(
        run_id, model, input_shape=data.input_shape, class_names=list(data.class_names),
        example=data.example(2) if data.x_test is None else data.x_test[:2], code=session.code)
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
