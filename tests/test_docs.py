"""The Python example in docs/api.md runs as written, in a fresh process and folder."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import optuna
from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[1]


def test_the_api_example_runs_as_written(tmp_path: Path) -> None:
    text = (REPO / "docs" / "api.md").read_text()
    example = re.search(r"```python\n(import keras.*?)```", text, re.S)
    assert example is not None
    out = subprocess.run([sys.executable, "-c", example.group(1)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    study = optuna.load_study(study_name="my-cnn", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna_journal.log"))))
    assert len(study.trials) == 4
    best_line = out.stdout.strip().splitlines()[-2]
    assert best_line.startswith(str(study.best_value))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(study.best_trial.user_attrs["mlflow_run_id"])
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert run.info.status == "FINISHED" and parent.data.tags["mltune.builder"] == "__main__:build"


def test_every_test_docs_reliability_names_exists() -> None:
    """docs/reliability.md is kept true by the tests it names: each must exist."""
    text = (REPO / "docs" / "reliability.md").read_text()
    named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", text)
    assert len(named) >= 20
    missing = [f"{path}::{name}" for path, name in named
               if not re.search(rf"^def {name}\(", (REPO / path).read_text(), re.M)]
    assert not missing, f"docs/reliability.md names tests that do not exist: {missing}"
