"""`mlflow run` of the top-level project and the ready-made projects under projects/."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from PIL import Image
from typer.testing import CliRunner

from mltune.cli import app
from mltune.config import load_config

REPO = Path(__file__).resolve().parents[1]
PROJECTS = sorted(p.parent for p in REPO.glob("projects/*/MLproject"))
runner = CliRunner()


def test_every_ready_made_project_is_there() -> None:
    assert {p.name for p in PROJECTS} == {"mnist_cnn", "fashion_mnist_cnn", "cifar10_cnn",
                                          "digits_cnn", "custom_images"}
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


def mlflow_run(args: list[str], tracking_uri: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
           "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
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


@pytest.mark.slow
def test_mlflow_run_top_level_project_is_the_parent_run(stores) -> None:
    mlflow_run([".", "--env-manager", "local", "--experiment-name", "top",
                "-P", "sampler=tpe", "-P", "n_trials=2", "-P", "set=training.epochs=1",
                "-P", f"storage={stores['storage']}", "-P", "study_name=top-tpe"],
               stores["tracking_uri"])
    parent, children = project_runs(stores["tracking_uri"], "top")
    assert parent.data.tags["mlflow.source.type"] == "PROJECT"
    assert parent.data.tags["mlflow.project.entryPoint"] == "main"
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["mltune.study_name"] == "top-tpe"
    assert parent.data.tags["mltune.sampler"] == "tpe"
    assert parent.data.params["n_trials"] == "2"  # the project parameter, as MLflow logs it
    assert sorted(c.info.run_name for c in children) == ["trial-000", "trial-001"]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}

    # The register entry point registers the study's best model.
    mlflow_run([".", "-e", "register", "--env-manager", "local", "--experiment-name", "top",
                "-P", "study_name=top-tpe", "-P", "name=top-model",
                "-P", f"storage={stores['storage']}"], stores["tracking_uri"])
    version = MlflowClient(stores["tracking_uri"]).get_model_version_by_alias("top-model",
                                                                              "champion")
    assert version.tags["mltune.parent_run_id"] == parent.info.run_id


@pytest.mark.slow
def test_mlflow_run_train_entry_point(stores) -> None:
    mlflow_run([".", "-e", "train", "--env-manager", "local", "--experiment-name", "tr",
                "-P", "set=training.epochs=1"], stores["tracking_uri"])
    client = MlflowClient(stores["tracking_uri"])
    (run,) = client.search_runs([client.get_experiment_by_name("tr").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["epochs"] == "1"
    assert {"test_accuracy", "val_accuracy"} <= set(run.data.metrics)


@pytest.mark.slow
def test_mlflow_run_digits_project(stores) -> None:
    mlflow_run(["projects/digits_cnn", "--env-manager", "local", "--experiment-name", "dg",
                "-P", "n_trials=1", "-P", "set=training.epochs=1",
                "-P", f"storage={stores['storage']}"], stores["tracking_uri"])
    parent, children = project_runs(stores["tracking_uri"], "dg")
    assert parent.data.tags["mltune.study_name"] == "digits-cnn"
    assert [c.info.status for c in children] == ["FINISHED"]
