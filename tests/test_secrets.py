"""Passwords in --storage and --tracking-uri never reach MLflow, Optuna or the output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
from conftest import QUIET_ENV
from mlflow import MlflowClient

SECRET = "s3cret-Pa55"
# The PostgreSQL server of this machine kind (.ci/run starts it) trusts loopback connections,
# so any password is accepted, and the URL still carries one.
POSTGRES = f"postgresql://postgres:{SECRET}@127.0.0.1:5432/test"


@pytest.mark.slow
def test_passwords_in_urls_never_leak(mlflow_server, write_study, tmp_path) -> None:
    name = f"leak-{uuid.uuid4().hex[:8]}"
    tracking = mlflow_server.replace("http://", f"http://mltune:{SECRET}@")
    path = write_study(study={"name": name, "n_trials": 2},
                       search_space={"filters": {"type": "categorical", "choices": [4, 8]}})
    proc = subprocess.run(
        [sys.executable, "-m", "mltune", "tune", str(path), "--tracking-uri", tracking,
         "--storage", POSTGRES, "--register-as", name, "--debug"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, **QUIET_ENV})
    storage = POSTGRES.replace(SECRET, "x")  # any password will do to read it back
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert SECRET not in proc.stdout + proc.stderr  # --debug: library logs included

        client = MlflowClient(mlflow_server)
        exp = client.get_experiment_by_name(name)
        runs = client.search_runs([exp.experiment_id])
        assert len(runs) == 3
        for run in runs:
            assert SECRET not in json.dumps(run.data.params)
            assert SECRET not in json.dumps(run.data.tags)
            for artifact in _files(client, run.info.run_id, tmp_path / run.info.run_id):
                assert SECRET.encode() not in artifact.read_bytes(), artifact
        parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
        assert parent.data.tags["mltune.storage"] == "postgresql://postgres:***@127.0.0.1:5432/test"
        for version in client.search_model_versions(f"name = '{name}'"):
            assert SECRET not in json.dumps(version.tags) + (version.description or "")
        study = optuna.load_study(study_name=name, storage=storage)
        attrs = json.dumps([study.user_attrs,
                            [t.user_attrs for t in study.trials],
                            [t.system_attrs for t in study.trials]], default=str)
        assert SECRET not in attrs
        assert SECRET not in (tmp_path / "mlflow-server.log").read_text()
    finally:
        try:
            optuna.delete_study(study_name=name, storage=storage)
        except KeyError:
            pass


def _files(client: MlflowClient, run_id: str, dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    if not client.list_artifacts(run_id):
        return []
    root = Path(client.download_artifacts(run_id, "", str(dest)))
    return [p for p in root.rglob("*") if p.is_file()]
