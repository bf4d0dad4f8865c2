"""Pruners: study-file checks, pruned trials read back through MlflowClient, advice."""

from __future__ import annotations

import re

import pytest
from mlflow import MlflowClient
from test_tune import load_study, runs_of

from mltune import tune
from mltune._config import load_config, parse_config
from mltune._errors import ConfigError

# Adam at 0.01 learns the digits within an epoch; at 1e-7 it stays at chance. The grid (seed 1)
# runs the fast trial first; the median pruner, watching from the second trial on, then
# prunes the slow one before its last epoch (TensorFlow on 2 threads is not bit-exact).
SLOW_AND_FAST = {"learning_rate": {"type": "categorical", "choices": [0.01, 1e-7]}}


def _study(**study: object) -> dict[str, object]:
    from conftest import tiny_study

    return tiny_study(study={"name": "p", **study}, training={"epochs": 3, "batch_size": 8},
                      search_space=SLOW_AND_FAST)


@pytest.mark.parametrize(("study", "key", "message"), [
    ({"pruner": "asha"}, "study.pruner", "must be one of none, median, percentile, "
     "successive_halving, hyperband, pareto, but got 'asha'"),
    ({"pruner": "median", "pruner_options": {"n_warmup": 1}}, "study.pruner_options.n_warmup",
     "is not an option of pruner 'median'; its options: n_startup_trials, n_warmup_steps"),
    ({"pruner": "percentile"}, "study.pruner_options.percentile", "must be set for pruner "
     "'percentile'"),
    ({"pruner": "hyperband", "pruner_options": {"reduction_factor": 1}},
     "study.pruner_options.reduction_factor", "must be an integer >= 2, but got 1"),
    ({"pruner": "hyperband", "pruner_options": {"max_resource": 0}},
     "study.pruner_options.max_resource", "must be an integer >= min_resource (1)"),
    ({"pruner": "successive_halving", "pruner_options": {"reduction_factor": 1}},
     "study.pruner_options", "pruner 'successive_halving' rejects them"),
    ({"pruner": "median", "pruner_options": [1]}, "study.pruner_options",
     "must be a mapping"),
])
def test_bad_pruner_settings_name_the_key(study: dict[str, object], key: str,
                                          message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(_study(**study), source="s.yaml")
    assert e.value.key == key and message in str(e.value), str(e.value)


def test_tpe_with_hyperband_says_how_many_startup_trials_it_needs() -> None:
    cfg = parse_config(_study(sampler="tpe", n_trials=12, pruner="hyperband",
                              pruner_options={"min_resource": 1, "reduction_factor": 3},
                              ), source="s.yaml")
    # 3 epochs at reduction factor 3: brackets for 1 and 3 epochs, 10 random trials each.
    assert any("hyperband's 2 brackets has 10 trials" in n and "about 20 trials" in n
               and "the study has 12" in n for n in cfg.notes), cfg.notes
    enough = parse_config(_study(sampler="tpe", n_trials=12, pruner="hyperband",
                                 sampler_options={"n_startup_trials": 4}), source="s.yaml")
    assert enough.notes == ()


def test_pruning_one_epoch_trials_is_pointless_and_said_so() -> None:
    from conftest import tiny_study

    cfg = parse_config(tiny_study(study={"pruner": "median"}), source="s.yaml")
    assert any("nothing to save" in n for n in cfg.notes), cfg.notes


def test_pruned_trial_is_killed_with_the_epoch_it_stopped_at(write_study, stores, capsys
                                                              ) -> None:
    path = write_study(_study(sampler="grid", n_trials=None, seed=1, pruner="median",
                              pruner_options={"n_startup_trials": 1, "n_warmup_steps": 0}))
    result = tune(load_config(path), **stores)
    study = load_study("p", stores["storage"])
    assert [(t.params["learning_rate"], t.state.name) for t in study.trials] == [
        (0.01, "COMPLETE"), (1e-7, "PRUNED")]
    assert result.states == {"COMPLETE": 1, "PRUNED": 1}
    pruned, complete = study.trials[1:], study.trials[:1]
    assert re.search(r"\[2/2\] trial 1 PRUNED val_accuracy=0\.\d+ \(at epoch [12] of 3\); best ",
                     capsys.readouterr().out)
    client = MlflowClient(stores["tracking_uri"])
    parent, children = runs_of(stores["tracking_uri"], "p")
    assert parent.data.tags["mltune.pruner"] == "median"
    assert parent.data.metrics["trials_pruned"] == len(pruned)
    by_number = {int(c.data.tags["mltune.trial_number"]): c for c in children}
    for t in pruned:
        run = by_number[t.number]
        assert run.info.status == "KILLED" and run.data.tags["mltune.state"] == "PRUNED"
        epoch = int(run.data.tags["mltune.pruned_at_epoch"])
        assert 1 <= epoch < 3 and t.user_attrs["epochs_run"] == epoch
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [m.step for m in history] == list(range(1, epoch + 1))  # no wasted epochs
        assert "best_val_accuracy" in run.data.metrics and "mlflow.log-model.history" not in (
            run.data.tags)
    for t in complete:
        run = by_number[t.number]
        assert run.info.status == "FINISHED" and "mltune.pruned_at_epoch" not in run.data.tags
        assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 3
        assert sorted(t.intermediate_values) == [1, 2, 3]


def test_a_trial_is_never_pruned_after_its_last_epoch(write_study, stores) -> None:
    # Optuna's median pruner judges a trial from step n_warmup_steps on: here the slow
    # trial's last epoch (3 of 3), when stopping it saves nothing; it completes.
    path = write_study(_study(sampler="grid", n_trials=None, seed=1, pruner="median",
                              pruner_options={"n_startup_trials": 1, "n_warmup_steps": 3}))
    result = tune(load_config(path), **stores)
    study = load_study("p", stores["storage"])
    assert result.states == {"COMPLETE": 2}
    slow = next(t for t in study.trials if t.params["learning_rate"] == 1e-7)
    fast = next(t for t in study.trials if t.params["learning_rate"] == 0.01)
    assert slow.value is not None and slow.value < fast.value  # would have been pruned
    assert sorted(slow.intermediate_values) == [1, 2, 3]
    _, children = runs_of(stores["tracking_uri"], "p")
    assert [r.info.status for r in children] == ["FINISHED", "FINISHED"]
    assert not any("mltune.pruned_at_epoch" in r.data.tags for r in children)


def test_hyperband_with_tpe_runs_and_every_run_matches_its_trial(write_study, stores) -> None:
    path = write_study(_study(sampler="tpe", n_trials=6, seed=2, pruner="hyperband",
                              sampler_options={"n_startup_trials": 2},
                              pruner_options={"min_resource": 1, "reduction_factor": 3}))
    result = tune(load_config(path), **stores)
    assert sum(result.states.values()) == 6
    assert set(result.states) <= {"COMPLETE", "PRUNED"}
    study = load_study("p", stores["storage"])
    _, children = runs_of(stores["tracking_uri"], "p")
    status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}
    for t, run in zip(study.trials, children, strict=True):
        assert run.info.status == status[t.state.name]
        assert ("mltune.pruned_at_epoch" in run.data.tags) == (t.state.name == "PRUNED")
