"""Multi-objective studies: accuracy against model size (and latency), the Pareto front in
MLflow, and which trial gets registered."""

from __future__ import annotations

import pytest
from conftest import tiny_study
from mlflow import MlflowClient
from test_tune import load_study, runs_of

from mltune import register_best, tune
from mltune._config import load_config, parse_config
from mltune._errors import ConfigError
from mltune._selection import dominates

ACC_AND_SIZE = [{"metric": "val_accuracy", "direction": "maximize"},
                {"metric": "params", "direction": "minimize"}]


def _study(**study: object) -> dict[str, object]:
    return tiny_study(study={"name": "mo", "objectives": ACC_AND_SIZE, **study},
                      search_space={
                          "filters": {"type": "categorical", "choices": [2, 4, 8]},
                          "dense_units": {"type": "categorical", "choices": [8, 32]},
                          "learning_rate": {"type": "categorical", "choices": [0.01, 0.003]},
                      }, training={"epochs": 2})


@pytest.mark.parametrize(("study", "key", "message"), [
    ({"metric": "val_loss"}, "study.objectives", "give either study.metric"),
    ({"objectives": [{"metric": "params"}]}, "study.objectives[0].metric",
     "must be one of val_accuracy, val_loss, accuracy, loss"),
    ({"objectives": [{"metric": "val_accuracy"}, {"metric": "params",
                                                  "direction": "maximize"}]},
     "study.objectives[1].direction", "params is to be minimized"),
    ({"objectives": [{"metric": "val_accuracy"}, {"metric": "size"}]},
     "study.objectives[1].metric", "must be one of val_accuracy, val_loss, accuracy, loss, "
     "params, latency_ms"),
    ({"objectives": [{"metric": "val_accuracy"}, {"metric": "val_accuracy"}]},
     "study.objectives[1].metric", "already an objective"),
    ({"objectives": []}, "study.objectives", "must be a non-empty list"),
    ({"pruner": "median"}, "study.pruner", "pruner 'median' compares one objective, but the "
     "study has several (study.objectives); use pruner 'pareto'"),
    ({"sampler": "cmaes"}, "study.sampler", "cannot run a multi-objective study"),
])
def test_bad_objectives_name_the_key(study: dict[str, object], key: str, message: str
                                     ) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(_study(**study), source="s.yaml")
    assert e.value.key == key and message in str(e.value), str(e.value)


def _chosen(runs: list, tolerance: float) -> str:
    """The rule, computed from what MLflow shows: the smallest model within ``tolerance`` of
    the best accuracy (ties: the more accurate one, then the earlier trial)."""
    acc = {r.info.run_id: r.data.metrics["best_val_accuracy"] for r in runs}
    size = {r.info.run_id: r.data.metrics["param_count"] for r in runs}
    near = [r for r in acc if acc[r] >= max(acc.values()) - tolerance]
    return min(near, key=lambda r: (size[r], -acc[r]))


def test_pareto_front_is_tagged_and_the_rule_picks_the_registered_trial(
        write_study, stores, tmp_path, monkeypatch) -> None:
    path = write_study(_study(sampler="random", n_trials=6, seed=4,
                              selection_tolerance=0.05))
    result = tune(load_config(path), **stores)
    assert result.states == {"COMPLETE": 6}
    parent, children = runs_of(stores["tracking_uri"], "mo")

    # The front, recomputed from the runs' metrics, is what the tags say.
    points = {r.info.run_id: (r.data.metrics["best_val_accuracy"],
                              r.data.metrics["param_count"]) for r in children}
    for run in children:
        me = points[run.info.run_id]
        on_front = not any(dominates(p, me, ["maximize", "minimize"])
                           for p in points.values())
        assert run.data.tags["mltune.pareto_front"] == str(on_front).lower(), run.info.run_name
    assert {"true", "false"} >= {r.data.tags["mltune.pareto_front"] for r in children}

    chosen = _chosen(children, 0.05)
    assert parent.data.tags["mltune.best_run_id"] == chosen
    assert parent.data.tags["mltune.selection_rule"] == (
        "lowest params among the trials within 0.05 of the best val_accuracy")
    assert parent.data.metrics["best_params"] == points[chosen][1]
    client = MlflowClient(stores["tracking_uri"])
    artifacts = {f.path for f in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/pareto_front.png" in artifacts

    # Every trial that joined the front when it ended logged its model; the chosen one did.
    study = load_study("mo", stores["storage"])
    assert study.directions[1].name == "MINIMIZE"
    assert any(t.user_attrs.get("mlflow_run_id") == chosen and "mlflow_model_uri" in
               t.user_attrs for t in study.trials)

    monkeypatch.chdir(tmp_path)
    reg = register_best(study_name="mo", name="mo-cnn", **stores)
    assert reg.alias == "champion"
    version = client.get_model_version("mo-cnn", reg.version)
    assert version.run_id == chosen
    assert version.tags["mltune.selection_rule"].startswith("lowest params")
    assert float(version.tags["mltune.params"]) == points[chosen][1]


def test_latency_is_measured_per_image_and_minimised(write_study, stores) -> None:
    objectives = [*ACC_AND_SIZE, {"metric": "latency_ms"}]
    path = write_study(_study(sampler="tpe", n_trials=2, seed=1, objectives=objectives))
    tune(load_config(path), **stores)
    study = load_study("mo", stores["storage"])
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MINIMIZE"]
    _, children = runs_of(stores["tracking_uri"], "mo")
    for t, run in zip(study.trials, children, strict=True):
        assert len(t.values) == 3
        assert t.values[2] == pytest.approx(run.data.metrics["latency_ms"])
        assert 0 < t.values[2] < 1000
        assert t.values[1] == run.data.metrics["param_count"]
