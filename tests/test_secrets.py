"""Passwords in --storage and --tracking-uri never reach MLflow, Optuna or the output: not in
the URLs mltune prints, and not in the error of a trial that quotes the URL or the password."""

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

from mltune._storage import open_storage

SECRET = "s3cret-Pa55"
# The PostgreSQL server of this machine kind (.ci/run starts it) trusts loopback connections,
# so any password is accepted, and the URL still carries one.
POSTGRES = f"postgresql://postgres:{SECRET}@127.0.0.1:5432/test"


@pytest.mark.slow
@pytest.mark.postgres
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


# A trial whose error quotes the tracking URL with its password, and the password alone (as a
# request that broke mid-transfer did), on the console, in --debug's library logs too.
LEAKY_BUILDER = '''
import os

import keras


def build(params, *, input_shape, num_classes):
    if params["leak"] == "yes":
        url = os.environ["MLTUNE_TEST_URL"]
        print(f"about to fail: {url}")
        raise ConnectionError(f"request to {url}/api/2.0/mlflow/runs/log-batch broke; "
                              f"credentials {url.split(':')[2].split('@')[0]!r} rejected")
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))
'''


@pytest.mark.slow
def test_a_failing_trial_that_quotes_the_password_leaks_it_nowhere(
        mlflow_server, write_study, tmp_path) -> None:
    (tmp_path / "leaky.py").write_text(LEAKY_BUILDER)
    tracking = mlflow_server.replace("http://", f"http://mltune:{SECRET}@")
    path = write_study(study={"name": "leaky", "sampler": "grid", "n_trials": None},
                       model={"builder": "leaky.py:build"},
                       search_space={"leak": {"type": "categorical", "choices": ["yes", "no"]}})
    journal = tmp_path / "optuna_journal.log"
    proc = subprocess.run(
        [sys.executable, "-m", "mltune", "tune", str(path), "--tracking-uri", tracking,
         "--storage", str(journal), "--debug"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, **QUIET_ENV, "MLTUNE_TEST_URL": tracking})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "trial 0 FAIL (ConnectionError: request to http://mltune:***@127.0.0.1" in output
    assert "about to fail: http://mltune:***@" in output  # the trial's own print
    assert SECRET not in output

    study = optuna.load_study(study_name="leaky", storage=open_storage(str(journal)))
    failed = next(t for t in study.trials if t.params["leak"] == "yes")
    assert failed.state == optuna.trial.TrialState.FAIL
    assert "credentials '***' rejected" in failed.user_attrs["mltune_error"]
    assert SECRET not in json.dumps([t.user_attrs for t in study.trials] + [study.user_attrs])

    client = MlflowClient(mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("leaky").experiment_id])
    assert len(runs) == 3
    run = client.get_run(failed.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and "http://mltune:***@" in run.data.tags["mltune.error"]
    texts = {}
    for run in runs:
        assert SECRET not in json.dumps([run.data.params, run.data.tags])
        for artifact in _files(client, run.info.run_id, tmp_path / run.info.run_id):
            assert SECRET.encode() not in artifact.read_bytes(), artifact
            texts[artifact.name] = artifact.read_text(errors="replace")
    assert "credentials '***' rejected" in texts["error.txt"]  # the traceback, masked
    assert "credentials '***' rejected" in texts["trials.csv"]


def test_a_password_holding_an_at_sign_is_masked_whole(tmp_path) -> None:
    # An unencoded "@" in the password: the user info ends at the last "@" before the host.
    proc = subprocess.run(
        [sys.executable, "-m", "mltune", "trials", "nosuch", "--storage",
         "postgresql://postgres:pa@ss-w0rd@127.0.0.1:1/test"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, **QUIET_ENV})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr == ("error: --storage: the password in postgresql://postgres:***@127.0.0.1"
                           ":1/test holds an unencoded '@': write it as %40 (URLs percent-encode "
                           "their user info)\n")
    assert "ss-w0rd" not in proc.stdout


def _files(client: MlflowClient, run_id: str, dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    if not client.list_artifacts(run_id):
        return []
    root = Path(client.download_artifacts(run_id, "", str(dest)))
    return [p for p in root.rglob("*") if p.is_file()]
