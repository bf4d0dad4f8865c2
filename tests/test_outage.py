"""The MLflow tracking server goes away: briefly (nothing fails) or for good (the worker stops
with a clear message; a later run closes what was left open)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import optuna
import pytest
from conftest import QUIET_ENV
from mlflow import MlflowClient

from mltune._storage import open_storage

# MLflow's own retries (defaults: 7 retries, factor 2, about two minutes). Short here so a
# server that stays down is given up on quickly: sleeps of 0, 2, 4 and 8 s, a 14 s window.
SHORT_RETRIES = 4
# A brief outage must fit inside the window: the server's restart alone takes 10 s and more on a
# loaded 2-core CI machine, so that test waits up to 0+2+4+8+16+32 = 62 s.
LONG_RETRIES = 6


def tune(path, server, stores, *extra: str, retries: int = SHORT_RETRIES) -> subprocess.Popen:
    env = {**os.environ, **QUIET_ENV, "PYTHONUNBUFFERED": "1",
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries),
           "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    return subprocess.Popen(
        [sys.executable, "-m", "mltune", "tune", str(path), "--tracking-uri", server.url,
         "--storage", stores["storage"], *extra], cwd=server.folder, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def wait_for(proc: subprocess.Popen, text: str, seen: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"never saw {text!r}: {''.join(seen)}")


@pytest.mark.slow
def test_brief_outage_fails_nothing(mlflow_process, write_study, stores) -> None:
    path = write_study(study={"name": "brief", "n_trials": 3},
                       training={"epochs": 25, "batch_size": 32})
    proc = tune(path, mlflow_process, stores, retries=LONG_RETRIES)
    seen: list[str] = []
    wait_for(proc, "trial 1 started", seen)
    down = time.monotonic()
    mlflow_process.stop()  # the epochs of trial 1 cannot be logged for a few seconds
    time.sleep(3)
    mlflow_process.start()
    outage = time.monotonic() - down
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"server down {outage:.1f} s\n" + "".join(seen) + out + err
    study = optuna.load_study(study_name="brief", storage=open_storage(stores["storage"]))
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    client = MlflowClient(mlflow_process.url)
    runs = client.search_runs([client.get_experiment_by_name("brief").experiment_id])
    assert {r.info.status for r in runs} == {"FINISHED"} and len(runs) == 4


@pytest.mark.slow
def test_server_down_stops_the_worker_then_resume_cleans_up(mlflow_process, write_study,
                                                           stores) -> None:
    path = write_study(study={"name": "down", "n_trials": 3},
                       training={"epochs": 25, "batch_size": 32})
    proc = tune(path, mlflow_process, stores)
    seen: list[str] = []
    wait_for(proc, "trial 1 started", seen)
    mlflow_process.stop()
    timer = threading.Timer(300, proc.kill)  # a hang fails the test instead of blocking it
    timer.start()
    try:
        out, err = proc.communicate()
    finally:
        timer.cancel()
    assert proc.returncode == 1, "".join(seen) + out + err
    assert f"the MLflow tracking server at {mlflow_process.url} stays unreachable" in err
    assert "this worker stops" in err and "Traceback" not in err
    assert "trial 2 started" not in "".join(seen) + out  # no trial after trial after trial

    mlflow_process.start()
    again = tune(path, mlflow_process, stores, "--n-trials", "1")
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, out + err
    study = optuna.load_study(study_name="down", storage=open_storage(stores["storage"]))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    client = MlflowClient(mlflow_process.url)
    runs = {r.info.run_name: r for r in client.search_runs(
        [client.get_experiment_by_name("down").experiment_id])}
    assert {n: r.info.status for n, r in runs.items()} == {
        "down": "FINISHED", "trial-000": "FINISHED", "trial-001": "FAILED",
        "trial-002": "FINISHED"}
