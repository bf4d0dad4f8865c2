"""Validation of study files: every error names the key path and the file and states the rule.

None of these tests trains a model; validating a study file must stay cheap.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import yaml
from conftest import REPO, tiny_study
from typer.testing import CliRunner

from mltune._cli import app
from mltune._config import SAMPLERS, Config, load_config, parse_config
from mltune._errors import ConfigError
from mltune._search_space import Categorical, Float, Int, grid_of, grid_size, suggest_all
from mltune._settings import SETTINGS

ISSUE_STUDY = """\
study:
  name: mnist-cnn
  metric: val_accuracy
  direction: maximize
  sampler: tpe
  n_trials: 20
  seed: 42
data:
  source: mnist
  validation_split: 0.1
training:
  epochs: 5
  early_stopping_patience: 2
search_space:
  learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  batch_size: {type: categorical, choices: [32, 64, 128]}
  optimizer: {type: categorical, choices: [adam, sgd, rmsprop]}
  conv_blocks: {type: int, low: 1, high: 3}
  filters: {type: categorical, choices: [16, 32, 64]}
  dropout: {type: float, low: 0.0, high: 0.5, step: 0.1}
"""

# The packages each sampler needs beyond Optuna itself, and the extra that installs them.
SAMPLER_NEEDS = {"gp": ("torch", "scipy"), "cmaes": ("cmaes",), "qmc": ("scipy",)}
SAMPLER_CLASSES = {
    "random": optuna.samplers.RandomSampler,
    "grid": optuna.samplers.GridSampler,
    "tpe": optuna.samplers.TPESampler,
    "gp": optuna.samplers.GPSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "qmc": optuna.samplers.QMCSampler,
}


DROP = object()  # study_file: remove the key


def fails(key: str, path: Path | str, rule: str) -> Any:
    """Expect a ConfigError whose message reads ``<key> in <file>: <rule>...``."""
    return pytest.raises(ConfigError, match=re.escape(f"{key} in {path}: {rule}"))


@pytest.fixture
def study_file(tmp_path: Path):
    """Write tiny_study() with ``changes`` applied at dotted key paths (DROP deletes a key,
    None writes null)."""

    def write(changes: dict[str, Any] | None = None, name: str = "study.yaml") -> Path:
        raw = tiny_study()
        for dotted, value in (changes or {}).items():
            *parents, last = dotted.split(".")
            node = raw
            for part in parents:
                node = node.setdefault(part, {})
            if value is DROP:
                node.pop(last, None)
            else:
                node[last] = value
        path = tmp_path / name
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    return write


# --- the example of the issue -----------------------------------------------------------


def test_issue_example_validates_as_written(tmp_path: Path) -> None:
    path = tmp_path / "mnist.yaml"
    path.write_text(ISSUE_STUDY)
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert cfg.source == str(path)
    assert (cfg.study.name, cfg.study.metric, cfg.study.direction) == (
        "mnist-cnn", "val_accuracy", "maximize")
    assert (cfg.study.sampler, cfg.study.n_trials, cfg.study.seed) == ("tpe", 20, 42)
    assert cfg.data.source == "mnist"  # a built-in name is not turned into a path
    assert cfg.data.validation_split == 0.1
    assert cfg.settings["epochs"] == 5 and cfg.settings["early_stopping_patience"] == 2
    assert list(cfg.search_space) == ["learning_rate", "batch_size", "optimizer",
                                      "conv_blocks", "filters", "dropout"]
    assert cfg.search_space["learning_rate"] == Float("learning_rate", 1e-4, 1e-2, log=True)
    assert cfg.search_space["batch_size"] == Categorical("batch_size", (32, 64, 128))
    assert cfg.search_space["optimizer"] == Categorical("optimizer", ("adam", "sgd", "rmsprop"))
    assert cfg.search_space["conv_blocks"] == Int("conv_blocks", 1, 3)
    assert cfg.search_space["dropout"] == Float("dropout", 0.0, 0.5, step=0.1)
    assert set(cfg.fixed) == {"epochs", "early_stopping_patience"}


def test_shipped_example_project_validates() -> None:
    path = REPO / "projects" / "digits_cnn" / "study.yaml"
    if not path.exists():
        pytest.skip(f"{path} is not in this checkout")
    cfg = load_config(path)
    assert cfg.study.name == "digits-cnn"
    assert cfg.data.source == "digits"
    assert cfg.settings["dense_units"] == 64


# --- unknown keys -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "key", "rule"),
    [
        pytest.param({"studdy": {}}, "studdy", "unknown key; did you mean 'study'?",
                     id="top-level"),
        pytest.param({"study.n_trails": 3}, "study.n_trails",
                     "unknown key; did you mean 'n_trials'?", id="study"),
        pytest.param({"data.sorce": "x.npz"}, "data.sorce",
                     "unknown key; did you mean 'source'?", id="data"),
        pytest.param({"model.filtres": 8}, "model.filtres",
                     "unknown key; did you mean 'filters'?", id="model"),
        pytest.param({"training.epoch": 3}, "training.epoch",
                     "unknown key; did you mean 'epochs'?", id="training"),
        pytest.param({"search_space.learning_rate.lo": 0.001},
                     "search_space.learning_rate.lo", "unknown key; did you mean 'low'?",
                     id="search-space-param"),
        pytest.param({"search_space.learning_rate.steps": 0.001},
                     "search_space.learning_rate.steps", "unknown key; did you mean 'step'?",
                     id="search-space-param-step"),
        pytest.param({"search_space.lerning_rate": {"type": "float", "low": 0.1, "high": 1}},
                     "search_space.lerning_rate", "unknown key; did you mean 'learning_rate'?",
                     id="search-space-misspelt-setting"),
    ],
)
def test_unknown_key_names_path_file_and_hint(study_file, changes: dict[str, Any], key: str,
                                              rule: str) -> None:
    path = study_file(changes)
    with fails(key, path, rule):
        load_config(path)


def test_unknown_key_without_close_match_lists_allowed_keys(study_file) -> None:
    path = study_file({"data.zzz": 1})
    with fails("data.zzz", path, "unknown key; allowed keys: source, loader, validation_split, "
               "test_split, max_samples, num_classes, label_column, image_size, color_mode"):
        load_config(path)


def test_searched_name_that_is_not_a_setting(study_file) -> None:
    path = study_file({"search_space.depth": {"type": "int", "low": 1, "high": 3}})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"search_space.depth in {path}: unknown key; allowed keys: ")
    for name in SETTINGS:  # the message lists every setting that can be searched
        assert name in message


def test_key_of_other_param_type_is_unknown(study_file) -> None:
    path = study_file({"search_space.filters": {"type": "categorical", "choices": [4, 8],
                                                "low": 4}})
    with fails("search_space.filters.low", path, "unknown key; allowed keys: type, choices"):
        load_config(path)


# --- wrong types and ranges ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "key", "rule"),
    [
        pytest.param({"study.n_trials": "5"}, "study.n_trials",
                     "must be an integer >= 1, but got '5'", id="n_trials-string"),
        pytest.param({"study.n_trials": 0}, "study.n_trials",
                     "must be an integer >= 1, but got 0", id="n_trials-zero"),
        pytest.param({"study.seed": True}, "study.seed",
                     "must be an integer in 0..2147483647", id="seed-bool"),
        pytest.param({"study.timeout": 0}, "study.timeout", "must be a number > 0.0, but got 0",
                     id="timeout-zero"),
        pytest.param({"study.name": ""}, "study.name",
                     "must be a non-empty string, but got ''", id="name-empty"),
        pytest.param({"study.sampler_options": [1]}, "study.sampler_options",
                     "must be a mapping, but got [1]", id="sampler_options-list"),
        pytest.param({"study.metric": "f1"}, "study.metric",
                     "must be one of val_accuracy, val_loss, accuracy, loss, but got 'f1'",
                     id="metric-unknown"),
        pytest.param({"data.validation_split": 1.5}, "data.validation_split",
                     "must be a number in (0.0, 1.0), but got 1.5", id="validation_split"),
        pytest.param({"data.max_samples": 2.5}, "data.max_samples",
                     "must be an integer >= 1, but got 2.5", id="max_samples-float"),
        pytest.param({"data.num_classes": 1}, "data.num_classes",
                     "must be an integer in 2..100000, but got 1", id="num_classes-one"),
        pytest.param({"data.num_classes": 10**9}, "data.num_classes",
                     "must be an integer in 2..100000, but got 1000000000",
                     id="num_classes-huge"),
        pytest.param({"data.seed": -1}, "data.seed", "must be an integer >= 0, but got -1",
                     id="data-seed-negative"),
        pytest.param({"data.image_size": [28]}, "data.image_size",
                     "must be [height, width] in pixels, but got [28]", id="image_size"),
        pytest.param({"data.color_mode": "cmyk"}, "data.color_mode",
                     "must be one of grayscale, rgb, but got 'cmyk'", id="color_mode"),
        pytest.param({"data.source": None}, "data.source", "must be set: one of mnist",
                     id="source-missing"),
        pytest.param({"model": 3}, "model", "must be a mapping, but got 3", id="section-int"),
        pytest.param({"training.epochs": "five"}, "training.epochs",
                     "must be of type int, but got 'five'", id="epochs-string"),
        pytest.param({"training.batch_size": True}, "training.batch_size",
                     "must be of type int, but got True", id="batch_size-bool"),
        pytest.param({"model.dropout": 1.0}, "model.dropout", "must be < 1, but got 1.0",
                     id="dropout-one"),
        pytest.param({"model.activation": "sigmoidal"}, "model.activation",
                     "must be one of relu, elu", id="activation"),
        pytest.param({"model.conv_blocks": None}, "model.conv_blocks",
                     "must be set, but got null", id="setting-null"),
        pytest.param({"search_space.learning_rate.low": "abc"},
                     "search_space.learning_rate.low", "must be a number, but got 'abc'",
                     id="param-low-string"),
        pytest.param({"search_space.learning_rate.log": "yes"},
                     "search_space.learning_rate.log", "must be true or false, but got 'yes'",
                     id="param-log-string"),
        pytest.param({"search_space.learning_rate.high": None},
                     "search_space.learning_rate.high", "must be set", id="param-high-missing"),
        pytest.param({"search_space.learning_rate.type": None},
                     "search_space.learning_rate.type", "must be set: float, int or categorical",
                     id="param-type-missing"),
        pytest.param({"search_space.learning_rate.type": "uniform"},
                     "search_space.learning_rate.type",
                     "must be one of float, int, categorical, but got 'uniform'",
                     id="param-type-unknown"),
        pytest.param({"search_space.conv_blocks": {"type": "float", "low": 1, "high": 3}},
                     "search_space.conv_blocks.type",
                     "conv_blocks is a int setting, so its type must be int or categorical, "
                     "but got 'float'", id="float-for-int-setting"),
        pytest.param({"search_space.pooling": {"type": "int", "low": 1, "high": 3}},
                     "search_space.pooling.type",
                     "pooling is a str setting, so its type must be categorical, but got 'int'",
                     id="int-for-str-setting"),
        pytest.param({"search_space.conv_blocks": {"type": "int", "low": 1.5, "high": 3}},
                     "search_space.conv_blocks.low", "must be an integer, but got 1.5",
                     id="int-param-float-bound"),
        pytest.param({"search_space.conv_blocks": {"type": "int", "low": 1, "high": 20}},
                     "search_space.conv_blocks.high", "conv_blocks must be <= 8, but got 20",
                     id="bound-outside-setting"),
        pytest.param({"search_space.filters.choices": []}, "search_space.filters.choices",
                     "must be a non-empty list, but got []", id="choices-empty"),
        pytest.param({"search_space.filters.choices": [4, 4]}, "search_space.filters.choices",
                     "must not repeat a value, but got [4, 4]", id="choices-repeated"),
        pytest.param({"search_space.filters.choices": [4, "big"]},
                     "search_space.filters.choices[1]",
                     "filters must be of type int, but got 'big'", id="choice-wrong-type"),
    ],
)
def test_wrong_type_or_range(study_file, changes: dict[str, Any], key: str, rule: str) -> None:
    path = study_file(changes)
    with fails(key, path, rule):
        load_config(path)


def test_low_greater_than_high(study_file) -> None:
    path = study_file({"search_space.learning_rate": {"type": "float", "low": 0.5,
                                                      "high": 0.1}})
    with fails("search_space.learning_rate.low", path,
               "low <= high must hold, but got (low=0.5, high=0.1)"):
        load_config(path)
    path = study_file({"search_space.conv_blocks": {"type": "int", "low": 3, "high": 2}},
                      name="int.yaml")
    with fails("search_space.conv_blocks.low", path,
               "low <= high must hold, but got (low=3, high=2)"):
        load_config(path)


@pytest.mark.parametrize(
    ("name", "param", "low"),
    [
        pytest.param("l2", {"type": "float", "low": 0.0, "high": 0.1, "log": True}, "0.0",
                     id="float"),
        pytest.param("dense_units", {"type": "int", "low": 0, "high": 64, "log": True}, "0",
                     id="int"),
    ],
)
def test_log_needs_positive_low(study_file, name: str, param: dict[str, Any], low: str) -> None:
    path = study_file({f"search_space.{name}": param})
    with fails(f"search_space.{name}.low", path,
               f"low > 0 must hold when log is true, but got low={low}"):
        load_config(path)


@pytest.mark.parametrize(
    "param",
    [
        pytest.param({"type": "float", "low": 1e-3, "high": 1e-1, "log": True, "step": 0.01},
                     id="float"),
        pytest.param({"type": "int", "low": 1, "high": 8, "log": True, "step": 2}, id="int"),
    ],
)
def test_step_with_log(study_file, param: dict[str, Any]) -> None:
    name = "learning_rate" if param["type"] == "float" else "conv_blocks"
    path = study_file({f"search_space.{name}": param})
    with fails(f"search_space.{name}.step", path, "step cannot be combined with log: true"):
        load_config(path)


def test_int_log_with_step_one_is_allowed(study_file) -> None:
    # Optuna accepts step=1 with log=True for integers, and 1 is the default step anyway.
    path = study_file({"search_space.filters": {"type": "int", "low": 4, "high": 64, "log": True,
                                                "step": 1}})
    assert load_config(path).search_space["filters"] == Int("filters", 4, 64, log=True, step=1)


def test_float_log_with_step_one_is_rejected(study_file) -> None:
    path = study_file({"search_space.learning_rate": {"type": "float", "low": 1e-3,
                                                      "high": 1e-1, "log": True, "step": 1}})
    with fails("search_space.learning_rate.step", path,
               "step cannot be combined with log: true"):
        load_config(path)


def test_exponent_without_dot_is_a_number(study_file, tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(ISSUE_STUDY.replace("1.0e-4", "1e-4").replace("1.0e-2", "1e-2"))
    assert load_config(path).search_space["learning_rate"] == Float(
        "learning_rate", 1e-4, 1e-2, log=True)


# --- samplers and study settings ----------------------------------------------------------


def test_grid_rejects_float_without_step(study_file) -> None:
    path = study_file({"study.sampler": "grid"})  # tiny_study's learning_rate has no step
    with fails("search_space.learning_rate", path,
               "grid search needs a finite set of values, but this float has no step; give "
               "step or use type: categorical"):
        load_config(path)


def test_grid_is_allowed_without_n_trials(study_file) -> None:
    path = study_file({"study.sampler": "grid", "study.n_trials": DROP,
                       "search_space.learning_rate": {"type": "float", "low": 0.01,
                                                      "high": 0.03, "step": 0.01}})
    cfg = load_config(path)
    assert cfg.study.sampler == "grid" and cfg.study.n_trials is None
    assert grid_of(cfg.search_space) == {"learning_rate": [0.01, 0.02, 0.03],
                                         "filters": [4, 8]}
    assert grid_size(cfg.search_space) == 6


@pytest.mark.parametrize("sampler", ["tpe", "random", "qmc"])
def test_n_trials_required_for_samplers_that_do_not_end(study_file, sampler: str) -> None:
    path = study_file({"study.sampler": sampler, "study.n_trials": DROP})
    with fails("study.n_trials", path, f"must be set (or study.timeout) for sampler "
               f"{sampler!r}; only grid search ends by itself"):
        load_config(path)


def test_timeout_instead_of_n_trials(study_file) -> None:
    path = study_file({"study.sampler": "tpe", "study.n_trials": DROP, "study.timeout": 60})
    cfg = load_config(path)
    assert cfg.study.n_trials is None and cfg.study.timeout == 60.0


def test_unknown_sampler(study_file) -> None:
    path = study_file({"study.sampler": "bayes"})
    with fails("study.sampler", path,
               "must be one of random, grid, tpe, gp, cmaes, qmc, but got 'bayes'"):
        load_config(path)


def test_unknown_optimizer_in_choices(study_file) -> None:
    path = study_file({"search_space.optimizer": {"type": "categorical",
                                                  "choices": ["adam", "lion"]}})
    with fails("search_space.optimizer.choices[1]", path,
               "optimizer must be one of sgd, momentum, nesterov, adam, adamw, rmsprop, "
               "adagrad, but got 'lion'"):
        load_config(path)


def test_unknown_sampler_options_key(study_file) -> None:
    path = study_file({"study.sampler": "tpe", "study.sampler_options": {"n_startup": 3}})
    with fails("study.sampler_options.n_startup", path,
               "is not an option of sampler 'tpe'; its options: "):
        load_config(path)
    with pytest.raises(ConfigError, match="n_startup_trials"):  # the real name is listed
        load_config(path)


def test_seed_is_not_a_sampler_option(study_file) -> None:
    path = study_file({"study.sampler": "random", "study.sampler_options": {"seed": 3}})
    with fails("study.sampler_options.seed", path, "is not an option of sampler 'random'"):
        load_config(path)


def test_known_sampler_options_are_kept(study_file) -> None:
    path = study_file({"study.sampler": "tpe", "study.sampler_options": {"n_startup_trials": 5}})
    assert load_config(path).study.sampler_options == {"n_startup_trials": 5}


@pytest.mark.parametrize(
    ("metric", "direction", "rule"),
    [
        ("val_accuracy", "minimize",
         "val_accuracy is to be maximized, but got 'minimize', which would pick the worst model"),
        ("val_loss", "maximize",
         "val_loss is to be minimized, but got 'maximize', which would pick the worst model"),
        ("loss", "maximize", "loss is to be minimized"),
        ("accuracy", "minimize", "accuracy is to be maximized"),
    ],
)
def test_direction_contradicting_metric(study_file, metric: str, direction: str,
                                        rule: str) -> None:
    path = study_file({"study.metric": metric, "study.direction": direction})
    with fails("study.direction", path, rule):
        load_config(path)


@pytest.mark.parametrize(("metric", "direction"),
                         [("val_loss", "minimize"), ("val_accuracy", "maximize")])
def test_direction_defaults_from_metric(study_file, metric: str, direction: str) -> None:
    cfg = load_config(study_file({"study.metric": metric, "study.direction": DROP}))
    assert cfg.study.direction == direction


def test_study_name_defaults_to_file_stem(study_file) -> None:
    cfg = load_config(study_file({"study.name": DROP}, name="my-study.yaml"))
    assert cfg.study.name == "my-study"


def test_parse_config_without_file_names_source_placeholder() -> None:
    raw = tiny_study()
    raw["study"]["n_trials"] = -1
    with fails("study.n_trials", "<config>", "must be an integer >= 1, but got -1"):
        parse_config(raw)
    raw["study"].pop("name")
    raw["study"]["n_trials"] = 1
    with fails("study.name", "inline.yaml", "must be set"):
        parse_config(raw, source="inline.yaml")


# --- reading the file ---------------------------------------------------------------------


def test_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("study:\n  name: x\n\tn_trials: 3\n")
    with pytest.raises(ConfigError, match=re.escape(f"study file in {path}: not valid YAML "
                                                    "(line 3, column 1)")):
        load_config(path)


def test_bad_yaml_unclosed_bracket(tmp_path: Path) -> None:
    path = tmp_path / "unclosed.yaml"
    path.write_text("search_space:\n  filters: {type: categorical, choices: [4, 8}\n")
    with pytest.raises(ConfigError, match=re.escape(f"study file in {path}: not valid YAML "
                                                    "(line 2, ")):
        load_config(path)


def test_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- study\n- data\n")
    with fails("study file", path, "must be a mapping of sections (study, data, training, "
               "model, search_space), but got list"):
        load_config(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=re.escape(f"study file: no such file: {path}")):
        load_config(path)


def test_folder_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"study file: cannot read {tmp_path}")):
        load_config(tmp_path)


def test_empty_study_section_is_like_a_missing_one(tmp_path: Path) -> None:
    path = tmp_path / "empty-study.yaml"
    path.write_text("study:\n  # name: to be filled in\ndata:\n  source: digits\n"
                    "search_space:\n  filters: {type: categorical, choices: [4, 8]}\n")
    cfg = load_config(path, ["study.seed=3"], n_trials=2)
    assert (cfg.study.name, cfg.study.n_trials, cfg.study.seed) == ("empty-study", 2, 3)


def test_set_into_an_empty_section(study_file) -> None:
    path = study_file({"model": None})
    assert load_config(path).settings["dropout"] == SETTINGS["dropout"].default  # null is ok
    assert load_config(path, ["model.dropout=0.3"]).settings["dropout"] == 0.3


# --- --set overrides and command-line options ---------------------------------------------


def test_set_overrides_with_dotted_paths_and_yaml_values(study_file) -> None:
    path = study_file()
    cfg = load_config(path, [
        "study.n_trials=7",
        "study.sampler=tpe",
        "data.validation_split=0.3",
        "search_space.filters.choices=[16, 32]",
        "search_space.learning_rate.log=false",
        "model.batch_norm=true",
        "training.early_stopping_patience=null",
    ])
    assert cfg.study.n_trials == 7 and cfg.study.sampler == "tpe"
    assert cfg.data.validation_split == 0.3
    assert cfg.search_space["filters"] == Categorical("filters", (16, 32))
    assert cfg.search_space["learning_rate"].log is False
    assert cfg.settings["batch_norm"] is True
    assert cfg.settings["early_stopping_patience"] is None


def test_set_creates_missing_sections(study_file) -> None:
    path = study_file({"model": DROP})
    cfg = load_config(path, ["model.kernel_size=5", "search_space.dropout={type: float, "
                                                    "low: 0.1, high: 0.3, step: 0.1}"])
    assert cfg.settings["kernel_size"] == 5
    assert cfg.search_space["dropout"] == Float("dropout", 0.1, 0.3, step=0.1)


def test_set_value_is_validated_like_the_file(study_file) -> None:
    path = study_file()
    with fails("study.n_trials", path, "must be an integer >= 1, but got 'many'"):
        load_config(path, ["study.n_trials=many"])
    with fails("model.fliters", path, "unknown key; did you mean 'filters'?"):
        load_config(path, ["model.fliters=8"])


@pytest.mark.parametrize("item", ["study.n_trials", "=3", "data.source: x.npz"])
def test_malformed_set(study_file, item: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(
            f"--set: must look like key.path=value, but got {item!r}")):
        load_config(study_file(), [item])


def test_set_inside_a_value_that_is_not_a_mapping(study_file) -> None:
    with pytest.raises(ConfigError, match=re.escape(
            "study.name: is not a mapping, so --set study.name.x=... cannot set a key "
            "inside it")):
        load_config(study_file(), ["study.name.x=1"])


def test_cli_options_override_file_and_set(study_file) -> None:
    path = study_file()  # random sampler, 3 trials, seed 1
    cfg = load_config(path, ["study.n_trials=5"], sampler="tpe", n_trials=9, seed=7,
                      name="renamed", timeout=None, experiment=None)
    assert cfg.study.sampler == "tpe"
    assert cfg.study.n_trials == 9  # the option wins over --set
    assert cfg.study.seed == 7
    assert cfg.study.name == "renamed"
    assert cfg.study.timeout is None and cfg.study.experiment is None


def test_cli_options_given_as_none_keep_the_file(study_file) -> None:
    cfg = load_config(study_file(), sampler=None, n_trials=None, seed=None)
    assert (cfg.study.sampler, cfg.study.n_trials, cfg.study.seed) == ("random", 3, 1)


def test_cli_option_is_validated(study_file) -> None:
    path = study_file()
    with fails("study.sampler", path, "must be one of random, grid, tpe, gp, cmaes, qmc, "
               "but got 'annealing'"):
        load_config(path, sampler="annealing")
    with fails("study.n_trials", path, "must be an integer >= 1, but got 0"):
        load_config(path, n_trials=0)
    with fails("search_space.learning_rate", path, "grid search needs a finite set of values"):
        load_config(path, sampler="grid")


# --- data.source paths --------------------------------------------------------------------


def test_relative_data_source_is_resolved_against_the_study_folder(
        tmp_path: Path, study_file, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    path = folder / "study.yaml"
    raw = tiny_study(data={"source": "data/train.npz"})
    path.write_text(yaml.safe_dump(raw))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(path)
    assert cfg.data.source == str((folder / "data" / "train.npz").resolve())
    # the same from a relative path to the study file
    monkeypatch.chdir(tmp_path)
    assert load_config(Path("project/study.yaml")).data.source == cfg.data.source


def test_absolute_and_builtin_sources_are_kept(tmp_path: Path, study_file) -> None:
    absolute = str(tmp_path / "somewhere" / "x.npz")
    assert load_config(study_file({"data.source": absolute})).data.source == absolute
    assert load_config(study_file({"data.source": "digits"}, name="b.yaml")).data.source == (
        "digits")


def test_source_given_with_set_is_relative_to_the_working_folder(study_file) -> None:
    # Documented in config._resolve_data_path: --set paths are relative to where the
    # command runs, so they are passed on unchanged.
    cfg = load_config(study_file(), ["data.source=local.npz"])
    assert cfg.data.source == "local.npz"


# --- fixed settings and the search space --------------------------------------------------


def test_fixed_setting_is_dropped_from_the_search_space(study_file) -> None:
    path = study_file({"training.batch_size": 16,
                       "search_space.batch_size": {"type": "categorical",
                                                   "choices": [32, 64]},
                       "model.filters": 12})
    cfg = load_config(path)
    assert "batch_size" not in cfg.search_space
    assert "filters" not in cfg.search_space  # fixed under model:, searched in tiny_study
    assert list(cfg.search_space) == ["learning_rate"]
    assert {"batch_size", "filters"} <= set(cfg.fixed)
    assert cfg.settings["batch_size"] == 16 and cfg.settings["filters"] == 12

    params = cfg.params_for({"learning_rate": 0.005})
    assert params["learning_rate"] == 0.005  # sampled value on top
    assert params["batch_size"] == 16 and params["filters"] == 12  # fixed values
    assert params["kernel_size"] == SETTINGS["kernel_size"].default  # defaults for the rest
    assert set(params) == set(SETTINGS)
    assert "learning_rate" not in cfg.fixed_settings()
    assert cfg.fixed_settings()["batch_size"] == 16


def test_params_for_sampled_values_win_over_defaults(study_file) -> None:
    cfg = load_config(study_file())
    params = cfg.params_for({"learning_rate": 0.002, "filters": 8})
    assert params["learning_rate"] == 0.002 and params["filters"] == 8
    assert cfg.settings["learning_rate"] == SETTINGS["learning_rate"].default  # unchanged


def test_fixed_searched_setting_is_still_validated(study_file) -> None:
    path = study_file({"training.batch_size": 16,
                       "search_space.batch_size": {"type": "categorical", "choices": [0]}})
    with fails("search_space.batch_size.choices[0]", path,
               "batch_size must be >= 1, but got 0"):
        load_config(path)


def test_every_searched_setting_fixed_leaves_nothing_to_search(study_file) -> None:
    path = study_file({"training.learning_rate": 0.01, "model.filters": 8})
    with pytest.raises(ConfigError, match=re.escape(
            f"search_space in {path}: must name at least one setting to search")):
        load_config(path)


# --- grids ----------------------------------------------------------------------------------


def test_grid_of_int_with_step() -> None:
    assert grid_of({"conv_blocks": Int("conv_blocks", 1, 8, step=3)}) == {
        "conv_blocks": [1, 4, 7]}
    assert grid_of({"filters": Int("filters", 8, 32, step=8)}) == {"filters": [8, 16, 24, 32]}


def test_grid_of_float_with_step_has_no_float_noise() -> None:
    values = grid_of({"dropout": Float("dropout", 0.0, 0.5, step=0.1)})["dropout"]
    assert values == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert [repr(v) for v in values] == ["0.0", "0.1", "0.2", "0.3", "0.4", "0.5"]
    # a step that does not divide the range stops at the last value below high
    assert grid_of({"l2": Float("l2", 0.0, 0.45, step=0.1)})["l2"] == [0.0, 0.1, 0.2, 0.3, 0.4]


def test_grid_of_categorical() -> None:
    space = {"optimizer": Categorical("optimizer", ("adam", "sgd")),
             "batch_norm": Categorical("batch_norm", (True, False))}
    assert grid_of(space) == {"optimizer": ["adam", "sgd"], "batch_norm": [True, False]}
    assert grid_size(space) == 4


def test_grid_of_float_without_step_fails() -> None:
    with pytest.raises(ValueError, match="learning_rate has no finite grid"):
        grid_of({"learning_rate": Float("learning_rate", 1e-4, 1e-2, log=True)})


def test_issue_example_grid_from_config(tmp_path: Path) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text(ISSUE_STUDY.replace(
        "{type: float, low: 1.0e-4, high: 1.0e-2, log: true}",
        "{type: categorical, choices: [0.0001, 0.001, 0.01]}"))
    cfg = load_config(path, sampler="grid")
    assert grid_of(cfg.search_space)["dropout"] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert grid_size(cfg.search_space) == 3 * 3 * 3 * 3 * 3 * 6


# --- building samplers ----------------------------------------------------------------------


def _missing(sampler: str) -> list[str]:
    return [p for p in SAMPLER_NEEDS.get(sampler, ()) if importlib.util.find_spec(p) is None]


def _sampler_study(tmp_path: Path, sampler: str, seed: int = 3) -> Path:
    raw = tiny_study(
        study={"name": f"s-{sampler}", "sampler": sampler, "n_trials": 4, "seed": seed},
        search_space={
            "dropout": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.1},
            "kernel_size": {"type": "int", "low": 3, "high": 5, "step": 2},
            "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
        },
    )
    path = tmp_path / f"{sampler}-{seed}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _sample(sampler: optuna.samplers.BaseSampler, cfg: Config, n: int = 3) -> list[dict]:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction=cfg.study.direction, sampler=sampler)
    study.optimize(lambda t: sum(map(hash, map(repr, suggest_all(cfg.search_space, t)
                                                .values()))) % 97, n_trials=n)
    return [t.params for t in study.trials]


@pytest.mark.parametrize("name", SAMPLERS, ids=[f"sampler={s}" for s in SAMPLERS])
def test_every_installed_sampler_builds(tmp_path: Path, name: str) -> None:
    from mltune._samplers import create_sampler

    path = _sampler_study(tmp_path, name)
    missing = _missing(name)
    if missing:
        # Validation already says how to get it, rather than failing at the first trial.
        with fails("study.sampler", path, f"sampler {name!r} needs the package(s) "
                   f"{', '.join(missing)}; install them with pip install 'mltune[{name}]'"):
            load_config(path)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        cfg = load_config(path)
        sampler = create_sampler(cfg.study, cfg.search_space)
        assert isinstance(sampler, SAMPLER_CLASSES[name])
        first = _sample(sampler, cfg)
        again = _sample(create_sampler(cfg.study, cfg.search_space), cfg)
    for params in first:
        assert params["dropout"] in (0.0, 0.1, 0.2)
        assert params["kernel_size"] in (3, 5)
        assert params["optimizer"] in ("adam", "sgd")
    assert first == again  # same study seed, same samples


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None,
                    reason="torch is installed, so the gp sampler is available")
def test_gp_without_torch_says_how_to_install(study_file) -> None:
    path = study_file({"study.sampler": "gp"})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"study.sampler in {path}: sampler 'gp' needs the package(s) ")
    assert "torch" in message
    assert "pip install 'mltune[gp]'" in message


def test_tpe_is_multivariate_constant_liar_and_seeded(study_file) -> None:
    from mltune._samplers import create_sampler

    cfg = load_config(study_file({"study.sampler": "tpe", "study.seed": 42}))
    sampler = create_sampler(cfg.study, cfg.search_space)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert sampler._multivariate is True
    assert sampler._constant_liar is True
    # seeded with the study seed: its random state is that of RandomState(42)
    expected = np.random.RandomState(42).get_state()[1]
    assert np.array_equal(sampler._rng.rng.get_state()[1], expected)


def test_tpe_sampler_options_override_the_defaults(study_file) -> None:
    from mltune._samplers import create_sampler

    cfg = load_config(study_file({"study.sampler": "tpe", "study.sampler_options": {
        "multivariate": False, "n_startup_trials": 4}}))
    sampler = create_sampler(cfg.study, cfg.search_space)
    assert sampler._multivariate is False
    assert sampler._constant_liar is True
    assert sampler._n_startup_trials == 4


def test_different_seeds_sample_differently(tmp_path: Path) -> None:
    from mltune._samplers import create_sampler

    a = load_config(_sampler_study(tmp_path, "random", seed=1))
    b = load_config(_sampler_study(tmp_path, "random", seed=2))
    samples_a = _sample(create_sampler(a.study, a.search_space), a, n=6)
    samples_b = _sample(create_sampler(b.study, b.search_space), b, n=6)
    assert samples_a != samples_b


# --- hostile and odd input: refused at validation, one message, exit 2 ----------------------

BILLION_LAUGHS = """\
study: {name: laughs, sampler: random, n_trials: 1}
data: {source: digits}
model:
  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]
  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
  f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
  g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
  h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
  i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
search_space:
  filters: {type: categorical, choices: [4, 8]}
"""


def tune_cli(path: Path, *options: str) -> tuple[int, str]:
    """``mltune tune path`` with stores in the file's folder: the exit code and stderr."""
    folder = path.parent
    result = CliRunner().invoke(app, [
        "tune", str(path), "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}",
        "--storage", str(folder / "journal.log"), *options])
    assert not (folder / "mlflow.db").exists() and not (folder / "journal.log").exists()
    return result.exit_code, result.stderr


def test_billion_laughs_is_refused_without_expanding_it(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(BILLION_LAUGHS)
    with pytest.raises(ConfigError, match=r"^model\.\w+(\[\d+\])* in " + re.escape(
            f"{path}: YAML aliases (*name) may add at most 10000 values to a document, but "
            "they add more")):
        load_config(path)


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "recursive.yaml"
    path.write_text("study: {name: r, sampler: random, n_trials: 1}\ndata: {source: digits}\n"
                    "model: &m {dense_units: *m}\n")
    with fails("model.dense_units", path, "a YAML alias must not refer to a node that "
               "contains it"):
        load_config(path)


def test_anchors_and_merge_keys_in_ordinary_use_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "anchors.yaml"
    path.write_text("study: {name: a, sampler: random, n_trials: 1}\ndata: {source: digits}\n"
                    "search_space:\n"
                    "  filters: &sizes {type: categorical, choices: [16, 32]}\n"
                    "  dense_units: *sizes\n"
                    "  learning_rate: &lr {type: float, low: 0.001, high: 0.1, log: true}\n"
                    "  l2: {<<: *lr, high: 0.01}\n")
    space = load_config(path).search_space
    assert space["dense_units"] == Categorical("dense_units", (16, 32))
    assert space["l2"] == Float("l2", 0.001, 0.01, log=True)


@pytest.mark.parametrize(
    ("text", "key", "lines"),
    [
        pytest.param("study:\n  name: d\n  n_trials: 3\n  sampler: random\n  n_trials: 30\n",
                     "study.n_trials", (3, 5), id="nested"),
        pytest.param("study: {name: d, sampler: random, n_trials: 3}\n"
                     "study: {name: e, sampler: random, n_trials: 3}\n", "study", (1, 2),
                     id="section"),
        pytest.param("study: {name: d, sampler: random, n_trials: 3}\nsearch_space:\n"
                     "  filters: {type: categorical, choices: [4, 8], choices: [16]}\n",
                     "search_space.filters.choices", (3, 3), id="flow-mapping"),
    ],
)
def test_duplicate_key_names_key_and_lines(tmp_path: Path, text: str, key: str,
                                           lines: tuple[int, int]) -> None:
    path = tmp_path / "duplicate.yaml"
    path.write_text(text + "data: {source: digits}\n")
    with fails(key, path, f"a key must appear once in its mapping, but it is given on line "
               f"{lines[0]} and again on line {lines[1]}"):
        load_config(path)


def test_yaml_nested_too_deeply(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("study: " + "[" * 5000 + "]" * 5000 + "\n")
    with fails("study file", path, "lists and mappings may nest a few hundred levels deep, "
               "but this YAML nests deeper"):
        load_config(path)


def test_duplicate_key_in_a_set_override(study_file) -> None:
    with pytest.raises(ConfigError, match=re.escape(
            "study.sampler_options.seed in --set: a key must appear once in its mapping")):
        load_config(study_file(), ["study.sampler_options={seed: 1, seed: 2}"])


def test_file_that_is_not_utf8_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("study:\n  name: caf\u00e9\n".encode("latin-1"))
    with fails("study file", path, "must be UTF-8 text, but byte 0xe9 on line 2 is not UTF-8"):
        load_config(path)


@pytest.mark.parametrize("seed", [-1, 2**31, 2**32 - 1, 2**32, 10**30])
def test_seed_must_leave_room_for_every_trial(study_file, seed: int) -> None:
    # Trial n is seeded with seed + n, and NumPy's seeds end at 2**32 - 1: a seed of
    # 2**32 - 1 ran trial 0 and failed every later one.
    path = study_file({"study.seed": seed})
    with fails("study.seed", path, "must be an integer in 0..2147483647 (trial n is seeded with "
               f"seed + n, which must stay below 2**32), but got {seed}"):
        load_config(path)


def test_largest_seed_builds_the_sampler_and_seeds_late_trials() -> None:
    raw = tiny_study(study={"seed": 2**31 - 1, "sampler": "tpe"})
    cfg = parse_config(raw)
    from mltune._samplers import create_sampler

    create_sampler(cfg.study, cfg.search_space)
    np.random.RandomState(cfg.study.seed + 10**9)  # what Keras' set_random_seed calls


@pytest.mark.parametrize(
    ("name", "choices", "twins"),
    [
        pytest.param("learning_rate", [0.5, 1, 1.0], "1 and 1.0", id="int-and-float"),
        pytest.param("units", [1, True], "1 and True", id="int-and-bool"),
        pytest.param("units", [0.0, float("nan"), float("nan")], "nan and nan", id="nan"),
    ],
)
def test_choices_equal_to_optuna_are_repeats(study_file, name: str, choices: list[Any],
                                             twins: str) -> None:
    # ``units`` is a name of a custom builder's, free of the settings' types.
    path = study_file({"model.builder": "builders:cnn",
                       f"search_space.{name}": {"type": "categorical", "choices": choices}})
    with pytest.raises(ConfigError, match=re.escape(
            f"search_space.{name}.choices in {path}: must not repeat a value, but got ")
            + r".*" + re.escape(f": Optuna takes {twins} for the same choice")):
        load_config(path)


@pytest.mark.parametrize(
    ("name", "param", "given", "fitted"),
    [
        pytest.param("dropout", {"type": "float", "low": 0.1, "high": 0.5, "step": 0.3},
                     "low=0.1, high=0.5, step=0.3", "0.4", id="float"),
        pytest.param("filters", {"type": "int", "low": 4, "high": 20, "step": 5},
                     "low=4, high=20, step=5", "19", id="int"),
    ],
)
def test_step_must_divide_the_range(study_file, name: str, param: dict[str, Any], given: str,
                                    fitted: str) -> None:
    path = study_file({f"search_space.{name}": param})
    with fails(f"search_space.{name}.step", path, "(high - low) must be a multiple of step, but "
               f"got ({given}); set high to {fitted} or choose another step"):
        load_config(path)


@pytest.mark.parametrize(
    ("low", "high", "step"),
    [(0.0, 0.5, 0.1), (0.1, 0.7, 0.2), (0.05, 0.95, 0.15), (1e-4, 2e-4, 1e-5)],
)
def test_dividing_float_steps_pass_and_optuna_does_not_warn(
        study_file, low: float, high: float, step: float) -> None:
    path = study_file({"search_space.dropout": {"type": "float", "low": low, "high": high,
                                                "step": step}})
    cfg = load_config(path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna's "not divisible by `step`" warning
        suggest_all(cfg.search_space, study.ask())


def test_step_too_small_for_a_float(study_file) -> None:
    path = study_file({"search_space.dropout": {"type": "float", "low": 0.0, "high": 0.5,
                                                "step": 1e-300}})
    with fails("search_space.dropout.step", path, "must split low..high into at most "
               "1000000000000000 steps, but got 5e+299 steps of 1e-300"):
        load_config(path)


def test_grid_too_large_is_refused_at_validation(study_file) -> None:
    path = study_file({"study.sampler": "grid", "model.dense_units": DROP,
                       "search_space": {"filters": {"type": "int", "low": 1, "high": 1001},
                                        "dense_units": {"type": "int", "low": 0, "high": 999}}})
    with fails("search_space", path, "a grid search may have at most 1000000 points, but this "
               "one has 1001000 (filters 1001 x dense_units 1000); use fewer values or another "
               "sampler"):
        load_config(path)


def test_grid_size_counts_without_listing() -> None:
    space = {"filters": Int("filters", 0, 10**12), "dropout": Float("dropout", 0.0, 1.0, step=1e-9)}
    assert grid_size(space) == (10**12 + 1) * (10**9 + 1)


def test_huge_grid_is_fine_for_other_samplers(study_file) -> None:
    path = study_file({"study.sampler": "random", "model.dense_units": DROP,
                       "search_space": {"filters": {"type": "int", "low": 1, "high": 4096},
                                        "dense_units": {"type": "int", "low": 0, "high": 65536}}})
    assert load_config(path).search_space["dense_units"] == Int("dense_units", 0, 65536)


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, list[str], str, str]]:
    """Files (and options) a user may hand the CLI: (path, options, key, rule)."""
    def write(name: str, content: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(content)
        return path

    tiny = yaml.safe_dump(tiny_study()).encode()
    grid = tiny_study(study={"sampler": "grid"}, model=None, search_space={
        "filters": {"type": "int", "low": 1, "high": 1001},
        "dense_units": {"type": "int", "low": 0, "high": 999}})
    step = tiny_study(search_space={"dropout": {"type": "float", "low": 0.1, "high": 0.5,
                                                "step": 0.3}})
    return {
        "laughs": (write("laughs.yaml", BILLION_LAUGHS.encode()), [], "model.",
                   "YAML aliases (*name) may add at most 10000 values"),
        "duplicate": (write("dup.yaml", tiny + b"study: {name: again}\n"), [], "study",
                      "a key must appear once in its mapping"),
        "latin1": (write("latin1.yaml", tiny.replace(b"tiny", "t\u00efny".encode("latin-1"))),
                   [], "study file", "must be UTF-8 text, but byte 0xef"),
        "seed": (write("seed.yaml", tiny), ["--seed", str(2**32 - 1)], "study.seed",
                 "must be an integer in 0..2147483647"),
        "grid": (write("grid.yaml", yaml.safe_dump(grid).encode()), [], "search_space",
                 "a grid search may have at most 1000000 points"),
        "step": (write("step.yaml", yaml.safe_dump(step).encode()), [],
                 "search_space.dropout.step", "(high - low) must be a multiple of step"),
        "choices": (write("choices.yaml", yaml.safe_dump(tiny_study(search_space={
            "learning_rate": {"type": "categorical", "choices": [1, 1.0]}})).encode()), [],
            "search_space.learning_rate.choices", "must not repeat a value"),
    }


@pytest.mark.parametrize("case", ["laughs", "duplicate", "latin1", "seed", "grid", "step",
                                  "choices"])
def test_cli_exits_2_with_one_line_and_writes_nothing(tmp_path: Path, case: str) -> None:
    path, options, key, rule = _bad_files(tmp_path)[case]
    code, err = tune_cli(path, *options)
    assert code == 2, err
    assert err.startswith(f"error: {key}") and f" in {path}: {rule}" in err, err
    assert err.count("\n") == 1 and "Traceback" not in err, err


# --- validation stays cheap -----------------------------------------------------------------

HEAVY = ("tensorflow", "keras", "mlflow")


def _env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"}


def test_validating_does_not_import_tensorflow_keras_or_mlflow(tmp_path: Path) -> None:
    path = tmp_path / "mnist.yaml"
    path.write_text(ISSUE_STUDY)
    code = textwrap.dedent(f"""
        import sys
        from mltune._config import load_config
        from mltune._samplers import create_sampler
        cfg = load_config({str(path)!r}, ["study.n_trials=3"])
        create_sampler(cfg.study, cfg.search_space)
        heavy = [m for m in {HEAVY!r} if m in sys.modules]
        assert not heavy, heavy
        print("validated", cfg.study.name)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "validated mnist-cnn" in result.stdout


def test_cli_help_lists_commands_without_heavy_imports() -> None:
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "mltune", "--help"],
                            capture_output=True, text=True, env=_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    for command in ("tune", "train", "trials"):
        assert re.search(rf"\b{command}\b", result.stdout), result.stdout
    # -X importtime writes one line per imported module to stderr
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0]
                for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "mltune" in imported
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))
