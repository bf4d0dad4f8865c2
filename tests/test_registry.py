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
import pytest
from mlflow import MlflowClient
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
    path = write_study(name=f"{name}.yaml", study={"name": name, "n_trials": 2, **sections.pop(
        "study", {})}, **sections)
    tune(load_config(path), **stores)


@pytest.fixture
def registered(write_study, stores):
    """A small study whose best model is registered as 'digits' (version 1, champion)."""
    run_study(write_study, stores, "good", training={"epochs": 3, "batch_size": 32})
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
    for batch in (images, images[..., 0], images.astype(np.uint8),
                  images[..., 0].astype(np.uint8), images.reshape(len(images), -1)):
        probs = np.asarray(model.predict(batch))
        assert probs.shape == (len(images), 10)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)
        accuracy = float((probs.argmax(axis=1) == data.y_test).mean())
        assert accuracy == pytest.approx(expected, abs=1e-6)
    one = np.asarray(model.predict(images[0, ..., 0]))
    assert one.shape == (1, 10)


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


def test_register_an_unknown_study_exits_2(write_study, stores) -> None:
    run_study(write_study, stores, "known")
    code, _, err = register(stores, "unknown", "x")
    assert code == 2
    assert "no study named 'unknown'" in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_champion_serves_predictions_over_rest(registered, write_study, tmp_path) -> None:
    port = _free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered["tracking_uri"],
           "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    log = open(tmp_path / "serve.log", "w")  # closed in finally
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
                assert server.poll() is None, (tmp_path / "serve.log").read_text()
                assert time.monotonic() < deadline, "mlflow models serve did not come up"
                time.sleep(1)
        data = load_data(load_config(write_study()).data, seed=1)
        images = data.x_test[:16, ..., 0].astype(np.uint8)  # raw, no channel axis
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"inputs": images.tolist()}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            predictions = np.asarray(json.load(response)["predictions"])
        assert predictions.shape == (16, 10)
        mlflow.set_tracking_uri(registered["tracking_uri"])
        local = np.asarray(mlflow.pyfunc.load_model("models:/digits@champion").predict(images))
        np.testing.assert_allclose(predictions, local, rtol=1e-4, atol=1e-6)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        log.close()
