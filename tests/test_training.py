"""Training options of the study file (mixed precision, XLA) and the input pipeline."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from conftest import tiny_study
from test_tune import load_study, runs_of

from mltune import tune
from mltune._backend_tf import array_inputs
from mltune._config import load_config, parse_config
from mltune._errors import ConfigError


def test_mixed_precision_and_xla_off_train_and_log_a_float16_model(write_study, stores
                                                                    ) -> None:
    path = write_study(study={"name": "mp", "n_trials": 1},
                       training={"mixed_precision": True, "jit_compile": False})
    result = tune(load_config(path), **stores)
    assert result.states == {"COMPLETE": 1}
    parent, _ = runs_of(stores["tracking_uri"], "mp")
    assert parent.data.params["mixed_precision"] == "True"
    assert parent.data.params["jit_compile"] == "False"
    trial = load_study("mp", stores["storage"]).trials[0]
    mlflow.set_tracking_uri(stores["tracking_uri"])  # mltune never sets it for the process
    model = mlflow.keras.load_model(trial.user_attrs["mlflow_model_uri"])
    policies = {layer.dtype_policy.name for layer in model.layers[1:]}
    assert "mixed_float16" in policies
    # The softmax stays float32, so the probabilities sum to one.
    probs = model.predict(np.zeros((2, *model.input_shape[1:]), "uint8"), verbose=0)
    assert probs.dtype == np.float32 and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_jit_compile_can_be_searched_and_is_checked() -> None:
    cfg = parse_config(tiny_study(search_space={
        "jit_compile": {"type": "categorical", "choices": [True, False]}}))
    assert cfg.search_space["jit_compile"].grid() == [True, False]
    with pytest.raises(ConfigError) as e:
        parse_config(tiny_study(training={"jit_compile": "yes"}), source="s.yaml")
    assert str(e.value) == ("training.jit_compile in s.yaml: must be one of true, false, "
                            "auto, but got 'yes'")


def test_input_pipeline_is_built_once_and_shuffles_every_sample() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (50, 4, 4, 1), dtype=np.uint8)
    y = np.arange(50)
    xv, yv = x[:10], y[:10]
    train, val = array_inputs(x, y, xv, yv, batch_size=8)
    _, val_again = array_inputs(x, y, xv, yv, batch_size=8)
    assert val is val_again  # the validation batches are cached
    first = np.concatenate([b[1].numpy() for b in train])
    second = np.concatenate([b[1].numpy() for b in train])
    assert sorted(first) == list(range(50)) == sorted(second)
    assert list(first) != list(second)  # reshuffled each epoch
    assert [len(b[1]) for b in val] == [8, 2]
