"""Data sets: load once per process, check, split with a fixed seed.

Images are kept as they come (``uint8`` pixels stay ``uint8``); scaling happens inside the
model, so a saved model takes raw images. The test split is only used to evaluate the
final model, never to pick one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mltune._config import BUILTIN_DATASETS, MAX_CLASSES
from mltune._errors import DataError
from mltune._types import DataConfig

__all__ = ["Dataset", "from_python", "load_data"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLITS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
# Without data.num_classes, labels 0..K-1 must use at least 1 in _SPARSE of those numbers.
_SPARSE = 4


@dataclass(frozen=True)
class Dataset:
    """The data of a study, split. Arrays (``x_train``...) or, for data that streams from
    disk, a batched ``tf.data.Dataset`` or ``keras.utils.PyDataset`` per split
    (``train_stream``...), which Keras' ``fit`` takes as they are."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    pixel_max: float
    class_names: tuple[str, ...]
    x_train: Any = None
    y_train: Any = None
    x_val: Any = None
    y_val: Any = None
    x_test: Any = None
    y_test: Any = None
    train_stream: Any = None
    val_stream: Any = None
    test_stream: Any = None
    one_hot: bool = False  # labels are one-hot rows (categorical loss), not class indices

    @property
    def has_test(self) -> bool:
        return self.x_test is not None or self.test_stream is not None

    def example(self, n: int) -> np.ndarray:
        """The first ``n`` validation inputs as an array (model signatures, latency)."""
        if self.x_val is not None:
            return np.asarray(self.x_val[:n])
        x, _ = _first_batch(self.val_stream)
        return np.asarray(x)[:n]


_CACHE: dict[tuple[DataConfig, int | None], Dataset] = {}


def load_data(cfg: DataConfig, *, seed: int | None = None,
              loader: Callable[[], Any] | None = None) -> Dataset:
    """Load, check and split the data named by ``cfg`` (``data.source``, or the function
    ``loader`` that ``data.loader`` names); cached for the process.

    The splits are drawn with ``cfg.seed``, or ``seed`` (the study's) when that is not set."""
    if cfg.seed is not None:
        seed = cfg.seed
    key = (cfg, seed)
    if key not in _CACHE:
        _CACHE[key] = _load(cfg, seed) if loader is None else _from_loader(cfg, seed, loader)
    return _CACHE[key]


def _from_loader(cfg: DataConfig, seed: int | None, loader: Callable[[], Any]) -> Dataset:
    where = f"data.loader {cfg.loader or getattr(loader, '__name__', 'loader')}"
    try:
        got = loader()
    except Exception as e:
        raise DataError(f"{where} raised {type(e).__name__}: {e}") from None
    if not isinstance(got, dict) or "x_train" not in got:
        shown = f"a dict with keys {', '.join(map(str, got))}" if isinstance(got, dict) else (
            f"a {type(got).__name__}")
        raise DataError(f"{where} must return a dict with x_train and y_train (and optionally "
                        f"x_val, y_val, x_test, y_test), but returned {shown}")
    unknown = [k for k in got if k not in SPLITS]
    if unknown:
        raise DataError(f"{where} returned unknown key {unknown[0]!r}; the keys are "
                        f"{', '.join(SPLITS)}")
    pair = {split: (got.get(f"x_{split}"), got.get(f"y_{split}"))
            for split in ("train", "val", "test")}
    return from_python(pair["train"], pair["val"] if pair["val"][0] is not None else None,
                       pair["test"] if pair["test"][0] is not None else None, cfg=cfg,
                       seed=seed, where=where)


def _is_stream(obj: Any) -> bool:
    """A batched ``tf.data.Dataset`` or a ``keras.utils.PyDataset`` (checked by name, so
    arrays never import TensorFlow)."""
    names = {c.__name__ for c in type(obj).__mro__}
    return bool(names & {"DatasetV2", "PyDataset"})


def _pair(value: Any, where: str, what: str) -> tuple[Any, Any]:
    """``(x, y)`` from a tuple/list, or ``(stream, None)``."""
    if _is_stream(value):
        return value, None
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return value[0], value[1]
    raise DataError(f"{where}: {what} must be (x, y) arrays, a batched tf.data.Dataset or a "
                    f"keras.utils.PyDataset, but got {type(value).__name__}")


def from_python(data: Any, validation_data: Any = None, test_data: Any = None, *,
                cfg: DataConfig, seed: int | None = None, where: str = "data",
                images: bool = False) -> Dataset:
    """The data a caller passes: ``(x, y)`` NumPy arrays, or a batched ``tf.data.Dataset``
    or ``keras.utils.PyDataset`` of ``(x, y)`` batches; the same for ``validation_data``
    (else the arrays are split by ``cfg.validation_split``) and ``test_data``.
    ``images``: the model is the built-in CNN, so x must hold images."""
    x, y = _pair(data, where, "data")
    if y is None or _is_stream(x):
        if validation_data is None:
            raise DataError(f"{where}: streamed training data needs validation_data (a "
                            "stream cannot be split)")
        return _streams(x, validation_data, test_data, cfg, where)
    rng = np.random.default_rng(0 if seed is None else seed)
    x, y = _user_arrays(x, y, where, "train", images)
    if validation_data is None:
        held, kept = _validation_split(len(x), cfg, rng, where)
        val: tuple[Any, Any] = (x[held], y[held])
        x, y = x[kept], y[kept]
    else:
        val = _user_arrays(*_pair(validation_data, where, "validation_data"), where, "val",
                           images)
    test = None if test_data is None else _user_arrays(
        *_pair(test_data, where, "test_data"), where, "test", images)
    for split, arrays in (("val", val), ("test", test)):
        if arrays is not None and arrays[0].shape[1:] != x.shape[1:]:
            raise DataError(f"{where}: x_{split} has samples of shape {arrays[0].shape[1:]}, "
                            f"but x_train {x.shape[1:]}")
    one_hot = y.ndim == 2
    num_classes = (cfg.num_classes or y.shape[1]) if one_hot else _num_classes(
        cfg, where, y, val[1], *(() if test is None else (test[1],)))
    return Dataset(
        name="arrays", input_shape=tuple(int(d) for d in x.shape[1:]),
        num_classes=num_classes, pixel_max=_pixel_max(x),
        class_names=tuple(str(i) for i in range(num_classes)),
        x_train=x, y_train=y, x_val=val[0], y_val=val[1],
        x_test=None if test is None else test[0], y_test=None if test is None else test[1],
        one_hot=one_hot)


def _validation_split(n: int, cfg: DataConfig, rng: np.random.Generator, where: str
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the validation and training samples: a seeded permutation of ``n`` (at
    most ``data.max_samples``), ``data.validation_split`` of it held out."""
    idx = rng.permutation(n)
    if cfg.max_samples is not None:
        idx = idx[: cfg.max_samples]
    n_val = max(1, round(len(idx) * cfg.validation_split))
    if len(idx) - n_val < 1:
        raise DataError(f"{where}: {len(idx)} training samples are too few to hold out a "
                        "validation split")
    return idx[:n_val], idx[n_val:]


def _user_arrays(x: Any, y: Any, where: str, split: str, images: bool
                 ) -> tuple[np.ndarray, np.ndarray]:
    if images:
        return _check(x, y, where, split)
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 2 or len(x) == 0:
        raise DataError(f"{where}: x_{split} must be an array of samples (N, ...), but got "
                        f"shape {x.shape}")
    _check_dtype(x, where, split)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim not in (1, 2) or len(y) != len(x):
        raise DataError(f"{where}: y_{split} must hold one label (or one-hot row) per sample "
                        f"({len(x)}), but got shape {y.shape}")
    if y.ndim == 1:
        if not np.issubdtype(y.dtype, np.integer) and not (
                np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0)):
            raise DataError(f"{where}: y_{split} must hold integer class labels, but got "
                            f"dtype {y.dtype}")
        _check_label_range(y, where, split)
        y = y.astype(np.int64)
    return x, y


def _check_dtype(x: np.ndarray, where: str, split: str) -> None:
    if np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{where}: x_{split} must hold real numbers, but got dtype {x.dtype}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"{where}: x_{split} must hold numbers, but got dtype {x.dtype}")


def _check_label_range(y: np.ndarray, where: str, split: str) -> None:
    if y.min() < 0:
        raise DataError(f"{where}: labels must be >= 0, but y_{split} holds {int(y.min())}")
    if y.max() >= MAX_CLASSES:  # checked before the labels become int64, which 1e300 overflows
        raise DataError(f"{where}: labels must be class numbers below {MAX_CLASSES}, but "
                        f"y_{split} holds {y.max()}")


def _num_classes(cfg: DataConfig, where: str, *labels: np.ndarray) -> int:
    """The class count of index labels (those of every split): ``data.num_classes``, else
    the largest label + 1, refused when the labels are far sparser than that (one stray
    label of 10**9 would make a model, and class names, for 10**9 classes)."""
    distinct = np.unique(np.concatenate([np.ravel(y) for y in labels]))
    return _class_count(cfg, where, distinct)


def _class_count(cfg: DataConfig, where: str, distinct: np.ndarray) -> int:
    """``distinct``: the sorted labels found."""
    if len(distinct) < 2:
        found = f"every label is {int(distinct[0])}" if len(distinct) else "there are none"
        raise DataError(f"{where}: labels must name at least 2 classes, but {found}")
    top = int(distinct[-1])
    if cfg.num_classes is not None:
        if top >= cfg.num_classes:
            raise DataError(f"{where}: labels must be in 0..{cfg.num_classes - 1} "
                            f"(data.num_classes={cfg.num_classes}), but found label {top}")
        return cfg.num_classes
    if top >= MAX_CLASSES:
        raise DataError(f"{where}: labels must be class numbers below {MAX_CLASSES}, but found "
                        f"label {top}")
    if top + 1 > _SPARSE * len(distinct):
        shown = ", ".join(map(str, distinct[:5].tolist())) + (", ..." if len(distinct) > 5
                                                               else "")
        raise DataError(f"{where}: labels must number the classes 0..K-1, with at least 1 "
                        f"in {_SPARSE} of those numbers used, but {len(distinct)} distinct "
                        f"labels ({shown}) go up to {top}; renumber them 0.."
                        f"{len(distinct) - 1}, or set data.num_classes to the number of "
                        "classes")
    return top + 1


def _first_batch(stream: Any) -> tuple[Any, Any]:
    batch = stream[0] if hasattr(stream, "__getitem__") and not hasattr(
        stream, "element_spec") else next(iter(stream))
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise DataError("a data stream must yield (x, y) batches, but yielded "
                        f"{type(batch).__name__}")
    return np.asarray(batch[0]), np.asarray(batch[1])


def _streams(train: Any, validation_data: Any, test_data: Any, cfg: DataConfig, where: str
             ) -> Dataset:
    def split(value: Any, what: str) -> tuple[Any, Any, Any]:
        x, y = _pair(value, where, what)
        if y is None:
            return None, None, x
        return np.asarray(x), np.asarray(y), None

    xv, yv, val_stream = split(validation_data, "validation_data")
    xt, yt, test_stream = (None, None, None) if test_data is None else split(test_data,
                                                                              "test_data")
    try:
        x0, y0 = _first_batch(train)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{where}: reading the first batch raised {type(e).__name__}: {e}"
                        ) from None
    if x0.ndim < 2:
        raise DataError(f"{where}: the stream must be batched (x of shape (batch, ...)), but "
                        f"its first x has shape {x0.shape}; call .batch(n) on it")
    one_hot = y0.ndim == 2 and y0.shape[1] > 1
    num_classes = cfg.num_classes or (int(y0.shape[1]) if one_hot else _count_classes(
        train, cfg, where))
    return Dataset(
        name=type(train).__name__, input_shape=tuple(int(d) for d in x0.shape[1:]),
        num_classes=num_classes, pixel_max=_pixel_max(x0),
        class_names=tuple(str(i) for i in range(num_classes)),
        x_val=xv, y_val=yv, x_test=xt, y_test=yt, train_stream=train, val_stream=val_stream,
        test_stream=test_stream, one_hot=one_hot)


def _count_classes(stream: Any, cfg: DataConfig, where: str) -> int:
    """The class count of a stream of index labels: one pass over its labels (pass
    ``num_classes`` to skip it)."""
    distinct = np.zeros(0, np.int64)
    batches = (stream[i] for i in range(len(stream))) if not hasattr(
        stream, "element_spec") else iter(stream)
    for batch in batches:
        distinct = np.union1d(distinct, np.asarray(batch[1]).astype(np.int64))
    return _class_count(cfg, where, distinct)


def _pixel_max(x: np.ndarray) -> float:
    return 255.0 if x.dtype == np.uint8 else max(1.0, float(np.max(x)))


def _load(cfg: DataConfig, seed: int | None) -> Dataset:
    source = str(cfg.source)
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
    val, train = _validation_split(len(x), cfg, rng, where)
    num_classes = _num_classes(cfg, where, y, y_test)
    return Dataset(
        name=source if source in BUILTIN_DATASETS else Path(source).name,
        input_shape=tuple(int(d) for d in x.shape[1:]),
        x_train=x[train],
        y_train=y[train],
        x_val=x[val],
        y_val=y[val],
        x_test=x_test,
        y_test=y_test,
        num_classes=num_classes,
        pixel_max=_pixel_max(x),
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
    _check_dtype(x, where, split)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{where}: y_{split} must hold one label per image ({len(x)}), but got "
                        f"shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(np.mod(y, 1) == 0):
            raise DataError(f"{where}: y_{split} must hold integer class labels, but got "
                            f"dtype {y.dtype}")
    _check_label_range(y, where, split)
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
    used = {label for _, label in files}
    empty = [c for label, c in enumerate(classes) if label not in used]
    if empty:
        raise DataError(f"{empty[0]}: a class sub-folder must hold at least one image "
                        f"({', '.join(IMAGE_SUFFIXES)}), but has none")
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
