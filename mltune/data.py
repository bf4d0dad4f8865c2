"""Data sets: load once per process, check, split with a fixed seed.

Images are kept as they come (``uint8`` pixels stay ``uint8``); scaling happens inside the
model, so a saved model takes raw images. The test split is only used to evaluate the
final model, never to pick one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mltune.config import BUILTIN_DATASETS, DataConfig
from mltune.errors import DataError

__all__ = ["Dataset", "load_data"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    pixel_max: float
    class_names: tuple[str, ...]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        h, w, c = self.x_train.shape[1:]
        return (int(h), int(w), int(c))


_CACHE: dict[tuple[DataConfig, int | None], Dataset] = {}


def load_data(cfg: DataConfig, *, seed: int | None = None) -> Dataset:
    """Load, check and split the data named by ``cfg``; cached for the process.

    The splits are drawn with ``cfg.seed``, or ``seed`` (the study's) when that is not set."""
    if cfg.seed is not None:
        seed = cfg.seed
    key = (cfg, seed)
    if key not in _CACHE:
        _CACHE[key] = _load(cfg, seed)
    return _CACHE[key]


def _load(cfg: DataConfig, seed: int | None) -> Dataset:
    source = cfg.source
    names: tuple[str, ...] | None = None
    if source in BUILTIN_DATASETS:
        (x, y), test = _builtin(source)
        where = f"data.source {source!r}"
    else:
        path = Path(source)
        where = str(path)
        if not path.exists():
            raise DataError(f"data.source: no such file or folder: {path}")
        if path.is_dir():
            (x, y), names = _image_folder(path, cfg)
            test = None
        elif path.suffix.lower() == ".npz":
            (x, y), test = _npz(path)
        elif path.suffix.lower() == ".csv":
            (x, y), names = _csv(path, cfg)
            test = None
        else:
            raise DataError(f"data.source: {path} is not a .npz file, a .csv file or a folder "
                            "of class sub-folders")
    x, y = _check(x, y, where, "train")
    rng = np.random.default_rng(0 if seed is None else seed)
    if test is None:
        idx = rng.permutation(len(x))
        n_test = max(1, round(len(x) * cfg.test_split))
        test = (x[idx[:n_test]], y[idx[:n_test]])
        x, y = x[idx[n_test:]], y[idx[n_test:]]
    x_test, y_test = _check(test[0], test[1], where, "test")
    if x_test.shape[1:] != x.shape[1:]:
        raise DataError(f"{where}: test images have shape {x_test.shape[1:]}, but training "
                        f"images {x.shape[1:]}")
    idx = rng.permutation(len(x))
    if cfg.max_samples is not None:
        idx = idx[: cfg.max_samples]
    n_val = max(1, round(len(idx) * cfg.validation_split))
    if len(idx) - n_val < 1:
        raise DataError(f"{where}: {len(idx)} training samples are too few to hold out a "
                        "validation split")
    val, train = idx[:n_val], idx[n_val:]
    seen = int(max(y.max(), y_test.max())) + 1
    num_classes = cfg.num_classes or max(seen, 2)
    if seen > num_classes:
        raise DataError(f"{where}: labels must be in 0..{num_classes - 1} "
                        f"(data.num_classes={num_classes}), but found label {seen - 1}")
    pixel_max = 255.0 if x.dtype == np.uint8 else max(1.0, float(x.max()))
    return Dataset(
        name=source if source in BUILTIN_DATASETS else Path(source).name,
        x_train=x[train],
        y_train=y[train],
        x_val=x[val],
        y_val=y[val],
        x_test=x_test,
        y_test=y_test,
        num_classes=num_classes,
        pixel_max=pixel_max,
        class_names=names or tuple(str(i) for i in range(num_classes)),
    )


def _check(x: Any, y: Any, where: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise DataError(f"{where}: x_{split} must hold images of shape (N, height, width) or "
                        f"(N, height, width, 1|3|4), but got {x.shape}")
    if len(x) == 0:
        raise DataError(f"{where}: x_{split} is empty")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"{where}: x_{split} must hold numbers, but got dtype {x.dtype}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{where}: y_{split} must hold one label per image ({len(x)}), but got "
                        f"shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(np.mod(y, 1) == 0):
            raise DataError(f"{where}: y_{split} must hold integer class labels, but got "
                            f"dtype {y.dtype}")
    if y.min() < 0:
        raise DataError(f"{where}: labels must be >= 0, but y_{split} holds {int(y.min())}")
    if not np.all(np.isfinite(x)):
        raise DataError(f"{where}: x_{split} holds NaN or infinite values")
    return x, y.astype(np.int64)


def _builtin(name: str) -> tuple[tuple[Any, Any], tuple[Any, Any] | None]:
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        return (digits.images.astype(np.float32), digits.target), None
    import keras

    loader = getattr(keras.datasets, name)
    try:
        train, test = loader.load_data()
    except Exception as e:
        raise DataError(
            f"data.source {name!r}: Keras could not download it ({type(e).__name__}: {e}). "
            "Where the internet is not reachable, point data.source at a local copy: a .npz "
            f"file with x_train, y_train, x_test, y_test (e.g. --data path/to/{name}.npz)"
        ) from None
    return train, test


def _npz(path: Path) -> tuple[tuple[Any, Any], tuple[Any, Any] | None]:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    for key in ("x_train", "y_train"):
        if key not in arrays:
            raise DataError(f"{path}: needs arrays x_train and y_train (and optionally x_test, "
                            f"y_test), but has {', '.join(sorted(arrays)) or 'none'}")
    has_test = "x_test" in arrays and "y_test" in arrays
    test = (arrays["x_test"], arrays["y_test"]) if has_test else None
    return (arrays["x_train"], arrays["y_train"]), test


def _image_folder(path: Path, cfg: DataConfig) -> tuple[tuple[Any, Any], tuple[str, ...]]:
    from PIL import Image, UnidentifiedImageError

    classes = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{path}: an image folder needs one sub-folder per class (at least 2), "
                        f"but has {len(classes)}")
    files = [(f, label) for label, c in enumerate(classes) for f in sorted(c.iterdir())
             if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in its "
                        "class sub-folders")
    mode = {"grayscale": "L", "rgb": "RGB"}.get(cfg.color_mode or "")
    images, labels = [], []
    size = (cfg.image_size[1], cfg.image_size[0]) if cfg.image_size else None
    for f, label in files:
        try:
            with Image.open(f) as img:
                if img.mode.startswith("I"):  # 16/32-bit grayscale: scale, don't clip, to 8 bits
                    wide = np.asarray(img, dtype=np.float64)
                    top = 65535.0 if img.mode.startswith("I;16") else max(1.0, wide.max())
                    img = Image.fromarray(  # type: ignore[assignment]
                        np.clip(np.rint(wide / top * 255), 0, 255).astype(np.uint8), "L")
                if mode is None:
                    mode = "L" if img.mode in ("1", "L", "LA") else "RGB"
                img = img.convert(mode)  # type: ignore[assignment]
                if size is None:
                    size = img.size
                elif img.size != size:
                    if cfg.image_size is None:
                        raise DataError(f"{f}: {img.size[0]}x{img.size[1]} pixels, but earlier "
                                        f"images are {size[0]}x{size[1]}; set data.image_size "
                                        "to resize them all")
                    img = img.resize(size)  # type: ignore[assignment]
                images.append(np.asarray(img, dtype=np.uint8))
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"{f}: not a readable image ({e})") from None
        labels.append(label)
    return (np.stack(images), np.asarray(labels)), tuple(c.name for c in classes)


def _csv(path: Path, cfg: DataConfig) -> tuple[tuple[Any, Any], tuple[str, ...] | None]:
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except Exception as e:
        raise DataError(f"{path}: not a readable .csv file ({e})") from None
    if cfg.label_column not in frame.columns:
        raise DataError(f"{path}: has no label column {cfg.label_column!r} (data.label_column); "
                        f"its first columns: {', '.join(map(str, frame.columns[:5]))}")
    labels = frame.pop(cfg.label_column)
    bad = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise DataError(f"{path}: pixel columns must be numeric, but {bad[0]!r} is not")
    pixels = frame.to_numpy()
    names: tuple[str, ...] | None = None
    if not pd.api.types.is_integer_dtype(labels):
        names = tuple(sorted(map(str, labels.unique())))
        y = labels.astype(str).map({n: i for i, n in enumerate(names)}).to_numpy()
    else:
        y = labels.to_numpy()
    n = pixels.shape[1]
    if cfg.image_size:
        h, w = cfg.image_size
        if n % (h * w):
            raise DataError(f"{path}: {n} pixel columns do not fill images of "
                            f"data.image_size {h}x{w}")
        shape = (h, w, n // (h * w))
    else:
        side = round(n ** 0.5)
        if side * side != n:
            raise DataError(f"{path}: {n} pixel columns are not a square image; set "
                            "data.image_size: [height, width]")
        shape = (side, side, 1)
    if pixels.min(initial=0) >= 0 and pixels.max(initial=0) <= 255 and np.issubdtype(
            pixels.dtype, np.integer):
        pixels = pixels.astype(np.uint8)
    return (pixels.reshape((len(pixels), *shape)), y), names
