"""A worker killed with SIGKILL mid-trial loses nothing: on resume its trial is FAILED in
Optuna and MLflow (never left RUNNING), retried if asked, and the study completes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import optuna
import pytest
from conftest import QUIET_ENV
from mlflow import MlflowClient

from mltune._storage import open_storage

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def mltune(*args: str, cwd) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mltune", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **QUIET_ENV, "PYTHONUNBUFFERED": "1"})


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["journal",
                                     pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_sigkill_mid_trial_then_resume(backend, write_study, stores, tmp_path) -> None:
    name = f"crash-{backend}-{uuid.uuid4().hex[:6]}"
    storage = stores["storage"] if backend == "journal" else POSTGRES
    path = write_study(study={"name": name, "n_trials": 2, "heartbeat_interval": 1,
                              "grace_period": 2, "retry_failed": 1},
                       training={"epochs": 40, "batch_size": 32})
    common = ["--storage", storage, "--tracking-uri", stores["tracking_uri"]]
    try:
        worker = mltune("tune", str(path), *common, cwd=tmp_path)
        assert worker.stdout is not None
        for line in worker.stdout:
            if "trial 1 started" in line:
                time.sleep(1.0)  # inside trial 1's training
                worker.send_signal(signal.SIGKILL)
                break
        worker.wait(timeout=60)
        assert worker.returncode == -signal.SIGKILL

        client = MlflowClient(stores["tracking_uri"])
        exp = client.get_experiment_by_name(name)
        before = {r.info.run_name: r.info.status for r in client.search_runs([exp.experiment_id])}
        assert before == {name: "RUNNING", "trial-000": "FINISHED", "trial-001": "RUNNING"}

        time.sleep(3)  # past the grace period: the heartbeat of trial 1 is stale
        again = mltune("tune", str(path), *common, cwd=tmp_path)
        out, err = again.communicate(timeout=600)
        assert again.returncode == 0, out + err

        study = optuna.load_study(study_name=name, storage=open_storage(storage))
        states = [t.state.name for t in study.trials]
        assert states == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"], states
        retried = study.trials[2]
        assert retried.params == study.trials[1].params  # retry_failed queued it again
        assert retried.system_attrs.get("failed_trial") == study.trials[1].number

        runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
        assert {n: r.info.status for n, r in runs.items()} == {
            name: "FINISHED", "trial-000": "FINISHED", "trial-001": "FAILED",
            "trial-002": "FINISHED", "trial-003": "FINISHED"}
        assert "stopped during the trial" in runs["trial-001"].data.tags["mltune.error"]
        assert runs["trial-001"].data.tags["mltune.state"] == "FAIL"
        # The completed trial from before the crash is kept, with its run and value.
        assert study.trials[0].user_attrs["mlflow_run_id"] == runs["trial-000"].info.run_id
        assert study.trials[0].value == pytest.approx(
            runs["trial-000"].data.metrics["best_val_accuracy"])
    finally:
        if backend == "postgresql":
            try:
                optuna.delete_study(study_name=name, storage=storage)
            except KeyError:
                pass


@pytest.mark.slow
def test_a_model_left_pending_by_a_killed_process_is_failed_on_the_next_start(
        write_study, stores, tmp_path) -> None:
    """A process killed while MLflow logged a model leaves that LoggedModel PENDING (MLflow
    makes it first, finalizes it READY last). The next start fails it; models being logged by
    a run still RUNNING are left alone."""
    path = write_study(study={"name": "pending", "n_trials": 1})
    common = ["--storage", stores["storage"], "--tracking-uri", stores["tracking_uri"]]
    first = mltune("tune", str(path), *common, cwd=tmp_path)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, out + err
    client = MlflowClient(stores["tracking_uri"])
    exp = client.get_experiment_by_name("pending").experiment_id
    (trial_run,) = [r for r in client.search_runs([exp]) if "mlflow.parentRunId" in r.data.tags]
    # What `kill -9` during log_model leaves: a LoggedModel of the trial's run, PENDING.
    half = client.create_logged_model(exp, source_run_id=trial_run.info.run_id, name="model")
    live_run = client.create_run(exp)  # another process, logging a model right now
    live = client.create_logged_model(exp, source_run_id=live_run.info.run_id, name="model")
    assert half.status.name == live.status.name == "PENDING"

    again = mltune("tune", str(path), *common, "--n-trials", "1", cwd=tmp_path)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, out + err
    assert client.get_logged_model(half.model_id).status.name == "FAILED"
    assert client.get_logged_model(live.model_id).status.name == "PENDING"
    ready = [m for m in client.search_logged_models([exp]) if m.status.name == "READY"]
    assert ready  # the trials' own models were logged and finalized
