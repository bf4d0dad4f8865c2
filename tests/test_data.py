"""Loading, checking and splitting data sets: .npz, image folders, .csv and built-ins.

``load_data`` caches by (DataConfig, seed) for the process, so every test that writes a
file uses a file name of its own.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SHARED_MNIST

from mltune._config import DataConfig
from mltune._data import Dataset, from_python, load_data
from mltune._errors import DataError


def load(source: Path | str, seed: int | None = 0, seed_: int | None = None, **options: Any
         ) -> Dataset:
    """``seed``: the study's; ``seed_``: ``data.seed``."""
    return load_data(DataConfig(source=str(source), seed=seed_, **options), seed=seed)


def fails(message: str) -> Any:
    return pytest.raises(DataError, match=re.escape(message))


def counted_npz(path: Path, n: int = 100, with_test: bool = True) -> Path:
    """An .npz whose image i is filled with the value i, so samples can be told apart."""
    x = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None], (n, 4, 4)).copy()
    arrays: dict[str, np.ndarray] = {"x_train": x, "y_train": np.arange(n) % 3}
    if with_test:
        arrays["x_test"] = np.full((20, 4, 4), -1.0, dtype=np.float32)
        arrays["y_test"] = np.arange(20) % 3
    with path.open("wb") as f:  # np.savez(path) would add .npz to a name like UPPER.NPZ
        np.savez(f, **arrays)
    return path


def ids(x: np.ndarray) -> list[int]:
    return [int(v) for v in x[:, 0, 0, 0]]


# --- .npz -----------------------------------------------------------------------------------


def test_npz_with_test_arrays(npz_file) -> None:
    path = npz_file("with_test.npz", n=120)
    data = load(path)
    with np.load(path) as f:
        x_test, y_test = f["x_test"], f["y_test"]
    assert data.name == "with_test.npz"
    assert data.x_train.dtype == np.uint8  # pixels stay as they come
    assert data.input_shape == (10, 10, 1)
    assert data.x_train.shape == (108, 10, 10, 1) and data.x_val.shape == (12, 10, 10, 1)
    assert data.y_train.shape == (108,) and data.y_val.shape == (12,)
    assert data.y_train.dtype == np.int64
    # the test split of the file is kept as it is, not drawn from the training data
    np.testing.assert_array_equal(data.x_test[..., 0], x_test)
    np.testing.assert_array_equal(data.y_test, y_test)
    assert data.num_classes == 3
    assert data.pixel_max == 255.0
    assert data.class_names == ("0", "1", "2")


def test_npz_without_test_arrays_splits_off_a_test_set(npz_file) -> None:
    data = load(npz_file("no_test.npz", n=120, x_test=None, y_test=None), test_split=0.2,
                validation_split=0.1)
    assert len(data.x_test) == 24  # 20 % of 120
    assert len(data.x_val) == 10  # 10 % of the remaining 96
    assert len(data.x_train) == 86
    assert len(data.y_test) == 24


def test_npz_split_from_train_has_no_overlap(tmp_path: Path) -> None:
    data = load(counted_npz(tmp_path / "counted_no_test.npz", with_test=False))
    train, val, test = ids(data.x_train), ids(data.x_val), ids(data.x_test)
    assert len(train) + len(val) + len(test) == 100
    assert sorted(train + val + test) == list(range(100))  # each sample in exactly one split
    # labels travel with their images
    assert all(y == i % 3 for i, y in zip(ids(data.x_train), data.y_train, strict=True))
    assert all(y == i % 3 for i, y in zip(ids(data.x_test), data.y_test, strict=True))


def test_npz_labels_as_column_vector(npz_file) -> None:
    # keras.datasets.cifar10 gives labels of shape (N, 1)
    y = np.random.default_rng(1).integers(0, 3, (120, 1)).astype(np.uint8)
    data = load(npz_file("column_labels.npz", y_train=y, y_test=np.zeros((30, 1), np.uint8)))
    assert data.y_train.ndim == 1 and data.y_test.shape == (30,)


def test_npz_rgb_images(npz_file) -> None:
    rng = np.random.default_rng(2)
    data = load(npz_file("rgb.npz", x_train=rng.integers(0, 256, (120, 6, 5, 3), np.uint8),
                         x_test=rng.integers(0, 256, (30, 6, 5, 3), np.uint8)))
    assert data.input_shape == (6, 5, 3)


def test_npz_float_pixels_set_pixel_max(npz_file) -> None:
    x = np.random.default_rng(3).random((120, 10, 10)).astype(np.float32) * 4.0
    x[0, 0, 0] = 4.0
    data = load(npz_file("float_pixels.npz", x_train=x,
                         x_test=np.zeros((30, 10, 10), np.float32)))
    assert data.x_train.dtype == np.float32
    assert data.pixel_max == 4.0


def test_npz_missing_x_train(npz_file) -> None:
    path = npz_file("no_x_train.npz", x_train=None)
    with fails(f"{path}: needs arrays x_train and y_train (and optionally x_test, y_test), "
               "but has x_test, y_test, y_train"):
        load(path)


def test_npz_missing_y_train(npz_file) -> None:
    path = npz_file("no_y_train.npz", y_train=None)
    with fails(f"{path}: needs arrays x_train and y_train"):
        load(path)


def test_npz_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "broken.npz"
    path.write_bytes(b"this is not a zip file")
    with fails(f"{path}: not a readable .npz file"):
        load(path)


@pytest.mark.parametrize(
    ("shape", "shown"),
    [
        pytest.param((120, 100), "(120, 100)", id="flat"),
        pytest.param((120, 10, 10, 2), "(120, 10, 10, 2)", id="two-channels"),
        pytest.param((120, 2, 10, 10, 1), "(120, 2, 10, 10, 1)", id="five-dims"),
    ],
)
def test_npz_wrong_image_shape(npz_file, shape: tuple[int, ...], shown: str) -> None:
    path = npz_file(f"shape_{len(shape)}_{shape[-1]}.npz", x_train=np.zeros(shape, np.uint8))
    with fails(f"{path}: x_train must hold images of shape (N, height, width) or "
               f"(N, height, width, 1|3|4), but got {shown}"):
        load(path)


def test_npz_test_images_of_other_shape(npz_file) -> None:
    path = npz_file("test_shape.npz", x_test=np.zeros((30, 8, 8), np.uint8))
    with fails(f"{path}: test images have shape (8, 8, 1), but training images (10, 10, 1)"):
        load(path)


def test_npz_label_count_mismatch(npz_file) -> None:
    path = npz_file("y_short.npz", y_train=np.zeros(100, np.uint8))
    with fails(f"{path}: y_train must hold one label per image (120), but got shape (100,)"):
        load(path)


def test_npz_test_label_count_mismatch(npz_file) -> None:
    path = npz_file("y_test_short.npz", y_test=np.zeros(29, np.uint8))
    with fails(f"{path}: y_test must hold one label per image (30), but got shape (29,)"):
        load(path)


def test_npz_negative_labels(npz_file) -> None:
    y = np.zeros(120, np.int64)
    y[7] = -1
    path = npz_file("negative.npz", y_train=y)
    with fails(f"{path}: labels must be >= 0, but y_train holds -1"):
        load(path)


def test_npz_fractional_labels(npz_file) -> None:
    path = npz_file("fractional.npz", y_train=np.full(120, 0.5))
    with fails(f"{path}: y_train must hold integer class labels, but got dtype float64"):
        load(path)


def test_npz_whole_float_labels_are_accepted(npz_file) -> None:
    data = load(npz_file("float_labels.npz", y_train=(np.arange(120) % 3).astype(np.float32)))
    assert data.y_train.dtype == np.int64
    assert set(data.y_train.tolist()) <= {0, 1, 2}


def test_npz_non_finite_pixels(npz_file) -> None:
    x = np.zeros((120, 10, 10), np.float32)
    x[3, 1, 1] = np.nan
    path = npz_file("nan.npz", x_train=x, x_test=np.zeros((30, 10, 10), np.float32))
    with fails(f"{path}: x_train holds NaN or infinite values"):
        load(path)


def test_npz_labels_out_of_range_for_num_classes(npz_file) -> None:
    y = np.zeros(120, np.uint8)
    y[5] = 5
    path = npz_file("out_of_range.npz", y_train=y)
    with fails(f"{path}: labels must be in 0..2 (data.num_classes=3), but found label 5"):
        load(path, num_classes=3)


def test_npz_test_labels_out_of_range_for_num_classes(npz_file) -> None:
    path = npz_file("test_out_of_range.npz", y_train=np.zeros(120, np.uint8),
                    y_test=np.full(30, 4, np.uint8))
    with fails(f"{path}: labels must be in 0..1 (data.num_classes=2), but found label 4"):
        load(path, num_classes=2)


def test_npz_num_classes_larger_than_seen(npz_file) -> None:
    data = load(npz_file("more_classes.npz"), num_classes=10)
    assert data.num_classes == 10
    assert data.class_names == tuple(str(i) for i in range(10))


@pytest.mark.parametrize("num_classes", [None, 3], ids=["inferred", "data.num_classes"])
def test_npz_single_class_is_refused(npz_file, num_classes: int | None) -> None:
    path = npz_file(f"one_label_{num_classes}.npz", y_train=np.full(120, 1, np.uint8),
                    y_test=np.full(30, 1, np.uint8))
    with fails(f"{path}: labels must name at least 2 classes, but every label is 1"):
        load(path, num_classes=num_classes)


@pytest.mark.parametrize("label", [10**5, 10**6])
def test_npz_stray_huge_label_is_refused(npz_file, label: int) -> None:
    # One such label in a 3-class file made as many class names (10**9: killed for memory)
    # and a model with as many outputs. Not 10**9 here: were the check lost, the test would
    # take the machine's memory down with it instead of failing.
    y = np.random.default_rng(4).integers(0, 3, 120).astype(np.int64)
    y[17] = label
    path = npz_file(f"huge_label_{label}.npz", y_train=y)
    with fails(f"{path}: labels must be class numbers below 100000, but y_train holds {label}"):
        load(path)


def test_npz_huge_whole_float_label_is_refused_before_it_overflows(npz_file) -> None:
    y = (np.arange(120) % 3).astype(np.float64)
    y[0] = 1e300
    path = npz_file("huge_float_label.npz", y_train=y)
    with fails(f"{path}: labels must be class numbers below 100000, but y_train holds 1e+300"):
        load(path)


def test_npz_labels_far_sparser_than_their_count(npz_file) -> None:
    y = np.random.default_rng(5).integers(0, 3, 120).astype(np.int64)
    y[9] = 5000
    path = npz_file("sparse.npz", y_train=y)
    with fails(f"{path}: labels must number the classes 0..K-1, with at least 1 in 4 of those "
               "numbers used, but 4 distinct labels (0, 1, 2, 5000) go up to 5000; renumber "
               "them 0..3, or set data.num_classes to the number of classes"):
        load(path)
    assert load(path, num_classes=5001).num_classes == 5001  # said on purpose: kept


def test_npz_labels_with_a_few_gaps_are_kept(npz_file) -> None:
    # Two classes of ten kept with their own numbers (say airplane 0 and bird 2 of CIFAR-10).
    y = np.where(np.arange(120) % 2 == 0, 0, 2).astype(np.uint8)
    data = load(npz_file("gaps.npz", y_train=y, y_test=np.zeros(30, np.uint8)))
    assert data.num_classes == 3


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_npz_complex_pixels_are_refused(npz_file, dtype: Any) -> None:
    x = np.random.default_rng(6).random((120, 10, 10)).astype(dtype)
    path = npz_file(f"complex_{np.dtype(dtype).name}.npz", x_train=x)
    with fails(f"{path}: x_train must hold real numbers, but got dtype {np.dtype(dtype).name}"):
        load(path)


def test_arrays_from_python_get_the_same_label_checks() -> None:
    x = np.zeros((40, 8, 8, 1), np.float32)
    cfg = DataConfig(source=None, validation_split=0.25)
    sparse = np.arange(40) % 2
    sparse[3] = 99
    with fails("data: labels must number the classes 0..K-1"):
        from_python((x, sparse), cfg=cfg, images=True)
    with fails("data: labels must name at least 2 classes, but every label is 0"):
        from_python((x, np.zeros(40, np.int64)), cfg=cfg, images=True)
    with fails("data: x_train must hold real numbers, but got dtype complex128"):
        from_python((x.astype(np.complex128), np.arange(40) % 2), cfg=cfg, images=True)
    with fails("data: labels must be in 0..2 (data.num_classes=3), but found label 3"):
        from_python((x, np.arange(40) % 4), cfg=DataConfig(source=None, num_classes=3))
    assert from_python((x, np.arange(40) % 4), cfg=cfg).num_classes == 4


class PyDataset:
    """Batches as ``keras.utils.PyDataset`` gives them (told apart by its name, so no Keras)."""

    def __init__(self, labels: list[list[int]]) -> None:
        self.batches = [(np.zeros((len(y), 8, 8, 1), np.float32), np.asarray(y)) for y in labels]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Any:
        return self.batches[i]


def test_streamed_labels_get_the_same_label_checks() -> None:
    val = PyDataset([[0, 1]])
    cfg = DataConfig(source=None)
    with fails("data: labels must number the classes 0..K-1, with at least 1 in 4 of those "
               "numbers used, but 3 distinct labels (0, 1, 70) go up to 70"):
        from_python(PyDataset([[0, 1], [1, 70]]), val, cfg=cfg)
    with fails("data: labels must name at least 2 classes, but every label is 2"):
        from_python(PyDataset([[2, 2], [2]]), val, cfg=cfg)
    assert from_python(PyDataset([[0, 1], [2, 1]]), val, cfg=cfg).num_classes == 3


def test_huge_label_exits_2_from_the_cli_and_writes_nothing(npz_file, write_study,
                                                             tmp_path: Path) -> None:
    from mlflow import MlflowClient
    from typer.testing import CliRunner

    from mltune._cli import app

    y = np.random.default_rng(7).integers(0, 3, 120).astype(np.int64)
    y[0] = 10**6
    path = npz_file("cli_huge_label.npz", y_train=y)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = CliRunner().invoke(app, ["tune", str(write_study()), "--data", str(path),
                                      "--tracking-uri", tracking,
                                      "--storage", str(tmp_path / "journal.log")])
    assert result.exit_code == 2, result.stderr
    assert result.stderr == (f"error: {path}: labels must be class numbers below 100000, but "
                             "y_train holds 1000000\n")
    assert not (tmp_path / "journal.log").exists()
    assert not MlflowClient(tracking).search_runs(
        [e.experiment_id for e in MlflowClient(tracking).search_experiments()])


def test_npz_empty(npz_file) -> None:
    path = npz_file("empty.npz", x_train=np.zeros((0, 10, 10), np.uint8),
                    y_train=np.zeros(0, np.uint8))
    with fails(f"{path}: x_train is empty"):
        load(path)


def test_npz_too_few_samples_for_a_validation_split(npz_file) -> None:
    path = npz_file("one_sample.npz", x_train=np.zeros((1, 10, 10), np.uint8),
                    y_train=np.zeros(1, np.uint8))
    with fails(f"{path}: 1 training samples are too few to hold out a validation split"):
        load(path)


# --- splits ---------------------------------------------------------------------------------


def test_split_is_deterministic_for_the_same_seed(tmp_path: Path) -> None:
    # two files with the same content, so the cache cannot hide a difference
    a = load(counted_npz(tmp_path / "same_a.npz", with_test=False), seed=5)
    b = load(counted_npz(tmp_path / "same_b.npz", with_test=False), seed=5)
    assert ids(a.x_train) == ids(b.x_train)
    assert ids(a.x_val) == ids(b.x_val)
    assert ids(a.x_test) == ids(b.x_test)
    np.testing.assert_array_equal(a.y_train, b.y_train)


def test_split_differs_for_another_seed(tmp_path: Path) -> None:
    path = counted_npz(tmp_path / "seeds.npz", with_test=False)
    a, b = load(path, seed=1), load(path, seed=2)
    assert ids(a.x_val) != ids(b.x_val)
    assert ids(a.x_test) != ids(b.x_test)
    assert len(a.x_val) == len(b.x_val)


def test_seed_none_is_reproducible(tmp_path: Path) -> None:
    a = load(counted_npz(tmp_path / "none_a.npz"), seed=None)
    b = load(counted_npz(tmp_path / "none_b.npz"), seed=None)
    assert ids(a.x_val) == ids(b.x_val)


def test_data_seed_fixes_the_split_whatever_the_study_seed(tmp_path: Path) -> None:
    path = counted_npz(tmp_path / "data_seed.npz", with_test=False)
    a, b = load(path, seed=1, seed_=None), load(path, seed=2, seed_=None)
    fixed_a, fixed_b = load(path, seed=1, seed_=7), load(path, seed=2, seed_=7)
    assert ids(a.x_val) != ids(b.x_val)
    assert ids(fixed_a.x_val) == ids(fixed_b.x_val) == ids(load(path, seed=7).x_val)


def test_data_seed_fixes_the_split_of_arrays_passed_in_python() -> None:
    x = np.broadcast_to(np.arange(100, dtype=np.float32)[:, None, None, None], (100, 4, 4, 1))
    y = np.arange(100) % 3

    def val_ids(seed: int, data_seed: int | None) -> list[int]:
        data = from_python((x, y), cfg=DataConfig(source=None, seed=data_seed), seed=seed)
        return ids(data.x_val)

    assert val_ids(1, None) != val_ids(2, None)
    assert val_ids(1, 7) == val_ids(2, 7) == val_ids(7, None)


def test_load_data_is_cached_per_config_and_seed(tmp_path: Path) -> None:
    path = counted_npz(tmp_path / "cached.npz")
    assert load(path, seed=3) is load(path, seed=3)
    assert load(path, seed=3) is not load(path, seed=4)


@pytest.mark.parametrize(("fraction", "n_val"), [(0.1, 10), (0.25, 25), (0.5, 50)])
def test_validation_fraction(tmp_path: Path, fraction: float, n_val: int) -> None:
    data = load(counted_npz(tmp_path / f"fraction_{fraction}.npz"), validation_split=fraction)
    assert len(data.x_val) == n_val and len(data.y_val) == n_val
    assert len(data.x_train) == 100 - n_val
    assert not set(ids(data.x_train)) & set(ids(data.x_val))
    assert sorted(ids(data.x_train) + ids(data.x_val)) == list(range(100))
    assert ids(data.x_test) == [-1] * 20  # the file's test set, untouched


def test_max_samples(tmp_path: Path) -> None:
    data = load(counted_npz(tmp_path / "max_samples.npz"), max_samples=40,
                validation_split=0.25)
    assert len(data.x_train) == 30 and len(data.x_val) == 10
    assert len(set(ids(data.x_train)) | set(ids(data.x_val))) == 40
    assert len(data.x_test) == 20  # max_samples does not shrink the test set


def test_max_samples_above_the_data_size_uses_everything(tmp_path: Path) -> None:
    data = load(counted_npz(tmp_path / "max_samples_big.npz"), max_samples=10_000)
    assert len(data.x_train) + len(data.x_val) == 100


def test_validation_is_always_at_least_one_sample(tmp_path: Path) -> None:
    data = load(counted_npz(tmp_path / "tiny_val.npz"), max_samples=4, validation_split=0.01)
    assert len(data.x_val) == 1 and len(data.x_train) == 3


# --- folders of images --------------------------------------------------------------------


def write_images(root: Path, classes: dict[str, list[np.ndarray]]) -> Path:
    from PIL import Image

    for name, images in classes.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, pixels in enumerate(images):
            Image.fromarray(pixels).save(folder / f"img{i:02d}.png")
    return root


def streamed(data: Dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    """(x, y) of train, val and test, read from an image folder's streams."""
    out = []
    for stream in (data.train_stream, data.val_stream, data.test_stream):
        batches = list(stream) if hasattr(stream, "element_spec") else [
            stream[i] for i in range(len(stream))]
        out.append((np.concatenate([np.asarray(x) for x, _ in batches]),
                    np.concatenate([np.asarray(y) for _, y in batches])))
    return out


def gray(value: int, h: int = 5, w: int = 6) -> np.ndarray:
    return np.full((h, w), value, np.uint8)


def rgb(value: int, h: int = 5, w: int = 6) -> np.ndarray:
    return np.stack([np.full((h, w), value, np.uint8), np.zeros((h, w), np.uint8),
                     np.full((h, w), 255 - value, np.uint8)], axis=-1)


def test_image_folder_grayscale(tmp_path: Path) -> None:
    root = write_images(tmp_path / "gray", {"cat": [gray(10)] * 5, "dog": [gray(200)] * 5})
    data = load(root)
    assert data.name == "gray"
    assert data.class_names == ("cat", "dog")
    assert data.num_classes == 2
    assert data.input_shape == (5, 6, 1)  # height 5, width 6
    assert data.x_train is None and data.pixel_max == 255.0  # streamed, not loaded whole
    splits = streamed(data)
    (x_train, _), (x_val, _), (x_test, _) = splits
    assert x_train.dtype == np.float32 and x_train.shape[1:] == (5, 6, 1)
    assert len(x_test) == 2 and len(x_val) == 1 and len(x_train) == 7
    for x, y in splits:
        # each image keeps the label of its sub-folder
        assert [int(v) for v in x[:, 0, 0, 0]] == [(10, 200)[label] for label in y]


def test_image_folder_rgb(tmp_path: Path) -> None:
    root = write_images(tmp_path / "rgb", {"a": [rgb(30)] * 4, "b": [rgb(90)] * 4,
                                           "c": [rgb(150)] * 4})
    data = load(root)
    assert data.class_names == ("a", "b", "c") and data.num_classes == 3
    assert data.input_shape == (5, 6, 3)
    pixel = streamed(data)[0][0][0, 0, 0]
    assert int(pixel[1]) == 0 and int(pixel[0]) + int(pixel[2]) == 255


def test_image_folder_color_mode_grayscale_converts_rgb(tmp_path: Path) -> None:
    root = write_images(tmp_path / "rgb_to_gray", {"a": [rgb(30)] * 3, "b": [rgb(90)] * 3})
    assert load(root, color_mode="grayscale").input_shape == (5, 6, 1)


def test_image_folder_color_mode_rgb_converts_gray(tmp_path: Path) -> None:
    root = write_images(tmp_path / "gray_to_rgb", {"a": [gray(30)] * 3, "b": [gray(90)] * 3})
    data = load(root, color_mode="rgb")
    assert data.input_shape == (5, 6, 3)
    x_train = streamed(data)[0][0]
    assert np.all(x_train[0, 0, 0] == x_train[0, 0, 0, 0])  # same value in R, G, B


def test_image_folder_differing_sizes_need_image_size(tmp_path: Path) -> None:
    root = write_images(tmp_path / "sizes", {"cat": [gray(10)], "dog": [gray(20, h=7, w=8)]})
    with fails(f"{root / 'dog' / 'img00.png'}: 8x7 pixels, but earlier images are 6x5; set "
               "data.image_size to resize them all"):
        load(root)


def test_image_folder_image_size_resizes(tmp_path: Path) -> None:
    root = write_images(tmp_path / "resized", {"cat": [gray(10), gray(10, h=9, w=9)],
                                               "dog": [gray(200, h=7, w=8), gray(200)]})
    data = load(root, image_size=(4, 3), validation_split=0.3)  # [height, width]
    assert data.input_shape == (4, 3, 1)
    splits = streamed(data)
    everything = np.concatenate([x for x, _ in splits])
    labels = np.concatenate([y for _, y in splits])
    assert len(everything) == 4
    for x, y in zip(everything, labels, strict=True):
        assert np.allclose(x, (10, 200)[y], atol=1e-3)  # a flat image stays flat when resized


def test_image_folder_needs_two_classes(tmp_path: Path) -> None:
    root = write_images(tmp_path / "one_class", {"only": [gray(1)] * 3})
    with fails(f"{root}: an image folder needs one sub-folder per class (at least 2), but "
               "has 1"):
        load(root)


def test_image_folder_with_an_empty_class_folder(tmp_path: Path) -> None:
    root = write_images(tmp_path / "empty_class", {"cat": [gray(1)] * 3, "dog": [gray(2)] * 3})
    (root / "emu").mkdir()
    (root / "emu" / "README.txt").write_text("photos to come")
    with fails(f"{root / 'emu'}: a class sub-folder must hold at least one image (.png, "):
        load(root)


def test_image_folder_without_images(tmp_path: Path) -> None:
    root = tmp_path / "no_images"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        (root / name / "notes.txt").write_text("not an image")
    with fails(f"{root}: no image files (.png"):
        load(root)


def test_image_folder_unreadable_image(tmp_path: Path) -> None:
    root = write_images(tmp_path / "unreadable", {"a": [gray(1)] * 2, "b": [gray(2)]})
    bad = root / "b" / "zz_broken.png"
    bad.write_bytes(b"not a png")
    with fails(f"{bad}: not a readable image"):
        load(root)


def test_image_folder_16_bit_grayscale_is_not_clipped(tmp_path: Path) -> None:
    from PIL import Image

    root = tmp_path / "sixteen_bit"
    for name, value in (("dark", 1000), ("bright", 50000)):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((5, 6), value, np.uint16)).save(root / name / f"{i}.png")
    with Image.open(root / "dark" / "0.png") as img:
        assert img.mode == "I;16"
    data = load(root)
    splits = streamed(data)
    everything = np.concatenate([x for x, _ in splits])
    labels = np.concatenate([y for _, y in splits])
    bright = data.class_names.index("bright")
    dark_values = np.unique(everything[labels != bright])
    bright_values = np.unique(everything[labels == bright])
    assert dark_values.max() < bright_values.min()  # the two classes stay distinguishable
    assert data.pixel_max >= bright_values.max()


# --- .csv -----------------------------------------------------------------------------------


def write_csv(path: Path, labels: list[Any], pixels: np.ndarray, label_column: str = "label",
              ) -> Path:
    header = [label_column] + [f"p{i}" for i in range(pixels.shape[1])]
    rows = [",".join([str(label)] + [str(int(v)) for v in row])
            for label, row in zip(labels, pixels, strict=True)]
    path.write_text("\n".join([",".join(header), *rows]) + "\n")
    return path


def test_csv_square_images(tmp_path: Path) -> None:
    n = 40
    pixels = np.repeat((np.arange(n) * 5)[:, None], 16, axis=1)
    path = write_csv(tmp_path / "square.csv", [i % 4 for i in range(n)], pixels)
    data = load(path)
    assert data.input_shape == (4, 4, 1)
    assert data.x_train.dtype == np.uint8 and data.pixel_max == 255.0
    assert data.num_classes == 4
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == n
    for x, y in zip(data.x_train, data.y_train, strict=True):
        assert (int(x[0, 0, 0]) // 5) % 4 == y  # row i holds 5*i and label i % 4


def test_csv_string_labels_become_class_names(tmp_path: Path) -> None:
    labels = ["zebra", "ant", "moose"] * 10
    path = write_csv(tmp_path / "names.csv", labels, np.zeros((30, 9)))
    data = load(path)
    assert data.class_names == ("ant", "moose", "zebra")
    assert data.num_classes == 3 and data.input_shape == (3, 3, 1)


def test_csv_custom_label_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "digit_column.csv", [0, 1] * 10, np.zeros((20, 4)),
                     label_column="digit")
    assert load(path, label_column="digit").input_shape == (2, 2, 1)


def test_csv_missing_label_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "no_label.csv", [0, 1] * 10, np.zeros((20, 4)),
                     label_column="target")
    with fails(f"{path}: has no label column 'label' (data.label_column); its first columns: "
               "target, p0, p1, p2, p3"):
        load(path)


def test_csv_non_square_pixel_count_needs_image_size(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "twelve.csv", [0, 1] * 10, np.zeros((20, 12)))
    with fails(f"{path}: 12 pixel columns are not a square image; set data.image_size: "
               "[height, width]"):
        load(path)


def test_csv_image_size_shapes_the_pixels(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "twelve_sized.csv", [0, 1] * 10, np.zeros((20, 12)))
    assert load(path, image_size=(3, 4)).input_shape == (3, 4, 1)
    assert load(path, image_size=(2, 2)).input_shape == (2, 2, 3)  # 12 = 2 x 2 x 3 channels


def test_csv_image_size_that_does_not_fit(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "ten.csv", [0, 1] * 10, np.zeros((20, 10)))
    with fails(f"{path}: 10 pixel columns do not fill images of data.image_size 3x3"):
        load(path, image_size=(3, 3))


def test_csv_non_numeric_pixels(tmp_path: Path) -> None:
    path = tmp_path / "text_pixels.csv"
    path.write_text("label,p0,p1,p2,p3\n0,1,2,x,4\n1,1,2,3,4\n")
    with fails(f"{path}: pixel columns must be numeric, but 'p2' is not"):
        load(path)


# --- built-ins, missing paths, unsupported files ------------------------------------------


def test_digits_builtin() -> None:
    data = load("digits", seed=0)
    assert data.name == "digits"
    assert data.input_shape == (8, 8, 1)
    assert data.x_train.ndim == 4 and data.x_train.shape[1:] == (8, 8, 1)
    assert data.pixel_max == 16.0
    assert data.num_classes == 10
    assert data.class_names == tuple(str(i) for i in range(10))
    total = len(data.x_train) + len(data.x_val) + len(data.x_test)
    assert total == 1797  # scikit-learn's digits
    assert len(data.x_test) == round(1797 * 0.2)


def test_missing_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "data.npz"
    with fails(f"data.source: no such file or folder: {path}"):
        load(path)


@pytest.mark.parametrize("name", ["data.txt", "images.zip", "data.npy"])
def test_unsupported_suffix(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"\x00\x01")
    with fails(f"data.source: {path} is not a .npz file, a .csv file or a folder of class "
               "sub-folders"):
        load(path)


def test_suffix_is_case_insensitive(tmp_path: Path) -> None:
    path = counted_npz(tmp_path / "UPPER.NPZ")
    assert load(path).input_shape == (4, 4, 1)


# --- the real MNIST file ------------------------------------------------------------------


@pytest.mark.skipif(not SHARED_MNIST.exists(), reason=f"{SHARED_MNIST} is absent")
def test_shared_mnist_file() -> None:
    data = load(SHARED_MNIST, seed=0)
    assert data.name == "mnist.npz"
    assert data.x_train.dtype == np.uint8
    assert data.pixel_max == 255.0
    assert data.num_classes == 10
    assert data.input_shape == (28, 28, 1)
    assert data.x_test.shape == (10000, 28, 28, 1) and data.y_test.shape == (10000,)
    assert len(data.x_train) == 54000 and len(data.x_val) == 6000
    assert set(np.unique(data.y_test).tolist()) == set(range(10))
