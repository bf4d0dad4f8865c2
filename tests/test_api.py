"""``mltune.tune`` with the user's own model, data and code, read back as a user would: through
MlflowClient, Optuna's API, a model loaded in another process, and the CLI's exit code."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import yaml
from mlflow import MlflowClient

import mltune

USER_MODULE = "usermodels"
MODELS_PY = '''
import keras


@keras.saving.register_keras_serializable(package="usermodels")
class Residual(keras.layers.Layer):
    """A custom layer: x + conv(x)."""

    def __init__(self, width, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.conv = keras.layers.Conv2D(width, 3, padding="same", activation="relu")

    def build(self, input_shape):
        self.conv.build(input_shape)

    def call(self, x):
        return x + self.conv(x)

    def get_config(self):
        return {**super().get_config(), "width": self.width}


def build(params, *, input_shape, num_classes):
    inputs = keras.Input(input_shape)
    x = keras.layers.Rescaling(1 / 16)(inputs)
    x = keras.layers.Conv2D(params["width"], 1)(x)
    for _ in range(params["depth"]):
        x = Residual(params["width"])(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))


def build_binary_auc(params, *, input_shape, num_classes):
    """Compiled by the builder: its own loss, optimizer and metric."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 16)(inputs))
    x = keras.layers.Dense(params["units"], activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="binary_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc")])
    return model
'''
DATA_PY = '''
from sklearn.datasets import load_digits


def load():
    d = load_digits()
    x, y = d.images[:400, ..., None].astype("float32"), d.target[:400]
    return {"x_train": x[:300], "y_train": y[:300], "x_val": x[300:360], "y_val": y[300:360],
            "x_test": x[360:], "y_test": y[360:]}


def broken():
    raise ValueError("the share is not mounted")


def wrong():
    return [1, 2, 3]
'''
SPACE = {"depth": {"type": "int", "low": 1, "high": 2},
         "width": {"type": "categorical", "choices": [4, 8]}}


@pytest.fixture(scope="module")
def user_code(tmp_path_factory) -> Path:
    """The user's project folder: models.py (importable as ``usermodels``) and data.py."""
    folder = tmp_path_factory.mktemp("project")
    (folder / f"{USER_MODULE}.py").write_text(MODELS_PY)
    (folder / "models.py").write_text(MODELS_PY)
    (folder / "data.py").write_text(DATA_PY)
    sys.path.insert(0, str(folder))
    try:
        yield folder
    finally:
        sys.path.remove(str(folder))


@pytest.fixture(scope="module")
def digits() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = d.images[:400, ..., None].astype("float32"), d.target[:400]
    return {"x_train": x[:300], "y_train": y[:300], "x_val": x[300:400], "y_val": y[300:400]}


def _children(tracking_uri: str, parent_run_id: str) -> list[Any]:
    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    return client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'")


@pytest.mark.parametrize("sampler", ["random", "grid", "tpe"])
def test_a_custom_builder_with_a_custom_layer_is_tuned(user_code, digits, stores, sampler
                                                       ) -> None:
    import usermodels

    # Numbers computed with NumPy, as a notebook makes them, count as the same numbers.
    space = {"depth": {"type": "int", "low": np.int64(1), "high": np.int64(2)},
             "width": {"type": "categorical", "choices": list(np.array([4, 8]))}}
    result = mltune.tune(
        model=usermodels.build, data=(digits["x_train"], digits["y_train"]),
        validation_data=(digits["x_val"], digits["y_val"]), search_space=space,
        sampler=sampler, n_trials=None if sampler == "grid" else np.int64(3), epochs=1, seed=0,
        study_name=f"custom-{sampler}", progress=False, **stores)

    n = 4 if sampler == "grid" else 3
    assert result.states == {"COMPLETE": n}
    children = _children(stores["tracking_uri"], result.parent_run_id)
    assert len(children) == n and {c.info.status for c in children} == {"FINISHED"}
    seen = {(c.data.params["depth"], c.data.params["width"]) for c in children}
    if sampler == "grid":
        assert seen == {("1", "4"), ("1", "8"), ("2", "4"), ("2", "8")}
    parent = MlflowClient(stores["tracking_uri"]).get_run(result.parent_run_id)
    assert parent.data.tags["mltune.builder"] == "usermodels:build"
    study = mltune.load_study(f"custom-{sampler}", stores["storage"])
    assert result.best_value == study.best_value
    assert result.best_params == study.best_params and set(result.best_params) == {"depth",
                                                                                     "width"}
    best = MlflowClient(stores["tracking_uri"]).get_run(result.best_run_id)
    assert float(best.data.metrics["best_val_accuracy"]) == pytest.approx(result.best_value)
    model = result.load_best_model()
    assert any(type(layer).__name__ == "Residual" for layer in model.layers)


def test_the_best_model_loads_with_pyfunc_in_a_folder_without_the_users_code(
        user_code, digits, stores, tmp_path) -> None:
    import usermodels

    result = mltune.tune(model=usermodels.build, data=(digits["x_train"], digits["y_train"]),
                         validation_data=(digits["x_val"], digits["y_val"]),
                         search_space=SPACE, sampler="random", n_trials=2, epochs=1, seed=1,
                         study_name="travels", progress=False, **stores)
    here = result.load_best_model().predict(digits["x_val"][:4], verbose=0)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    np.save(elsewhere / "x.npy", digits["x_val"][:4])
    script = textwrap.dedent(f"""
        import json, sys
        import mlflow, numpy as np
        try:
            import usermodels
            sys.exit("the user's module is importable here")
        except ImportError:
            pass
        mlflow.set_tracking_uri({stores["tracking_uri"]!r})
        model = mlflow.pyfunc.load_model({result.best_model_uri!r})
        print(json.dumps(np.asarray(model.predict(np.load("x.npy"))).tolist()))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    there = np.array(json.loads(out.stdout.strip().splitlines()[-1]))
    assert there.shape == (4, 10)
    np.testing.assert_allclose(there, here, atol=1e-5)


def test_a_compiled_model_keeps_its_loss_and_its_metric_is_the_study_metric(
        user_code, digits, stores) -> None:
    import usermodels

    y_train, y_val = (digits["y_train"] >= 5).astype(int), (digits["y_val"] >= 5).astype(int)
    result = mltune.tune(model=usermodels.build_binary_auc, data=(digits["x_train"], y_train),
                         validation_data=(digits["x_val"], y_val),
                         search_space={"units": {"type": "categorical", "choices": [4, 16]}},
                         sampler="grid", epochs=2, metric="val_auc", study_name="auc",
                         progress=False, **stores)
    assert result.states == {"COMPLETE": 2}
    client = MlflowClient(stores["tracking_uri"])
    for run in _children(stores["tracking_uri"], result.parent_run_id):
        assert "val_accuracy" not in run.data.metrics  # mltune did not compile it again
        history = client.get_metric_history(run.info.run_id, "val_auc")
        kept = int(run.data.metrics["best_epoch"])  # the kept epoch's again, if not the last
        assert [m.step for m in history] == [1, 2] + ([3] if kept < 2 else [])
    best = client.get_metric_history(result.best_run_id, "val_auc")
    assert result.best_value == pytest.approx(max(m.value for m in best))
    study = mltune.load_study("auc", stores["storage"])
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE


def test_a_metric_the_model_does_not_report_stops_the_study_with_a_clear_error(
        user_code, digits, stores) -> None:
    import usermodels

    with pytest.raises(mltune.ConfigError, match=r"study.metric.*reports no metric 'val_auc'"):
        mltune.tune(model=usermodels.build, data=(digits["x_train"], digits["y_train"]),
                    search_space=SPACE, sampler="random", n_trials=3, epochs=1,
                    metric="val_auc", study_name="noauc", progress=False, **stores)
    study = mltune.load_study("noauc", stores["storage"])
    assert len(study.trials) == 1  # stopped at once, not once per trial
    assert study.trials[0].state == optuna.trial.TrialState.FAIL


class _Batches:
    """A keras.utils.PyDataset of (x, y) batches, made lazily (the import of keras waits)."""

    @staticmethod
    def make(x: np.ndarray, y: np.ndarray, batch: int) -> Any:
        import keras

        class Batches(keras.utils.PyDataset):
            def __len__(self) -> int:
                return -(-len(x) // batch)

            def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
                return x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]

        return Batches()


@pytest.mark.parametrize("kind", ["tf.data", "PyDataset"])
def test_streamed_inputs_train(user_code, digits, stores, kind) -> None:
    import usermodels

    if kind == "tf.data":
        import tensorflow as tf

        train = tf.data.Dataset.from_tensor_slices(
            (digits["x_train"], digits["y_train"])).shuffle(300, seed=0).batch(32)
        val: Any = tf.data.Dataset.from_tensor_slices(
            (digits["x_val"], digits["y_val"])).batch(32)
    else:
        train = _Batches.make(digits["x_train"], digits["y_train"], 32)
        val = (digits["x_val"], digits["y_val"])
    result = mltune.tune(model=usermodels.build, data=train, validation_data=val,
                         search_space=SPACE, sampler="random", n_trials=2, epochs=2,
                         study_name="streams", progress=False, **stores)
    assert result.states == {"COMPLETE": 2}
    client = MlflowClient(stores["tracking_uri"])
    for run in _children(stores["tracking_uri"], result.parent_run_id):
        kept = int(run.data.metrics["best_epoch"])
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")
                ] == [1, 2] + ([3] if kept < 2 else [])
    assert result.load_best_model().predict(digits["x_val"][:3], verbose=0).shape == (3, 10)


def test_callbacks_and_fit_kwargs_reach_every_fit(user_code, digits, stores) -> None:
    import keras
    import usermodels

    epochs_seen: list[int] = []

    class Count(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            epochs_seen.append(epoch)

    weights = {c: 1.0 for c in range(10)}
    result = mltune.tune(model=usermodels.build, data=(digits["x_train"], digits["y_train"]),
                         search_space=SPACE, sampler="random", n_trials=2, epochs=2,
                         callbacks=[Count()], fit_kwargs={"class_weight": weights},
                         study_name="hooks", progress=False, **stores)
    assert result.states == {"COMPLETE": 2}
    assert epochs_seen == [0, 1, 0, 1]
    with pytest.raises(mltune.ConfigError, match=r"fit_kwargs.epochs.*is set by mltune"):
        mltune.tune(model=usermodels.build, data=(digits["x_train"], digits["y_train"]),
                    search_space=SPACE, n_trials=1, fit_kwargs={"epochs": 3},
                    study_name="hooks2", **stores)


def _study_file(folder: Path, **data: Any) -> Path:
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump({
        "study": {"name": "yaml-custom", "sampler": "random", "n_trials": 2, "seed": 0},
        "model": {"builder": "models.py:build", "width": 4},
        "data": data or {"loader": "data.py:load"},
        "training": {"epochs": 1},
        "search_space": {"depth": {"type": "int", "low": 1, "high": 2}},
    }))
    return path


def test_a_study_file_names_the_builder_and_the_loader(user_code, stores, tmp_path) -> None:
    study = _study_file(user_code)
    cwd = tmp_path / "run"
    cwd.mkdir()
    out = subprocess.run([sys.executable, "-m", "mltune", "tune", str(study),
                          "--storage", stores["storage"], "--tracking-uri",
                          stores["tracking_uri"]], cwd=cwd, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    trials = mltune.load_study("yaml-custom", stores["storage"]).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    client = MlflowClient(stores["tracking_uri"])
    run = client.get_run(trials[0].user_attrs["mlflow_run_id"])
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.data.params["width"] == "4"  # a fixed model: key, which build() reads
    assert parent.data.tags["mltune.builder"].endswith("models.py:build")
    # keyword overrides on the same file, from Python; the loader's test split registers
    result = mltune.tune(study, n_trials=1, study_name="yaml-custom-2", progress=False,
                         **stores)
    assert result.n_trials == 1
    reg = mltune.register_best(study_name="yaml-custom-2", name="custom-digits", **stores)
    assert reg.alias == "champion" and "test_accuracy" in reg.test_metrics


BAD_LOADERS = [
    ({"loader": "data.py:broken"}, "data.loader .*data.py:broken raised ValueError: the share "
                                   "is not mounted"),
    ({"loader": "data.py:wrong"}, "data.loader .*data.py:wrong must return a dict with "
                                  "x_train and y_train .* but returned a list"),
    ({"loader": "missing.py:load"}, "data.loader in .*study.yaml: no such file: .*missing.py"),
    ({"loader": "data.py:nothing"}, "data.loader in .*study.yaml: .*data.py has no function "
                                    "'nothing'"),
]


def _nothing_written(folder: Path) -> None:
    assert not (folder / "optuna_journal.log").exists()
    db = folder / "mlflow.db"
    if db.exists():
        assert MlflowClient(f"sqlite:///{db}").search_runs(
            [e.experiment_id for e in MlflowClient(f"sqlite:///{db}").search_experiments()]
        ) == []


@pytest.mark.parametrize(("data", "words"), BAD_LOADERS)
def test_a_bad_loader_is_one_message_exit_2_and_nothing_written(user_code, tmp_path, data,
                                                                 words) -> None:
    from typer.testing import CliRunner

    from mltune._cli import app

    study = _study_file(user_code, **data)
    result = CliRunner().invoke(app, [
        "tune", str(study), "--storage", str(tmp_path / "optuna_journal.log"),
        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert re.search(words, lines[0]), lines[0]
    _nothing_written(tmp_path)


def test_a_bad_loader_in_its_own_process_prints_one_line(user_code, tmp_path) -> None:
    """The same as a user's shell sees it, the stores by default in the current folder: one
    line on stderr, no traceback and no library's start-up lines, exit 2, nothing written."""
    data, words = BAD_LOADERS[0]  # the user's code raised: no traceback of it either
    study = _study_file(user_code, **data)
    out = subprocess.run([sys.executable, "-m", "mltune", "tune", str(study)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert re.search(words, lines[0]), lines[0]
    _nothing_written(tmp_path)


def test_tune_leaves_the_process_as_it_found_it(user_code, tmp_path) -> None:
    """Notebook-safe: two calls in one process, the user's tracking URI (set either way) and
    Keras' dtype policy unchanged, the runs in the user's store. One process, as a notebook:
    first the URI from MLFLOW_TRACKING_URI, then from mlflow.set_tracking_uri (which wins)."""
    script = textwrap.dedent(f"""
        import keras, mlflow, mltune, numpy as np, os, sys
        sys.path.insert(0, {str(user_code)!r})
        import usermodels
        from sklearn.datasets import load_digits
        d = load_digits()
        x, y = d.images[:200, ..., None].astype("float32"), d.target[:200]
        ways = {{"MLFLOW_TRACKING_URI": lambda: os.environ.update(
                    MLFLOW_TRACKING_URI="sqlite:///env.db"),
                "set_tracking_uri": lambda: mlflow.set_tracking_uri("sqlite:///user.db")}}
        for how, set_uri in ways.items():
            set_uri()
            before = os.environ.get("MLFLOW_TRACKING_URI")  # MLflow's own doing, either way
            for i, mixed in enumerate([False, True]):
                r = mltune.tune(model=usermodels.build, data=(x, y), search_space={{
                    "depth": {{"type": "int", "low": 1, "high": 1}},
                    "width": {{"type": "categorical", "choices": [4]}}}},
                    sampler="random", n_trials=1, epochs=1, mixed_precision=mixed,
                    study_name=f"nb-{{how}}-{{i}}", storage="journal.log", progress=False)
                assert r.states == {{"COMPLETE": 1}}, r.states
                print(how, "uri", mlflow.get_tracking_uri(), "policy",
                      keras.config.dtype_policy().name, "env unchanged",
                      os.environ.get("MLFLOW_TRACKING_URI") == before)
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if " uri " in line]
    assert lines == (
        ["MLFLOW_TRACKING_URI uri sqlite:///env.db policy float32 env unchanged True"] * 2
        + ["set_tracking_uri uri sqlite:///user.db policy float32 env unchanged True"] * 2)
    for db, how in (("env.db", "MLFLOW_TRACKING_URI"), ("user.db", "set_tracking_uri")):
        client = MlflowClient(f"sqlite:///{tmp_path / db}")
        names = {e.name for e in client.search_experiments()}
        assert {f"nb-{how}-0", f"nb-{how}-1"} <= names, (db, names)
    assert not (tmp_path / "mlflow.db").exists()  # not the embedded default


@pytest.mark.slow
def test_workers_import_the_builder_and_the_loader_by_reference(user_code, stores) -> None:
    """Worker processes rebuild the study from its storage: the loader comes from the file
    the study names, the builder passed from Python from its module (on this process's path
    only), with a pruner and a QMC sampler on top."""
    import usermodels

    result = mltune.tune(_study_file(user_code), model=usermodels.build, workers=2,
                         n_trials=4, sampler="qmc", pruner="median", epochs=2,
                         study_name="custom-workers", **stores)
    parent = MlflowClient(stores["tracking_uri"]).get_run(result.parent_run_id)
    assert parent.data.tags["mltune.builder"] == "usermodels:build"
    assert result.states == {"COMPLETE": 4}
    trials = mltune.load_study("custom-workers", stores["storage"]).trials
    assert len({t.user_attrs["mltune_worker"] for t in trials}) == 2
    children = _children(stores["tracking_uri"], result.parent_run_id)
    assert {c.info.status for c in children} == {"FINISHED"} and len(children) == 4
    with pytest.raises(mltune.ConfigError, match=r"worker processes .* load the data"):
        mltune.tune(_study_file(user_code), data=(np.zeros((8, 8, 8, 1)), np.arange(8) % 2),
                    workers=2, n_trials=1, study_name="arrays-workers", **stores)
