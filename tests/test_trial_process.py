"""Every trial trains in a process of its own, forked from the study's process: crashes fail
that trial alone, signals stop the trials' processes, nothing is left behind, and a process
that has already run TensorFlow trains in itself instead.

The studies run through the CLI (a fresh process: pytest's own may have run TensorFlow).
The builder writes the pid of the process that builds each model to a file beside it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from conftest import QUIET_ENV, tiny_study
from mlflow import MlflowClient

from mltune import load_study

BUILDER = '''
import os
import signal
import time
from pathlib import Path

import keras


def build(params, *, input_shape, num_classes):
    with open(Path(__file__).with_name("pids.txt"), "a") as f:
        f.write(f"{os.getpid()}\\n")
    mode = params.get("mode", "ok")
    if mode == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if mode == "exit":
        os._exit(3)
    if mode == "sleep":
        time.sleep(600)
    if mode == "deaf":  # a worker that ignores SIGTERM (stuck in native code, say)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(600)
    if mode == "unpicklable":
        class Odd(Exception):
            def __init__(self, a, b):
                super().__init__(f"odd {a} {b}")
        raise Odd(1, 2)
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    if mode == "dies_saving":  # the OOM killer, once training is over
        model.save = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
    return model
'''


def _study(tmp_path: Path, name: str, modes: list[str], **study: object) -> Path:
    (tmp_path / "crashy.py").write_text(BUILDER)
    content = tiny_study(
        study={"name": name, "sampler": "grid", "n_trials": None, "seed": 3, **study},
        model={"builder": "crashy.py:build"},
        search_space={"mode": {"type": "categorical", "choices": modes}})
    path = tmp_path / f"{name}.yaml"
    import yaml

    path.write_text(yaml.safe_dump(content))
    return path


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
         new_session: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mltune", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=new_session,
                            env={**os.environ, **QUIET_ENV, "PYTHONUNBUFFERED": "1",
                                 **(env or {})})


def _pids(tmp_path: Path) -> list[int]:
    path = tmp_path / "pids.txt"
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _first_child(tmp_path: Path) -> int:
    """The pid of the first trial's process, once its builder has run."""
    deadline = time.monotonic() + 120
    while not _pids(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    (child,) = _pids(tmp_path)
    return child


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie still answers kill(0): it has exited but its parent has not reaped it.
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def _runs(tracking_uri: str, name: str) -> dict[str, object]:
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(name)
    return {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_each_trial_trains_in_its_own_process_and_a_crash_fails_it_alone(
        backend: str, tmp_path: Path, stores: dict[str, str]) -> None:
    name = f"crashy-{backend}"
    path = _study(tmp_path, name, ["ok", "segfault", "exit", "unpicklable"])
    proc = _cli("tune", str(path), "--storage", stores["storage"], "--tracking-uri",
                stores["tracking_uri"], cwd=tmp_path, env={"KERAS_BACKEND": backend})
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    assert "note:" not in out  # no fallback: the study's process forked every trial

    pids = _pids(tmp_path)
    assert len(pids) == 4 and len(set(pids)) == 4 and proc.pid not in pids
    assert all(_gone(pid, within=1) for pid in pids)

    study = load_study(name, stores["storage"])
    states = {t.params["mode"]: t.state.name for t in study.trials}
    assert states == {"ok": "COMPLETE", "segfault": "FAIL", "exit": "FAIL",
                      "unpicklable": "FAIL"}
    runs = _runs(stores["tracking_uri"], name)
    by_mode = {r.data.params["mode"]: r for n, r in runs.items() if n != name}
    assert runs[name].info.status == "FINISHED"
    assert by_mode["ok"].info.status == "FINISHED"
    assert by_mode["ok"].data.tags["mltune.device"] == "CPU"  # told by the trial's process
    assert by_mode["segfault"].info.status == "FAILED"
    assert by_mode["segfault"].data.tags["mltune.error_kind"] == "signal:SIGSEGV"
    assert "killed by SIGSEGV" in by_mode["segfault"].data.tags["mltune.error"]
    assert by_mode["exit"].data.tags["mltune.error_kind"] == "exit_code:3"
    assert by_mode["unpicklable"].data.tags["mltune.error"] == "TrialError: Odd: odd 1 2"
    # The traceback from the trial's process is in the run's error.txt.
    text = MlflowClient(stores["tracking_uri"]).download_artifacts(
        by_mode["unpicklable"].info.run_id, "error.txt", str(tmp_path))
    assert "In the trial's process" in Path(text).read_text()
    assert "crashy.py" in Path(text).read_text()
    # The model logged by the parent from the file the trial's process saved, loads and runs.
    import mlflow.pyfunc
    import numpy as np

    model_uri = study.best_trial.user_attrs["mlflow_model_uri"]
    mlflow.set_tracking_uri(stores["tracking_uri"])
    try:
        predictions = mlflow.pyfunc.load_model(model_uri).predict(
            np.zeros((2, 8, 8, 1), dtype=np.float32))
    finally:
        mlflow.set_tracking_uri(None)
    assert np.asarray(predictions).shape == (2, 10)


def test_a_trial_whose_process_dies_while_saving_its_model_keeps_its_result(
        tmp_path: Path, stores: dict[str, str]) -> None:
    # The trial reported its outcome, then its process was killed while it wrote the model:
    # the trial completes without its model, which its run says.
    path = _study(tmp_path, "dies-saving", ["dies_saving"])
    proc = _cli("tune", str(path), "--storage", stores["storage"], "--tracking-uri",
                stores["tracking_uri"], cwd=tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    (trial,) = load_study("dies-saving", stores["storage"]).trials
    assert trial.state.name == "COMPLETE" and trial.value is not None
    assert "mlflow_model_uri" not in trial.user_attrs
    run = _runs(stores["tracking_uri"], "dies-saving")["trial-000"]
    assert run.info.status == "FINISHED"
    assert "killed by SIGKILL" in run.data.tags["mltune.model_error"]
    assert "trial 0: model not logged" in out
    assert all(_gone(pid, within=5) for pid in _pids(tmp_path))


def _start(mode: str, path: Path, stores: dict[str, str], tmp_path: Path
           ) -> subprocess.Popen[str]:
    """The study of ``path`` in one of the three ways a study runs: its own process forking
    each trial (single), a launcher of spawned workers (launcher), or a worker joining a study
    that `tune --workers 0` made (worker), each in a session of its own (a job)."""
    common = ["--storage", stores["storage"], "--tracking-uri", stores["tracking_uri"]]
    if mode == "worker":
        made = _cli("tune", str(path), *common, "--workers", "0", cwd=tmp_path)
        assert made.wait(timeout=120) == 0
        name = path.stem
        return _cli("worker", "--study-name", name, *common, cwd=tmp_path, new_session=True)
    extra = ["--trials-per-process", "1"] if mode == "launcher" else []
    return _cli("tune", str(path), *common, *extra, cwd=tmp_path, new_session=True)


# SIGTERM as Kubernetes, Slurm and systemd stop a job (to its main process); Ctrl-C as a
# terminal sends it (to every process of the job).
SIGNALS = [(signal.SIGTERM, 143, False), (signal.SIGINT, 130, True)]


@pytest.mark.parametrize("mode", ["single", "launcher", "worker"])
@pytest.mark.parametrize(("signum", "code", "to_group"), SIGNALS,
                         ids=["SIGTERM", "SIGINT-to-group"])
def test_a_signal_stops_the_study_and_closes_everything(
        mode: str, signum: int, code: int, to_group: bool, tmp_path: Path,
        stores: dict[str, str]) -> None:
    name = f"stopped-{mode}-{signum}"
    path = _study(tmp_path, name, ["sleep"])
    proc = _start(mode, path, stores, tmp_path)
    try:
        trainer = _first_child(tmp_path)  # the process that trains the trial
        if to_group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == code, out + err
    assert ("terminated" if signum == signal.SIGTERM else "interrupted") in err
    assert "Traceback" not in err
    assert _gone(trainer) and trainer != proc.pid
    runs = _runs(stores["tracking_uri"], name)
    # The parent: KILLED, with its summary (the trials table), by the last process standing.
    assert {n: r.info.status for n, r in runs.items()} == {name: "KILLED",
                                                            "trial-000": "FAILED"}
    client = MlflowClient(stores["tracking_uri"])
    assert "trials.csv" in {a.path for a in client.list_artifacts(runs[name].info.run_id)}
    study = load_study(name, stores["storage"])
    assert study.trials[0].state == optuna.trial.TrialState.FAIL
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    # Interrupted, not failed by itself: not counted as the trial's own failure.
    assert "mltune_error" not in study.trials[0].user_attrs


@pytest.mark.slow
def test_a_stopped_launcher_kills_a_worker_that_outlives_the_grace_period(
        tmp_path: Path, stores: dict[str, str]) -> None:
    # Spawned workers train in their own process; this one ignores the launcher's SIGTERM.
    path = _study(tmp_path, "deaf", ["deaf"])
    proc = _cli("tune", str(path), "--storage", stores["storage"], "--tracking-uri",
                stores["tracking_uri"], "--trials-per-process", "1", cwd=tmp_path,
                new_session=True)
    try:
        worker = _first_child(tmp_path)
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # as Kubernetes stops a pod
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - stopped
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, out + err
    # Within Kubernetes' 30 s before its SIGKILL: the grace period (20 s) and the clean-up.
    assert took < 30, f"{took:.1f} s"
    assert _gone(worker, within=1)
    runs = _runs(stores["tracking_uri"], "deaf")
    assert {n: r.info.status for n, r in runs.items()} == {"deaf": "KILLED",
                                                            "trial-000": "FAILED"}
    assert runs["trial-000"].data.tags["mltune.error"] == (
        f"worker {socket.gethostname()}:{worker} stopped during the trial")
    # A grid point lost with its worker goes back into the queue: the next start runs it.
    trials = load_study("deaf", stores["storage"]).trials
    assert [(t.state.name, t.params) for t in trials] == [("FAIL", {"mode": "deaf"}),
                                                          ("WAITING", {})]


def test_a_killed_study_process_takes_its_trial_process_with_it(
        tmp_path: Path, stores: dict[str, str]) -> None:
    path = _study(tmp_path, "orphan", ["sleep"])
    proc = _cli("tune", str(path), "--storage", stores["storage"], "--tracking-uri",
                stores["tracking_uri"], cwd=tmp_path, new_session=True)
    try:
        child = _first_child(tmp_path)
        proc.kill()
        proc.communicate(timeout=30)
        assert _gone(child)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_a_process_that_ran_tensorflow_trains_its_trials_itself(
        tmp_path: Path, stores: dict[str, str]) -> None:
    script = tmp_path / "notebook.py"
    script.write_text(textwrap.dedent(f"""
        import os
        import keras
        import mltune
        from conftest import tiny_study

        keras.ops.convert_to_numpy(keras.ops.ones(2) + 1)  # as a notebook cell might
        result = mltune.tune(tiny_study(study={{"n_trials": 2, "name": "nb"}}),
                             storage={stores['storage']!r},
                             tracking_uri={stores['tracking_uri']!r}, progress=False)
        print("states", result.states)
    """))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, text=True,
                          capture_output=True, timeout=300,
                          env={**os.environ, **QUIET_ENV,
                               "PYTHONPATH": str(Path(__file__).parent)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ("note: trials train in this process (TensorFlow has already run in this "
            "process") in proc.stdout
    assert "states {'COMPLETE': 2}" in proc.stdout


def test_pruning_decided_by_the_study_process_stops_the_trial_process(
        write_study, stores: dict[str, str], tmp_path: Path) -> None:
    from test_pruning import _study as pruning_study

    path = write_study(pruning_study(sampler="grid", n_trials=None, seed=1, pruner="median",
                                     pruner_options={"n_startup_trials": 1,
                                                     "n_warmup_steps": 0}))
    proc = _cli("tune", str(path), "--storage", stores["storage"], "--tracking-uri",
                stores["tracking_uri"], cwd=tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    study = load_study("p", stores["storage"])
    assert [(t.params["learning_rate"], t.state.name) for t in study.trials] == [
        (0.01, "COMPLETE"), (1e-7, "PRUNED")]
    pruned = study.trials[1]
    runs = _runs(stores["tracking_uri"], "p")
    run = runs["trial-001"]
    assert run.info.status == "KILLED"
    epoch = int(run.data.tags["mltune.pruned_at_epoch"])
    assert 1 <= epoch < 3 and pruned.user_attrs["epochs_run"] == epoch
    history = MlflowClient(stores["tracking_uri"]).get_metric_history(run.info.run_id,
                                                                      "val_accuracy")
    assert [m.step for m in history] == list(range(1, epoch + 1))


def test_the_next_trials_process_is_forked_ahead_and_none_is_left_behind(
        tmp_path: Path, stores: dict[str, str]) -> None:
    # Once a trial has trained, the next trial's process is forked and warms up (the
    # backend's runtime, the data's tensors) while the study logs the finished trial. One
    # killed while it waits (the OOM killer, say) costs no trial: a fresh one takes it.
    script = tmp_path / "ahead.py"
    script.write_text(textwrap.dedent(f"""
        import json, os, signal
        from pathlib import Path
        import mltune
        from conftest import tiny_study

        def processes():
            return [int(pid) for f in Path(f"/proc/{{os.getpid()}}/task").glob("*/children")
                    for pid in f.read_text().split()]

        ahead = []
        def kill_the_one_waiting(study, trial):
            ahead.append(processes())
            if trial.number == 0:
                for pid in processes():
                    os.kill(pid, signal.SIGKILL)

        result = mltune.tune(tiny_study(study={{"n_trials": 3, "name": "ahead"}}),
                             storage={stores['storage']!r},
                             tracking_uri={stores['tracking_uri']!r}, progress=False,
                             trial_callbacks=[kill_the_one_waiting])
        print(json.dumps({{"states": result.states, "ahead": ahead, "left": processes()}}))
    """))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, text=True,
                          capture_output=True, timeout=300,
                          env={**os.environ, **QUIET_ENV,
                               "PYTHONPATH": str(Path(__file__).parent)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import json

    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["states"] == {"COMPLETE": 3}
    # After each trial, one process waits for the next trial, and none is left at the end.
    assert [len(pids) for pids in report["ahead"]] == [1, 1, 1]
    assert report["left"] == []
    assert all(_gone(pid, within=5) for pids in report["ahead"] for pid in pids)
