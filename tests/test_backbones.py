"""The built-in model's augmentation, keras.applications backbones and two-phase fine-tuning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import pytest
import yaml
from conftest import tiny_study
from mlflow import MlflowClient
from test_tune import load_study, runs_of
from typer.testing import CliRunner

from mltune import tune
from mltune._cli import app
from mltune._config import parse_config
from mltune._errors import ConfigError
from mltune._model import APPLICATIONS, backbone_of, build, build_model
from mltune._settings import BACKBONES, default_settings

AUGMENT = {"augment_flip": "horizontal_and_vertical", "augment_rotation": 0.2,
           "augment_zoom": 0.2, "augment_translation": 0.2, "augment_contrast": 0.3,
           "augment_brightness": 0.3}


def settings(**values: Any) -> dict[str, Any]:
    return {**default_settings(), "dense_units": 8, **values}


def images(n: int = 8, size: int = 32, channels: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)


@pytest.mark.parametrize("backbone", ["cnn", "mobilenet_v3_small"])
def test_augmentation_changes_images_in_training_only(backbone: str) -> None:
    x = images(channels=1)
    model = build(build_model, settings(backbone=backbone, weights=None, **AUGMENT),
                  input_shape=x.shape[1:], num_classes=3)
    assert {f"augment_{k}" for k in ("flip", "rotation", "zoom", "translation", "contrast",
                                     "brightness")} <= {layer.name for layer in model.layers}
    plain = build(build_model, settings(backbone=backbone, weights=None),
                  input_shape=x.shape[1:], num_classes=3)
    plain.set_weights(model.get_weights())
    first = np.asarray(model(x, training=False))
    assert np.array_equal(first, np.asarray(model(x, training=False)))
    assert np.allclose(first, plain.predict(x, verbose=0), atol=1e-6)
    assert np.allclose(model.predict(x, verbose=0), plain.predict(x, verbose=0), atol=1e-6)
    # Dropout is off in this comparison, so only augmentation changes the output.
    model = build(build_model, settings(backbone=backbone, weights=None, dropout=0.0,
                                        **AUGMENT), input_shape=x.shape[1:], num_classes=3)
    assert not np.allclose(np.asarray(model(x, training=True)),
                           np.asarray(model(x, training=False)))


@pytest.mark.parametrize("backbone", [b for b in BACKBONES if b != "cnn"])
def test_every_backbone_builds_at_the_smallest_size(backbone: str) -> None:
    assert set(APPLICATIONS) == set(BACKBONES) - {"cnn"}
    model = build(build_model, settings(backbone=backbone, weights=None),
                  input_shape=(32, 32, 1), num_classes=4)  # grey images become RGB
    assert model.name == f"mltune_{backbone}" and backbone_of(model) is not None
    assert model.output_shape == (None, 4)


def test_a_saved_backbone_model_reloads_with_its_preprocessing(tmp_path: Path) -> None:
    # ResNet50's own preprocessing, grey to RGB and augmentation: Keras layers that reload
    # without mltune.
    x = images(n=2, channels=1)
    model = build(build_model, settings(backbone="resnet50", weights=None, **AUGMENT),
                  input_shape=x.shape[1:], num_classes=4)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert [layer.name for layer in reloaded.layers] == [layer.name for layer in model.layers]
    assert np.allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-4)
    front = keras.Model(reloaded.inputs, reloaded.get_layer("caffe_preprocessing").output)
    rgb = np.repeat(x, 3, axis=-1).astype("float32")
    assert np.allclose(front.predict(x, verbose=0),
                       keras.applications.resnet50.preprocess_input(rgb), atol=1e-3)


@pytest.mark.parametrize(("layers", "warmup", "expected"), [
    (12, 1, [(0, 1, 0, 0.01), (1, 3, 12, 0.001)]),
    (-1, 0, [(0, 3, -1, 0.001)]),  # no warm-up: unfrozen from the first epoch
    (12, 5, [(0, 3, 0, 0.01)]),  # the warm-up takes every epoch
    (0, 1, [(0, 3, 0, 0.01)]),  # frozen throughout: one phase
])
def test_the_phases_of_fine_tuning(layers: int, warmup: int,
                                   expected: list[tuple[int, int, int, float]]) -> None:
    from mltune._trainer import _phases

    phases = _phases(settings(epochs=3, learning_rate=0.01, fine_tune_layers=layers,
                              warmup_epochs=warmup), True)
    got = [(first, end, p["unfrozen"], round(p["settings"].get("learning_rate", 0.01), 9))
           for first, end, p in phases]
    assert got == expected
    assert _phases(settings(epochs=3, fine_tune_learning_rate=0.5, fine_tune_layers=1,
                            warmup_epochs=1), True)[1][2]["settings"]["learning_rate"] == 0.5


def test_augment_mapping_is_short_for_the_flat_settings() -> None:
    cfg = parse_config(tiny_study(model={"augment": {"rotation": 0.1, "flip": "horizontal"}},
                                  search_space={"augment_zoom": {
                                      "type": "float", "low": 0.0, "high": 0.2}}))
    assert cfg.settings["augment_rotation"] == 0.1
    assert cfg.settings["augment_flip"] == "horizontal"
    assert "augment_zoom" in cfg.search_space
    with pytest.raises(ConfigError, match=r"^model\.augment\.rotation in s\.yaml: must be <= 1, "
                                          r"but got 2$"):
        parse_config(tiny_study(model={"augment": {"rotation": 2}}), source="s.yaml")
    with pytest.raises(ConfigError,
                       match=r"^model\.augment\.flip in <config>: is given twice"):
        parse_config(tiny_study(model={"augment": {"flip": "vertical"},
                                       "augment_flip": "horizontal"}))
    with pytest.raises(ConfigError, match=r"^model\.augment\.rotate in <config>: unknown "
                                          r"key; did you mean 'rotation'"):
        parse_config(tiny_study(model={"augment": {"rotate": 0.1}}))


def test_an_unknown_backbone_lists_the_backbones() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(tiny_study(model={"backbone": "vgg16"}), source="s.yaml")
    assert str(e.value) == ("model.backbone in s.yaml: must be one of "
                            f"{', '.join(BACKBONES)}, but got 'vgg16'")


def test_a_missing_weights_file_is_a_config_error(write_study, tmp_path: Path) -> None:
    from mltune._config import check_weights, load_config

    path = write_study(model={"backbone": "mobilenet_v3_small", "weights": "no.weights.h5"})
    config = load_config(path)  # read anywhere (mltune register needs no weights file)
    with pytest.raises(ConfigError, match=f"model.weights in {path}: no such file: "
                                          f"{tmp_path / 'no.weights.h5'}"):
        check_weights(config)  # where a model will be trained, before anything is written


def test_imagenet_weights_offline_exit_2_before_any_run(write_study, tmp_path: Path,
                                                        monkeypatch) -> None:
    # Nothing cached, and the proxy through which a download would go does not answer.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    for var in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    path = write_study(model={"backbone": "efficientnet_b0", "weights": "imagenet"})
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = CliRunner().invoke(app, ["tune", str(path), "--tracking-uri", tracking,
                                      "--storage", str(tmp_path / "journal.log")])
    assert result.exit_code == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"error: model.weights in {path}: imagenet weights of "
                                    "efficientnet_b0 are not in Keras' cache")
    assert "model.weights: path/to/file.weights.h5" in result.stderr
    assert not (tmp_path / "journal.log").exists()
    client = MlflowClient(tracking)
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()])
    # Once Keras' file is in its cache, the study is valid offline.
    (tmp_path / "keras" / "models").mkdir(parents=True)
    (tmp_path / "keras" / "models" / str(BACKBONES["efficientnet_b0"])).write_bytes(b"")
    parse_config(yaml.safe_load(path.read_text()))


def test_images_below_the_backbone_minimum_exit_2(write_study, tmp_path: Path) -> None:
    path = write_study(model={"backbone": "mobilenet_v3_small", "weights": None})  # 8x8 digits
    result = CliRunner().invoke(app, ["tune", str(path), "--tracking-uri",
                                      f"sqlite:///{tmp_path / 'mlflow.db'}",
                                      "--storage", str(tmp_path / "journal.log")])
    assert result.exit_code == 2, result.stdout + result.stderr
    assert "model.backbone" in result.stderr
    assert "at least 32x32 pixels, but the data's are 8x8" in result.stderr


class TrainableLayers(keras.callbacks.Callback):
    """Records the backbone's trainable layers and the learning rate at each epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, int, float]] = []

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        backbone = backbone_of(self.model)
        assert backbone is not None
        rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.seen.append((epoch, sum(layer.trainable for layer in backbone.layers), rate))


def colour_study(npz: Path, **model: Any) -> dict[str, Any]:
    return tiny_study(
        study={"name": "bb", "n_trials": 1, "trial_process": "none"},
        data={"source": str(npz), "max_samples": None, "validation_split": 0.25},
        training={"epochs": 3, "batch_size": 16, "learning_rate": 0.01, "warmup_epochs": 1},
        model={"backbone": "mobilenet_v3_small", "weights": None, "dense_units": 8,
               "augment": {"flip": "horizontal", "rotation": 0.05}, **model},
        search_space={"head_pooling": {"type": "categorical", "choices": ["avg", "max"]}})


@pytest.fixture
def colour_npz(npz_file) -> Path:
    rng = np.random.default_rng(1)
    return npz_file("colour.npz", n=48,
                    x_train=rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8),
                    x_test=rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8),
                    y_test=rng.integers(0, 3, 12).astype(np.uint8))


def test_two_phases_freeze_then_unfreeze_the_top_layers_in_one_epoch_sequence(
        colour_npz: Path, stores: dict[str, str]) -> None:
    recorder = TrainableLayers()
    result = tune(colour_study(colour_npz, fine_tune_layers=12), callbacks=[recorder],
                  **stores)
    assert result.states == {"COMPLETE": 1}
    # Warm-up: the backbone frozen; then its top 12 layers but the BatchNormalization ones,
    # at a tenth of the learning rate.
    backbone = build(build_model, settings(backbone="mobilenet_v3_small", weights=None),
                     input_shape=(32, 32, 3), num_classes=3)
    backbone = backbone_of(backbone)
    assert backbone is not None
    top = backbone.layers[-12:]
    unfrozen = sum(not isinstance(layer, keras.layers.BatchNormalization) for layer in top)
    assert 0 < unfrozen < 12
    assert [(e, n) for e, n, _ in recorder.seen] == [(0, 0), (1, unfrozen), (2, unfrozen)]
    rates = [r for _, _, r in recorder.seen]
    assert rates[0] == pytest.approx(0.01) and rates[1] == rates[2] == pytest.approx(0.001)
    parent, (child,) = runs_of(stores["tracking_uri"], "bb")
    client = MlflowClient(stores["tracking_uri"])
    history = client.get_metric_history(child.info.run_id, "val_accuracy")
    assert sorted(m.step for m in history)[:3] == [1, 2, 3]
    lr = {m.step: m.value for m in client.get_metric_history(child.info.run_id,
                                                              "learning_rate")}
    assert lr[1] == pytest.approx(0.01) and lr[2] == pytest.approx(0.001)
    assert parent.data.params["backbone"] == "mobilenet_v3_small"
    assert parent.data.params["augment_flip"] == "horizontal"
    assert load_study("bb", stores["storage"]).trials[0].intermediate_values.keys() == {1, 2, 3}


def test_a_local_weights_file_is_loaded_into_the_frozen_backbone(
        colour_npz: Path, stores: dict[str, str], tmp_path: Path) -> None:
    keras.utils.set_random_seed(5)
    saved = keras.applications.MobileNetV3Small(include_top=False, weights=None,
                                                input_shape=(64, 64, 3))
    saved.save_weights(tmp_path / "mnv3.weights.h5")
    study = colour_study(colour_npz)  # fine_tune_layers 0: frozen throughout
    study["model"]["weights"] = "mnv3.weights.h5"  # relative to the study file
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    recorder = TrainableLayers()
    assert tune(path, callbacks=[recorder], **stores).states == {"COMPLETE": 1}
    assert [n for _, n, _ in recorder.seen] == [0, 0, 0]
    trial = load_study("bb", stores["storage"]).trials[0]
    mlflow.set_tracking_uri(stores["tracking_uri"])
    model = mlflow.keras.load_model(trial.user_attrs["mlflow_model_uri"])
    backbone = backbone_of(model)
    assert backbone is not None
    for got, want in zip(backbone.get_weights(), saved.get_weights(), strict=True):
        assert np.array_equal(got, want)  # loaded, and never trained (frozen, inference mode)
