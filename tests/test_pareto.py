"""The pareto pruner (``study.pruner: pareto``): its decision on hand-made values, its
study-file checks, and a study where small and large models compete, read back through
MlflowClient and Optuna."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from conftest import tiny_study
from mlflow import MlflowClient
from test_cli import invoke, store_args
from test_tune import load_study, runs_of

from mltune import tune
from mltune._config import load_config, parse_config
from mltune._errors import ConfigError
from mltune._pareto import ParetoOptions, epoch_values, should_prune, stored_values
from mltune._types import ObjectiveSpec

ACC_AND_SIZE = [{"metric": "val_accuracy", "direction": "maximize"},
                {"metric": "params", "direction": "minimize"}]
DIRECTIONS = ["maximize", "minimize"]
ATTR = "mltune_intermediate_values"


def _study(**study: object) -> dict[str, object]:
    return tiny_study(study={"name": "pp", "objectives": ACC_AND_SIZE, "pruner": "pareto",
                             **study}, training={"epochs": 3})


# --- the decision, on hand-made values ---------------------------------------------------

def test_a_trial_is_pruned_when_enough_others_dominate_it_at_that_epoch() -> None:
    small_good, big_bad = [0.90, 1_000.0], [0.50, 50_000.0]
    big_better = [0.95, 50_000.0]
    now = ParetoOptions(n_startup_trials=0, n_warmup_steps=0, n_dominating=1)
    # no worse on both, better on one: dominated
    assert should_prune([0.80, 5_000.0], [small_good], DIRECTIONS, epoch=1, options=now)
    assert should_prune([0.90, 5_000.0], [small_good], DIRECTIONS, epoch=1, options=now)
    # a trade-off (more accurate, larger) or an equal point is not dominated
    assert not should_prune(big_better, [small_good], DIRECTIONS, epoch=1, options=now)
    assert not should_prune(small_good, [small_good], DIRECTIONS, epoch=1, options=now)
    # n_dominating: two trials must dominate it; the large, worse one does not
    two = ParetoOptions(n_startup_trials=0, n_warmup_steps=0, n_dominating=2)
    assert not should_prune([0.80, 5_000.0], [small_good, big_bad], DIRECTIONS, epoch=1,
                            options=two)
    assert should_prune([0.80, 5_000.0], [small_good, [0.85, 2_000.0]], DIRECTIONS,
                        epoch=1, options=two)
    # directions count: minimising the loss, a lower loss is better
    assert should_prune([0.40, 10.0], [[0.30, 10.0]], ["minimize", "minimize"], epoch=1,
                        options=now)
    assert not should_prune([0.30, 10.0], [[0.40, 10.0]], ["minimize", "minimize"], epoch=1,
                            options=now)


def test_warm_up_epochs_and_startup_trials_hold_pruning_back() -> None:
    mine, others = [0.5, 9_000.0], [[0.9, 1_000.0], [0.8, 2_000.0]]
    defaults = ParetoOptions()
    assert (defaults.n_startup_trials, defaults.n_warmup_steps, defaults.n_dominating) == (
        5, 1, 1)
    warm = ParetoOptions(n_startup_trials=0, n_warmup_steps=2)
    assert not should_prune(mine, others, DIRECTIONS, epoch=2, options=warm)
    assert should_prune(mine, others, DIRECTIONS, epoch=3, options=warm)
    startup = ParetoOptions(n_startup_trials=3, n_warmup_steps=0)
    assert not should_prune(mine, others, DIRECTIONS, epoch=1, options=startup)
    assert should_prune(mine, [*others, [0.1, 1.0]], DIRECTIONS, epoch=1, options=startup)


def test_epoch_values_take_the_metric_of_the_epoch_and_the_built_models_size() -> None:
    objectives = [ObjectiveSpec("val_accuracy", "maximize"), ObjectiveSpec("params", "minimize"),
                  ObjectiveSpec("val_loss", "minimize")]
    static = {"params": 1234.0, "latency_ms": None}
    assert epoch_values(objectives, {"val_accuracy": 0.5, "val_loss": 1.5}, static) == [
        0.5, 1234.0, 1.5]
    assert epoch_values(objectives, {"val_accuracy": 0.5, "val_loss": math.nan}, static) is None
    assert epoch_values(objectives, {"val_accuracy": 0.5, "val_loss": 1.0}, {}) is None
    trial = optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED,
                                      user_attrs={ATTR: {"1": [0.5, 1234.0]}})
    assert stored_values(trial, 1) == [0.5, 1234.0] and stored_values(trial, 2) is None
    assert stored_values(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL), 1) is None


# --- the study file ----------------------------------------------------------------------

@pytest.mark.parametrize(("study", "key", "message"), [
    ({"objectives": None, "metric": "val_accuracy"}, "study.pruner",
     "pruner 'pareto' compares several objectives (study.objectives), but the study has one"),
    ({"pruner_options": {"n_dominate": 2}}, "study.pruner_options.n_dominate",
     "is not an option of pruner 'pareto'; its options: n_startup_trials, n_warmup_steps, "
     "n_dominating"),
    ({"pruner_options": {"n_dominating": 0}}, "study.pruner_options.n_dominating",
     "must be an integer >= 1, but got 0"),
    ({"pruner_options": {"n_warmup_steps": 1.5}}, "study.pruner_options.n_warmup_steps",
     "must be an integer >= 0, but got 1.5"),
    ({"pruner": "median"}, "study.pruner", "pruner 'median' compares one objective, but the "
     "study has several (study.objectives); use pruner 'pareto'"),
])
def test_bad_pareto_settings_name_the_key(study: dict[str, object], key: str, message: str
                                          ) -> None:
    config = _study(**study)
    if study.get("objectives", "") is None:
        config["study"].pop("objectives")  # type: ignore[union-attr]
    with pytest.raises(ConfigError) as e:
        parse_config(config, source="s.yaml")
    assert e.value.key == key and message in str(e.value), str(e.value)


def test_an_unknown_option_exits_2_and_writes_nothing(write_study, stores, tmp_path) -> None:
    path = write_study(_study(pruner_options={"min_trials": 3}))
    code, out, err = invoke("tune", path, *store_args(stores))
    assert code == 2, out + err
    assert err.startswith(f"error: study.pruner_options.min_trials in {path}: is not an "
                          "option of pruner 'pareto'"), err
    assert not Path(stores["storage"]).exists() and not (tmp_path / "mlflow.db").exists()


def test_pareto_pruning_that_cannot_save_an_epoch_is_said_so() -> None:
    cfg = parse_config(tiny_study(study={"objectives": ACC_AND_SIZE, "pruner": "pareto"},
                                  training={"epochs": 2}), source="s.yaml")
    assert any("pruner 'pareto' has nothing to save" in n for n in cfg.notes), cfg.notes
    assert parse_config(_study(pruner_options={"n_warmup_steps": 0, "n_startup_trials": 1}),
                        source="s.yaml").notes == ()


# --- a study: small and large models compete ---------------------------------------------

# Filters 4 or 32 (about 10x the parameters); Adam at 0.01 learns the digits within an epoch,
# at 1e-7 it stays at chance. Grid seed 6 runs the small, fast model first: the slow models,
# small and large, are then dominated after their first epoch.
SMALL_AND_LARGE = {"filters": {"type": "categorical", "choices": [4, 32]},
                   "learning_rate": {"type": "categorical", "choices": [0.01, 1e-7]}}


def _dominates(a: list[float], b: list[float]) -> bool:
    """``a`` beats ``b``: accuracy no lower, size no larger, one of them strictly."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


@pytest.mark.slow
@pytest.mark.parametrize("trial_process", ["fork", "none"])
def test_dominated_trials_are_pruned_killed_and_keep_their_epoch_values(
        trial_process: str, write_study, stores) -> None:
    path = write_study(tiny_study(
        study={"name": "pp", "objectives": ACC_AND_SIZE, "pruner": "pareto",
               "pruner_options": {"n_startup_trials": 1, "n_warmup_steps": 0},
               "sampler": "grid", "n_trials": None, "seed": 6, "trial_process": trial_process},
        data={"max_samples": 600}, training={"epochs": 3, "batch_size": 8},
        search_space=SMALL_AND_LARGE))
    result = tune(load_config(path), **stores)
    study = load_study("pp", stores["storage"])
    trials = study.trials
    assert (trials[0].params, trials[0].state.name) == ({"filters": 4, "learning_rate": 0.01},
                                                        "COMPLETE")
    assert result.states.get("PRUNED", 0) >= 1, result.states

    client = MlflowClient(stores["tracking_uri"])
    _, children = runs_of(stores["tracking_uri"], "pp")
    runs = {int(r.data.tags["mltune.trial_number"]): r for r in children}
    # the model's size, from the first epoch on: the same for each filters value, as every
    # run's param_count shows it (a pruned run's too), larger with 32 filters
    sizes = {t.params["filters"]: t.user_attrs[ATTR]["1"][1] for t in trials}
    assert sizes[32] > 5 * sizes[4]
    for t in trials:
        assert runs[t.number].data.metrics["param_count"] == sizes[t.params["filters"]]
    for t in trials:
        run = runs[t.number]
        stored = t.user_attrs[ATTR]
        trained = 3 if t.state.name == "COMPLETE" else int(run.data.tags[
            "mltune.pruned_at_epoch"])
        assert sorted(stored, key=int) == [str(k) for k in range(1, trained + 1)]
        # what was stored is what the run shows: the epoch's accuracy, the model's size
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id,
                                                                        "val_accuracy")}
        for k, (accuracy, size) in stored.items():
            assert accuracy == pytest.approx(history[int(k)])
            assert size == sizes[t.params["filters"]]
        # the decision, recomputed from the values of the trials before it (they ran one
        # after the other): pruned at the first epoch before its last where one dominated it
        expected = next((k for k in range(1, 3) if any(
            _dominates(e.user_attrs[ATTR][str(k)], stored[str(k)])
            for e in trials[:t.number] if str(k) in e.user_attrs[ATTR])), None)
        if expected is None:
            assert t.state.name == "COMPLETE" and run.info.status == "FINISHED"
            assert "mltune.pruned_at_epoch" not in run.data.tags and len(t.values) == 2
        else:
            assert t.state.name == "PRUNED" and t.values is None
            assert run.info.status == "KILLED" and run.data.tags["mltune.state"] == "PRUNED"
            assert trained == expected and t.user_attrs["epochs_run"] == expected
            assert max(history) == expected  # no epoch trained after the decision
