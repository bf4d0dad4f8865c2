"""An image folder streamed from disk: split by file, decoded and resized batch by batch,
and a registered model that takes raw images of any size.

Small generated colour images of mixed sizes and formats; ``load_data`` caches by
(DataConfig, seed) for the process, so each test uses a folder of its own.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from PIL import Image
from typer.testing import CliRunner

from mltune import register_best, tune
from mltune._cli import app
from mltune._config import load_config
from mltune._data import Dataset, load_data
from mltune._errors import DataError
from mltune._types import DataConfig

runner = CliRunner()
CLASSES = ("cat", "dog", "fox")
SIZES = ((12, 16), (40, 30), (20, 20), (16, 24), (30, 18))  # (height, width)
FORMATS = ("png", "jpg", "bmp", "gif", "webp", "tiff")


def colour(label: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """An image whose channel ``label`` is bright: the classes are easy to tell apart."""
    pixels = rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
    pixels[..., label] += 200
    return pixels


def make_folder(root: Path, per_class: tuple[int, ...] = (20, 20, 20)) -> Path:
    rng = np.random.default_rng(0)
    for label, (name, n) in enumerate(zip(CLASSES, per_class, strict=True)):
        (root / name).mkdir(parents=True)
        for i in range(n):
            h, w = SIZES[i % len(SIZES)]
            ext = FORMATS[i % len(FORMATS)]
            Image.fromarray(colour(label, h, w, rng)).save(root / name / f"{i:03d}.{ext}")
    return root


def load(root: Path, seed: int = 0, **options: Any) -> Dataset:
    return load_data(DataConfig(source=str(root), **options), seed=seed)


def read(stream: Any) -> tuple[np.ndarray, np.ndarray]:
    batches = list(stream) if hasattr(stream, "element_spec") else [
        stream[i] for i in range(len(stream))]
    return (np.concatenate([np.asarray(x) for x, _ in batches]),
            np.concatenate([np.asarray(y) for _, y in batches]))


def resized_by_keras(pixels: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    layer = keras.layers.Resizing(*size, crop_to_aspect_ratio=mode == "crop",
                                  pad_to_aspect_ratio=mode == "pad")
    return keras.ops.convert_to_numpy(layer(pixels.astype(np.float32)))


def test_folder_is_split_by_file_stratified_and_seeded(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "split", per_class=(20, 30, 10))
    data = load(root, image_size=(16, 16), validation_split=0.2, test_split=0.2)
    assert data.class_names == CLASSES and data.num_classes == 3
    assert data.input_shape == (16, 16, 3) and data.pixel_max == 255.0
    assert data.x_train is None  # streamed: the Dataset holds file names, no pixels
    assert data.folder is not None
    (train, y_train), (val, y_val), (test, y_test) = data.folder.splits
    # every class split in the same proportions: 20% test, 20% of the rest for validation
    assert np.bincount(y_test).tolist() == [4, 6, 2]
    assert np.bincount(y_val).tolist() == [3, 5, 2]
    assert np.bincount(y_train).tolist() == [13, 19, 6]
    assert not set(train) & set(val) and not (set(train) | set(val)) & set(test)
    for paths, labels in data.folder.splits:
        assert all(Path(p).parent.name == CLASSES[y] for p, y in zip(paths, labels, strict=True))
    again = load(root, seed=0, image_size=(16, 16), validation_split=0.2, test_split=0.2,
                 max_samples=None)
    assert again.folder is not None and again.folder.splits == data.folder.splits
    other = load(root, seed=5, image_size=(16, 16), validation_split=0.2, test_split=0.2)
    assert other.folder is not None and other.folder.splits[2] != data.folder.splits[2]


@pytest.mark.parametrize("mode", ["stretch", "crop", "pad"])
def test_each_resize_mode_matches_keras_resizing(tmp_path: Path, mode: str) -> None:
    root = make_folder(tmp_path / f"resize_{mode}", per_class=(4, 4, 4))
    data = load(root, image_size=(10, 14), resize=mode, test_split=0.25)
    assert data.input_shape == (10, 14, 3)
    x, y = read(data.batched(5).test_stream)
    assert x.shape == (3, 10, 14, 3) and x.dtype == np.float32
    paths = data.folder.splits[2][0] if data.folder else ()
    for got, label, path in zip(x, y, paths, strict=True):
        assert Path(path).parent.name == CLASSES[label]
        with Image.open(path) as img:
            original = np.asarray(img.convert("RGB"))
        # Lossy formats decode a level or two apart in TensorFlow and PIL (their IDCTs).
        lossy = Path(path).suffix in (".jpg", ".webp")
        np.testing.assert_allclose(got, resized_by_keras(original, (10, 14), mode),
                                   atol=8 if lossy else 1e-3)
    if mode == "pad":  # 40x30 (h x w) padded to 10:14 keeps black bars left and right
        tall = [i for i, p in enumerate(paths) if Image.open(p).size == (30, 40)]
        for i in tall:
            assert np.all(x[i][:, 0] == 0) and np.all(x[i][:, -1] == 0)


def test_streams_are_batched_by_the_trial_and_shuffled_each_epoch(tmp_path: Path) -> None:
    data = load(make_folder(tmp_path / "stream"), image_size=(8, 8))
    stream = data.batched(7).train_stream
    first, second = read(stream), read(stream)
    n = len(data.folder.splits[0][0]) if data.folder else 0
    assert first[0].shape == (n, 8, 8, 3)
    assert len(stream) == -(-n // 7)
    assert sorted(first[1].tolist()) == sorted(second[1].tolist())
    assert first[1].tolist() != second[1].tolist()  # a new order each epoch
    # the bright channel of each image is its label: images and labels stay together
    assert np.all(first[0].mean(axis=(1, 2)).argmax(axis=1) == first[1])


def test_grayscale_color_mode(tmp_path: Path) -> None:
    data = load(make_folder(tmp_path / "gray", per_class=(5, 5, 5)), image_size=(9, 9),
                color_mode="grayscale")
    assert data.input_shape == (9, 9, 1)
    x, _ = read(data.val_stream)
    assert x.shape[1:] == (9, 9, 1) and 0 <= x.min() and x.max() <= 255


@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_cache_modes_read_the_same_images(tmp_path: Path, cache: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # where a disk cache goes
    root = make_folder(tmp_path / f"cache_{cache}", per_class=(6, 6, 6))
    plain = read(load(root, image_size=(8, 8)).val_stream)
    cached = load(root, image_size=(8, 8), cache=cache).val_stream
    for _ in range(2):  # the second pass reads the cache
        x, y = read(cached)
        np.testing.assert_allclose(x, plain[0])
        assert y.tolist() == plain[1].tolist()
    if cache == "disk":  # a finished cache, for later trials
        assert list(tmp_path.glob("mltune-cache/*/val-*.index"))


def test_without_image_size_images_of_one_size_keep_it(tmp_path: Path) -> None:
    root = tmp_path / "same_size"
    rng = np.random.default_rng(1)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(colour(label, 11, 13, rng)).save(root / name / f"{i}.png")
    data = load(root)
    assert data.input_shape == (11, 13, 3)
    x, _ = read(data.val_stream)
    assert x.shape[1:] == (11, 13, 3)


def test_large_images_without_image_size_are_refused_before_any_run(tmp_path: Path) -> None:
    root = tmp_path / "large"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(2):  # 1100x1000: over the limit, yet cheap to write
            Image.new("RGB", (1100, 1000)).save(root / name / f"{i}.png")
    study = tmp_path / "large.yaml"
    study.write_text(yaml.safe_dump({
        "study": {"name": "large", "n_trials": 1}, "data": {"source": str(root)},
        "training": {"epochs": 1},
        "search_space": {"filters": {"type": "categorical", "choices": [4, 8]}}}))
    db = tmp_path / "mlflow.db"
    result = runner.invoke(app, ["tune", str(study), "--storage", str(tmp_path / "j.log"),
                                 "--tracking-uri", f"sqlite:///{db}"])
    assert result.exit_code == 2, result.stdout + result.stderr
    assert "1100x1000 pixels" in result.stderr and "set data.image_size" in result.stderr
    if db.exists():  # the tracking store was checked, but no run was made
        assert not MlflowClient(f"sqlite:///{db}").search_runs(
            [e.experiment_id for e in MlflowClient(f"sqlite:///{db}").search_experiments()])
    with pytest.raises(DataError, match=re.escape("set data.image_size: [height, width]")):
        load(root)
    assert load(root, image_size=(8, 8)).input_shape == (8, 8, 3)  # with it: fine


def test_study_on_a_folder_registers_a_model_that_serves_raw_images(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pics")
    stores = {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
              "storage": str(tmp_path / "journal.log")}
    study = {"study": {"name": "folder", "sampler": "random", "n_trials": 2, "seed": 3},
             "data": {"source": str(root), "image_size": [12, 12], "resize": "crop"},
             "training": {"epochs": 1},
             "model": {"conv_blocks": 1, "dense_units": 8},
             "search_space": {"batch_size": {"type": "categorical", "choices": [8, 16]},
                              "filters": {"type": "categorical", "choices": [4, 8]}}}
    path = tmp_path / "folder.yaml"
    path.write_text(yaml.safe_dump(study))
    result = tune(load_config(path), **stores)
    assert result.states.get("COMPLETE") == 2, result.states
    reg = register_best(study_name="folder", name="pics", **stores)
    assert "test_accuracy" in reg.test_metrics
    mlflow.set_tracking_uri(stores["tracking_uri"])
    info = mlflow.models.get_model_info(reg.model_uri)
    assert info.metadata["resize"] == "crop" and info.metadata["input_shape"] == [12, 12, 3]
    model = mlflow.pyfunc.load_model(reg.model_uri)
    rng = np.random.default_rng(9)
    raw = [colour(i % 3, h, w, rng) for i, (h, w) in enumerate(((50, 70), (9, 31), (64, 64)))]
    photos = np.empty(len(raw), dtype=object)  # photos of differing sizes, as REST's parsed
    for i, image in enumerate(raw):
        photos[i] = image
    ragged = np.asarray(model.predict(photos))
    assert ragged.shape == (3, 3)
    np.testing.assert_allclose(ragged.sum(axis=1), 1, atol=1e-4)
    one = np.asarray(model.predict(raw[0]))  # one image of another size
    np.testing.assert_allclose(one, ragged[:1], rtol=1e-4, atol=1e-6)
    batch = np.stack([colour(0, 33, 20, rng), colour(1, 33, 20, rng)])  # a batch, uint8
    assert np.asarray(model.predict(batch)).shape == (2, 3)
    gray = np.asarray(model.predict(batch[0, ..., 0]))  # grayscale, no channel axis
    assert gray.shape == (1, 3)
    # what the loader resizes is what training resized: the same crop as keras' layer
    exact = np.asarray(model.predict(resized_by_keras(raw[0], (12, 12), "crop")[None]))
    np.testing.assert_allclose(exact, one, rtol=1e-4, atol=1e-6)


def test_balanced_class_weight_counts_the_folders_training_files(tmp_path: Path) -> None:
    """An image folder streams, yet knows each class's training files: `balanced` weighs
    them as scikit-learn does, without reading an image."""
    from sklearn.utils.class_weight import compute_class_weight

    from mltune._session import class_weights

    data = load(make_folder(tmp_path / "imgs", per_class=(30, 10, 20)),
                image_size=(12, 12), validation_split=0.2, test_split=0.2)
    _, labels = read(data.batched(64).train_stream)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    weights = class_weights("balanced", data)
    assert [weights[c] for c in range(3)] == pytest.approx(list(expected))
