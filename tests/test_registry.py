"""The Model Registry the MLflow way: test-split evaluation, aliases, pyfunc and REST serving."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import tiny_study
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from typer.testing import CliRunner

from mltune import tune
from mltune._cli import app
from mltune._config import load_config
from mltune._data import load_data

runner = CliRunner()


def register(stores: dict[str, str], study: str, name: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["register", "--study", study, "--name", name,
                                 "--storage", stores["storage"],
                                 "--tracking-uri", stores["tracking_uri"]])
    return result.exit_code, result.stdout, result.stderr


def run_study(write_study, stores, name: str, **sections) -> None:
    """A study of one trial: its model is the one a registration evaluates."""
    path = write_study(name=f"{name}.yaml", study={"name": name, "n_trials": 1, **sections.pop(
        "study", {})}, **sections)
    tune(load_config(path), **stores)


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A small study whose best model is registered as 'digits' (version 1, champion): made
    once for this module's tests, which only read it (registering it again adds nothing)."""
    folder = tmp_path_factory.mktemp("registered")
    stores = {"tracking_uri": f"sqlite:///{folder / 'mlflow.db'}",
              "storage": str(folder / "optuna_journal.log")}
    path = folder / "good.yaml"
    path.write_text(yaml.safe_dump(tiny_study(study={"name": "good", "n_trials": 2},
                                              training={"epochs": 3, "batch_size": 32})))
    tune(load_config(path), **stores)
    code, out, err = register(stores, "good", "digits")
    assert code == 0, out + err
    return stores


def test_register_evaluates_on_test_split_and_links_back(registered, write_study) -> None:
    client = MlflowClient(registered["tracking_uri"])
    version = client.get_model_version_by_alias("digits", "champion")
    assert str(version.version) == "1"
    study_run = client.get_run(version.run_id)
    assert version.tags["mltune.study_name"] == "good"
    assert version.tags["mltune.run_id"] == version.run_id
    assert version.tags["mltune.parent_run_id"] == study_run.data.tags["mlflow.parentRunId"]
    assert version.tags["mltune.trial_number"] == study_run.data.tags["mltune.trial_number"]
    assert float(version.tags["test_accuracy"]) == pytest.approx(
        study_run.data.metrics["test_accuracy"])
    assert "Optuna study 'good'" in version.description
    assert version.run_id in version.description


def test_champion_predicts_raw_images_it_never_saw(registered, write_study) -> None:
    mlflow.set_tracking_uri(registered["tracking_uri"])
    model = mlflow.pyfunc.load_model("models:/digits@champion")
    # The held-out test split of the same data: never used in training or to pick a trial.
    data = load_data(load_config(write_study()).data, seed=1)
    images = data.x_test  # float pixels 0..16, with the channel axis
    expected = float(MlflowClient(registered["tracking_uri"]).get_model_version_by_alias(
        "digits", "champion").tags["test_accuracy"])
    flat = pd.DataFrame(images.reshape(len(images), -1))  # a table of pixel columns
    for batch in (images, images[..., 0], images.astype(np.uint8),
                  images[..., 0].astype(np.uint8), images.reshape(len(images), -1),
                  flat.to_numpy(),
                  np.array(images[..., 0].tolist(), dtype=object)):  # as REST's parsed
        probs = np.asarray(model.predict(batch))
        assert probs.shape == (len(images), 10)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)
        accuracy = float((probs.argmax(axis=1) == data.y_test).mean())
        assert accuracy == pytest.approx(expected, abs=1e-6)
    for one in (images[0, ..., 0], images[0].astype(np.uint8), images[0].reshape(1, -1)):
        np.testing.assert_allclose(np.asarray(model.predict(one)),
                                   np.asarray(model.predict(images[:1])), rtol=1e-5)
    with pytest.raises(MlflowException,
                       match=r"expected images of shape \(8, 8, 1\) .* got an array of "
                             r"shape \(3, 8, 7\)"):
        model.predict(images[:3, :, :7, 0])


def test_registered_version_shows_its_input_schema(registered) -> None:
    """The version's signature has an input: MLflow's tensor spec that lets any array through
    (MLflow checks a tensor's dtype and rank exactly; the loader checks the shape itself). The
    shape the spec cannot state is in the model's metadata, input example and description."""
    mlflow.set_tracking_uri(registered["tracking_uri"])
    info = mlflow.models.get_model_info("models:/digits/1")
    assert info.signature.inputs is not None
    assert [repr(spec) for spec in info.signature.inputs.inputs] == ["Tensor('object', (-1,))"]
    assert info.signature.outputs.input_names() == ["probabilities"]
    assert info.metadata["input_shape"] == [8, 8, 1]
    assert info.metadata["class_names"] == [str(i) for i in range(10)]
    model = mlflow.pyfunc.load_model("models:/digits/1")
    assert info.metadata["input_dtype"] == "float32"  # the digits' pixels, 0..16
    example = np.asarray(model.input_example)  # two test images, in the signature's dtype
    assert example.shape == (2, 8, 8, 1)
    assert np.asarray(model.predict(example)).shape == (2, 10)
    version = MlflowClient(registered["tracking_uri"]).get_model_version("digits", "1")
    assert "raw images of shape (8, 8, 1)" in version.description


def test_new_version_is_champion_only_if_it_beats_the_champion(write_study, stores) -> None:
    client = MlflowClient(stores["tracking_uri"])
    bad = {"training": {"epochs": 1, "optimizer": "sgd", "batch_size": 64},
           "search_space": {"learning_rate": {"type": "float", "low": 1e-5, "high": 2e-5}}}
    good = {"training": {"epochs": 4, "batch_size": 16},
            "search_space": {"learning_rate": {"type": "float", "low": 5e-3, "high": 1e-2}}}
    run_study(write_study, stores, "weak", **bad)
    run_study(write_study, stores, "strong", **good)
    run_study(write_study, stores, "weak2", **bad)

    assert register(stores, "weak", "m")[0] == 0
    assert str(client.get_model_version_by_alias("m", "champion").version) == "1"
    code, out, _ = register(stores, "strong", "m")
    assert code == 0 and "registered m version 2 as @champion" in out
    assert str(client.get_model_version_by_alias("m", "champion").version) == "2"
    assert client.get_model_version("m", "1").aliases == []
    code, out, _ = register(stores, "weak2", "m")
    assert code == 0 and "registered m version 3 as @challenger" in out
    assert "version 2 stays @champion" in out
    assert str(client.get_model_version_by_alias("m", "champion").version) == "2"
    assert str(client.get_model_version_by_alias("m", "challenger").version) == "3"
    scores = {v: float(client.get_model_version("m", v).tags["test_accuracy"])
              for v in ("1", "2", "3")}
    assert scores["2"] > scores["1"] and scores["2"] >= scores["3"]


def test_registering_the_same_best_trial_twice_adds_no_version(registered) -> None:
    code, out, _ = register(registered, "good", "digits")
    assert code == 0
    assert "registered already: digits version 1 (@champion)" in out
    versions = MlflowClient(registered["tracking_uri"]).search_model_versions("name = 'digits'")
    assert len(versions) == 1


def test_tune_register_as(write_study, stores) -> None:
    result = runner.invoke(app, ["tune", str(write_study(study={"n_trials": 1})),
                                 "--register-as", "tiny-model", "--storage", stores["storage"],
                                 "--tracking-uri", stores["tracking_uri"]])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "registered tiny-model version 1 as @champion" in result.stdout
    version = MlflowClient(stores["tracking_uri"]).get_model_version_by_alias("tiny-model",
                                                                              "champion")
    assert version.tags["mltune.study_name"] == "tiny"


def test_register_an_unknown_study_exits_2(registered) -> None:
    # The storage holds a study ('good'), but not this one.
    code, _, err = register(registered, "unknown", "x")
    assert code == 2
    assert "no study named 'unknown'" in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# What TensorFlow's C++ code prints at start-up (CUDA probing, CPU features, oneDNN).
TF_NATIVE_LINES = ("cuda", "onednn", "tf_enable_onednn_opts", "this tensorflow binary is optimized",
                   "absl::initializelog", "cpu_feature_guard")


def _post(port: int, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.slow
def test_champion_serves_predictions_over_rest(registered, write_study, tmp_path) -> None:
    """``mlflow models serve`` of the champion: raw images in every JSON form, a wrong shape
    answered with 400 and the expected shape, and no TensorFlow start-up lines in its log."""
    port = _free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered["tracking_uri"],
           "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user runs it: the loader quiets TensorFlow
    log_path = tmp_path / "serve.log"
    log = open(log_path, "w")  # closed in finally
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/digits@champion",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert server.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "mlflow models serve did not come up"
                time.sleep(1)
        data = load_data(load_config(write_study()).data, seed=1)
        images = data.x_test[:16, ..., 0].astype(np.uint8)  # raw, no channel axis
        mlflow.set_tracking_uri(registered["tracking_uri"])
        local = np.asarray(mlflow.pyfunc.load_model("models:/digits@champion").predict(images))
        for payload in ({"inputs": images.tolist()},
                        {"instances": images[..., None].astype(np.float32).tolist()},
                        {"inputs": images.reshape(16, -1).tolist()}):  # flattened rows
            status, body = _post(port, payload)
            assert status == 200, body
            predictions = np.asarray(body["predictions"])
            assert predictions.shape == (16, 10)
            np.testing.assert_allclose(predictions, local, rtol=1e-4, atol=1e-6)

        status, body = _post(port, {"inputs": images[:, :, :7].tolist()})
        assert status == 400, body
        assert body["error_code"] == "INVALID_PARAMETER_VALUE"
        assert ("expected images of shape (8, 8, 1) (or (8, 8) for one channel), optionally "
                "flattened, but got an array of shape (16, 8, 7)") in body["message"]
        status, body = _post(port, {"inputs": [images[0].tolist(), images[1, :7].tolist()]})
        assert status == 400, body
        assert ("expected images of shape (8, 8, 1) (or (8, 8) for one channel), optionally "
                "flattened, but got nested lists of uneven lengths, of shape (2, 7..8, 8)"
                ) in body["message"]
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        log.close()
    text = log_path.read_text()
    assert "POST /invocations" in text  # the log is the server's
    native = [line for line in text.splitlines() if any(s in line.lower()
                                                         for s in TF_NATIVE_LINES)]
    assert not native, text
