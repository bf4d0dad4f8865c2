"""End-to-end studies on tiny data, read back the way a user would: through MlflowClient."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import small_cnn, tiny_study
from mlflow import MlflowClient

from mltune import tune
from mltune._config import load_config
from mltune._storage import open_storage

EPOCH_METRICS = {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate",
                 "epoch_seconds"}
FINAL_METRICS = {"best_val_accuracy", "best_epoch", "epochs_run", "train_seconds",
                 "param_count"}


def runs_of(tracking_uri: str, experiment: str) -> tuple[Any, list[Any]]:
    """The parent run and its child runs, oldest first."""
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r}"
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    return parents[0], sorted(children, key=lambda r: int(r.data.tags["mltune.trial_number"]))


def load_study(name: str, storage: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage))


@pytest.mark.parametrize("sampler", ["random", "grid", "tpe"])
def test_every_trial_is_a_child_run(sampler: str, write_study, stores) -> None:
    n = 4 if sampler == "grid" else 3
    path = write_study(study={"name": f"s-{sampler}", "sampler": sampler, "n_trials": None if
                              sampler == "grid" else n, "seed": 3},
                       search_space={
                           "learning_rate": {"type": "float", "low": 0.002, "high": 0.004,
                                             "step": 0.002},
                           "filters": {"type": "categorical", "choices": [4, 8]}})
    cfg = load_config(path)
    result = tune(cfg, **stores)

    parent, children = runs_of(stores["tracking_uri"], f"s-{sampler}")
    assert result.n_trials == n and result.states == {"COMPLETE": n}
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["mltune.sampler"] == sampler
    assert parent.data.tags["mltune.direction"] == "maximize"
    assert parent.data.params["epochs"] == "1" and parent.data.params["dense_units"] == "16"
    assert "learning_rate" not in parent.data.params  # searched, so on the children
    assert [c.info.run_name for c in children] == [f"trial-{i:03d}" for i in range(n)]

    client = MlflowClient(stores["tracking_uri"])
    study = load_study(f"s-{sampler}", stores["storage"])
    for child, trial in zip(children, study.trials, strict=True):
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
        assert child.data.tags["mltune.state"] == "COMPLETE"
        assert child.data.tags["mltune.device"] == "CPU"
        assert trial.user_attrs["mlflow_run_id"] == child.info.run_id
        assert child.data.params == {k: str(v) for k, v in trial.params.items()}
        assert EPOCH_METRICS | FINAL_METRICS <= set(child.data.metrics)
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert [m.step for m in history] == [1]
        assert child.data.metrics["best_val_accuracy"] == pytest.approx(trial.value)

    best = study.best_trial
    assert parent.data.tags["mltune.best_trial"] == str(best.number)
    assert parent.data.tags["mltune.best_run_id"] == best.user_attrs["mlflow_run_id"]
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(best.value)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "trials.csv" in artifacts
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/optimization_history.png" in plots
    if sampler == "grid":
        points = [(t.params["learning_rate"], t.params["filters"]) for t in study.trials]
        assert sorted(points) == sorted(itertools.product([0.002, 0.004], [4, 8]))


def test_best_trial_model_is_logged_and_predicts(write_study, stores) -> None:
    import mlflow
    import numpy as np
    from sklearn.datasets import load_digits

    result = tune(load_config(write_study()), **stores)
    client = MlflowClient(stores["tracking_uri"])
    exp = client.get_experiment_by_name("tiny")
    models = client.search_logged_models(experiment_ids=[exp.experiment_id])
    assert models, "no logged model"
    assert result.best_run_id in {m.source_run_id for m in models}
    best_model = next(m for m in models if m.source_run_id == result.best_run_id)
    mlflow.set_tracking_uri(stores["tracking_uri"])
    model = mlflow.pyfunc.load_model(f"models:/{best_model.model_id}")
    assert model.metadata.signature is not None
    digits = load_digits()
    probs = np.asarray(model.predict(digits.images[:8, :, :, None].astype(np.float32)))
    assert probs.shape == (8, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)


def test_trial_value_is_the_best_epoch_not_the_last(write_study, stores) -> None:
    # A high learning rate: validation accuracy goes up and down, so the best epoch (whose
    # weights the trial keeps) is often not the last.
    path = write_study(training={"epochs": 6, "batch_size": 32},
                       study={"n_trials": 3, "name": "epochs"},
                       search_space={"learning_rate": {"type": "float", "low": 0.03,
                                                       "high": 0.08}})
    tune(load_config(path), **stores)
    client = MlflowClient(stores["tracking_uri"])
    study = load_study("epochs", stores["storage"])
    assert study.metric_names == ["val_accuracy"]  # optuna-dashboard's label
    kept_earlier = 0
    for trial in study.trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        best_epoch = int(run.data.metrics["best_epoch"])  # counted from 1
        steps = [m.step for m in history]
        value_at = {m.step: m.value for m in history}
        assert trial.value == pytest.approx(max(m.value for m in history))
        assert value_at[best_epoch] == pytest.approx(trial.value)
        # Each epoch at its step (1-based), reported to Optuna too (learning curves)...
        assert steps[:6] == [1, 2, 3, 4, 5, 6]
        assert trial.intermediate_values == pytest.approx(
            {s: v for s, v in value_at.items() if s <= 6})
        # ...and the kept epoch's metrics once more as the last step, when it is not the last
        # epoch, so the runs table's val_accuracy (the latest value) is the trial's value.
        assert steps[6:] == ([] if best_epoch == 6 else [7])
        assert run.data.metrics["val_accuracy"] == pytest.approx(trial.value)
        loss = client.get_metric_history(run.info.run_id, "val_loss")
        assert loss[-1].value == pytest.approx(loss[best_epoch - 1].value)
        kept_earlier += best_epoch < 6
    assert kept_earlier  # the case this test is about happened


def test_a_failing_trial_fails_alone(write_study, stores) -> None:
    def build(params: dict[str, Any], **kw: Any) -> Any:
        if params["filters"] == 8:
            raise RuntimeError("boom: filters=8 is broken")
        return small_cnn(params, **kw)

    path = write_study(study={"sampler": "grid", "n_trials": None, "name": "failing"},
                       search_space={"filters": {"type": "categorical", "choices": [4, 8, 16]}})
    result = tune(load_config(path), model=build, **stores)

    assert result.states == {"COMPLETE": 2, "FAIL": 1}
    parent, children = runs_of(stores["tracking_uri"], "failing")
    assert parent.info.status == "FINISHED"
    by_filters = {c.data.params["filters"]: c for c in children}
    failed = by_filters["8"]
    assert failed.info.status == "FAILED"
    assert failed.data.tags["mltune.state"] == "FAIL"
    assert "boom: filters=8 is broken" in failed.data.tags["mltune.error"]
    client = MlflowClient(stores["tracking_uri"])
    error = Path(client.download_artifacts(failed.info.run_id, "error.txt")).read_text()
    assert "RuntimeError: boom" in error and "Traceback" in error
    assert {by_filters["4"].info.status, by_filters["16"].info.status} == {"FINISHED"}


def test_resume_adds_trials_to_the_same_study_and_parent(write_study, stores) -> None:
    path = write_study(study={"n_trials": 2, "name": "resumed"})
    first = tune(load_config(path), **stores)
    second = tune(load_config(path), **stores)

    assert second.parent_run_id == first.parent_run_id
    assert second.n_trials == 4
    parent, children = runs_of(stores["tracking_uri"], "resumed")
    assert parent.info.status == "FINISHED"
    assert [c.data.tags["mltune.trial_number"] for c in children] == ["0", "1", "2", "3"]
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    study = load_study("resumed", stores["storage"])
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    # Seeded, resumed: the sampler's seed moves on with the trials already run, so the second
    # run draws new points, not the first run's again.
    points = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(points)) == 4, points


def test_grid_resumed_after_exhaustion_runs_nothing(write_study, stores) -> None:
    path = write_study(study={"sampler": "grid", "n_trials": None, "name": "grid-done"},
                       search_space={"filters": {"type": "categorical", "choices": [4, 8]}})
    tune(load_config(path), **stores)
    again = tune(load_config(path), **stores)
    assert again.n_trials == 2
    _, children = runs_of(stores["tracking_uri"], "grid-done")
    assert sorted(c.data.params["filters"] for c in children) == ["4", "8"]


def test_grid_with_n_trials_runs_part_then_the_rest(write_study, stores) -> None:
    space = {"filters": {"type": "categorical", "choices": [4, 8, 16]}}
    path = write_study(study={"sampler": "grid", "n_trials": 2, "name": "grid-part"},
                       search_space=space)
    tune(load_config(path), **stores)
    tune(load_config(path, n_trials=5), **stores)  # more than the one point left
    study = load_study("grid-part", stores["storage"])
    assert sorted(t.params["filters"] for t in study.trials) == [4, 8, 16]


def test_tiny_study_helper_is_valid(write_study) -> None:
    cfg = load_config(write_study(tiny_study()))
    assert set(cfg.search_space) == {"learning_rate", "filters"}


def test_nan_loss_fails_the_trial_at_once_and_the_study_goes_on(write_study, stores) -> None:
    # Plain SGD at learning rate 10 with a strong L2 penalty blows the weights up within the
    # first epoch; without the penalty the same run stays finite.
    path = write_study(study={"sampler": "grid", "n_trials": None, "name": "nan",
                              "pruner": "median"},
                       training={"optimizer": "sgd", "learning_rate": 10.0, "batch_size": 8,
                                 "epochs": 3},
                       search_space={"l2": {"type": "categorical", "choices": [0.0, 1.0]}})
    result = tune(load_config(path), **stores)
    assert result.states == {"COMPLETE": 1, "FAIL": 1}
    study = load_study("nan", stores["storage"])
    failed = next(t for t in study.trials if t.params["l2"] == 1.0)
    # Stopped inside its first epoch: no epoch ended, nothing (no NaN) reached the storage.
    assert failed.state.name == "FAIL" and failed.values is None
    assert failed.intermediate_values == {} and failed.user_attrs["epochs_run"] == 0
    client = MlflowClient(stores["tracking_uri"])
    run = client.get_run(failed.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED"
    assert re.fullmatch(r"NonFiniteLossError: loss became (nan|inf) at batch \d+ of epoch 1",
                        run.data.tags["mltune.error"]), run.data.tags["mltune.error"]
    assert run.data.tags["mltune.error_kind"] == "non_finite_loss"
    assert "val_loss" not in run.data.metrics and "loss" not in run.data.metrics
    ok = next(t for t in study.trials if t.params["l2"] == 0.0)
    assert ok.user_attrs["epochs_run"] == 3 and sorted(ok.intermediate_values) == [1, 2, 3]


def test_same_seed_same_trials(write_study, tmp_path) -> None:
    values = []
    for i in range(2):
        stores = {"tracking_uri": f"sqlite:///{tmp_path / f'm{i}.db'}",
                  "storage": str(tmp_path / f"j{i}.log")}
        tune(load_config(write_study(study={"n_trials": 2, "name": "seeded"})), **stores)
        study = load_study("seeded", stores["storage"])
        values.append([(t.params, round(t.value, 4)) for t in study.trials])
    assert values[0] == values[1]


def test_a_model_that_cannot_be_logged_keeps_the_trial(write_study, stores, monkeypatch
                                                       ) -> None:
    from mltune._tracking import Tracker

    def fail(self: Tracker, run_id: str, model: Any, example: Any, **kw: Any) -> str:
        raise OSError("disk full")

    monkeypatch.setattr(Tracker, "log_model", fail)
    result = tune(load_config(write_study(study={"n_trials": 1, "name": "nomodel"})), **stores)
    assert result.states == {"COMPLETE": 1}
    run = MlflowClient(stores["tracking_uri"]).get_run(result.best_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mltune.model_error"] == "OSError: disk full"
