"""Warm start (``study.warm_start``): the completed trials of an earlier study seed a new one
as completed trials, mapped onto its search space, before it samples its first trial.

The source is an Optuna study (``{study: NAME, storage: URL?}``) or the mltune trial runs of
an MLflow experiment (``{experiment: NAME}``, read through :mod:`mltune._tracking`). A source
trial is taken when it fits the new space: a parameter no longer searched must have the
value now fixed, a searched one must lie in its new range, and a newly searched one gets the
value the source trial ran with (its study's fixed setting), else the new default. Optuna's
own answer is ``study.add_trial`` by hand (https://github.com/optuna/optuna/issues/2341).

Seeded trials guide the sampler only: the study's best is chosen among its own trials
(:mod:`mltune._selection`). The source may have trained on other data (a change of data is
one reason to start a new study): its values are taken as they are, and the note names the
``data:`` keys in which a source study differs.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from mltune._errors import ConfigError
from mltune._names import Attr
from mltune._samplers import distributions
from mltune._search_space import SearchSpace, grid_of
from mltune._secrets import redact, scrub_value
from mltune._storage import load_study, stored_config
from mltune._types import DataConfig

if TYPE_CHECKING:
    from mltune._tracking import Tracker
    from mltune._types import Config

__all__ = ["WarmStart", "grid_points_left", "read_source", "seed"]


@dataclass
class WarmStart:
    """The trials a source gives the new study, and why the others were left."""

    label: str  # the source, as the note, tag and attrs name it
    total: int  # the source's completed trials
    trials: list[optuna.trial.FrozenTrial] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> how many
    other_data: list[str] = field(default_factory=list)  # data keys a source study differs in

    def summary(self) -> str:
        """For the study attr and the parent run's tag."""
        return f"{self.label}: {len(self.trials)} of {self.total} trials taken"

    def note(self) -> str:
        why = ", ".join(f"{n} {reason}" for reason, n in self.skipped.most_common())
        data = ", ".join(f"data.{k}" for k in self.other_data)
        return (f"warm start: {len(self.trials)} of {self.total} trials of {self.label} taken"
                + (f" ({why})" if why else "")
                + (f"; the source was trained on other data ({data}): its values are "
                   "taken as they are" if data else ""))


@dataclass
class _Candidate:
    """One completed trial of the source, before it is mapped onto the new space."""

    params: dict[str, Any]  # strings when read from MLflow
    fixed: dict[str, Any]  # the source study's settings that were not searched
    values: list[float] | None
    missing: str | None = None  # why it has no values
    attrs: dict[str, Any] = field(default_factory=dict)


def read_source(config: Config, tracker: Tracker, storage: str,
                store: optuna.storages.BaseStorage | None = None) -> WarmStart:
    """Read and check ``study.warm_start``'s source and map its trials (nothing is written):
    :class:`ConfigError` naming the key when it does not exist, is this study, or measured
    other objectives. ``storage``: this study's, the source's when none is given; ``store``:
    it opened already, if it exists."""
    spec = config.study.warm_start or {}
    other_data: list[str] = []
    if "experiment" in spec:
        label, candidates = _from_experiment(config, tracker, spec["experiment"])
    else:
        label, candidates, other_data = _from_study(config, spec["study"], spec.get("storage"),
                                                    storage, store)
    warm = WarmStart(label=label, total=len(candidates), other_data=other_data)
    dists = distributions(config.search_space)
    for c in candidates:
        params, reason = _mapped(c, config, dists)
        if reason is None and (c.values is None or not all(map(math.isfinite, c.values))):
            reason = c.missing or "with a value that is not finite"
        if reason is not None or params is None or c.values is None:
            warm.skipped[reason or "unusable"] += 1
            continue
        attrs = {Attr.WARM_START: label, **{k: v for k, v in c.attrs.items() if v}}
        warm.trials.append(optuna.trial.create_trial(
            params=params, distributions=dists, values=c.values, user_attrs=attrs))
    return warm


def seed(study: optuna.Study, warm: WarmStart) -> None:
    """Add the source's trials to ``study``, which then counts as warm-started."""
    study.add_trials(warm.trials)
    study.set_user_attr(Attr.WARM_START, warm.summary())


def grid_points_left(study: optuna.Study, space: SearchSpace) -> int:
    """Grid points no trial has measured (or is measuring): ``GridSampler`` itself counts
    only the points it handed out, not those of added trials."""
    grid = grid_of(space)
    names = list(grid)
    done = (optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING)
    seen = {tuple(t.params.get(n) for n in names) for t in study.get_trials(deepcopy=False)
            if t.state not in done}
    return sum(1 for point in itertools.product(*grid.values()) if point not in seen)


def _same_place(a: str, b: str) -> bool:
    if "://" in a or "://" in b:
        return a == b
    return Path(a).resolve() == Path(b).resolve()


def _from_study(config: Config, name: str, given: str | None, storage: str,
                store: optuna.storages.BaseStorage | None
                ) -> tuple[str, list[_Candidate], list[str]]:
    sc, key = config.study, "study.warm_start.study"
    url = given or storage
    here = _same_place(url, storage)
    if name == sc.name and here:
        raise ConfigError(key, f"must name another study than this one ({name!r} in "
                          f"{redact(url)}): a study cannot seed itself", source=config.source)
    where = "study.warm_start.storage" if given else "this study's storage"
    try:
        source, store = load_study(name, url, where=where, store=store if here else None)
    except ConfigError as e:
        raise ConfigError(key, e.message, source=config.source) from None
    names = source.metric_names
    directions = [d.name.lower() for d in source.directions]
    index = []
    for i, o in enumerate(sc.objectives):
        if names:
            if o.metric not in names:
                raise ConfigError(key, f"study {name!r} measured {', '.join(names)}, not "
                                  f"{o.metric}: its values cannot seed this study's objectives",
                                  source=config.source)
            i = names.index(o.metric)
        elif len(directions) != len(sc.objectives):
            raise ConfigError(key, f"study {name!r} has {len(directions)} objective(s) and "
                              f"this study {len(sc.objectives)}: its values cannot seed it",
                              source=config.source)
        if directions[i] != o.direction:
            raise ConfigError(key, f"study {name!r} has direction {directions[i]} for "
                              f"{o.metric}, but this study {o.direction}s it",
                              source=config.source)
        index.append(i)
    raw = stored_config(source, store) or {}
    fixed = _fixed_of(raw)
    candidates = [
        _Candidate(params=dict(t.params), fixed=fixed, values=[float(t.values[i]) for i in index],
                   attrs={Attr.RUN_ID: t.user_attrs.get(Attr.RUN_ID),
                          Attr.MODEL_URI: t.user_attrs.get(Attr.MODEL_URI)})
        for t in source.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    return f"study {name!r} in {redact(url)}", candidates, _other_data(raw, config)


def _other_data(raw: dict[str, Any], config: Config) -> list[str]:
    """The ``data:`` keys in which the source study's file differs from this one, defaults
    filled in (none when the source has no study file): its values were measured on other
    data. Compared as stored, credentials masked; ``cache`` changes no data."""
    if not raw:
        return []
    theirs, ours = raw.get("data") or {}, scrub_value(config.raw).get("data") or {}
    if not isinstance(theirs, dict) or not isinstance(ours, dict):
        return []
    default = {f.name: f.default for f in fields(DataConfig)}
    return sorted(k for k in (set(theirs) | set(ours)) - {"cache"}
                  if theirs.get(k, default.get(k)) != ours.get(k, default.get(k)))


def _fixed_of(raw: dict[str, Any]) -> dict[str, Any]:
    """The settings a study file fixes under ``training:`` and ``model:`` (its ``data:``
    is not a setting of the model: see :func:`_other_data`)."""
    fixed: dict[str, Any] = {}
    for section in ("training", "model"):
        node = raw.get(section)
        if not isinstance(node, dict):
            continue
        for key, value in node.items():
            if key == "augment" and isinstance(value, dict):
                fixed.update({f"augment_{k}": v for k, v in value.items()})
            elif key != "builder":
                fixed[key] = value
    return fixed


def _from_experiment(config: Config, tracker: Tracker, name: str
                     ) -> tuple[str, list[_Candidate]]:
    runs = tracker.finished_trial_runs(name)
    if runs is None:
        raise ConfigError("study.warm_start.experiment", f"no MLflow experiment {name!r} in "
                          f"{redact(tracker.uri)}", source=config.source)
    candidates = []
    for run in runs:
        if run["study"] == config.study.name:
            continue  # this study's own runs
        values: list[float] | None = []
        missing = None
        for o in config.study.objectives:
            metrics = run["metrics"]
            value = metrics.get(f"best_{o.metric}", metrics.get(
                "param_count" if o.metric == "params" else o.metric))
            if value is None:
                values, missing = None, f"without {o.metric}"
                break
            values.append(float(value))  # type: ignore[union-attr]
        candidates.append(_Candidate(params=run["params"], fixed=run["fixed"], values=values,
                                     missing=missing, attrs={Attr.RUN_ID: run["run_id"],
                                                             Attr.MODEL_URI: run["model_uri"]}))
    return f"experiment {name!r}", candidates


_OUT = object()


def _mapped(c: _Candidate, config: Config, dists: dict[str, BaseDistribution]
            ) -> tuple[dict[str, Any] | None, str | None]:
    """The trial's params in the new space, or None and why it does not fit."""
    settings = config.settings
    for name, value in c.params.items():
        if name in dists:
            continue
        if name not in settings:
            return None, f"with {name}, which this study no longer sets"
        if not _same(settings[name], value):
            return None, f"with {name} other than its fixed value {settings[name]!r}"
    params = {}
    for name, dist in dists.items():
        value = c.params.get(name, c.fixed.get(name, settings.get(name, _OUT)))
        if value is _OUT:
            return None, f"without a value for {name}"
        inside = _inside(dist, value)
        if inside is _OUT:
            return None, f"outside the new range of {name}"
        params[name] = inside
    return params, None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _same(expected: Any, value: Any) -> bool:
    """Whether ``value`` (perhaps MLflow's string of it) is the setting ``expected``."""
    if isinstance(value, str) and not isinstance(expected, str):
        if str(expected) == value:
            return True
        number = _number(value)
        return (number is not None and not isinstance(expected, bool) and
                isinstance(expected, (int, float)) and math.isclose(number, expected))
    if isinstance(expected, bool) or isinstance(value, bool):
        return type(expected) is type(value) and expected == value
    if isinstance(expected, (int, float)) and isinstance(value, (int, float)):
        return math.isclose(expected, value, rel_tol=1e-9)
    return type(expected) is type(value) and bool(expected == value)


def _inside(dist: BaseDistribution, value: Any) -> Any:
    """``value`` as a value of ``dist`` (a choice, an int, a float on its step), or
    :data:`_OUT` when it is not one."""
    if isinstance(dist, CategoricalDistribution):
        return next((c for c in dist.choices if _same(c, value)), _OUT)
    number = _number(value)
    if number is None or not math.isfinite(number):
        return _OUT
    if isinstance(dist, IntDistribution):
        if number != int(number) or not dist.low <= number <= dist.high or (
                int(number) - dist.low) % dist.step:
            return _OUT
        return int(number)
    if not isinstance(dist, FloatDistribution):
        return _OUT
    if dist.step is not None:  # onto the grid, as mltune._search_space.Float lists it
        snapped = round(dist.low + round((number - dist.low) / dist.step) * dist.step, 12)
        if not math.isclose(snapped, number, rel_tol=1e-9, abs_tol=1e-12):
            return _OUT
        number = snapped
    return number if dist.low <= number <= dist.high else _OUT
