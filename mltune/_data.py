"""Data sets: load once per process, check, split with a fixed seed.

Images are kept as they come (``uint8`` pixels stay ``uint8``); scaling happens inside the
model, so a saved model takes raw images. The test split is only used to evaluate the
final model, never to pick one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import tempfile
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
    """The data of a study, split. Arrays (``x_train``...) or, for data that streams, a
    batched ``tf.data.Dataset`` or ``keras.utils.PyDataset`` per split (``train_stream``...),
    which Keras' ``fit`` takes as they are: the user's (``streams``), or those of an image
    ``folder``, made on first use in the process that reads them (the one that trains: a
    parent that forks trials runs no TensorFlow op) and batched by ``batch_size``."""

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
    streams: tuple[Any, Any, Any] = (None, None, None)  # the user's (train, val, test)
    one_hot: bool = False  # labels are one-hot rows (categorical loss), not class indices
    folder: ImageFolder | None = None
    batch_size: int = 32  # of the folder's streams (see batched)

    @property
    def train_stream(self) -> Any:
        return self._stream(0)

    @property
    def val_stream(self) -> Any:
        return self._stream(1)

    @property
    def test_stream(self) -> Any:
        return self._stream(2)

    @property
    def class_counts(self) -> tuple[int, ...] | None:
        """Training examples per class of an image folder (known from its file list); None
        for other streams, whose labels are seen only by reading them."""
        if self.folder is None:
            return None
        labels = self.folder.splits[0][1]
        return tuple(labels.count(c) for c in range(self.num_classes))

    def _stream(self, split: int) -> Any:
        if self.folder is None:
            return self.streams[split]
        return self.folder.stream(split, self.batch_size)

    def batched(self, batch_size: int) -> Dataset:
        """This data with an image folder's streams batched by ``batch_size`` (a trial's);
        other data as it is."""
        if self.folder is None or batch_size == self.batch_size:
            return self
        return dataclasses.replace(self, batch_size=batch_size)

    @property
    def has_test(self) -> bool:
        if self.folder is not None:
            return bool(self.folder.splits[2][0])
        return self.x_test is not None or self.test_stream is not None

    def example(self, n: int) -> np.ndarray:
        """The first ``n`` validation inputs as an array (model signatures, latency). An image
        folder's are decoded and resized here with PIL, not by the backend: this may run in
        the parent of forked trials."""
        if self.folder is not None:
            return self.folder.example(n)
        if self.x_val is not None:
            return np.asarray(self.x_val[:n])
        x, _ = _first_batch(self.val_stream)
        return np.asarray(x)[:n]


_CACHE: dict[tuple[DataConfig, int | None], Dataset] = {}


def split_seed(cfg: DataConfig, seed: int | None) -> int | None:
    """The seed that draws the data's splits: ``data.seed``, or ``seed`` (the study's) when
    that is not set."""
    return cfg.seed if cfg.seed is not None else seed


def load_data(cfg: DataConfig, *, seed: int | None = None,
              loader: Callable[[], Any] | None = None) -> Dataset:
    """Load, check and split the data named by ``cfg`` (``data.source``, or the function
    ``loader`` that ``data.loader`` names); cached for the process.

    The splits are drawn with :func:`split_seed`."""
    seed = split_seed(cfg, seed)
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
    (else the arrays are split by ``cfg.validation_split``, drawn with :func:`split_seed`)
    and ``test_data``.
    ``images``: the model is the built-in CNN, so x must hold images."""
    x, y = _pair(data, where, "data")
    if y is None or _is_stream(x):
        if validation_data is None:
            raise DataError(f"{where}: streamed training data needs validation_data (a "
                            "stream cannot be split)")
        return _streams(x, validation_data, test_data, cfg, where)
    seed = split_seed(cfg, seed)
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
        x_val=xv, y_val=yv, x_test=xt, y_test=yt, streams=(train, val_stream, test_stream),
        one_hot=one_hot)


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
            return _image_folder(path, cfg, seed)
        if path.suffix.lower() == ".npz":
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


# Without data.image_size, images are used at their own size, which must be the same for all;
# above this many pixels an image is refused (2000x2000 photos took 6 GB within seconds when
# every image was loaded whole).
MAX_PIXELS = 1024 * 1024
# Images whose header is read while checking a folder (all of a small folder, else this many
# spread over it): reading a header decodes no pixels, but 20,000 of them take seconds.
_HEADERS = 50
_GRAY_MODES = ("1", "L", "LA", "P;L", "F")  # and the I modes (16/32-bit grayscale)
_SPLIT_NAMES = ("train", "val", "test")
_STREAM_CACHE: dict[tuple[int, int, int], tuple[ImageFolder, Any]] = {}


@dataclass(frozen=True)
class ImageFolder:
    """An image folder's files, split by file: ``splits`` holds (paths, labels) of train, val
    and test. Images are decoded, converted to ``channels`` and resized to ``image_size``
    (height, width) as batches are read (:meth:`stream`), so memory does not grow with the
    number of images; pixels keep their 0-255 range (as float32)."""

    root: str
    splits: tuple[tuple[tuple[str, ...], tuple[int, ...]], ...]
    image_size: tuple[int, int]
    channels: int
    resize: str  # stretch | crop | pad: keras.layers.Resizing's, in training and serving
    cache: str  # none | memory | disk
    seed: int

    def stream(self, split: int, batch_size: int) -> Any:
        """The batches of split ``split`` (0 train, shuffled each epoch; 1 val; 2 test): a
        ``tf.data.Dataset`` under TensorFlow, else a ``keras.utils.PyDataset``; made once
        per process and batch size."""
        key = (id(self), split, batch_size)
        hit = _STREAM_CACHE.get(key)
        if hit is None or hit[0] is not self:
            if len(_STREAM_CACHE) >= 8:
                _STREAM_CACHE.clear()
            hit = _STREAM_CACHE[key] = (self, self._make(split, batch_size))
        return hit[1]

    def _make(self, split: int, batch_size: int) -> Any:
        import keras

        paths, labels = self.splits[split]
        if keras.backend.backend() == "tensorflow":
            from mltune._backend_tf import image_files

            return image_files(
                paths, labels, image_size=self.image_size, channels=self.channels,
                resize=self.resize, batch_size=batch_size, shuffle=split == 0,
                seed=self.seed, cache=self._cache_path(split), decode=pil_pixels)
        return _folder_batches(self, split, batch_size)

    def _cache_path(self, split: int) -> str | None:
        """None (no cache), "" (memory) or a file prefix for ``tf.data``'s disk cache: a
        folder per file list and decoding, under the system's temporary folder. A finished
        cache (``<prefix>.index``, no lock file) of the same files (names, times, sizes) is read
        by every later process; one being
        written belongs to its process (two writers of one prefix fail), and the unfinished
        ones of processes that are gone are removed."""
        if self.cache == "none":
            return None
        if self.cache == "memory":
            return ""
        paths = self.splits[split][0]
        stamps = [(s.st_mtime_ns, s.st_size) for s in map(os.stat, paths)]  # changed files
        digest = hashlib.sha256(repr((self.splits[split], stamps, self.image_size,
                                      self.channels, self.resize)).encode()).hexdigest()[:16]
        folder = Path(tempfile.gettempdir(), "mltune-cache", f"{Path(self.root).name}-{digest}")
        folder.mkdir(parents=True, exist_ok=True)
        name = _SPLIT_NAMES[split]
        for index in sorted(folder.glob(f"{name}-*.index")):
            prefix = str(index)[: -len(".index")]
            if not list(folder.glob(f"{Path(prefix).name}*.lockfile")):
                return prefix
        for lock in folder.glob(f"{name}-*_0.lockfile"):
            pid = lock.name[len(name) + 1: -len("_0.lockfile")]
            if pid.isdigit() and not _alive(int(pid)):
                for stale in folder.glob(f"{name}-{pid}*"):
                    stale.unlink(missing_ok=True)
        return str(folder / f"{name}-{os.getpid()}")

    def example(self, n: int) -> np.ndarray:
        """The first ``n`` validation images, decoded and resized with PIL (bilinear; the
        backend's Resizing may differ by a few levels): model signatures, latency."""
        paths = (self.splits[1][0] or self.splits[0][0])[:n]
        return np.stack([_pil_resized(p, self) for p in paths])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pil_pixels(path: str | bytes, channels: int) -> np.ndarray:
    """The pixels of the image at ``path`` as ``uint8`` (height, width, ``channels``), decoded
    with PIL (first frame; 16/32-bit grayscale scaled, not clipped, to 8 bits)."""
    from PIL import Image

    with Image.open(os.fsdecode(path)) as img:
        if img.mode.startswith("I"):
            wide = np.asarray(img, dtype=np.float64)
            top = 65535.0 if img.mode.startswith("I;16") else max(1.0, wide.max())
            img = Image.fromarray(  # type: ignore[assignment]
                np.clip(np.rint(wide / top * 255), 0, 255).astype(np.uint8), "L")
        pixels = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    return pixels[..., None] if channels == 1 else pixels


def _pil_resized(path: str, folder: ImageFolder) -> np.ndarray:
    """float32 pixels of ``path`` at ``folder.image_size``, cropped or padded to its aspect
    ratio first as ``keras.layers.Resizing`` does, with PIL (no backend op)."""
    from PIL import Image

    pixels = pil_pixels(path, folder.channels)
    th, tw = folder.image_size
    h, w = pixels.shape[:2]
    if folder.resize == "crop":
        ch = max(min(h, int(w * th / tw)), 1)
        cw = max(min(w, int(h * tw / th)), 1)
        top, left = (h - ch) // 2, (w - cw) // 2
        pixels = pixels[top: top + ch, left: left + cw]
    elif folder.resize == "pad":
        ph, pw = max(h, int(w * th / tw)), max(w, int(h * tw / th))
        top, left = (ph - h) // 2, (pw - w) // 2
        padded = np.zeros((ph, pw, pixels.shape[2]), np.uint8)
        padded[top: top + h, left: left + w] = pixels
        pixels = padded
    img = Image.fromarray(pixels[..., 0] if folder.channels == 1 else pixels)
    out = np.asarray(img.resize((tw, th), Image.Resampling.BILINEAR), dtype=np.float32)
    return out[..., None] if folder.channels == 1 else out


def _folder_batches(folder: ImageFolder, split: int, batch_size: int) -> Any:
    """A ``keras.utils.PyDataset`` of a folder's split (backends other than TensorFlow):
    each batch decoded with PIL and resized by ``keras.layers.Resizing``."""
    import keras

    resizing = keras.layers.Resizing(*folder.image_size,
                                     crop_to_aspect_ratio=folder.resize == "crop",
                                     pad_to_aspect_ratio=folder.resize == "pad")
    paths, labels = folder.splits[split]
    targets = np.asarray(labels, np.int64)

    class FolderBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.order = np.arange(len(paths))
            self.rng = np.random.default_rng(folder.seed)
            self.on_epoch_end()

        def __len__(self) -> int:
            return math.ceil(len(paths) / batch_size)

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            idx = self.order[i * batch_size: (i + 1) * batch_size]
            x = np.stack([keras.ops.convert_to_numpy(resizing(
                pil_pixels(paths[j], folder.channels).astype(np.float32))) for j in idx])
            return x, targets[idx]

        def on_epoch_end(self) -> None:
            if split == 0:
                self.order = self.rng.permutation(len(paths))

    return FolderBatches()


def _image_folder(path: Path, cfg: DataConfig, seed: int | None) -> Dataset:
    """An image folder's files, split by file, with sizes and modes read from the headers of
    some of them; no image is decoded here (see :class:`ImageFolder`)."""
    from PIL import Image, UnidentifiedImageError

    classes = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{path}: an image folder needs one sub-folder per class (at least 2), "
                        f"but has {len(classes)}")
    per_class = [sorted((f for f in c.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES
                         and not f.name.startswith(".")), key=lambda f: f.name)
                 for c in classes]
    if not any(per_class):
        raise DataError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in its "
                        "class sub-folders")
    for c, files in zip(classes, per_class, strict=True):
        if not files:
            raise DataError(f"{c}: a class sub-folder must hold at least one image "
                            f"({', '.join(IMAGE_SUFFIXES)}), but has none")
    everything = [f for files in per_class for f in files]
    step = max(1, len(everything) // _HEADERS)
    size: tuple[int, int] | None = None
    mode = None
    for f in everything[::step][:_HEADERS] if len(everything) > _HEADERS else everything:
        try:
            with Image.open(f) as img:
                got, got_mode = img.size, img.mode  # the header only: nothing is decoded
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"{f}: not a readable image ({e})") from None
        if size is None:
            size, mode = got, got_mode
            if cfg.image_size is None and got[0] * got[1] > MAX_PIXELS:
                raise DataError(
                    f"{f}: {got[0]}x{got[1]} pixels, more than mltune uses at their own size "
                    f"({MAX_PIXELS:,} pixels); set data.image_size: [height, width] (e.g. "
                    "[224, 224]) to resize the images as they are read")
        elif got != size and cfg.image_size is None:
            raise DataError(f"{f}: {got[0]}x{got[1]} pixels, but earlier images are "
                            f"{size[0]}x{size[1]}; set data.image_size to resize them all")
    assert size is not None and mode is not None
    channels = {"grayscale": 1, "rgb": 3}.get(cfg.color_mode or "", 0) or (
        1 if mode in _GRAY_MODES or mode.startswith("I") else 3)
    image_size = (cfg.image_size[0], cfg.image_size[1]) if cfg.image_size else (size[1], size[0])
    num_classes = _class_count(cfg, str(path), np.arange(len(classes)))
    splits = _split_files(per_class, cfg, 0 if seed is None else seed, str(path))
    folder = ImageFolder(root=str(path), splits=splits, image_size=image_size,
                         channels=channels, resize=cfg.resize, cache=cfg.cache,
                         seed=0 if seed is None else seed)
    names = tuple(c.name for c in classes)
    return Dataset(name=path.name, input_shape=(*image_size, channels), num_classes=num_classes,
                   pixel_max=255.0, class_names=names + tuple(
                       str(i) for i in range(len(names), num_classes)), folder=folder)


def _allot(counts: list[int], total: int) -> list[int]:
    """``total`` shared among classes of ``counts`` items in proportion (largest remainders
    first; ties to the first class), never more than a class has."""
    n = sum(counts)
    quotas = [c * total / n for c in counts]
    shares = [min(c, math.floor(q)) for c, q in zip(counts, quotas, strict=True)]
    order = sorted(range(len(counts)), key=lambda i: (-(quotas[i] - math.floor(quotas[i])), i))
    for i in order * 2:
        if sum(shares) >= total:
            break
        if shares[i] < counts[i]:
            shares[i] += 1
    return shares


def _split_files(per_class: list[list[Path]], cfg: DataConfig, seed: int, where: str
                 ) -> tuple[tuple[tuple[str, ...], tuple[int, ...]], ...]:
    """(paths, labels) of train, val and test: each class's files in a seeded order, the
    same share of every class held out (``data.test_split``, then ``data.validation_split``
    of the rest), as many in all as the arrays' split would hold out."""
    rng = np.random.default_rng(seed)
    shuffled = [[files[i] for i in rng.permutation(len(files))] for files in per_class]
    counts = [len(files) for files in shuffled]
    n_test = _allot(counts, max(1, round(sum(counts) * cfg.test_split)))
    rest = [c - t for c, t in zip(counts, n_test, strict=True)]
    if cfg.max_samples is not None and sum(rest) > cfg.max_samples:
        rest = _allot(rest, cfg.max_samples)
    n_val = _allot(rest, max(1, round(sum(rest) * cfg.validation_split)))
    if sum(rest) - sum(n_val) < 1:
        raise DataError(f"{where}: {sum(rest)} training images are too few to hold out a "
                        "validation split")
    out: list[tuple[list[str], list[int]]] = [([], []), ([], []), ([], [])]
    for label, files in enumerate(shuffled):
        t, r, v = n_test[label], rest[label], n_val[label]
        parts = (files[t + v: t + r], files[t: t + v], files[:t])  # train, val, test
        for (paths, labels), part in zip(out, parts, strict=True):
            paths.extend(str(f) for f in part)
            labels.extend([label] * len(part))
    return tuple((tuple(p), tuple(lab)) for p, lab in out)


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
