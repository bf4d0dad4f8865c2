"""training.metrics (F1, AUC... as study metrics), training.class_weight, and the per-class
report a registration logs; read back through MlflowClient, as a user would."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from conftest import tiny_study
from mlflow import MlflowClient
from typer.testing import CliRunner

from mltune import tune
from mltune._cli import app
from mltune._config import load_config, parse_config
from mltune._errors import ConfigError
from mltune._storage import open_storage

runner = CliRunner()


def trials_of(name: str, stores: dict[str, str]) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(stores["storage"]))


@pytest.mark.parametrize("metric", ["val_f1_score", "val_auc"])
def test_f1_and_auc_as_the_study_metric(metric: str, write_study, stores) -> None:
    path = write_study(study={"name": "m", "n_trials": 1, "metric": metric},
                       training={"epochs": 2, "metrics": ["accuracy", "f1_score", "auc"]})
    tune(load_config(path), **stores)
    study = trials_of("m", stores)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert study.metric_names == [metric]
    client = MlflowClient(stores["tracking_uri"])
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        # Every chosen metric is logged per epoch, for training and validation.
        for name in ("f1_score", "auc", "accuracy", "loss"):
            for key in (name, f"val_{name}"):
                assert len(client.get_metric_history(run.info.run_id, key)) >= 2, key
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, metric)}
        best_epoch = int(run.data.metrics["best_epoch"])
        assert trial.value == pytest.approx(history[best_epoch])
        assert trial.value == pytest.approx(max(history.values()))
        assert 0.0 <= trial.value <= 1.0


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_a_saved_model_names_no_mltune_metric(tmp_path: Path) -> None:
    """A trial's model loads where mltune is not installed (mlflow.pyfunc.load_model)."""
    import keras

    from mltune._settings import default_settings
    from mltune._trainer import compile_model

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    settings = {**default_settings(), "metrics": ["accuracy", "f1_score", "auc", "recall",
                                                  "precision", "top_k_accuracy"]}
    compile_model(model, settings)
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = np.arange(32) % 3
    logs = model.evaluate(x, y, return_dict=True, verbose=0)
    assert {"f1_score", "auc", "recall", "precision", "top_k_accuracy"} <= set(logs)
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        config = json.loads(z.read("config.json"))
    saved = json.dumps(config["compile_config"]["metrics"])
    assert "mltune" not in saved and "top_k_accuracy" in saved
    assert keras.saving.load_model(tmp_path / "m.keras").compiled


def test_macro_metrics_match_scikit_learn() -> None:
    import keras
    from sklearn.metrics import f1_score, precision_score, recall_score

    from mltune._metrics import make_metrics

    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 50)
    scores = rng.random((50, 4)).astype("float32")
    predicted = scores.argmax(axis=1)
    expected = {"f1_score": f1_score, "precision": precision_score, "recall": recall_score}
    for one_hot, labels in ((False, y), (True, np.eye(4, dtype="float32")[y])):
        for metric in make_metrics(list(expected), num_classes=4, one_hot=one_hot):
            metric.update_state(labels, scores)
            assert float(keras.ops.convert_to_numpy(metric.result())) == pytest.approx(
                expected[metric.name](y, predicted, average="macro", labels=range(4),
                                      zero_division=0), abs=1e-6)
    sparse, dense = make_metrics(["auc"], num_classes=4, one_hot=False)[0], make_metrics(
        ["auc"], num_classes=4, one_hot=True)[0]
    sparse.update_state(y, scores)
    dense.update_state(np.eye(4, dtype="float32")[y], scores)
    assert float(keras.ops.convert_to_numpy(sparse.result())) == pytest.approx(
        float(keras.ops.convert_to_numpy(dense.result())))


def test_unknown_metric_exits_2_naming_training_metrics(write_study, stores) -> None:
    path = write_study(training={"metrics": ["accuracy", "f1"]})
    result = runner.invoke(app, ["tune", str(path), "--storage", stores["storage"],
                                 "--tracking-uri", stores["tracking_uri"]])
    assert result.exit_code == 2, result.output
    assert "training.metrics" in result.stderr
    assert "f1_score" in result.stderr  # the choices, and the likely one
    assert not Path(stores["storage"]).exists()


def test_study_metric_must_be_a_chosen_metric() -> None:
    with pytest.raises(ConfigError, match=r"study\.metric.*add f1_score to training\.metrics"):
        parse_config(tiny_study(study={"metric": "val_f1_score"}))
    with pytest.raises(ConfigError, match=r"study\.direction.*val_auc is to be maximized"):
        parse_config(tiny_study(study={"metric": "val_auc", "direction": "minimize"},
                                training={"metrics": ["auc"]}))
    config = parse_config(tiny_study(study={"objectives": [
        {"metric": "val_recall"}, {"metric": "params"}]}, training={"metrics": ["recall"]}))
    assert [(o.metric, o.direction) for o in config.study.objectives] == [
        ("val_recall", "maximize"), ("params", "minimize")]


@pytest.mark.parametrize(("value", "match"), [
    ("inverse", r"training\.class_weight in .*: must be balanced or a mapping"),
    ({0: 0}, r"training\.class_weight\.0 in .*: must be a number > 0, but got 0"),
    ({-1: 2.0}, r"training\.class_weight\.-1 in .*: must be a class index"),
    ({"0": "high"}, r"training\.class_weight\.0 in .*: must be a number > 0"),
])
def test_class_weight_is_checked_with_the_config(value: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_config(tiny_study(training={"class_weight": value}))


def imbalanced(npz_file, counts: tuple[int, ...], name: str = "imbalanced.npz") -> Path:
    """Noise images whose classes have ``counts`` training examples (and a balanced test)."""
    y = np.repeat(np.arange(len(counts)), counts).astype(np.uint8)
    rng = np.random.default_rng(0)
    return npz_file(name, x_train=rng.integers(0, 256, (len(y), 10, 10), dtype=np.uint8),
                    y_train=y, y_test=(np.arange(30) % len(counts)).astype(np.uint8))


def test_balanced_weighs_classes_by_their_inverse_frequency(npz_file, write_study,
                                                             stores) -> None:
    from sklearn.utils.class_weight import compute_class_weight

    from mltune._session import prepare

    path = write_study(data={"source": str(imbalanced(npz_file, (150, 30, 20))),
                             "validation_split": 0.2},
                       study={"name": "balanced", "n_trials": 1},
                       training={"class_weight": "balanced"})
    config = load_config(path)
    session = prepare(config, stores["tracking_uri"])
    y = session.data.y_train
    expected = compute_class_weight("balanced", classes=np.arange(3), y=y)
    weights = session.fit_kwargs["class_weight"]
    assert list(weights) == [0, 1, 2]
    assert [weights[c] for c in range(3)] == pytest.approx(expected)
    assert weights[2] > weights[1] > weights[0]  # the rarest class weighs most
    tune(config, **stores)
    study = trials_of("balanced", stores)
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE
    parent = MlflowClient(stores["tracking_uri"]).get_run(
        study.user_attrs["mlflow_parent_run_id"])
    assert parent.data.params["class_weight"] == "balanced"


def test_class_weight_of_an_unknown_class_stops_before_any_run(npz_file, write_study,
                                                               stores) -> None:
    path = write_study(training={"class_weight": {0: 2.0, "cat": 3.0}})
    result = runner.invoke(app, ["tune", str(path), "--storage", stores["storage"],
                                 "--tracking-uri", stores["tracking_uri"]])
    assert result.exit_code == 2, result.output
    assert "training.class_weight.cat in " in result.stderr
    assert "must name a class of the data" in result.stderr
    client = MlflowClient(stores["tracking_uri"])
    assert not [r for e in client.search_experiments()
                for r in client.search_runs([e.experiment_id])]


def register(stores: dict[str, str], study: str, name: str) -> None:
    result = runner.invoke(app, ["register", "--study", study, "--name", name,
                                 "--storage", stores["storage"],
                                 "--tracking-uri", stores["tracking_uri"]])
    assert result.exit_code == 0, result.output


def report_of(client: MlflowClient, run_id: str) -> tuple[list[dict[str, str]], np.ndarray,
                                                            bytes]:
    folder = Path(client.download_artifacts(run_id, ""))
    with open(folder / "per_class_report.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    text = (folder / "confusion_matrix.csv").read_text(encoding="utf-8")
    matrix = np.array([[int(v) for v in row[1:]] for row in csv.reader(io.StringIO(text))][1:])
    return rows, matrix, (folder / "confusion_matrix.png").read_bytes()


def test_registration_logs_a_per_class_report_and_confusion_matrix(write_study,
                                                                    stores) -> None:
    from mltune._data import load_data

    path = write_study(study={"name": "reported", "n_trials": 1, "metric": "val_f1_score"},
                       training={"epochs": 2, "metrics": ["accuracy", "f1_score"]})
    tune(load_config(path), **stores)
    register(stores, "reported", "digits-f1")
    client = MlflowClient(stores["tracking_uri"])
    version = client.get_model_version_by_alias("digits-f1", "champion")
    rows, matrix, png = report_of(client, version.run_id)
    classes = [r for r in rows if not r["class"].endswith(" avg")]
    assert [r["class"] for r in classes] == [str(i) for i in range(10)]
    test_size = len(load_data(load_config(path).data, seed=1).y_test)
    assert matrix.shape == (10, 10)
    assert matrix.sum() == test_size == sum(int(r["support"]) for r in classes)
    assert [int(r["support"]) for r in classes] == matrix.sum(axis=1).tolist()
    assert png.startswith(b"\x89PNG")
    # The macro F1 of the report is the test_f1_score the model was scored by.
    macro = next(r for r in rows if r["class"] == "macro avg")
    test_f1 = client.get_run(version.run_id).data.metrics["test_f1_score"]
    assert float(macro["f1_score"]) == pytest.approx(test_f1, abs=1e-4)
    assert float(version.tags["test_f1_score"]) == pytest.approx(test_f1)


def test_class_weight_mapping_changes_what_the_model_predicts(npz_file, write_study,
                                                              stores) -> None:
    # Noise images of two equally common classes: with class 0 weighing almost nothing, the
    # model learns to answer 1; unweighted, it would answer both.
    source = imbalanced(npz_file, (100, 100), name="noise.npz")
    path = write_study(data={"source": str(source), "validation_split": 0.2},
                       study={"name": "weighted", "n_trials": 1},
                       training={"epochs": 3, "learning_rate": 0.01,
                                 "class_weight": {"0": 0.001}},
                       search_space={"filters": {"type": "categorical", "choices": [8]}})
    tune(load_config(path), **stores)
    register(stores, "weighted", "noise")
    client = MlflowClient(stores["tracking_uri"])
    version = client.get_model_version_by_alias("noise", "champion")
    rows, matrix, _ = report_of(client, version.run_id)
    recall = {r["class"]: float(r["recall"]) for r in rows}
    assert recall["0"] <= 0.1 and recall["1"] >= 0.9, matrix


def test_class_weight_in_the_study_and_in_fit_kwargs_is_an_error(write_study, stores) -> None:
    from mltune._session import prepare

    config = load_config(write_study(training={"class_weight": {"3": 2.0}}))
    with pytest.raises(ConfigError, match=r"fit_kwargs\.class_weight.*give one of them"):
        prepare(config, stores["tracking_uri"], fit_kwargs={"class_weight": {3: 2.0}})
    weights = prepare(config, stores["tracking_uri"]).fit_kwargs["class_weight"]
    assert weights == {**dict.fromkeys(range(10), 1.0), 3: 2.0}


def test_the_python_api_takes_metrics_and_class_weight_as_keywords(stores) -> None:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = x.reshape(-1, 8, 8, 1)[:240]
    y = y[:240]
    result = tune(data=(x, y), metrics=["accuracy", "f1_score"], metric="val_f1_score",
                  class_weight="balanced", n_trials=1, epochs=1, study_name="keywords",
                  search_space={"filters": {"type": "categorical", "choices": [4, 8]}},
                  model_params={"conv_blocks": 1, "dense_units": 16}, progress=False,
                  **stores)
    run = MlflowClient(stores["tracking_uri"]).get_run(result.best_run_id)
    assert run.data.metrics["best_val_f1_score"] == pytest.approx(result.best_value)
    parent = MlflowClient(stores["tracking_uri"]).get_run(result.parent_run_id)
    assert parent.data.params["class_weight"] == "balanced"
