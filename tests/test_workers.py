"""Several worker processes on one study: local journal file, PostgreSQL, a killed worker."""

from __future__ import annotations

import itertools
import os
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
GRID = {"filters": {"type": "categorical", "choices": [4, 6, 8, 10]},
        "learning_rate": {"type": "categorical", "choices": [0.002, 0.004]}}


def mltune(*args: str, cwd, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mltune", *args], cwd=cwd, text=True,
                            env={**os.environ, **QUIET_ENV, "PYTHONUNBUFFERED": "1"}, **popen)


def runs_by_name(tracking_uri: str, experiment: str) -> dict[str, object]:
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    return {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}


@pytest.mark.slow
def test_four_workers_cover_a_grid_exactly_once_on_the_journal_file(write_study, stores,
                                                                     tmp_path) -> None:
    path = write_study(study={"name": "grid4", "sampler": "grid", "n_trials": None},
                       search_space=GRID)
    proc = mltune("tune", str(path), "--workers", "4", "--storage", stores["storage"],
                  "--tracking-uri", stores["tracking_uri"], cwd=tmp_path,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, out + err
    assert "database is locked" not in out + err
    assert "study grid4: 8 trials on 4 workers (processes forked from this one)" in out
    study = optuna.load_study(study_name="grid4", storage=open_storage(stores["storage"]))
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    points = sorted((t.params["filters"], t.params["learning_rate"]) for t in complete)
    assert points == sorted(itertools.product([4, 6, 8, 10], [0.002, 0.004]))
    runs = runs_by_name(stores["tracking_uri"], "grid4")
    parent = runs.pop("grid4")
    assert parent.info.status == "FINISHED"
    history = MlflowClient(stores["tracking_uri"]).get_metric_history(parent.info.run_id,
                                                                     "trials_complete")
    assert [m.value for m in history] == [8.0]  # the summary is written once, not per worker
    assert len(runs) == 8 and {r.info.status for r in runs.values()} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in runs.values()} == {parent.info.run_id}
    # The trials really ran at once: some started before others had ended.
    overlapping = sum(1 for a, b in itertools.combinations(complete, 2)
                      if a.datetime_start < b.datetime_complete
                      and b.datetime_start < a.datetime_complete)
    assert overlapping >= 2


@pytest.mark.slow
def test_trials_per_process_replaces_the_worker_process(write_study, stores, tmp_path) -> None:
    path = write_study(study={"name": "recycled", "n_trials": 3})
    proc = mltune("tune", str(path), "--trials-per-process", "2", "--storage",
                  stores["storage"], "--tracking-uri", stores["tracking_uri"], cwd=tmp_path,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, out + err
    assert "3 trials on 1 workers, each replaced after 2 trials" in out
    assert [s for s in out.splitlines() if s.startswith("worker done:")] == [
        "worker done: 2 trials of study recycled", "worker done: 1 trials of study recycled"]
    study = optuna.load_study(study_name="recycled", storage=open_storage(stores["storage"]))
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    pids = [t.user_attrs["mltune_worker"] for t in study.trials]
    assert pids[0] == pids[1] != pids[2]  # a fresh process after two trials
    runs = runs_by_name(stores["tracking_uri"], "recycled")
    assert runs.pop("recycled").info.status == "FINISHED"
    assert {r.info.status for r in runs.values()} == {"FINISHED"} and len(runs) == 3


@pytest.fixture
def postgres_mlflow(tmp_path):
    """The multi-machine setup on loopback: an ``mlflow server`` whose backend store is a
    fresh database on the PostgreSQL server of this machine."""
    from conftest import MlflowServer

    db = f"mlflow_{uuid.uuid4().hex[:8]}"
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", db], check=True)
    server = MlflowServer(tmp_path, f"postgresql://postgres@127.0.0.1:5432/{db}")
    try:
        server.start()
        yield server.url
    finally:
        server.stop()
        subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", db])


@pytest.mark.slow
@pytest.mark.postgres
def test_kill_a_postgres_worker_then_join_again(write_study, postgres_mlflow, tmp_path) -> None:
    """The study's process dies with two trials running (a lost node): its trials' processes
    die with it; a worker that joins later fails the two lost trials (stale heartbeats),
    re-runs their points and finishes the study."""
    name = f"pg-{uuid.uuid4().hex[:6]}"
    path = write_study(study={"name": name, "sampler": "grid", "n_trials": None,
                              "heartbeat_interval": 1, "grace_period": 2, "retry_failed": 1},
                       training={"epochs": 30, "batch_size": 32},
                       search_space={"filters": {"type": "categorical", "choices": [4, 6, 8]},
                                     "learning_rate": {"type": "categorical",
                                                       "choices": [0.002, 0.004]}})
    common = ["--storage", POSTGRES, "--tracking-uri", postgres_mlflow]
    stores = {"tracking_uri": postgres_mlflow}
    try:
        launcher = mltune("tune", str(path), "--workers", "2", *common, cwd=tmp_path,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert launcher.stdout is not None
        for line in launcher.stdout:
            if "trial 3 started" in line:
                break
        time.sleep(1.0)
        study = optuna.load_study(study_name=name, storage=POSTGRES)
        running = [t for t in study.trials if t.state.name == "RUNNING"]
        assert len(running) == 2, [t.state.name for t in study.trials]
        children = subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True,
                                  text=True).stdout.split()
        assert len(children) == 2  # a process per running trial
        launcher.kill()
        launcher.communicate(timeout=60)
        deadline = time.monotonic() + 10
        while any(os.path.exists(f"/proc/{pid}") for pid in children):
            assert time.monotonic() < deadline, "a trial's process outlived the study's"
            time.sleep(0.1)

        time.sleep(3)  # the killed worker's heartbeat is now stale
        joined = mltune("worker", "--study-name", name, *common, cwd=tmp_path,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = joined.communicate(timeout=600)
        assert joined.returncode == 0, out + err

        study = optuna.load_study(study_name=name, storage=POSTGRES)
        states = [t.state.name for t in study.trials]
        assert "RUNNING" not in states and "WAITING" not in states
        assert states.count("FAIL") == 2
        complete = [t for t in study.trials if t.state.name == "COMPLETE"]
        points = sorted((t.params["filters"], t.params["learning_rate"]) for t in complete)
        assert points == sorted(itertools.product([4, 6, 8], [0.002, 0.004]))  # each once
        runs = runs_by_name(stores["tracking_uri"], name)
        assert runs.pop(name).info.status == "FINISHED"
        statuses = sorted(r.info.status for r in runs.values())
        assert "RUNNING" not in statuses and statuses.count("FAILED") == 2
        for trial in study.trials:  # every trial kept its run, with the matching status
            run = runs[f"trial-{trial.number:03d}"]
            assert run.info.run_id == trial.user_attrs["mlflow_run_id"]
            assert run.info.status == {"COMPLETE": "FINISHED", "FAIL": "FAILED"}[
                trial.state.name]
    finally:
        try:
            optuna.delete_study(study_name=name, storage=POSTGRES)
        except KeyError:
            pass


def test_create_with_zero_workers_then_join(write_study, stores) -> None:
    from typer.testing import CliRunner

    from mltune._cli import app

    runner = CliRunner()
    common = ["--storage", stores["storage"], "--tracking-uri", stores["tracking_uri"]]
    result = runner.invoke(app, ["tune", str(write_study(study={"name": "joined"})),
                                 "--workers", "0", "--n-trials", "2", *common])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "ready for 2 trials; start workers with: mltune worker --study-name joined" in (
        result.stdout)
    runs = runs_by_name(stores["tracking_uri"], "joined")
    assert list(runs) == ["joined"] and runs["joined"].info.status == "RUNNING"

    result = runner.invoke(app, ["worker", "--study-name", "joined", *common])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "worker done: 2 trials of study joined" in result.stdout
    runs = runs_by_name(stores["tracking_uri"], "joined")
    assert runs.pop("joined").info.status == "FINISHED"  # the last worker ends the parent
    assert sorted(runs) == ["trial-000", "trial-001"]
    # A worker that comes when the study has its trials runs none.
    result = runner.invoke(app, ["worker", "--study-name", "joined", *common])
    assert "worker done: 0 trials" in result.stdout


def test_worker_for_an_unknown_study_exits_2(stores) -> None:
    from typer.testing import CliRunner

    from mltune._cli import app

    result = CliRunner().invoke(app, ["worker", "--study-name", "nope", "--storage",
                                      stores["storage"]])
    assert result.exit_code == 2
    assert "no Optuna journal file" in result.stderr


@pytest.mark.slow
def test_one_worker_per_gpu_sees_only_its_gpu(write_study, stores, tmp_path) -> None:
    proc = mltune("tune", str(write_study(study={"name": "gpus", "n_trials": 4})),
                  "--gpus", "0,1", "--storage", stores["storage"],
                  "--tracking-uri", stores["tracking_uri"], cwd=tmp_path,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out + err
    assert "4 trials on 2 workers" in out
    runs = runs_by_name(stores["tracking_uri"], "gpus")
    runs.pop("gpus")
    seen = {r.data.tags["mltune.cuda_visible_devices"] for r in runs.values()}
    assert seen <= {"0", "1"} and len(runs) >= 4


def test_gpu_slots_share_memory() -> None:
    from mltune._launcher import gpu_slots

    assert gpu_slots(["0", "1"], 1) == [{"CUDA_VISIBLE_DEVICES": "0"},
                                        {"CUDA_VISIBLE_DEVICES": "1"}]
    slots = gpu_slots(["3"], 4)
    assert [s["CUDA_VISIBLE_DEVICES"] for s in slots] == ["3"] * 4
    assert {s["XLA_PYTHON_CLIENT_MEM_FRACTION"] for s in slots} == {"0.225"}


def test_out_of_memory_fails_that_trial_alone(write_study, stores) -> None:
    from conftest import small_cnn

    from mltune import tune
    from mltune._config import load_config

    def build(params, **kw):
        if params["filters"] == 8:
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate "
                               "17179869184 bytes.")
        return small_cnn(params, **kw)

    path = write_study(study={"name": "oom", "sampler": "grid", "n_trials": None},
                       search_space={"filters": {"type": "categorical", "choices": [4, 8, 6]}})
    result = tune(load_config(path), model=build, **stores)
    assert result.states == {"COMPLETE": 2, "FAIL": 1}
    runs = runs_by_name(stores["tracking_uri"], "oom")
    failed = [r for r in runs.values() if r.info.status == "FAILED"]
    assert len(failed) == 1 and failed[0].data.params["filters"] == "8"
    assert failed[0].data.tags["mltune.error_kind"] == "out_of_memory"
