"""One study, one experiment, one parent run, however its trials are added; and the Optuna
storage that follows the MLflow store, so every command finds the study."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from test_cli import invoke
from test_projects import REPO
from test_warm_start import make_source

import mltune
from mltune._storage import open_storage

ENV_DROP = ("MLFLOW_TRACKING_URI", "MLTUNE_STORAGE", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")


def clean_env(**extra: str) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if k not in ENV_DROP}
    return {**env, "PATH": bin_dir + os.pathsep + env.get("PATH", ""), **extra}


def run_cli(*args: object, cwd: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mltune", *map(str, args)], cwd=cwd,
                            env=clean_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finished(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def mlflow_run(*args: str, cwd: Path, tracking_uri: str) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "mlflow", "run", *args], cwd=cwd,
                          env=clean_env(MLFLOW_TRACKING_URI=tracking_uri),
                          capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr


def runs_by_experiment(tracking_uri: str) -> dict[str, list]:
    client = MlflowClient(tracking_uri)
    return {e.name: client.search_runs([e.experiment_id])
            for e in client.search_experiments()}


def parents(runs: list) -> list:
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


def test_default_storage_is_beside_the_mlflow_store(write_study, tmp_path, monkeypatch
                                                   ) -> None:
    """Run from one folder with a store in another: the study lands beside the store, and
    `trials`/`studies` from a third folder find it through the tracking URI alone."""
    store_dir, run_dir, elsewhere = (tmp_path / d for d in ("store", "run", "elsewhere"))
    for d in (store_dir, run_dir, elsewhere):
        d.mkdir()
    for name in ENV_DROP:
        monkeypatch.delenv(name, raising=False)
    uri = f"sqlite:///{store_dir / 'mlflow.db'}"
    study = write_study(study={"n_trials": 2, "name": "beside"})
    monkeypatch.chdir(run_dir)
    mltune.tune(study, tracking_uri=uri)
    assert (store_dir / "optuna_journal.log").is_file()
    assert not (run_dir / "optuna_journal.log").exists()

    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    code, out, err = invoke("trials", "beside", "--format", "csv")
    assert code == 0, err
    assert len(out.strip().splitlines()) == 3  # header and two trials
    monkeypatch.delenv("MLFLOW_TRACKING_URI")

    code, out, err = invoke("studies", "--format", "json", "--tracking-uri", uri)
    assert code == 0, err
    [row] = json.loads(out)
    runs = runs_by_experiment(uri)["beside"]
    [parent] = parents(runs)
    best = max((r for r in runs if r is not parent), key=lambda r: r.data.metrics[
        "val_accuracy"])
    assert row["study"] == "beside" and row["trials"] == row["complete"] == 2
    assert row["experiment"] == "beside" and row["parent_run_id"] == parent.info.run_id
    assert row["best_value"] == pytest.approx(best.data.metrics["val_accuracy"])
    assert row["metric"] == "val_accuracy (maximize)"

    # A study that is not there: the message says where mltune looked, and why there.
    code, _, err = invoke("trials", "other", "--tracking-uri", uri)
    assert code == 2
    assert (f"no study named 'other' in {store_dir / 'optuna_journal.log'} (the default: "
            f"beside the MLflow store {uri}); studies there: beside") in err


def test_a_tracking_server_keeps_studies_in_the_current_folder(tmp_path) -> None:
    code, _, err = invoke("studies", "--tracking-uri", "http://127.0.0.1:9")
    assert code == 2
    assert "no Optuna storage at" in err and "optuna_journal.log (the default: the current " \
        "folder, as the MLflow store http://127.0.0.1:9 is not a local file" in err


def test_optuna_studies_stays_readable(write_study, stores) -> None:
    """The study file is kept with the study, but not among the user attrs that `optuna
    studies` and optuna-dashboard print; workers still rebuild the study from it."""
    code, out, err = invoke("tune", write_study(study={"n_trials": 1, "name": "narrow"}),
                            "--tracking-uri", stores["tracking_uri"], "--storage",
                            stores["storage"], "--workers", "0")
    assert code == 0, out + err
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "optuna"), "studies", "--storage", stores["storage"],
         "--storage-class", "JournalFileStorage"], capture_output=True, text=True,
        env=clean_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert max(len(line) for line in proc.stdout.splitlines()) < 200, proc.stdout
    code, out, err = invoke("worker", "--study-name", "narrow", "--tracking-uri",
                            stores["tracking_uri"], "--storage", stores["storage"])
    assert code == 0, out + err
    study = optuna.load_study(study_name="narrow", storage=open_storage(stores["storage"]))
    assert [t.state.name for t in study.trials] == ["COMPLETE"]


def lose_a_trial(storage: str, name: str) -> None:
    """A trial left RUNNING by a worker of this host that is gone (killed)."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    trial = optuna.load_study(study_name=name, storage=open_storage(storage)).ask()
    trial.set_user_attr("mltune_worker", f"{socket.gethostname()}:{gone.pid}")


def test_resumed_study_keeps_its_experiment(write_study, stores) -> None:
    """A start refused (another experiment) writes nothing, not even the recovery of the
    trials lost with a worker; the next start does that."""
    study = write_study(study={"n_trials": 1, "name": "fixed"})
    args = ["--tracking-uri", stores["tracking_uri"], "--storage", stores["storage"]]
    assert invoke("tune", study, *args)[0] == 0
    lose_a_trial(stores["storage"], "fixed")
    before = runs_by_experiment(stores["tracking_uri"])
    journal = Path(stores["storage"]).read_bytes()

    code, _, err = invoke("tune", study, *args, "--experiment", "elsewhere")
    assert code == 2
    assert ("--experiment in " in err and "study 'fixed' records its runs in experiment "
            "'fixed' (fixed when it was created), but got 'elsewhere'") in err
    assert {k: len(v) for k, v in runs_by_experiment(stores["tracking_uri"]).items()} == {
        k: len(v) for k, v in before.items()}
    assert Path(stores["storage"]).read_bytes() == journal
    loaded = optuna.load_study(study_name="fixed", storage=open_storage(stores["storage"]))
    assert [t.state.name for t in loaded.trials] == ["COMPLETE", "RUNNING"]

    code, out, err = invoke("tune", study, *args)
    assert code == 0, out + err
    runs = runs_by_experiment(stores["tracking_uri"])["fixed"]
    [parent] = parents(runs)
    assert len(runs) == 3 and parent.info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in runs if r is not parent} == {
        parent.info.run_id}
    assert [t.state.name for t in loaded.trials] == ["COMPLETE", "FAIL", "COMPLETE"]


@pytest.mark.slow
def test_concurrent_starts_share_one_parent(write_study, stores, tmp_path) -> None:
    """Two `mltune tune` started at once on a new, warm-started study: one parent run, both
    trials beneath it, the study seeded once."""
    make_source(stores["storage"], "src", [({"learning_rate": 0.005, "filters": 8}, 0.9),
                                           ({"learning_rate": 0.002, "filters": 4}, 0.8)])
    study = write_study(study={"n_trials": 1, "name": "race", "warm_start": {"study": "src"}})
    args = ("--tracking-uri", stores["tracking_uri"], "--storage", stores["storage"])
    procs = [run_cli("tune", study, *args, cwd=tmp_path) for _ in range(2)]
    for proc in procs:
        code, out, err = finished(proc)
        assert code == 0, out + err
    runs = runs_by_experiment(stores["tracking_uri"])["race"]
    [parent] = parents(runs)
    children = [r for r in runs if r is not parent]
    assert len(children) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    loaded = optuna.load_study(study_name="race", storage=open_storage(stores["storage"]))
    assert sorted("mltune_warm_start" in t.user_attrs for t in loaded.trials) == [
        False, False, True, True]


@pytest.mark.slow
def test_mlflow_run_of_an_existing_study_is_refused_then_resumed(tmp_path) -> None:
    """`mltune tune`, then `mlflow run .` on the same study: one clear error before any
    trial (no second parent); `mlflow run --run-id PARENT` resumes it under its parent."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mltune.tune(REPO / "projects/digits_cnn/study.yaml", n_trials=1, epochs=1,
                max_samples=300, tracking_uri=uri)  # the journal file beside the MLflow store
    [parent] = parents(runs_by_experiment(uri)["digits-cnn"])

    project = ["--env-manager", "local", "-P", "n_trials=1",
               "-P", "set=training.epochs=1"]
    code, out, err = mlflow_run(str(REPO), *project, cwd=tmp_path, tracking_uri=uri)
    assert code != 0
    assert (f"study 'digits-cnn' exists already, with its parent run {parent.info.run_id} "
            "in experiment 'digits-cnn', and `mlflow run` made another run") in err
    runs = runs_by_experiment(uri)
    assert len(runs["digits-cnn"]) == 2  # the parent and its one trial: nothing added
    [refused] = runs["Default"]  # the run MLflow made for the project, FAILED
    assert refused.info.status == "FAILED"

    code, out, err = mlflow_run(str(REPO), *project, "--run-id", parent.info.run_id,
                                cwd=tmp_path, tracking_uri=uri)
    assert code == 0, out + err
    runs = runs_by_experiment(uri)["digits-cnn"]
    assert [p.info.run_id for p in parents(runs)] == [parent.info.run_id]
    assert len(runs) == 3
    assert MlflowClient(uri).get_run(parent.info.run_id).info.status == "FINISHED"
    study = optuna.load_study(study_name="digits-cnn",
                              storage=open_storage(str(tmp_path / "optuna_journal.log")))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
