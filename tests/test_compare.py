"""``mltune compare`` / ``mltune.compare``: samplers on equal budget, each over seeds, one
MLflow run for the comparison with the studies' parent runs beneath it."""

from __future__ import annotations

import datetime as dt
import importlib.util
import math
from pathlib import Path

import optuna
import pandas as pd
import pytest
from conftest import tiny_study
from mlflow import MlflowClient
from typer.testing import CliRunner

import mltune
from mltune import ConfigError
from mltune._cli import app
from mltune._compare import _curve, _first_reach, parse_budget

runner = CliRunner()
# A grid of 4 points, so grid runs beside the others.
GRID_SPACE = {"learning_rate": {"type": "categorical", "choices": [1e-3, 1e-2]},
              "filters": {"type": "categorical", "choices": [4, 8]}}


def invoke(*args: object) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def store_args(stores: dict[str, str]) -> list[str]:
    return ["--tracking-uri", stores["tracking_uri"], "--storage", stores["storage"]]


def nothing_written(stores: dict[str, str], tmp_path: Path) -> bool:
    return not Path(stores["storage"]).exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_compare_runs_each_sampler_and_seed_as_a_study_under_one_run(stores, tmp_path) -> None:
    samplers = ("tpe", "grid")  # in the order given, not sorted; random: the CLI test
    out = tmp_path / "out"
    result = mltune.compare(tiny_study(search_space=GRID_SPACE), samplers=",".join(samplers),
                            budget=2, seeds=2, output=out, progress=False, **stores)

    # The result: one row per sampler, in the order given, and a winner among them.
    assert list(result.table["sampler"]) == list(samplers)
    assert list(result.table["studies"]) == [2, 2]
    assert result.winner in samplers and result.runner_up in samplers
    assert result.winner != result.runner_up
    best = result.table.set_index("sampler")["best_val_accuracy_mean"]
    assert best[result.winner] == best.max()
    assert result.margin == pytest.approx(best[result.winner] - best[result.runner_up])
    assert isinstance(result.within_spread, bool)
    assert result.test_metric == "test_accuracy"
    assert result.table["test_accuracy_mean"].between(0, 1).all()
    assert (result.table["seconds_to_99_min"] > 0).all()
    assert result.budget == "2 trials" and result.summary.startswith(f"winner: {result.winner}")

    # MLflow: the comparison's run, its children the studies' parent runs, one experiment.
    client = MlflowClient(stores["tracking_uri"])
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "compare-tiny"
    assert run.data.tags["mltune.compare"] == "tpe,grid"
    assert run.data.tags["mltune.winner"] == result.winner
    assert client.get_experiment(run.info.experiment_id).name == "tiny"
    assert run.data.metrics[f"{result.winner}.best_val_accuracy"] == pytest.approx(
        best[result.winner])
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"comparison.html", "comparison.png", "comparison.csv", "comparison.md",
            "studies.csv", "curves.csv"} <= artifacts
    children = client.search_runs([run.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{result.run_id}'")
    expected = {f"tiny-{s}-seed{k}" for s in samplers for k in (0, 1)}
    assert {c.info.run_name for c in children} == expected
    for child in children:
        name = child.info.run_name
        sampler = name.split("-")[1]
        assert child.data.tags["mltune.sampler"] == sampler
        assert child.info.status == "FINISHED"
        # Optuna: the study of that name, its parent run this child, its budget of trials.
        study = mltune.load_study(name, **stores)
        assert study.user_attrs["mlflow_parent_run_id"] == child.info.run_id
        assert len(study.trials) == 2
        assert all(t.state.name == "COMPLETE" for t in study.trials)
        if sampler == "grid":  # two different points of the grid
            assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 2
        # Its trial runs stay beneath it.
        trial_runs = client.search_runs([run.info.experiment_id],
                                        f"tags.mlflow.parentRunId = '{child.info.run_id}'")
        assert len(trial_runs) == 2
    seeds = result.studies.set_index("study")["seed"]
    assert seeds["tiny-tpe-seed0"] == 1 and seeds["tiny-tpe-seed1"] == 2  # study.seed + k

    # The files: the same in the output folder; the page embeds plotly.js and two figures.
    page = (out / "comparison.html").read_text()
    assert page.count('class="mltune-figure"') == 2 and len(page) > 3_000_000
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    table = pd.read_csv(out / "comparison.csv")
    assert list(table["sampler"]) == list(samplers)
    assert result.winner in (out / "comparison.md").read_text()


@pytest.mark.slow
def test_cli_compare_on_a_time_budget_then_refuses_to_reuse_its_studies(
        write_study, stores, tmp_path) -> None:
    path = write_study()
    out = tmp_path / "cmp"
    args = ["compare", path, "--samplers", "random,tpe", "--budget", "2s", "--seeds", "1",
            "--study-name", "timed", "--output", out, *store_args(stores)]
    code, stdout, err = invoke(*args)
    assert code == 0, stdout + err
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["sampler", "studies"])
    assert [lines[header + 1].split()[0], lines[header + 2].split()[0]] == ["random", "tpe"]
    assert "one seed: no spread" in stdout
    assert f"comparison timed: figures and table in {out}" in stdout
    assert (out / "comparison.png").exists() and (out / "comparison.html").exists()
    client = MlflowClient(stores["tracking_uri"])
    (run,) = client.search_runs([client.get_experiment_by_name("timed").experiment_id],
                                "tags.`mltune.compare` = 'random,tpe'")
    assert run.data.params["budget"] == "2 s"
    for sampler in ("random", "tpe"):
        assert mltune.load_study(f"timed-{sampler}-seed0", **stores).trials

    code, _, err = invoke(*args)
    assert code == 2
    assert "--study-name" in err and "timed-random-seed0, timed-tpe-seed0 exist already" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("budget", ["abc", "0", "10x", "-5", "1.5"])
def test_a_bad_budget_exits_2_naming_it_and_writes_nothing(budget, write_study, stores,
                                                            tmp_path) -> None:
    code, _, err = invoke("compare", write_study(), "--samplers", "random,tpe",
                          "--budget", budget, *store_args(stores))
    assert code == 2
    assert err.startswith("error: --budget: must be a number of trials per study")
    assert f"but got '{budget}'" in err and "Traceback" not in err
    assert nothing_written(stores, tmp_path)


@pytest.mark.parametrize(("samplers", "message"), [
    ("random,annealing", "must list samplers, comma-separated, of random, grid, tpe"),
    ("tpe,random,tpe", "tpe comes more than once"),
    (",", "must list samplers"),
])
def test_bad_samplers_exit_2_naming_the_option(samplers, message, write_study, stores,
                                               tmp_path) -> None:
    code, _, err = invoke("compare", write_study(), "--samplers", samplers, "--budget", "2",
                          *store_args(stores))
    assert code == 2
    assert err.startswith("error: --samplers: ") and message in err
    assert nothing_written(stores, tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed")
def test_gp_without_torch_is_refused_with_the_samplers_message(write_study, stores,
                                                               tmp_path) -> None:
    code, _, err = invoke("compare", write_study(), "--samplers", "random,gp", "--budget", "2",
                          *store_args(stores))
    assert code == 2
    assert err.strip() == ("error: --samplers: sampler 'gp' needs the package(s) torch; "
                           "install them with pip install 'mltune[gp]'")
    assert nothing_written(stores, tmp_path)


def test_a_sampler_that_cannot_run_the_space_names_the_key_and_the_sampler(
        write_study, stores, tmp_path) -> None:
    path = write_study()  # learning_rate is a float without step: no grid
    code, _, err = invoke("compare", path, "--samplers", "random,grid", "--budget", "2",
                          *store_args(stores))
    assert code == 2
    assert err.startswith(f"error: search_space.learning_rate in {path}: grid search needs")
    assert "(with sampler 'grid' of --samplers)" in err
    assert nothing_written(stores, tmp_path)


def test_several_objectives_are_refused(write_study, stores, tmp_path) -> None:
    path = write_study(study={"objectives": [{"metric": "val_accuracy"},
                                             {"metric": "params", "direction": "minimize"}]})
    code, _, err = invoke("compare", path, "--samplers", "random,tpe", "--budget", "2",
                          *store_args(stores))
    assert code == 2
    assert err.startswith(f"error: study.objectives in {path}: compare ranks samplers by one")
    assert nothing_written(stores, tmp_path)


def test_the_api_refuses_what_compare_sets_itself(stores) -> None:
    with pytest.raises(ConfigError, match=r"^n_trials: is set by compare .* from budget="):
        mltune.compare(tiny_study(), samplers="random", budget=2, n_trials=5, **stores)
    with pytest.raises(ConfigError, match=r"^--seeds: must be an integer >= 1, but got 0"):
        mltune.compare(tiny_study(), samplers="random", budget=2, seeds=0, **stores)
    with pytest.raises(TypeError, match="unexpected keyword argument 'n_trails'"):
        mltune.compare(tiny_study(), samplers="random", budget=2, n_trails=5, **stores)


def test_budgets_in_trials_and_in_time() -> None:
    assert parse_budget(20).trials == 20 and parse_budget(" 7 ").trials == 7
    assert parse_budget("600s").seconds == 600 and parse_budget("10m").seconds == 600
    assert parse_budget("1.5h").seconds == 5400 and str(parse_budget("90s")) == "90 s"


def test_time_to_99_percent_of_the_best_for_minimize_and_maximize() -> None:
    """Best so far in trial order and in time order; the first point within 1% of the
    study's final best (for a loss: at most best + 1%)."""
    start = dt.datetime(2026, 1, 1)
    dist = optuna.distributions.FloatDistribution(0, 1)
    study = optuna.create_study(direction="minimize")
    for i, value in enumerate([2.0, None, 1.005, 1.0]):
        state = optuna.trial.TrialState.COMPLETE if value is not None else (
            optuna.trial.TrialState.FAIL)
        study.add_trial(optuna.trial.FrozenTrial(
            number=i, state=state, value=value, datetime_start=start + dt.timedelta(seconds=10 * i),
            datetime_complete=start + dt.timedelta(seconds=10 * i + 5), params={"x": 0.5},
            distributions={"x": dist}, user_attrs={}, system_attrs={}, intermediate_values={},
            trial_id=i))
    curve = _curve(study, maximize=False)
    assert curve.by_trial == [2.0, 2.0, 1.005, 1.0]  # a failed trial keeps the best so far
    # 1.005 <= 1.0 + 1%: reached at the third trial, 25 s after the first trial started
    assert _first_reach(range(1, 5), curve.by_trial, 1.0, False) == 3
    assert _first_reach(curve.times, curve.by_time, 1.0, False) == 25.0
    # maximize: 0.99 of the best
    assert _first_reach([1, 2], [0.985, 0.991], 1.0, True) == 2
    assert math.isnan(_first_reach([1], [math.nan], 1.0, True))


def test_compare_help_names_its_options() -> None:
    code, out, _ = invoke("compare", "--help")
    assert code == 0
    for option in ("--samplers", "--budget", "--seeds", "--study-name",
                   "--output", "--storage", "--tracking-uri", "--set", "--debug"):
        assert option in out
