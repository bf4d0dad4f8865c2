"""study.warm_start: the completed trials of an earlier study (or of an MLflow experiment's
mltune runs) seed a new study, mapped onto its search space, before it samples."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import tiny_study
from mlflow import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution

from mltune import load_studies, register_best, tune
from mltune._cli import app
from mltune._config import load_config, parse_config
from mltune._errors import ConfigError, MltuneError
from mltune._progress import PlainProgress
from mltune._storage import open_storage, store_config

LR = FloatDistribution(1e-4, 1e-1, log=True)
OPTIMIZERS = CategoricalDistribution(["adam", "sgd"])
FILTERS = CategoricalDistribution([4, 8])


def make_source(storage: str, name: str, trials: list[tuple[dict[str, Any], Any]], *,
                objectives: tuple[tuple[str, str], ...] = (("val_accuracy", "maximize"),),
                raw: dict[str, Any] | None = None) -> None:
    """A finished study as mltune leaves one, without training: its trials (with made-up
    run ids), metric names and study file (for the settings it fixed)."""
    store = open_storage(storage)
    study = optuna.create_study(study_name=name, storage=store,
                                directions=[d for _, d in objectives])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([m for m, _ in objectives])
    store_config(study, store, raw or tiny_study())
    dists = {"learning_rate": LR, "optimizer": OPTIMIZERS, "filters": FILTERS}
    for i, (params, values) in enumerate(trials):
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: dists[k] for k in params},
            values=values if isinstance(values, list) else [values],
            user_attrs={"mlflow_run_id": f"run-{i}"}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))


def trials_of(name: str, storage: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(storage)).trials


def parent_of(tracking_uri: str, experiment: str) -> Any:
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    return (next(r for r in runs if "mlflow.parentRunId" not in r.data.tags),
            [r for r in runs if "mlflow.parentRunId" in r.data.tags])


def test_a_changed_space_takes_the_trials_that_fit(write_study, stores, capsys) -> None:
    source = tiny_study(data={"max_samples": 480})  # measured on more data
    source["model"]["dense_units"] = 16  # fixed in the source, searched now
    make_source(stores["storage"], "src", [
        ({"learning_rate": 0.005, "optimizer": "adam", "filters": 8}, 0.5),  # taken
        ({"learning_rate": 0.001, "optimizer": "adam", "filters": 4}, 0.6),  # lr below range
        ({"learning_rate": 0.004, "optimizer": "sgd", "filters": 4}, 0.7),  # not the fixed adam
        ({"learning_rate": 0.002, "optimizer": "adam", "filters": 4}, 0.4),  # taken
    ], raw=source)
    study = tiny_study(
        study={"name": "dst", "n_trials": 1, "warm_start": {"study": "src"}},
        training={"optimizer": "adam"},
        search_space={"learning_rate": {"type": "float", "low": 0.002, "high": 0.01, "log": True},
                      "filters": {"type": "categorical", "choices": [4, 8]},
                      "dense_units": {"type": "categorical", "choices": [16, 32]}})
    del study["model"]["dense_units"]
    path = write_study(study)
    result = tune(load_config(path), **stores)

    trials = trials_of("dst", stores["storage"])
    label = f"study 'src' in {stores['storage']}"
    seeded = [t for t in trials if "mltune_warm_start" in t.user_attrs]
    assert [(t.number, t.params, t.values) for t in seeded] == [
        (0, {"learning_rate": 0.005, "filters": 8, "dense_units": 16}, [0.5]),
        (1, {"learning_rate": 0.002, "filters": 4, "dense_units": 16}, [0.4])]
    assert [t.user_attrs for t in seeded] == [
        {"mltune_warm_start": label, "mlflow_run_id": "run-0"},
        {"mltune_warm_start": label, "mlflow_run_id": "run-3"}]
    assert result.n_trials == 3 and result.states == {"COMPLETE": 3}  # n_trials new ones
    out = capsys.readouterr().out
    assert (f"note: warm start: 2 of 4 trials of {label} taken (1 outside the new range of "
            "learning_rate, 1 with optimizer other than its fixed value 'adam'); the source "
            "was trained on other data (data.max_samples): its values are taken as they are"
            ) in out
    parent, children = parent_of(stores["tracking_uri"], "dst")
    assert parent.data.tags["mltune.warm_start"] == f"{label}: 2 of 4 trials taken"
    assert [c.data.tags["mltune.trial_number"] for c in children] == ["2"]

    again = tune(load_config(path), **stores)  # resumed: not seeded twice
    trials = trials_of("dst", stores["storage"])
    assert again.n_trials == 4
    assert sum("mltune_warm_start" in t.user_attrs for t in trials) == 2
    assert "warm start" not in capsys.readouterr().out


def test_the_best_is_one_of_the_studys_own_trials(write_study, stores) -> None:
    """A seeded trial no new trial beats is not the study's best: its run and model are
    the source's. The best, the one `mltune register` registers and `mltune studies` shows,
    is the best trial this study ran, and its model was logged."""
    make_source(stores["storage"], "src", [
        ({"learning_rate": 0.005, "filters": 8}, 1.0),  # unbeatable; run-0 is no run
    ])
    path = write_study(study={"name": "own", "n_trials": 1, "warm_start": {"study": "src"}})
    result = tune(load_config(path), **stores)
    parent, [child] = parent_of(stores["tracking_uri"], "own")
    assert result.best_trial == 1 and result.best_run_id == child.info.run_id
    assert result.best_value == pytest.approx(child.data.metrics["val_accuracy"])
    assert result.best_value < 1.0
    assert result.best_model_uri is not None  # logged, though the seeded trial is better
    assert parent.data.tags["mltune.best_run_id"] == child.info.run_id
    [row] = load_studies(**stores).query("study == 'own'").to_dict("records")
    assert (row["best_trial"], row["best_value"]) == (1, result.best_value)

    registration = register_best(study_name="own", name="digits", **stores)
    version = MlflowClient(stores["tracking_uri"]).get_model_version("digits",
                                                                     registration.version)
    assert version.run_id == child.info.run_id


class StopAtWarmStart(PlainProgress):
    """Ctrl-C the moment the warm start's note is printed, once the seeds are in; and what a
    start beside this one would find in the study then."""

    def __init__(self, storage: str, name: str) -> None:
        super().__init__("val_accuracy")
        self.storage, self.name = storage, name
        self.found: dict[str, Any] | None = None

    def message(self, text: str) -> None:
        super().message(text)
        if text.startswith("note: warm start") and self.found is None:
            study = optuna.load_study(study_name=self.name, storage=open_storage(self.storage))
            self.found = {"seeded": len(study.trials), **study.user_attrs}
            raise KeyboardInterrupt


def test_a_start_stopped_while_seeding_ends_its_parent_and_publishes_it_last(
        write_study, stores) -> None:
    """The parent run is recorded in the study last, once the seeds are in: a concurrent
    start that finds it samples with the seeds. A start stopped before that (here: Ctrl-C
    while seeding) ends its parent run, which the study keeps: the next start resumes it."""
    from mltune._study import run_study

    make_source(stores["storage"], "src", [({"learning_rate": 0.005, "filters": 8}, 0.9)])
    config = load_config(write_study(study={"name": "stop", "n_trials": 1,
                                            "warm_start": {"study": "src"}}))
    progress = StopAtWarmStart(stores["storage"], "stop")
    with pytest.raises(KeyboardInterrupt):
        run_study(config, progress=progress, **stores)
    assert progress.found is not None and progress.found["seeded"] == 1
    assert "mlflow_parent_run_id" not in progress.found  # not yet: the seeds came first
    parent, children = parent_of(stores["tracking_uri"], "stop")
    assert parent.info.status == "KILLED" and children == []  # not left RUNNING
    study = optuna.load_study(study_name="stop", storage=open_storage(stores["storage"]))
    assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id

    result = tune(config, **stores)
    assert result.parent_run_id == parent.info.run_id and result.n_trials == 2
    parent, [_] = parent_of(stores["tracking_uri"], "stop")
    assert parent.info.status == "FINISHED"


def test_a_study_without_trials_is_seeded_at_its_next_start(write_study, stores, capsys
                                                            ) -> None:
    """Seeding waits for no particular process: a study with no trial yet (prepared for
    workers, or whose creator was stopped before it seeded) is seeded by its next start."""
    make_source(stores["storage"], "src", [({"learning_rate": 0.005, "filters": 8}, 0.9)])
    tune(load_config(write_study(study={"name": "later", "n_trials": 1})), workers=0, **stores)
    assert trials_of("later", stores["storage"]) == []
    path = write_study(study={"name": "later", "n_trials": 1, "warm_start": {"study": "src"}})
    result = tune(load_config(path), **stores)
    trials = trials_of("later", stores["storage"])
    assert [(t.params, t.values, "mltune_warm_start" in t.user_attrs) for t in trials[:1]] == [
        ({"learning_rate": 0.005, "filters": 8}, [0.9], True)]
    assert result.n_trials == 2 and not trials[1].user_attrs.get("mltune_warm_start")
    assert "note: warm start: 1 of 1 trials of study 'src'" in capsys.readouterr().out


def test_a_warm_started_grid_runs_only_the_points_not_measured(write_study, stores) -> None:
    make_source(stores["storage"], "src", [
        ({"learning_rate": 0.002, "filters": 4}, 0.3),
        ({"learning_rate": 0.004, "filters": 8}, 0.4),
        ({"learning_rate": 0.003, "filters": 8}, 0.9),  # between grid points
    ])
    path = write_study(study={"name": "grid", "sampler": "grid", "n_trials": None,
                              "warm_start": {"study": "src"}},
                       search_space={
                           "learning_rate": {"type": "float", "low": 0.002, "high": 0.004,
                                             "step": 0.002},
                           "filters": {"type": "categorical", "choices": [4, 8]}})
    # Prepared for workers, with one of the two points left queued (as an interrupted
    # session leaves it): the next start runs both, the queued one and the other.
    tune(load_config(path), n_trials=1, workers=0, **stores)
    assert [t.state.name for t in trials_of("grid", stores["storage"])] == [
        "COMPLETE", "COMPLETE", "WAITING"]
    result = tune(load_config(path), **stores)
    trials = trials_of("grid", stores["storage"])
    points = sorted((t.params["learning_rate"], t.params["filters"]) for t in trials)
    assert points == [(0.002, 4), (0.002, 8), (0.004, 4), (0.004, 8)]
    assert result.n_trials == 4
    _, children = parent_of(stores["tracking_uri"], "grid")
    assert sorted((c.data.params["learning_rate"], c.data.params["filters"])
                  for c in children) == [("0.002", "8"), ("0.004", "4")]


def test_warm_start_from_an_experiment(write_study, stores, capsys) -> None:
    tune(load_config(write_study(study={"name": "first", "n_trials": 2, "experiment": "cnn"},
                                 name="first.yaml")), **stores)
    first = trials_of("first", stores["storage"])
    path = write_study(study={"name": "second", "n_trials": 1, "experiment": "cnn",
                              "sampler": "tpe", "warm_start": {"experiment": "cnn"}},
                       training={"epochs": 2})
    result = tune(load_config(path), **stores)
    seeded = trials_of("second", stores["storage"])[:2]
    # with the source's runs and models (for the reader: the best is among the new trials)
    assert "mlflow_model_uri" in first[0].user_attrs
    assert [(t.params, t.values, t.user_attrs) for t in seeded] == [
        (t.params, t.values, {"mltune_warm_start": "experiment 'cnn'", **{
            k: v for k, v in t.user_attrs.items() if k in ("mlflow_run_id", "mlflow_model_uri")}})
        for t in first]
    assert result.n_trials == 3
    assert "note: warm start: 2 of 2 trials of experiment 'cnn' taken" in capsys.readouterr().out


@pytest.mark.parametrize(("warm", "key", "message"), [
    ({"study": "nope"}, "study.warm_start.study", "no study named 'nope'"),
    ({"study": "src", "storage": "elsewhere.log"}, "study.warm_start.study",
     "no Optuna storage at"),
    ({"study": "tiny"}, "study.warm_start.study", "a study cannot seed itself"),
    ({"study": "loss"}, "study.warm_start.study", "measured val_loss, not val_accuracy"),
    ({"experiment": "nope"}, "study.warm_start.experiment", "no MLflow experiment 'nope'"),
], ids=["no-study", "no-storage", "itself", "other-metric", "no-experiment"])
def test_a_bad_source_exits_2_and_writes_nothing(warm, key, message, write_study, stores
                                                 ) -> None:
    from typer.testing import CliRunner

    make_source(stores["storage"], "loss", [], objectives=(("val_loss", "minimize"),))
    path = write_study(study={"warm_start": warm})
    result = CliRunner().invoke(app, ["tune", str(path), "--tracking-uri",
                                      stores["tracking_uri"], "--storage", stores["storage"]])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {key} in {path}: ")
    assert message in result.stderr
    assert optuna.get_all_study_names(open_storage(stores["storage"])) == ["loss"]
    client = MlflowClient(stores["tracking_uri"])
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.mark.parametrize(("warm", "key"), [
    ({"study": "a", "experiment": "b"}, "study.warm_start.study"),
    ({}, "study.warm_start.study"),
    ({"experiment": "b", "storage": "x.log"}, "study.warm_start.storage"),
    ({"study": "a", "runs": 3}, "study.warm_start.runs"),
])
def test_warm_start_keys_are_checked(warm, key) -> None:
    with pytest.raises(ConfigError, match=f"^{key.replace('.', '[.]')} in x.yaml: "):
        parse_config(tiny_study(study={"warm_start": warm}), source="x.yaml")


def test_warm_start_is_read(tmp_path: Path) -> None:
    cfg = parse_config(tiny_study(study={"warm_start": {"study": "a", "storage": "b.log"}}))
    assert cfg.study.warm_start == {"study": "a", "storage": "b.log"}


def test_a_multi_objective_study_is_seeded_and_its_front_tags_only_its_runs(
        write_study, stores) -> None:
    objectives = (("val_accuracy", "maximize"), ("params", "minimize"))
    make_source(stores["storage"], "src", [
        ({"learning_rate": 0.005, "filters": 8}, [0.99, 10.0]),  # the front: run-0 is no run
        ({"learning_rate": 0.005, "filters": 4}, [0.2, 1e9]),
    ], objectives=objectives)
    path = write_study(study={"name": "mo", "n_trials": 1, "warm_start": {"study": "src"},
                              "objectives": [{"metric": m, "direction": d}
                                             for m, d in objectives]})
    result = tune(load_config(path), **stores)
    _, [child] = parent_of(stores["tracking_uri"], "mo")
    # The seeded trial dominates the new one, but the front is of the study's own trials.
    assert result.best_trial == 2 and result.best_run_id == child.info.run_id
    assert result.best_values["val_accuracy"] < 0.99
    assert child.data.tags["mltune.pareto_front"] == "true"


@pytest.mark.parametrize("sampler", ["random", "tpe", "cmaes", "qmc", "gp"])
def test_every_sampler_goes_on_from_seeded_trials(sampler: str, stores) -> None:
    """The sampler contract, without training: seeded trials, then trials it samples."""
    from mltune._samplers import create_sampler
    from mltune._search_space import suggest_all
    from mltune._warm_start import read_source

    make_source(stores["storage"], "src", [
        ({"learning_rate": 0.001 * (i + 1), "filters": 4 + 4 * (i % 2)}, 0.1 * i)
        for i in range(6)])
    try:
        config = parse_config(tiny_study(study={"sampler": sampler,
                                                "warm_start": {"study": "src"}}))
    except ConfigError as e:  # a sampler whose package is not installed
        pytest.skip(str(e))
    warm = read_source(config, None, stores["storage"])  # type: ignore[arg-type]
    assert len(warm.trials) == 6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(direction="maximize",
                                    sampler=create_sampler(config.study, config.search_space))
        study.add_trials(warm.trials)
        for _ in range(3):
            trial = study.ask()
            params = suggest_all(config.search_space, trial)
            study.tell(trial, 0.5)
            assert 1e-3 <= params["learning_rate"] <= 1e-2 and params["filters"] in (4, 8)
    assert len(study.trials) == 9


def test_a_measured_grid_runs_nothing_and_has_no_best_of_its_own(write_study, stores) -> None:
    space = {"filters": {"type": "categorical", "choices": [4, 8]}}
    tune(load_config(write_study(study={"name": "v1", "sampler": "grid", "n_trials": None},
                                 search_space=space, name="v1.yaml")), **stores)
    path = write_study(study={"name": "v2", "sampler": "grid", "n_trials": None,
                              "warm_start": {"study": "v1"}},
                       training={"epochs": 2}, search_space=space, name="v2.yaml")
    result = tune(load_config(path), **stores)
    assert result.n_trials == 2 and result.best_trial is None and result.best_run_id is None
    _, children = parent_of(stores["tracking_uri"], "v2")
    assert children == []
    with pytest.raises(MltuneError, match=r"^study 'v2' has no completed trial to register "
                       r"\(its 2 warm-start trials are another study's: register that "
                       r"study's best\)$"):
        register_best(study_name="v2", name="digits", **stores)


def test_a_grid_queued_again_keeps_each_point_once() -> None:
    """Points an interrupted session left queued count towards the limit, and are not
    queued twice."""
    from mltune._launcher import enqueue_grid

    choices = {"filters": [4, 8, 16], "dense_units": [8, 16]}
    space = parse_config(tiny_study(search_space={
        k: {"type": "categorical", "choices": v} for k, v in choices.items()})).search_space
    study = optuna.create_study()
    assert enqueue_grid(study, space, limit=2) == 2
    assert enqueue_grid(study, space, limit=3) == 3  # the 2 still queued and 1 more
    assert enqueue_grid(study, space, limit=1) == 1  # 3 wait; a session runs 1 of them
    points = []
    study.optimize(lambda t: points.append(tuple(t.suggest_categorical(k, v) for k, v in
                                                 choices.items())) or 0.0, n_trials=3)
    assert len(set(points)) == 3
    assert not study.get_trials(states=(optuna.trial.TrialState.WAITING,))
