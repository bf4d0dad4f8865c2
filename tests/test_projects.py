"""`mlflow run` of the top-level project and the ready-made projects under projects/."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from PIL import Image
from typer.testing import CliRunner

import mltune
from mltune._cli import app
from mltune._config import load_config

REPO = Path(__file__).resolve().parents[1]
PROJECTS = sorted(p.parent for p in REPO.glob("projects/*/MLproject"))
runner = CliRunner()


def test_every_ready_made_project_is_there() -> None:
    assert {p.name for p in PROJECTS} == {"mnist_cnn", "fashion_mnist_cnn", "cifar10_cnn",
                                          "digits_cnn", "custom_images", "custom_model",
                                          "transfer_learning"}
    for project in PROJECTS:
        assert (project / "README.md").exists() and (project / "study.yaml").exists()
        load_config(project / "study.yaml")  # validates as written


@pytest.mark.parametrize("mlproject", [REPO / "MLproject", *[p / "MLproject" for p in PROJECTS]],
                         ids=lambda p: p.parent.name)
def test_mlproject_parameters_map_one_to_one_onto_cli_options(mlproject: Path) -> None:
    spec = yaml.safe_load(mlproject.read_text())
    for entry, ep in spec["entry_points"].items():
        command = " ".join(ep["command"].split())
        for param in ep["parameters"]:
            option = "--study" if (entry, param) == ("register", "study_name") else (
                "--" + param.replace("_", "-"))
            if param == "config":
                assert "{config}" in command
            else:
                assert f"{option} {{{param}}}" in command, (entry, param, command)
        used = set(re.findall(r"\{(\w+)\}", command))
        assert used == set(ep["parameters"]), (entry, used)


def test_cifar10_project_trains_on_colour_images(stores, npz_file, tmp_path) -> None:
    rng = np.random.default_rng(0)
    data = npz_file("rgb.npz", n=96,
                    x_train=rng.integers(0, 256, (96, 32, 32, 3), dtype=np.uint8),
                    x_test=rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8))
    result = runner.invoke(app, [
        "tune", str(REPO / "projects/cifar10_cnn/study.yaml"), "--data", str(data),
        "--n-trials", "1", "--set", "training.epochs=1", "--set", "search_space.conv_blocks.high=2",
        "--storage", stores["storage"], "--tracking-uri", stores["tracking_uri"]])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "study cifar10-cnn: 1 trials (1 complete)" in result.stdout


def test_custom_images_project_trains_on_an_image_folder(stores, tmp_path) -> None:
    rng = np.random.default_rng(0)
    for label in ("cat", "dog", "fox"):
        (tmp_path / "pics" / label).mkdir(parents=True)
        for i in range(12):
            pixels = rng.integers(0, 256, (20 + i % 3, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "pics" / label / f"{i}.png")
    result = runner.invoke(app, [
        "tune", str(REPO / "projects/custom_images/study.yaml"), "--data",
        str(tmp_path / "pics"), "--n-trials", "1", "--set", "training.epochs=1",
        "--set", "data.image_size=[16,16]",
        "--storage", stores["storage"], "--tracking-uri", stores["tracking_uri"]])
    assert result.exit_code == 0, result.stdout + result.stderr
    client = MlflowClient(stores["tracking_uri"])
    (child,) = [r for r in client.search_runs(
        [client.get_experiment_by_name("custom-images-cnn").experiment_id])
        if "mlflow.parentRunId" in r.data.tags]
    assert child.info.status == "FINISHED"


def test_transfer_learning_project_fine_tunes_a_backbone_on_an_image_folder(stores, tmp_path
                                                                           ) -> None:
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / "pics" / label).mkdir(parents=True)
        for i in range(10):
            pixels = rng.integers(0, 256, (36 + i % 3, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "pics" / label / f"{i}.png")
    result = runner.invoke(app, [
        "tune", str(REPO / "projects/transfer_learning/study.yaml"), "--data",
        str(tmp_path / "pics"), "--n-trials", "1", "--set", "training.epochs=2",
        "--set", "training.warmup_epochs=1", "--set", "data.image_size=[32,32]",
        "--storage", stores["storage"], "--tracking-uri", stores["tracking_uri"]])
    assert result.exit_code == 0, result.stdout + result.stderr
    client = MlflowClient(stores["tracking_uri"])
    (child,) = [r for r in client.search_runs(
        [client.get_experiment_by_name("transfer-learning").experiment_id])
        if "mlflow.parentRunId" in r.data.tags]
    assert child.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(child.info.run_id, "val_accuracy")
            ][:2] == [1, 2]


def mlflow_run(args: list[str], tracking_uri: str, cwd: Path = REPO,
               extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
           "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), **(extra_env or {})}
    proc = subprocess.run([sys.executable, "-m", "mlflow", "run", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def project_runs(tracking_uri: str, experiment: str) -> tuple[object, list]:
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, "an extra run appeared: " + str([r.info.run_name for r in parents])
    return parents[0], [r for r in runs if "mlflow.parentRunId" in r.data.tags]


@pytest.fixture(scope="module")
def top_level_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``mlflow run .`` (2 TPE trials on 2 workers), then its register entry point. No
    ``-P storage``: the Optuna storage comes from MLTUNE_STORAGE in the environment."""
    folder = tmp_path_factory.mktemp("top_level_run")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    journal = folder / "from-env.log"
    env = {"MLTUNE_STORAGE": str(journal)}
    proc = mlflow_run([".", "--env-manager", "local", "--experiment-name", "top",
                       "-P", "sampler=tpe", "-P", "n_trials=2", "-P", "set=training.epochs=1",
                       "-P", "study_name=top-tpe", "-P", "workers=2"], uri, extra_env=env)
    parent, children = project_runs(uri, "top")  # before the register entry point's run
    mlflow_run([".", "-e", "register", "--env-manager", "local", "--experiment-name", "top",
                "-P", "study_name=top-tpe", "-P", "name=top-model"], uri, extra_env=env)
    return {"uri": uri, "journal": journal, "stdout": proc.stdout, "parent": parent,
            "children": children}


@pytest.mark.slow
def test_mlflow_run_top_level_project_is_the_parent_run(top_level_run) -> None:
    assert "study top-tpe: 2 trials on 2 workers" in top_level_run["stdout"]
    parent, children = top_level_run["parent"], top_level_run["children"]
    assert parent.data.tags["mlflow.source.type"] == "PROJECT"
    assert parent.data.tags["mlflow.project.entryPoint"] == "main"
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["mltune.study_name"] == "top-tpe"
    assert parent.data.tags["mltune.sampler"] == "tpe"
    assert parent.data.params["n_trials"] == "2"  # the project parameter, as MLflow logs it
    assert sorted(c.info.run_name for c in children) == ["trial-000", "trial-001"]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}

    # The register entry point registers the study's best model.
    version = MlflowClient(top_level_run["uri"]).get_model_version_by_alias("top-model",
                                                                            "champion")
    assert version.tags["mltune.parent_run_id"] == parent.info.run_id


# `mlflow run . -e train` and `mlflow run projects/digits_cnn` are README commands:
# tests/test_readme.py runs them and reads their runs back (the project's run is the training
# run, or the study's parent with the trials nested under it, and no other run appears).


def test_custom_model_project_names_its_own_code() -> None:
    config = load_config(REPO / "projects/custom_model/study.yaml")
    folder = REPO / "projects/custom_model"
    assert config.builder == f"{folder / 'models.py'}:build"  # relative to the study file
    assert config.data.loader == f"{folder / 'data.py'}:load"
    assert set(config.search_space) == {"blocks", "width", "learning_rate"}
    assert config.settings["head_dropout"] == 0.1  # a fixed param of the builder's own


# Run in a folder where the project's models.py is not importable: the logged model must
# bring it along (code/ in its artifacts). Writes what it saw as JSON to argv[3].
LOAD_ELSEWHERE = """
import importlib.util, json, sys
import keras, mlflow, numpy as np
from sklearn.datasets import load_digits

assert importlib.util.find_spec("models") is None, "models.py is importable here"
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
images = load_digits().images[:6, :, :, None].astype(np.float32)
probs = np.asarray(model.predict(images))
with open(sys.argv[3], "w") as f:
    json.dump({"shape": list(probs.shape), "sums": probs.sum(axis=1).tolist(),
               "models_file": sys.modules["models"].__file__,
               "layer": keras.saving.get_registered_object("custom_model>ResidualBlock")
               is not None}, f)
"""


@pytest.fixture(scope="module")
def custom_model_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """``mlflow run`` of projects/custom_model (2 trials of 1 epoch), from a temp folder."""
    folder = tmp_path_factory.mktemp("custom_model_run")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow_run([str(REPO / "projects/custom_model"), "--env-manager", "local",
                "--experiment-name", "cm", "-P", "n_trials=2", "-P", "set=training.epochs=1",
                "-P", f"storage={folder / 'optuna_journal.log'}"], uri, cwd=folder)
    parent, children = project_runs(uri, "cm")
    return {"uri": uri, "folder": folder, "parent": parent, "children": children}


@pytest.mark.slow
def test_mlflow_run_custom_model_project(custom_model_run) -> None:
    parent, children = custom_model_run["parent"], custom_model_run["children"]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["mlflow.source.type"] == "PROJECT"
    assert parent.data.tags["mltune.study_name"] == "custom-model"
    builder = parent.data.tags["mltune.builder"]
    assert builder.endswith("models.py:build"), builder
    assert Path(builder.rpartition(":")[0]) == REPO / "projects/custom_model/models.py"
    assert sorted(c.info.run_name for c in children) == ["trial-000", "trial-001"]
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED"]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    for child in children:  # the builder's own search-space names
        assert {"blocks", "width", "learning_rate"} <= set(child.data.params)


@pytest.mark.slow
def test_custom_model_best_model_loads_without_the_project(custom_model_run) -> None:
    uri, parent = custom_model_run["uri"], custom_model_run["parent"]
    client = MlflowClient(uri)
    best_run_id = parent.data.tags["mltune.best_run_id"]
    models = client.search_logged_models(experiment_ids=[parent.info.experiment_id])
    (best,) = [m for m in models if m.source_run_id == best_run_id]
    elsewhere = custom_model_run["folder"] / "elsewhere"
    elsewhere.mkdir()
    out = elsewhere / "result.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", LOAD_ELSEWHERE, uri, f"models:/{best.model_id}",
                           str(out)], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = json.loads(out.read_text())
    assert seen["shape"] == [6, 10]
    np.testing.assert_allclose(seen["sums"], 1.0, rtol=1e-4)
    assert seen["layer"], "the custom layer was not registered"
    # models.py came with the model, not from the project folder
    shipped = Path(seen["models_file"])
    assert shipped.name == "models.py" and REPO / "projects" not in shipped.parents


@pytest.mark.slow
def test_mlflow_run_refuses_a_password_in_a_parameter_and_takes_it_from_the_environment(
        stores, top_level_run) -> None:
    # MLflow logs every -P value as a run parameter before mltune starts: refused, exit 2.
    secret = "s3cret-Pa55"
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "MLFLOW_TRACKING_URI": stores["tracking_uri"],
           "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", ".", "--env-manager", "local",
         "--experiment-name", "pw", "-P", "n_trials=1",
         "-P", f"storage=postgresql://postgres:{secret}@127.0.0.1:5432/test"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    error = next(line for line in proc.stderr.splitlines() if line.startswith("error:"))
    assert error.startswith("error: -P storage: `mlflow run` logged this value, password and "
                            "all, as a parameter of run "), proc.stderr
    assert "MLTUNE_STORAGE" in error and secret not in error
    client = MlflowClient(stores["tracking_uri"])
    runs = client.search_runs([client.get_experiment_by_name("pw").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FAILED"  # the project's run, no trial

    # The URL from the environment instead (the top-level run above took its storage from
    # MLTUNE_STORAGE): the study lands there, and no parameter holds it.
    journal, parent = top_level_run["journal"], top_level_run["parent"]
    assert len(top_level_run["children"]) == 2 and parent.data.params["storage"] in ("", "''")
    assert parent.data.tags["mltune.storage"] == str(journal)
    assert [t.state.name for t in mltune.load_study("top-tpe", str(journal)).trials] == [
        "COMPLETE", "COMPLETE"]
