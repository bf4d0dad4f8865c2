"""Read and validate a study file once, before anything runs.

Every error names the key path and the file, states the rule and what was given
(``study.n_trials in study.yaml: must be an integer >= 1, but got 0``).
"""

from __future__ import annotations

import copy
import math
import os
import re
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from mltune._errors import ConfigError
from mltune._search_space import Categorical, Float, Int, Param, SearchSpace, grid_size
from mltune._settings import AUGMENT_KEYS, SETTINGS, default_settings
from mltune._types import Config, DataConfig, ObjectiveSpec, StudyConfig

__all__ = [
    "BUILTIN_DATASETS",
    "METRICS",
    "OBJECTIVE_METRICS",
    "PRUNERS",
    "SAMPLERS",
    "Config",
    "DataConfig",
    "ObjectiveSpec",
    "StudyConfig",
    "apply_overrides",
    "check_weights",
    "load_config",
    "parse_config",
]

BUILTIN_DATASETS = ("mnist", "fashion_mnist", "cifar10", "digits")
RESIZE_MODES = ("stretch", "crop", "pad")  # keras.layers.Resizing's (crop/pad_to_aspect_ratio)
CACHE_MODES = ("none", "memory", "disk")
METRICS = ("val_accuracy", "val_loss", "accuracy", "loss")
# What a trial can be judged by: a training metric (at the best epoch), the model's size, and
# its inference time per image.
OBJECTIVE_METRICS = (*METRICS, "params", "latency_ms")
# What training.metrics may list (mltune._metrics makes them); each is logged under its name
# and as val_<name>, and may be a study metric. Precision, recall, F1 and AUC are macro
# averages over the classes; top_k_accuracy counts the true class among the TOP_K likeliest.
TRAINING_METRICS = ("accuracy", "auc", "precision", "recall", "f1_score", "top_k_accuracy")
TOP_K = 5
# training keys that are no searchable setting: lists and mappings, fixed for every trial.
TRAINING_OPTIONS = ("metrics", "class_weight")
SAMPLERS = ("random", "grid", "tpe", "gp", "cmaes", "qmc")
PRUNERS = ("none", "median", "percentile", "successive_halving", "hyperband", "pareto")
TRIAL_PROCESSES = ("fork", "spawn", "none")  # mltune._trial_process.MODES
# study.seed seeds the sampler, and trial n with seed + n (NumPy's seeds, under Keras' too,
# end at 2**32 - 1); half the range is left for trial numbers (and the process ids that
# parallel workers add to the sampler's seed), so no trial ever runs out of seeds.
MAX_SEED = 2**31 - 1
# The most classes a study can have: class names are made for each, and the model's last layer
# has a unit for each.
MAX_CLASSES = 100_000
# The most points a grid search may have; GridSampler and a queued grid list them all.
MAX_GRID_POINTS = 1_000_000
SECTIONS = ("study", "data", "training", "model", "search_space")


def read_study_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The study file at ``path`` as a dict, with its relative paths (``data.source``,
    ``data.loader``, ``model.builder``) made relative to the file's folder, and
    ``study.name`` defaulting to the file's name."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("study file", f"no such file: {source}") from None
    except OSError as e:
        raise ConfigError("study file", f"cannot read {source}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        line = e.object[: e.start].count(b"\n") + 1
        raise ConfigError("study file", f"must be UTF-8 text, but byte 0x{e.object[e.start]:02x} "
                          f"on line {line} is not UTF-8 (save the file as UTF-8)",
                          source=source) from None
    try:
        raw = _yaml(text, source=source)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError("study file", f"not valid YAML{where}: {problem}",
                          source=source) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("study file", "must be a mapping of sections "
                          f"({', '.join(SECTIONS)}), but got {type(raw).__name__}", source=source)
    raw = _resolve_paths(raw, path.parent)
    if raw.get("study") is None:
        raw["study"] = {}
    if isinstance(raw["study"], dict):
        raw["study"].setdefault("name", path.stem)
    return raw


def load_config(
    path: str | os.PathLike[str], overrides: list[str] | tuple[str, ...] = (), *,
    for_study: bool = True,
    data: str | None = None, **options: Any
) -> Config:
    """Read the study file at ``path``, apply ``--set key.path=value`` overrides, ``data``
    (``--data``: a built-in name or a path relative to the current folder) and the
    command-line ``options`` (``sampler=``, ``n_trials=``, ...: keys of ``study``; None means
    not given), and validate the result (``for_study=False``: one training run, no search)."""
    raw = apply_overrides(read_study_file(path), overrides)
    if data is not None:  # replaces the file's data.source or data.loader
        raw = set_key(raw, "data.source", data if data in BUILTIN_DATASETS else
                      str(Path(data).resolve()))
        raw["data"].pop("loader", None)
    for key, value in options.items():
        if value is not None:
            raw = set_key(raw, f"study.{key}", value)
    return parse_config(raw, source=str(path), for_study=for_study)


# Keys whose relative paths are relative to the study file, and whether the path is the part
# before ":" (a file.py:function reference).
_PATH_KEYS = (("data", "source", False), ("data", "loader", True), ("model", "builder", True),
              ("model", "weights", False))


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    # A relative path in the file is relative to the file, so a study file works from any
    # folder; one given with --set is relative to where the command runs.
    raw = copy.deepcopy(raw)
    for section, key, is_ref in _PATH_KEYS:
        node = raw.get(section)
        if not isinstance(node, dict):
            continue
        value = node.get(key)
        if not isinstance(value, str) or value in BUILTIN_DATASETS:
            continue
        if key == "weights" and (value == "imagenet" or "builder" in node):
            continue  # not a file; or a custom builder's own parameter
        path, sep, name = value.rpartition(":") if is_ref else (value, "", "")
        if is_ref and not path.endswith(".py"):
            continue  # package.module:function, found on sys.path
        if not Path(path).is_absolute():
            node[key] = str((base / path).resolve()) + sep + name
    return raw


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides; values are read as YAML (``0.1``, ``[1, 2]``)."""
    for item in overrides:
        if not item.strip():  # MLproject passes '' for an unset override
            continue
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError("--set", f"must look like key.path=value, but got {item!r}")
        try:
            value = _yaml(text, prefix=key, source="--set") if text.strip() else None
        except yaml.YAMLError:
            value = text
        raw = set_key(raw, key, value)
    return raw


def set_key(raw: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        if node.get(part) is None:
            node[part] = {}
        child = node[part]
        if not isinstance(child, dict):
            raise ConfigError(".".join(parts[: i + 1]), "is not a mapping, so "
                              f"--set {key}=... cannot set a key inside it")
        node = child
    node[parts[-1]] = value
    return raw


class _Loader(yaml.SafeLoader):
    """YAML as users write it: ``1e-4`` is a number (YAML 1.2), not the string PyYAML's
    YAML 1.1 rules make of it (they want ``1.0e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"""),
    list("-+0123456789"),
)


# How many values YAML aliases (*name) may add to a document once expanded. A study file
# needs a handful; "billion laughs" (nested aliases, each repeating the one before) adds
# 10^9 from a few lines, and anything that walks the result (validation, logging the
# config) would run out of memory.
MAX_ALIAS_VALUES = 10_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _yaml(text: str, *, prefix: str = "", source: str | None = None) -> Any:
    """The YAML document ``text``; a key given twice in one mapping, aliases that expand
    to more than :data:`MAX_ALIAS_VALUES` values or that contain themselves are a
    :class:`ConfigError` naming the key path (under ``prefix``) and ``source``."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(loader, node, prefix, source)
        return loader.construct_document(node)
    except RecursionError:
        raise ConfigError(prefix or "study file", "lists and mappings may nest a few hundred "
                          "levels deep, but this YAML nests deeper", source=source) from None
    finally:
        loader.dispose()


def _check_nodes(loader: _Loader, root: yaml.Node, prefix: str, source: str | None) -> None:
    """Refuse repeated keys and alias bombs in the composed (not yet constructed) document,
    where an alias is the very node it names, so nothing is expanded to count it."""
    sizes: dict[int, int] = {}  # values under a node, aliases expanded
    open_nodes: set[int] = set()
    added = 0  # values added by aliases

    def key_path(path: str, key: Any) -> str:
        return f"{path}.{key}" if path else str(key)

    def walk(node: yaml.Node, path: str) -> int:
        nonlocal added
        ident = id(node)
        if ident in open_nodes:
            raise ConfigError(path or "study file", "a YAML alias must not refer to a node "
                              "that contains it, but this one does", source=source)
        if ident in sizes:  # a second use of an anchored node: an alias
            added += sizes[ident]
            if added > MAX_ALIAS_VALUES:
                raise ConfigError(path or "study file", "YAML aliases (*name) may add at "
                                  f"most {MAX_ALIAS_VALUES} values to a document, but they "
                                  f"add more (the limit was passed here)", source=source)
            return sizes[ident]
        open_nodes.add(ident)
        size = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, value_node in node.value:
                child = path
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                    key = loader.construct_object(key_node)
                    child = key_path(path, key)
                    first = seen.get(key)
                    if first is not None:
                        raise ConfigError(child, "a key must appear once in its mapping, but "
                                          f"it is given on line {first.start_mark.line + 1} "
                                          f"and again on line {key_node.start_mark.line + 1}",
                                          source=source)
                    seen[key] = key_node
                size += walk(key_node, path) + walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                size += walk(item, f"{path}[{i}]")
        open_nodes.discard(ident)
        sizes[ident] = size
        return size

    walk(root, prefix)


class _Reader:
    """Reads one mapping of the study file, naming the key path in every error."""

    def __init__(self, raw: Any, prefix: str, source: str) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(prefix, f"must be a mapping, but got {raw!r}", source=source)
        self.raw = raw
        self.prefix = prefix
        self.source = source

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.prefix}.{key}" if self.prefix else key, message,
                           source=self.source)

    def only(self, allowed: tuple[str, ...] | list[str]) -> None:
        for key in self.raw:
            if key not in allowed:
                hint = _closest(str(key), allowed)
                raise self.error(str(key), "unknown key" + (f"; did you mean {hint!r}?" if hint
                                 else f"; allowed keys: {', '.join(allowed)}"))

    def get(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default)

    def string(self, key: str, default: str | None = None,
               choices: tuple[str, ...] | None = None) -> Any:
        value = self.raw.get(key, default)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self.error(key, f"must be a non-empty string, but got {value!r}")
        if choices is not None and value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}, but got {value!r}")
        return value

    def integer(self, key: str, default: int | None = None, low: int | None = None,
                high: int | None = None, why: str = "") -> Any:
        value = self.raw.get(key, default)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or (
                low is not None and value < low) or (high is not None and value > high):
            bound = (f" in {low}..{high}" if low is not None and high is not None else
                     f" >= {low}" if low is not None else "")
            raise self.error(key, f"must be an integer{bound}{why}, but got {value!r}")
        return value

    def number(self, key: str, default: float | None = None, low: float | None = None,
               high: float | None = None, exclusive: bool = False) -> Any:
        value = self.raw.get(key, default)
        if value is None:
            return None
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and math.isfinite(value):
            if exclusive:
                ok = (low is None or value > low) and (high is None or value < high)
            else:
                ok = (low is None or value >= low) and (high is None or value <= high)
        else:
            ok = False
        if not ok:
            lo, hi = ("(", ")") if exclusive else ("[", "]")
            rng = f" in {lo}{low}, {high}{hi}" if low is not None and high is not None else (
                f" {'>' if exclusive else '>='} {low}" if low is not None else "")
            raise self.error(key, f"must be a number{rng}, but got {value!r}")
        return float(value)


def _closest(key: str, allowed: tuple[str, ...] | list[str]) -> str | None:
    import difflib

    found = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    return found[0] if found else None


def parse_config(raw: dict[str, Any], *, source: str = "<config>", for_study: bool = True,
                 data_given: bool = False) -> Config:
    """Validate an already-read study file (a dict as YAML gives it).

    ``for_study=False`` skips what only a search needs (a sampler that can run it).
    ``data_given``: the caller passes the data itself, so ``data`` needs no source."""
    top = _Reader(raw, "", source)
    top.only(SECTIONS)
    model = _Reader(top.get("model"), "model", source)
    builder = model.string("builder")
    training = _Reader(top.get("training"), "training", source)
    options = {"metrics": _parse_metrics(training), "class_weight": _parse_class_weight(training)}
    study = _parse_study(_Reader(top.get("study"), "study", source), custom=builder is not None,
                         metrics=options["metrics"] or ["accuracy"])
    data = _parse_data(_Reader(top.get("data"), "data", source), data_given=data_given)

    settings = default_settings() if builder is None else {
        name: s.default for name, s in SETTINGS.items() if s.section == "training"}
    explicit: dict[str, str] = {}
    for section in ("model", "training"):
        reader = _Reader(top.get(section), section, source)
        custom = section == "model" and builder is not None
        if section == "model" and not custom:
            reader.raw = _flatten_augment(reader)
        if not custom:
            reader.only([n for n, s in SETTINGS.items() if s.section == section]
                        + (list(TRAINING_OPTIONS) if section == "training" else []))
        for name, value in reader.raw.items():
            if custom and name == "builder":
                continue
            if section == "training" and name in TRAINING_OPTIONS:
                settings[name], explicit[name] = options[name], section
                continue
            why = None if custom else SETTINGS[name].check(value)
            if why:
                raise reader.error(name, why)
            settings[name] = value
            explicit[name] = section

    space_reader = _Reader(top.get("search_space"), "search_space", source)
    if builder is None:
        space_reader.only(list(SETTINGS))
    space: SearchSpace = {}
    for name, spec in space_reader.raw.items():
        param = _parse_param(name, spec, space_reader)
        if name not in explicit:
            space[name] = param

    if for_study and study.sampler == "grid":
        for name, param in space.items():
            if param.size() is None:
                raise space_reader.error(name, "grid search needs a finite set of values, but "
                                         "this float has no step; give step or use "
                                         "type: categorical")
        points = grid_size(space)
        if points > MAX_GRID_POINTS:
            counts = " x ".join(f"{name} {param.size()}" for name, param in space.items())
            raise ConfigError("search_space", f"a grid search may have at most "
                              f"{MAX_GRID_POINTS} points, but this one has {points} "
                              f"({counts}); use fewer values or another sampler",
                              source=source)
    from mltune._samplers import check_pruner, check_sampler

    notes: list[str] = []
    if for_study:
        check_sampler(study, space, source=source)
        notes = check_pruner(study, space, settings, source=source)
    return Config(
        study=study,
        data=data,
        settings=settings,
        search_space=space,
        fixed=tuple(explicit),
        raw=raw,
        source=source,
        builder=builder,
        notes=tuple(notes),
    )


def _flatten_augment(r: _Reader) -> dict[str, Any]:
    """``model:`` with ``augment: {rotation: 0.1, flip: horizontal}`` read as the flat settings
    ``augment_rotation: 0.1``, ``augment_flip: horizontal`` (the names search_space uses)."""
    raw = dict(r.raw)
    if "augment" not in raw:
        return raw
    aug = _Reader(raw.pop("augment"), "model.augment", r.source)
    aug.only(AUGMENT_KEYS)
    for key, value in aug.raw.items():
        name = f"augment_{key}"
        if name in raw:
            raise aug.error(key, f"is given twice: here and as model.{name}; keep one")
        why = SETTINGS[name].check(value)
        if why:
            raise aug.error(key, why)
        raw[name] = value
    return raw


def _values(name: str, settings: dict[str, Any], space: SearchSpace) -> list[Any]:
    """Every value a built-in setting can take in this study: its searched choices, else its
    fixed (or default) value."""
    param = space.get(name)
    if isinstance(param, Categorical):
        return list(param.choices)
    return [settings[name]]


def check_weights(config: Config) -> None:
    """``model.weights`` of the built-in model's keras.applications backbone: a file that
    exists, or ImageNet weights that Keras has cached or can download, so no trial fails on
    them later. Checked where a model will be trained (not to register a saved one)."""
    if config.builder is None:
        _check_backbone(config.settings, config.search_space, config.source)


def _check_backbone(settings: dict[str, Any], space: SearchSpace, source: str) -> None:
    from mltune._settings import BACKBONES

    backbones = [b for b in _values("backbone", settings, space) if b != "cnn"]
    if not backbones:
        return
    for weights in _values("weights", settings, space):
        if weights is None:
            continue
        where = "search_space.weights" if "weights" in space else "model.weights"
        if weights != "imagenet":
            if not weights.endswith(".h5"):
                raise ConfigError(where, "must be imagenet, null or a weights file "
                                  f"(.weights.h5 or .h5), but got {weights!r}", source=source)
            if not Path(weights).is_file():
                raise ConfigError(where, f"no such file: {weights}", source=source)
            continue
        missing = [b for b in backbones if not _keras_cached(str(BACKBONES[b]))]
        if missing and not _can_download():
            raise ConfigError(where, f"imagenet weights of {', '.join(missing)} are not in "
                              f"Keras' cache ({_keras_home()}/models) and cannot be downloaded "
                              "(no connection to storage.googleapis.com); give a local file "
                              "instead, model.weights: path/to/file.weights.h5 (saved with "
                              "save_weights from the keras.applications model built with "
                              "include_top=False, or Keras' downloaded *_notop.h5 file), or "
                              "weights: null for random initial weights", source=source)


def _keras_home() -> str:
    # Where Keras caches downloads (keras/src/backend/config.py), without importing Keras.
    if "KERAS_HOME" in os.environ:
        return os.environ["KERAS_HOME"]
    base = os.path.expanduser("~")
    return os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")


def _keras_cached(file_name: str) -> bool:
    return Path(_keras_home(), "models", file_name).is_file()


_DOWNLOAD_PROBE = "https://storage.googleapis.com/"


def _can_download(timeout: float = 3.0) -> bool:
    """Whether Keras' weights host answers, through the proxy the environment names, as
    Keras' own download would go."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(urllib.request.Request(_DOWNLOAD_PROBE, method="HEAD"),
                               timeout=timeout).close()
    except urllib.error.HTTPError:
        return True  # an answer, whatever its status
    except (OSError, ValueError):
        return False
    return True


# Metrics Keras reports that are better when lower; every other metric is better higher.
_LOWER_IS_BETTER = ("loss", "error", "mse", "mae", "mape", "msle", "crossentropy", "hinge",
                    "divergence", "latency_ms", "params")
_METRIC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _default_direction(metric: str) -> str:
    return "minimize" if any(w in metric for w in _LOWER_IS_BETTER) else "maximize"


def _study_metrics(metrics: list[str]) -> tuple[str, ...]:
    """What a model compiled with ``training.metrics`` reports, validation first."""
    return (*(f"val_{m}" for m in metrics), "val_loss", *metrics, "loss")


def _parse_metrics(r: _Reader) -> list[str] | None:
    value = r.get("metrics")
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise r.error("metrics", "must be a non-empty list of metric names from "
                      f"{', '.join(TRAINING_METRICS)}, but got {value!r}")
    for item in value:
        if item not in TRAINING_METRICS:
            hint = _closest(str(item), TRAINING_METRICS) if isinstance(item, str) else None
            raise r.error("metrics", f"must list metric names from "
                          f"{', '.join(TRAINING_METRICS)}, but got {item!r}"
                          + (f"; did you mean {hint!r}?" if hint else ""))
    if len(set(value)) != len(value):
        raise r.error("metrics", f"must name each metric once, but got {value!r}")
    return list(value)


def _parse_class_weight(r: _Reader) -> Any:
    """``balanced``, or a mapping of class (index or name) to a weight > 0; names are
    matched to the data's classes when the data is loaded."""
    value = r.get("class_weight")
    if value is None or value == "balanced":
        return value
    if not isinstance(value, dict) or not value:
        raise r.error("class_weight", "must be balanced or a mapping of class (index or "
                      f"name) to a weight > 0, but got {value!r}")
    for key, weight in value.items():
        index = isinstance(key, int) and not isinstance(key, bool) and 0 <= key < MAX_CLASSES
        if not (index or (isinstance(key, str) and key)):
            raise r.error(f"class_weight.{key}", "must be a class index (0, 1, ...) or a "
                          f"class name, but got {key!r}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (
                math.isfinite(weight) and weight > 0):
            raise r.error(f"class_weight.{key}", f"must be a number > 0, but got {weight!r}")
    return dict(value)


def _metric(r: _Reader, key: str, default: str | None, allowed: tuple[str, ...],
            custom: bool) -> Any:
    """A metric name: one the built-in CNN reports, or with a custom builder any metric its
    compiled model reports (``val_auc``), checked when the first trial trains."""
    if not custom:
        value = r.get(key, default)
        name = value.removeprefix("val_") if isinstance(value, str) else None
        if name in TRAINING_METRICS and value not in allowed:
            raise r.error(key, f"{value} is not reported: add {name} to training.metrics, "
                          f"or choose one of {', '.join(allowed)}")
        return r.string(key, default, choices=allowed)
    value = r.string(key, default)
    if value is not None and not _METRIC_NAME.match(value):
        raise r.error(key, f"must be a Keras metric name such as val_accuracy or val_auc, "
                      f"but got {value!r}")
    return value


def _direction(r: _Reader, metric: str) -> str:
    """The direction given, else the metric's natural one. For the metrics whose natural
    direction is certain, the other one is an error: it would pick the worst model."""
    natural = _default_direction(metric)
    direction = r.string("direction", natural, choices=("minimize", "maximize"))
    certain = metric.removeprefix("val_") in (*TRAINING_METRICS, "loss", "params", "latency_ms")
    if certain and direction != natural:
        raise r.error("direction", f"{metric} is to be {natural}d, but got {direction!r}, "
                      "which would pick the worst model")
    return str(direction)


def _parse_objectives(r: _Reader, custom: bool, metrics: tuple[str, ...] = METRICS
                      ) -> tuple[ObjectiveSpec, ...] | None:
    items = r.get("objectives")
    if items is None:
        return None
    if "metric" in r.raw or "direction" in r.raw:
        raise r.error("objectives", "give either study.metric (one objective) or "
                      "study.objectives, not both")
    if not isinstance(items, list) or not items:
        raise r.error("objectives", "must be a non-empty list of {metric, direction}, "
                      f"but got {items!r}")
    specs: list[ObjectiveSpec] = []
    for i, item in enumerate(items):
        o = _Reader(item, f"{r.prefix}.objectives[{i}]", r.source)
        o.only(["metric", "direction"])
        allowed = metrics if i == 0 else (*metrics, "params", "latency_ms")
        metric = _metric(o, "metric", None, allowed, custom)
        if metric is None:
            raise o.error("metric", f"must be set: one of {', '.join(allowed)}"
                          + (" or a metric of your model" if custom else ""))
        if i == 0 and metric in ("params", "latency_ms"):
            raise o.error("metric", "the first objective must be a training metric: it picks "
                          f"each trial's best epoch, but got {metric!r}")
        if any(s.metric == metric for s in specs):
            raise o.error("metric", f"{metric} is already an objective")
        specs.append(ObjectiveSpec(metric, _direction(o, metric)))
    return tuple(specs)


def _parse_study(r: _Reader, *, custom: bool = False, metrics: list[str] | None = None
                 ) -> StudyConfig:
    r.only(["name", "metric", "direction", "objectives", "sampler", "sampler_options",
            "pruner", "pruner_options", "selection_tolerance", "n_trials", "timeout", "seed",
            "experiment", "heartbeat_interval", "grace_period", "retry_failed",
            "max_consecutive_failures", "trial_process", "warm_start"])
    reported = _study_metrics(metrics or ["accuracy"])
    objectives = _parse_objectives(r, custom, reported)
    if objectives is None:
        metric = _metric(r, "metric", "val_accuracy", reported, custom)
        objectives = (ObjectiveSpec(metric, _direction(r, metric)),)
    options = {}
    for key in ("sampler_options", "pruner_options"):
        options[key] = r.get(key) or {}
        if not isinstance(options[key], dict):
            raise r.error(key, f"must be a mapping, but got {options[key]!r}")
    name = r.string("name")
    if name is None:
        raise r.error("name", "must be set")
    return StudyConfig(
        name=name,
        objectives=objectives,
        sampler=r.string("sampler", "tpe", choices=SAMPLERS),
        sampler_options=dict(options["sampler_options"]),
        pruner=r.string("pruner", "none", choices=PRUNERS),
        pruner_options=dict(options["pruner_options"]),
        selection_tolerance=r.number("selection_tolerance", 0.002, low=0.0, high=None),
        n_trials=r.integer("n_trials", low=1),
        timeout=r.number("timeout", low=0.0, high=None, exclusive=True),
        seed=r.integer("seed", low=0, high=MAX_SEED,
                       why=" (trial n is seeded with seed + n, which must stay below 2**32)"),
        experiment=r.string("experiment"),
        heartbeat_interval=r.integer("heartbeat_interval", 60, low=1),
        grace_period=r.integer("grace_period", low=1),
        retry_failed=r.integer("retry_failed", 0, low=0),
        max_consecutive_failures=r.integer("max_consecutive_failures", 5, low=0),
        trial_process=r.string("trial_process", "fork", choices=TRIAL_PROCESSES),
        warm_start=_warm_start(r),
    )


def _warm_start(r: _Reader) -> dict[str, str] | None:
    """``study.warm_start``: ``{study: NAME, storage: URL?}`` or ``{experiment: NAME}``. That
    the source exists is checked when the study runs (:mod:`mltune._warm_start`)."""
    if r.get("warm_start") is None:
        return None
    w = _Reader(r.get("warm_start"), f"{r.prefix}.warm_start", r.source)
    w.only(["study", "storage", "experiment"])
    spec = {k: w.string(k) for k in ("study", "storage", "experiment") if k in w.raw}
    if ("study" in spec) == ("experiment" in spec):
        raise w.error("study", "give either study (an Optuna study) or experiment (an MLflow "
                      f"experiment of mltune runs), one of them, but got {w.raw!r}")
    if "storage" in spec and "study" not in spec:
        raise w.error("storage", "goes with study: an experiment is read from the MLflow "
                      "tracking store")
    return spec


def _parse_data(r: _Reader, *, data_given: bool = False) -> DataConfig:
    r.only(["source", "loader", "validation_split", "test_split", "max_samples", "num_classes",
            "label_column", "image_size", "color_mode", "resize", "cache", "seed"])
    source = r.string("source")
    loader = r.string("loader")
    if source is not None and loader is not None:
        raise r.error("loader", "give either data.source or data.loader, not both")
    if source is None and loader is None and not data_given:
        raise r.error("source", f"must be set: one of {', '.join(BUILTIN_DATASETS)} or a path "
                      "to a .npz file, a .csv file or a folder of class sub-folders (or set "
                      "data.loader: data.py:load, a function that returns the arrays)")
    size = r.get("image_size")
    if size is not None and not (isinstance(size, list) and len(size) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise r.error("image_size", f"must be [height, width] in pixels, but got {size!r}")
    return DataConfig(
        source=source,
        loader=loader,
        validation_split=r.number("validation_split", 0.1, 0.0, 1.0, exclusive=True),
        test_split=r.number("test_split", 0.2, 0.0, 1.0, exclusive=True),
        max_samples=r.integer("max_samples", low=1),
        num_classes=r.integer("num_classes", low=2, high=MAX_CLASSES),
        label_column=r.string("label_column", "label"),
        image_size=tuple(size) if size else None,
        color_mode=r.string("color_mode", None, choices=("grayscale", "rgb")),
        # An image folder's only (ignored for arrays, .npz and .csv): how images of another
        # aspect ratio meet data.image_size, and where decoded images are kept between epochs.
        resize=r.string("resize", "stretch", choices=RESIZE_MODES),
        cache=r.string("cache", "none", choices=CACHE_MODES),
        seed=r.integer("seed", low=0),
    )


_PARAM_KEYS = {
    "float": ("type", "low", "high", "log", "step"),
    "int": ("type", "low", "high", "log", "step"),
    "categorical": ("type", "choices"),
}


def _parse_param(name: str, spec: Any, parent: _Reader) -> Param:
    r = _Reader(spec, f"search_space.{name}", parent.source)
    kind = r.string("type")
    if kind is None:
        raise r.error("type", "must be set: float, int or categorical")
    if kind not in _PARAM_KEYS:
        raise r.error("type", f"must be one of float, int, categorical, but got {kind!r}")
    r.only(_PARAM_KEYS[kind])
    setting = SETTINGS.get(name)  # None: a name of a custom builder's, free of rules

    def check(key: str, value: Any) -> None:
        if setting is None:
            if value is not None and not isinstance(value, (bool, int, float, str)):
                raise r.error(key, "must be a number, a string, a bool or null (what Optuna "
                              f"can store), but got {value!r}")
            return
        why = setting.check(value)
        if why:
            raise r.error(key, f"{name} {why}")

    if kind == "categorical":
        choices = r.get("choices")
        if not isinstance(choices, list) or not choices:
            raise r.error("choices", f"must be a non-empty list, but got {choices!r}")
        for i, choice in enumerate(choices):
            check(f"choices[{i}]", choice)
        twins = _repeated_choice(choices)
        if twins is not None:
            raise r.error("choices", f"must not repeat a value, but got {choices!r}: Optuna "
                          f"takes {twins[0]!r} and {twins[1]!r} for the same choice (it "
                          "compares them with ==)")
        return Categorical(name, tuple(choices))

    if setting is not None and (setting.kind not in ("int", "float") or (
            kind == "float" and setting.kind == "int")):
        wanted = "int or categorical" if setting.kind == "int" else "categorical"
        raise r.error("type", f"{name} is a {setting.kind} setting, so its type must be "
                      f"{wanted}, but got {kind!r}")
    log = r.get("log", False)
    if not isinstance(log, bool):
        raise r.error("log", f"must be true or false, but got {log!r}")
    if kind == "int":
        low, high = r.integer("low"), r.integer("high")
        step = r.integer("step", 1, low=1)
    else:
        low, high = r.number("low"), r.number("high")
        step = r.number("step", None, low=0.0, high=None, exclusive=True)
    for key, value in (("low", low), ("high", high)):
        if value is None:
            raise r.error(key, "must be set")
        check(key, value)
    if low > high:
        raise r.error("low", f"low <= high must hold, but got (low={low!r}, high={high!r})")
    if log and low <= 0:
        raise r.error("low", f"low > 0 must hold when log is true, but got low={low!r}")
    if log and step is not None and (kind == "float" or step != 1):
        raise r.error("step", "step cannot be combined with log: true")
    if step is not None:
        _check_step(r, low, high, step)
    if kind == "int":
        return Int(name, low, high, log=log, step=step)
    return Float(name, low, high, log=log, step=step)


# More values than a float can tell apart (it holds about 16 significant digits); Optuna's
# decimal arithmetic on the step fails too, beyond 28 digits.
_MAX_STEPS = 10**15


def _check_step(r: _Reader, low: float, high: float, step: float) -> None:
    """``step`` must divide ``high - low``; Optuna would only warn and move ``high``."""
    # Exact decimal arithmetic on the values as written, as Optuna does (0.1 is 0.1 here).
    span, unit = Fraction(str(high)) - Fraction(str(low)), Fraction(str(step))
    steps = span // unit
    if span % unit:
        fitted = Fraction(str(low)) + steps * unit
        shown = int(fitted) if isinstance(step, int) else float(fitted)
        raise r.error("step", "(high - low) must be a multiple of step, but got "
                      f"(low={low!r}, high={high!r}, step={step!r}); set high to {shown!r} "
                      "or choose another step")
    if isinstance(step, float) and steps > _MAX_STEPS:
        raise r.error("step", f"must split low..high into at most {_MAX_STEPS} steps, but "
                      f"got {float(steps):.3g} steps of {step!r}; leave step out to search every "
                      "value")


def _repeated_choice(choices: list[Any]) -> tuple[Any, Any] | None:
    """The first two choices Optuna cannot tell apart (``==``, or both NaN), if any."""
    nan = object()
    seen: dict[Any, Any] = {}
    for choice in choices:
        key = nan if isinstance(choice, float) and math.isnan(choice) else choice
        if key in seen:
            return seen[key], choice
        seen[key] = choice
    return None
