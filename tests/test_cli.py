"""The CLI as a user meets it: exit codes, messages, and what ends up in MLflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from mltune._cli import app
from mltune._storage import open_storage

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def store_args(stores: dict[str, str]) -> list[str]:
    return ["--tracking-uri", stores["tracking_uri"], "--storage", stores["storage"]]


def n_runs(tracking_uri: str) -> int:
    client = MlflowClient(tracking_uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(exps)) if exps else 0


BAD_CONFIGS = [
    pytest.param({"model": {"filterz": 8}}, "model.filterz", "did you mean 'filters'",
                 id="unknown-key"),
    pytest.param({"search_space": {"learning_rate": {"type": "float", "low": 0.1, "high": 0.01}}},
                 "search_space.learning_rate.low", "low <= high must hold", id="low-above-high"),
    pytest.param({"search_space": {"learning_rate": {"type": "float", "low": 0.0, "high": 0.1,
                                                     "log": True}}},
                 "search_space.learning_rate.low", "low > 0 must hold when log is true",
                 id="log-with-zero"),
    pytest.param({"study": {"sampler": "grid"}}, "search_space.learning_rate",
                 "grid search needs a finite set of values", id="grid-without-step"),
    pytest.param({"study": {"sampler": "annealing"}}, "study.sampler",
                 "must be one of random, grid, tpe", id="unknown-sampler"),
    pytest.param({"search_space": {"optimizer": {"type": "categorical",
                                                 "choices": ["adam", "lion"]}}},
                 "search_space.optimizer.choices[1]", "optimizer must be one of", id="optimizer"),
    pytest.param({"training": {"epochs": "five"}}, "training.epochs", "must be of type int",
                 id="wrong-type"),
]


@pytest.mark.parametrize(("sections", "key", "message"), BAD_CONFIGS)
def test_bad_config_exits_2_naming_key_and_file_and_writes_nothing(
        sections, key, message, write_study, stores, tmp_path) -> None:
    path = write_study(**sections)
    code, out, err = invoke("tune", path, *store_args(stores))
    assert code == 2, out + err
    assert err.startswith(f"error: {key} in {path}: ")
    assert message in err
    assert "Traceback" not in err
    assert not Path(stores["storage"]).exists()
    assert not (tmp_path / "mlflow.db").exists()


def test_bad_set_override_exits_2(write_study, stores) -> None:
    code, _, err = invoke("tune", write_study(), "--set", "training.epochs", *store_args(stores))
    assert code == 2
    assert "--set: must look like key.path=value, but got 'training.epochs'" in err


def test_debug_shows_the_traceback(write_study, stores) -> None:
    result = runner.invoke(app, ["tune", str(write_study(training={"epochs": 0})), "--debug",
                                 *store_args(stores)])
    assert result.exit_code != 0
    assert type(result.exception).__name__ == "ConfigError"


def test_missing_data_file_exits_2_and_leaves_no_run_or_study(write_study, stores, tmp_path
                                                              ) -> None:
    missing = tmp_path / "nowhere.npz"
    code, _, err = invoke("tune", write_study(data={"source": str(missing)}), *store_args(stores))
    assert code == 2
    assert f"no such file or folder: {missing}" in err
    assert n_runs(stores["tracking_uri"]) == 0
    assert not Path(stores["storage"]).exists()


def test_unreachable_tracking_server_exits_2(write_study, stores) -> None:
    code, _, err = invoke("tune", write_study(), "--tracking-uri", "http://127.0.0.1:9",
                          "--storage", stores["storage"])
    assert code == 2
    assert "cannot reach the MLflow tracking server at http://127.0.0.1:9" in err
    assert not Path(stores["storage"]).exists()


def test_password_in_storage_url_is_not_shown(write_study, stores) -> None:
    code, out, err = invoke("tune", write_study(), "--tracking-uri", stores["tracking_uri"],
                            "--storage", "postgresql://mltune:s3cret@127.0.0.1:9/optuna")
    assert code == 2
    assert "s3cret" not in out + err
    assert "postgresql://mltune:***@127.0.0.1:9/optuna" in err
    assert n_runs(stores["tracking_uri"]) == 0


def test_tune_then_trials_in_three_formats(write_study, stores) -> None:
    code, out, err = invoke("tune", write_study(), "--sampler", "tpe", "--n-trials", "2",
                            "--study-name", "cli-tpe", "--set", "data.max_samples=200",
                            *store_args(stores))
    assert code == 0, out + err
    assert "study cli-tpe: 2 trials (2 complete)" in out
    assert "best val_accuracy=" in out
    assert "[2/2] trial 1 COMPLETE val_accuracy=" in out
    # The end names the best parameters and what to run next, with the same stores.
    assert "\nbest params: " in out and "learning_rate=" in out
    assert f"next: mltune trials cli-tpe --storage {stores['storage']} --tracking-uri " in out
    assert "mltune register --study cli-tpe --name MODEL --storage " in out

    code, out, _ = invoke("trials", "cli-tpe", "--storage", stores["storage"])
    assert code == 0
    header = out.splitlines()[0].split()
    assert header[:3] == ["number", "state", "value"]
    assert {"params_learning_rate", "params_filters", "mlflow_run_id"} <= set(header)

    code, out, _ = invoke("trials", "cli-tpe", "--storage", stores["storage"], "--format", "json")
    rows = json.loads(out)
    assert [r["number"] for r in rows] == [0, 1]
    assert all(r["state"] == "COMPLETE" for r in rows)
    client = MlflowClient(stores["tracking_uri"])
    for row in rows:
        run = client.get_run(row["mlflow_run_id"])
        assert run.data.params["filters"] == str(row["params_filters"])
        assert run.data.tags["mltune.sampler"] == "tpe"

    code, out, _ = invoke("trials", "cli-tpe", "--storage", stores["storage"], "--format", "csv")
    assert out.splitlines()[0].startswith("number,state,value,")
    assert len(out.splitlines()) == 3


def test_tpe_with_hyperband_notes_its_startup_trials(write_study, stores) -> None:
    code, out, err = invoke("tune", write_study(study={"n_trials": 2, "name": "hb"},
                                                training={"epochs": 2}),
                            "--sampler", "tpe", "--set", "study.pruner=hyperband",
                            *store_args(stores))
    assert code == 0, out + err
    assert ("note: TPE with the hyperband pruner samples at random until each of hyperband's "
            "1 brackets has 10 trials") in out
    assert "study hb: 2 trials" in out


def test_multi_objective_study_reports_its_choice_and_both_values(write_study, stores
                                                                  ) -> None:
    objectives = [{"metric": "val_accuracy"}, {"metric": "params"}]
    code, out, err = invoke("tune", write_study(study={"n_trials": 2, "name": "mo",
                                                       "objectives": objectives}),
                            *store_args(stores))
    assert code == 0, out + err
    line = next(s for s in out.splitlines() if s.startswith("best trial "))
    assert "(lowest params among the trials within 0.002 of the best val_accuracy)" in line
    assert "val_accuracy=" in line and "params=" in line
    code, out, _ = invoke("trials", "mo", "--storage", stores["storage"], "--format", "csv")
    assert out.splitlines()[0].startswith("number,state,values_val_accuracy,values_params,")


def test_trials_of_an_unknown_study_exits_2(write_study, stores) -> None:
    invoke("tune", write_study(study={"n_trials": 1, "name": "known"}), *store_args(stores))
    code, _, err = invoke("trials", "unknown", "--storage", stores["storage"])
    assert code == 2
    assert "no study named 'unknown'" in err and "studies there: known" in err


def test_train_logs_one_run_with_test_metrics_and_model(write_study, stores) -> None:
    path = write_study(search_space=None)  # no search space needed for one run
    code, out, err = invoke("train", path, "--set", "model.filters=6", "--tracking-uri",
                            stores["tracking_uri"])
    assert code == 0, out + err
    client = MlflowClient(stores["tracking_uri"])
    exp = client.get_experiment_by_name("tiny")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "train-tiny"
    assert run.data.params["filters"] == "6"
    assert {"test_accuracy", "test_loss", "val_accuracy"} <= set(run.data.metrics)
    assert f"run {run.info.run_id}: test_accuracy=" in out or "test_loss=" in out
    models = client.search_logged_models(experiment_ids=[exp.experiment_id])
    assert [m.source_run_id for m in models] == [run.info.run_id]


def test_help_lists_commands_and_options() -> None:
    code, out, _ = invoke("tune", "--help")
    assert code == 0
    for option in ("--sampler", "--n-trials", "--timeout", "--study-name", "--storage",
                   "--tracking-uri", "--experiment", "--set", "--debug"):
        assert option in out


@pytest.mark.slow
def test_quickstart_from_a_shell(tmp_path) -> None:
    """The README's main job, shortened: a real process in an empty folder, default stores."""
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "MLFLOW_TRACKING_URI": ""}
    env.pop("MLFLOW_TRACKING_URI")
    proc = subprocess.run(
        [sys.executable, "-m", "mltune", "tune", str(repo / "projects/digits_cnn/study.yaml"),
         "--n-trials", "2", "--set", "training.epochs=1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "study digits-cnn: 2 trials (2 complete)" in proc.stdout
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db" in proc.stdout
    assert (tmp_path / "optuna_journal.log").exists()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("digits-cnn")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["digits-cnn", "trial-000", "trial-001"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    # A second run of the same command resumes the study under the same parent run.
    proc = subprocess.run(
        [sys.executable, "-m", "mltune", "tune", str(repo / "projects/digits_cnn/study.yaml"),
         "--n-trials", "1", "--set", "training.epochs=1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "study digits-cnn: 3 trials (3 complete)" in proc.stdout
    assert len(client.search_runs([exp.experiment_id])) == 4
    # The command the end of the study suggests; no TensorFlow C++ lines on the way.
    assert "mltune register --study digits-cnn --name MODEL" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "mltune", "register", "--study", "digits-cnn", "--name",
         "digits"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("registered digits version 1 as @champion")
    assert proc.stderr == ""


@pytest.mark.slow
def test_ctrl_c_leaves_no_run_running(write_study, stores) -> None:
    """SIGINT during a trial: exit 130, the finished trial kept, the interrupted one FAILED,
    the parent KILLED; nothing stays RUNNING in MLflow or Optuna."""
    import signal

    import optuna

    from mltune._storage import open_storage

    path = write_study(study={"n_trials": 5, "name": "interrupted"},
                       training={"epochs": 40, "batch_size": 32})
    proc = subprocess.Popen(
        [sys.executable, "-m", "mltune", "tune", str(path), *store_args(stores)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # As from a terminal: a runner started in the background (`cmd &` in a script)
        # passes SIGINT on ignored, and Python then never raises KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "trial 1 started" in line:
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(seen) + out + err
    assert "interrupted" in err

    client = MlflowClient(stores["tracking_uri"])
    exp = client.get_experiment_by_name("interrupted")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert runs["interrupted"].info.status == "KILLED"
    assert runs["trial-000"].info.status == "FINISHED"
    assert runs["trial-001"].info.status == "FAILED"
    assert runs["trial-001"].data.tags["mltune.state"] == "FAIL"
    study = optuna.load_study(study_name="interrupted", storage=open_storage(stores["storage"]))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL"]


def test_trials_without_a_storage_file_exits_2_and_creates_none(tmp_path) -> None:
    missing = tmp_path / "optuna_journal.log"
    code, _, err = invoke("trials", "any", "--storage", missing)
    assert code == 2
    assert f"no Optuna journal file {missing}" in err
    assert not missing.exists()


@pytest.mark.slow
def test_same_study_runs_under_jax(write_study, stores) -> None:
    """Model and trainer use keras.* only, so a machine with JAX but no TensorFlow GPU build
    can run a study."""
    proc = subprocess.run(
        [sys.executable, "-m", "mltune", "tune", str(write_study(study={"n_trials": 2})),
         *store_args(stores)],
        env={**os.environ, "KERAS_BACKEND": "jax"}, capture_output=True, text=True,
        timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "study tiny: 2 trials (2 complete)" in proc.stdout
    client = MlflowClient(stores["tracking_uri"])
    exp = client.get_experiment_by_name("tiny")
    (model,) = client.search_logged_models(experiment_ids=[exp.experiment_id],
                                           max_results=1)
    import mlflow

    mlflow.set_tracking_uri(stores["tracking_uri"])
    info = mlflow.models.get_model_info(f"models:/{model.model_id}")
    assert info.flavors["keras"]["keras_backend"] == "jax"


def test_trials_of_a_study_whose_only_trial_is_running(tmp_path) -> None:
    # Right after `mltune tune --workers 0` and a worker's first trial, or a Ctrl-C: no trial
    # has a duration yet.
    journal = str(tmp_path / "optuna_journal.log")
    study = optuna.create_study(study_name="busy", storage=open_storage(journal))
    study.ask()
    code, out, err = invoke("trials", "busy", "--storage", journal, "--format", "json")
    assert code == 0, out + err
    (row,) = json.loads(out)
    assert row["state"] == "RUNNING" and row["duration"] is None
