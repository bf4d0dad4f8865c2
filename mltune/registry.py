"""Register a study's best model: evaluate it on the held-out test split, log a serving
model, create a registered-model version, and give it an alias.

Aliases, not stages (MLflow deprecated stages): the new version becomes ``champion`` only if
its test accuracy beats the current champion's; otherwise it is the ``challenger``.
"""

from __future__ import annotations

from dataclasses import dataclass

from mltune.config import parse_config
from mltune.errors import ConfigError, MltuneError
from mltune.objective import MODEL_URI_ATTR, RUN_ID_ATTR
from mltune.selection import best_trial
from mltune.selection import rule as selection_rule
from mltune.study import CONFIG_ATTR, PARENT_RUN_ATTR, load_study
from mltune.tracking import CHALLENGER, CHAMPION, Tracker

__all__ = ["Registration", "register_best"]

TEST_METRIC = "test_accuracy"


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    alias: str
    model_uri: str  # the serving model: models:/<id>
    test_metrics: dict[str, float]
    previous_champion: str | None  # version number
    already_registered: bool = False


def register_best(*, study_name: str, name: str, storage: str | None = None,
                  tracking_uri: str | None = None) -> Registration:
    """Register the best trial of study ``study_name`` as a new version of ``name``."""
    from mltune.data import load_data
    from mltune.device import configure_gpus
    from mltune.trainer import evaluate, release

    study = load_study(study_name, storage)
    config = parse_config(study.user_attrs[CONFIG_ATTR], source=f"study {study_name!r}",
                          for_study=False)
    best = best_trial(study, config.study)
    if best is None:
        raise MltuneError(f"study {study_name!r} has no completed trial to register")
    run_id = best.user_attrs.get(RUN_ID_ATTR)
    keras_uri = best.user_attrs.get(MODEL_URI_ATTR)
    if not run_id or not keras_uri:
        raise MltuneError(f"the best trial ({best.number}) of study {study_name!r} has no "
                          "logged model to register")
    tracker = Tracker(tracking_uri)
    tracker.check()
    if not tracker.run_exists(run_id):
        raise ConfigError("--tracking-uri", f"the best trial's MLflow run {run_id} is not in "
                          f"this tracking store; pass the one the study was run with")
    done = tracker.versions_of_run(name, run_id)
    if done:
        v = tracker.client.get_model_version(name, str(done[0].version))
        return Registration(name=name, version=str(v.version), alias=_alias_of(v),
                            model_uri=str(v.source), test_metrics={}, previous_champion=None,
                            already_registered=True)

    configure_gpus()
    data = load_data(config.data, seed=config.study.seed)
    model = tracker.load_keras_model(keras_uri)
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    test = {f"test_{k}": v for k, v in evaluate(model, data.x_test, data.y_test).items()}
    tracker.log_metrics(run_id, test)
    serving_uri = tracker.log_serving_model(
        run_id, model, input_shape=data.input_shape, class_names=list(data.class_names),
        example=data.x_test[:2])
    release()

    parent = study.user_attrs.get(PARENT_RUN_ATTR, "")
    values = {o.metric: v for o, v in zip(config.study.objectives, best.values, strict=True)}
    tags = {
        "mltune.study_name": study_name,
        "mltune.parent_run_id": parent,
        "mltune.run_id": run_id,
        "mltune.trial_number": best.number,
        "mltune.selection_rule": selection_rule(config.study),
        **{f"mltune.{k}": v for k, v in values.items()},
        **test,
    }
    description = (
        f"Trial {best.number} of Optuna study '{study_name}' (MLflow parent run {parent}, "
        f"trial run {run_id}), chosen as the {selection_rule(config.study)}: "
        + ", ".join(f"{k}={v:.4g}" for k, v in {**values, **test}.items())
        + f", on {len(data.y_test)} held-out test images. Predicts class probabilities for "
        f"raw images of shape {data.input_shape} (uint8 or float; the channel axis may be "
        "left out for one channel).")
    version = tracker.register_version(name, serving_uri, run_id=run_id, tags=tags,
                                       description=description)
    current = tracker.champion(name)
    previous = str(current.version) if current is not None else None
    current_score = float(current.tags.get(TEST_METRIC, "-inf")) if current else None
    if current_score is None or test[TEST_METRIC] > current_score:
        alias = CHAMPION
    else:
        alias = CHALLENGER
    tracker.set_alias(name, alias, version)
    return Registration(name=name, version=version, alias=alias, model_uri=serving_uri,
                        test_metrics=test, previous_champion=previous)


def _alias_of(version: object) -> str:
    aliases = list(getattr(version, "aliases", []) or [])
    return aliases[0] if aliases else ""
