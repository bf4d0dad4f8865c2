"""What a failure does next, decided in one place: a bad setup every trial would repeat stops
the study before (or at) its first trial; a trial that fails by itself fails alone, until
``study.max_consecutive_failures`` of them in a row stop the study."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from conftest import QUIET_ENV
from mlflow import MlflowClient

from mltune._storage import open_storage


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mltune", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=600, env={**os.environ, **QUIET_ENV})


def trials(name: str, storage: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(storage)).trials


@pytest.mark.slow
def test_a_resume_with_other_choices_is_refused_before_any_trial(write_study, stores,
                                                                 tmp_path) -> None:
    path = write_study(study={"name": "space", "n_trials": 1})
    common = ["--storage", stores["storage"], "--tracking-uri", stores["tracking_uri"]]
    first = cli("tune", str(path), *common, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    # The README's own override on a resumed study: Optuna cannot change a categorical's
    # choices within a study, so every later trial would fail.
    again = cli("tune", str(path), *common, "--set", "search_space.filters.choices=[16,32]",
                cwd=tmp_path)
    assert again.returncode == 2, again.stdout + again.stderr
    assert again.stderr == (
        f"error: search_space.filters in {path}: study 'space' already has trials with choices "
        "[4, 8], and Optuna cannot go on with choices [16, 32] in the same study: keep the "
        "earlier definition, or start a new study (--study-name NEW)\n")
    assert [t.state.name for t in trials("space", stores["storage"])] == ["COMPLETE"]
    client = MlflowClient(stores["tracking_uri"])
    runs = client.search_runs([client.get_experiment_by_name("space").experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}

    # A float range may move: Optuna samples the new one.
    moved = cli("tune", str(path), *common, "--n-trials", "1",
                "--set", "search_space.learning_rate.high=0.05", cwd=tmp_path)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert [t.state.name for t in trials("space", stores["storage"])] == ["COMPLETE"] * 2


@pytest.mark.parametrize(("options", "error"), [
    ({"n_startup_trials": "x"}, "TypeError: '<' not supported between instances of 'int' "
                                "and 'str'"),
    ({"gamma": 3}, "TypeError: 'int' object is not callable"),
])
def test_sampler_options_that_fail_only_when_sampling_are_refused_up_front(
        options, error, write_study, stores, tmp_path) -> None:
    path = write_study(study={"name": "opts", "sampler": "tpe", "sampler_options": options})
    proc = cli("tune", str(path), "--storage", stores["storage"], "--tracking-uri",
               stores["tracking_uri"], cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr == (f"error: study.sampler_options in {path}: sampler 'tpe' fails with "
                           f"them when it samples: {error}\n")
    assert not Path(stores["storage"]).exists() and not (tmp_path / "mlflow.db").exists()


BROKEN = '''
def build(params, *, input_shape, num_classes):
    raise ValueError(f"cannot build with {params['filters']} filters")
'''


@pytest.mark.slow
def test_failed_trials_in_a_row_stop_the_study(write_study, stores, tmp_path) -> None:
    (tmp_path / "broken.py").write_text(BROKEN)
    path = write_study(study={"name": "broken", "n_trials": 10, "max_consecutive_failures": 3},
                       model={"builder": "broken.py:build"})
    proc = cli("tune", str(path), "--storage", stores["storage"], "--tracking-uri",
               stores["tracking_uri"], cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    last = trials("broken", stores["storage"])[-1]
    assert proc.stderr.splitlines()[-1] == (
        f"error: study broken: 3 trials in a row failed, the last with ValueError: cannot "
        f"build with {last.params['filters']} filters; the study stops "
        "(study.max_consecutive_failures: 3, 0 never stops)")
    assert "Traceback" not in proc.stderr
    assert [t.state.name for t in trials("broken", stores["storage"])] == ["FAIL"] * 3
    client = MlflowClient(stores["tracking_uri"])
    runs = client.search_runs([client.get_experiment_by_name("broken").experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert parent.info.status == "FAILED"
    assert len(children) == 3 and {r.info.status for r in children} == {"FAILED"}
