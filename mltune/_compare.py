"""``mltune compare``: random vs grid vs Bayesian search, answered on the user's own model
and data.

Each (sampler, seed) pair is a study of its own, run one after another on the same budget by
:func:`mltune.tune` (the same code path: checks, parent run, trials forked as usual). The
comparison is one MLflow run of its own; each study's parent run becomes its child. Once
every study has run, each study's best model is evaluated on the test split, and the
comparison writes its figures (best so far against trials and against time: the mean over
the seeds, with a min-max band) and its table, logs them to its run and copies them to a
folder.

The test evaluation runs Keras in this process, so it comes after every study: a process
that has run the backend can no longer fork a trial's process (:mod:`mltune._trial_process`).
"""

from __future__ import annotations

import copy
import dataclasses
import html
import inspect
import math
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mltune._api import (
    _STUDY_KEYS,
    _TRAINING_KEYS,
    StudySpec,
    _check_fit_kwargs,
    _config,
    _library_quiet,
    tune,
)
from mltune._errors import ConfigError
from mltune._results import ComparisonResult, StudyResult

if TYPE_CHECKING:
    import numpy as np
    import optuna
    import pandas as pd

    from mltune._session import Session
    from mltune._tracking import Tracker
    from mltune._types import Config

__all__ = ["Budget", "compare", "display_table", "parse_budget", "parse_samplers"]

# Within this fraction of a study's final best (of its absolute value) counts as reached.
REACHED = 0.01
FILES = ("comparison.html", "comparison.png", "comparison.csv", "comparison.md",
         "studies.csv", "curves.csv")
# What compare sets itself in each study, and the keyword that says it instead.
_OWN = {"sampler": "samplers", "n_trials": "budget", "timeout": "budget"}
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class Budget:
    """Each study's budget: a number of trials (``study.n_trials``) or seconds
    (``study.timeout``: no trial starts after it)."""

    trials: int | None = None
    seconds: float | None = None

    def __str__(self) -> str:
        if self.trials is not None:
            return f"{self.trials} trial{'s' if self.trials != 1 else ''}"
        return f"{self.seconds:g} s"


def parse_budget(value: Any) -> Budget:
    """``20`` (or ``"20"``): trials per study; ``"600s"``, ``"10m"``, ``"1.5h"``: time per
    study. :class:`ConfigError` naming ``--budget`` otherwise."""
    rule = ("must be a number of trials per study (an integer >= 1, e.g. 20) or a time per "
            "study (600s, 10m, 1h)")
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError("--budget", f"{rule}, but got {value!r}")
    text = str(value).strip().lower()
    if re.fullmatch(r"[0-9]+", text):
        if int(text) < 1:
            raise ConfigError("--budget", f"{rule}, but got {value!r}")
        return Budget(trials=int(text))
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([smh])", text)
    if match is None:
        raise ConfigError("--budget", f"{rule}, but got {value!r}")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not seconds > 0:
        raise ConfigError("--budget", f"{rule}: a time must be > 0, but got {value!r}")
    return Budget(seconds=seconds)


def parse_samplers(value: str | Sequence[str]) -> tuple[str, ...]:
    """``"random,grid,tpe"`` or a list of names: each a sampler of ``study.sampler``, once.
    :class:`ConfigError` naming ``--samplers`` otherwise. (Whether a sampler can run the
    study, e.g. ``gp`` without PyTorch, is checked with the study.)"""
    from mltune._config import SAMPLERS

    names = [n.strip() for n in (value.split(",") if isinstance(value, str) else value)]
    names = [n for n in names if n]
    rule = f"must list samplers, comma-separated, of {', '.join(SAMPLERS)}"
    if not names:
        raise ConfigError("--samplers", f"{rule}, but got {value!r}")
    for name in names:
        if name not in SAMPLERS:
            raise ConfigError("--samplers", f"{rule}, but got {name!r}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError("--samplers", f"names each sampler once, but {', '.join(twice)} "
                          "comes more than once")
    return tuple(names)


@dataclass(frozen=True)
class _Planned:
    sampler: str
    index: int  # 0 .. seeds-1
    config: Config

    @property
    def name(self) -> str:
        return self.config.study.name

    @property
    def seed(self) -> int:
        return int(self.config.study.seed or 0)


def compare(
    study: StudySpec = None,
    /,
    *,
    samplers: str | Sequence[str],
    budget: int | str,
    seeds: int = 3,
    output: str | os.PathLike[str] | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    progress: bool | None = None,
    **overrides: Any,
) -> ComparisonResult:
    """Compare samplers on your own model and data: each runs as its own studies, on the same
    budget, over several seeds; one MLflow run holds the comparison.

    Each (sampler, seed) pair is a study named ``{study.name}-{sampler}-seed{k}``
    (``k`` = 0 .. ``seeds`` - 1) with ``study.sampler`` = that sampler and ``study.seed`` =
    the study's seed (0 if none) + ``k``, run by :func:`tune` one after another, all in the
    study's MLflow experiment (``study.experiment``, else ``study.name``). The data split is
    the same in every study (``data.seed``, else the study's seed). The comparison's run
    (``compare-{study.name}``, tag ``mltune.compare``) is the parent of each study's parent
    run. ``study.sampler_options`` apply only to the sampler the study names.

    Once every study has run, each study's best model is evaluated on the test split (when
    the data has one; in this process). Written to ``output`` and logged as artifacts of the
    comparison's run: ``comparison.html`` (interactive, works offline) and
    ``comparison.png`` (best so far against trials, and against seconds since the study's
    first trial started: the mean over the seeds, the band from min to max),
    ``comparison.csv``/``.md`` (the table), ``studies.csv`` and ``curves.csv`` (each
    study, each trial).

    Args:
        study: As for :func:`tune`: a study file, a dict, a :class:`Config` or None.
        samplers: ``"random,grid,tpe,gp"`` or a list: those of ``study.sampler``.
        budget: Per study: an int (trials, ``n_trials``; grid: at most its points) or a time,
            ``"600s"``, ``"10m"``, ``"1h"`` (``timeout``: no trial starts after it).
        seeds: Studies per sampler.
        output: The folder for the files (default: ``./compare-{study.name}``).
        storage, tracking_uri, progress: As for :func:`tune`.
        overrides: Any other keyword of :func:`tune` (``model=``, ``data=``, ``epochs=``,
            ``study_name=`` for the comparison's name, ``seed=`` for the first seed...), but
            not ``sampler``, ``n_trials`` or ``timeout``: ``samplers`` and ``budget`` set them.

    Returns:
        A :class:`ComparisonResult`: ``table`` (one row per sampler), ``winner``,
        ``margin``, ``within_spread``, ``run_id``, ``studies`` (one row per study)...

    Raises:
        ConfigError: a bad ``samplers``, ``budget`` or ``seeds``; a sampler that cannot run
            the study (``gp`` without PyTorch, ``grid`` over a float without ``step``);
            several objectives; a study of one of the names that exists already. Nothing
            was written.
        DataError: data that cannot be used; nothing was written.
        MltuneError: a study cannot go on; the comparison's run ends FAILED.
    """
    names = parse_samplers(samplers)
    limit = parse_budget(budget)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError("--seeds", f"must be an integer >= 1, but got {seeds!r}")
    passed = _check_overrides(overrides)
    with _library_quiet():
        return _compare(study, names, limit, seeds, output=output, storage=storage,
                        tracking_uri=tracking_uri, progress=progress, overrides=passed)


def _check_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    allowed = {n for n, p in inspect.signature(tune).parameters.items()
               if p.kind is inspect.Parameter.KEYWORD_ONLY}
    for key in overrides:
        if key in _OWN:
            raise ConfigError(key, f"is set by compare for each study, from {_OWN[key]}=")
        if key not in allowed:
            raise TypeError(f"compare() got an unexpected keyword argument {key!r}")
    return dict(overrides)


# The keywords of tune that name objects a study file can only reference: passed to every
# study's tune call as they are.
_OBJECTS = ("model", "data", "validation_data", "test_data")
# Keywords of tune that go into the study file: applied once, to the base study.
_CONFIG_ONLY = ("search_space", "model_params")


def _compare(study: StudySpec, samplers: tuple[str, ...], limit: Budget, seeds: int, *,
             output: str | os.PathLike[str] | None, storage: str | None,
             tracking_uri: str | None, progress: bool | None, overrides: dict[str, Any]
             ) -> ComparisonResult:
    from mltune._progress import PlainProgress
    from mltune._session import prepare
    from mltune._storage import resolve_storage
    from mltune._tracking import project_run_id, resolve_tracking_uri
    from mltune._trial_process import stops_on_signals

    planned, user, base = _plan(study, samplers, limit, seeds, overrides)
    sc = base.study
    folder = Path(output) if output is not None else Path.cwd() / f"compare-{sc.name}"
    _check_output(folder)
    if project_run_id():
        raise ConfigError("MLFLOW_RUN_ID", "compare makes a run of its own and one parent run "
                          "per study; run it outside `mlflow run`")
    url, _ = resolve_storage(storage, resolve_tracking_uri(tracking_uri))
    _check_new(planned, url)
    _check_fit_kwargs(overrides.get("fit_kwargs"), base.source)
    # The tracking store, the user's code and the data, checked once before anything is
    # written; the session evaluates the best models at the end.
    session = prepare(planned[0].config, tracking_uri, user=user,
                      callbacks=tuple(overrides.get("callbacks", ())),
                      fit_kwargs=dict(overrides.get("fit_kwargs") or {}))
    say = PlainProgress(sc.metric).message
    for note in _notes(planned, limit, samplers):
        say(f"note: {note}")
    passed = {k: v for k, v in overrides.items()
              if k not in _STUDY_KEYS and k not in _TRAINING_KEYS and k not in _CONFIG_ONLY}
    user_callbacks = tuple(passed.pop("trial_callbacks", ()))
    tracker = session.tracker
    from mltune import __version__
    from mltune._names import Tag

    run_id = tracker.start_parent(
        name=f"compare-{sc.name}",
        tags={Tag.COMPARE: ",".join(samplers), Tag.KIND: "compare", Tag.METRIC: sc.metric,
              Tag.DIRECTION: sc.direction, Tag.VERSION: __version__},
        params={"samplers": ",".join(samplers), "budget": str(limit), "seeds": seeds,
                "seed": planned[0].seed, "studies": len(planned)})
    say(f"comparison {sc.name}: {len(planned)} studies ({', '.join(samplers)}; {seeds} "
        f"seed{'s' if seeds != 1 else ''} each; {limit} each) under MLflow run {run_id}")

    @stops_on_signals
    def run_all() -> ComparisonResult:
        results: list[StudyResult] = []
        for i, plan in enumerate(planned, start=1):
            say(f"comparison {sc.name}: study {i} of {len(planned)}: {plan.name} (sampler "
                f"{plan.sampler}, seed {plan.seed})")
            link = _Link(tracker, run_id)
            try:
                result = tune(plan.config, storage=url, tracking_uri=tracking_uri,
                              progress=progress, trial_callbacks=(link, *user_callbacks),
                              **passed)
            except BaseException:
                link.ensure(plan.name, url)
                raise
            if not link.done:
                tracker.nest(result.parent_run_id, run_id)
            results.append(result)
        say(f"comparison {sc.name}: evaluating each study's best model on the test split")
        return _summarize(sc.name, planned, results, session, run_id, url, limit, seeds,
                          samplers, folder, say)

    status = "FAILED"
    try:
        result = run_all()
        status = "FINISHED"
        return result
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.end_run(run_id, status)


def _plan(study: StudySpec, samplers: tuple[str, ...], limit: Budget, seeds: int,
          overrides: dict[str, Any]) -> tuple[list[_Planned], Any, Config]:
    """Every study of the comparison, validated (each sampler against the study) before
    anything is written; and the user's code, and the base study."""
    objects = {k: overrides.get(k) for k in _OBJECTS}
    values = {k: v for k, v in overrides.items() if k in _STUDY_KEYS or k in _TRAINING_KEYS}
    base, _ = _config(study, **objects, search_space=overrides.get("search_space"),
                      model_params=overrides.get("model_params"), values=values,
                      for_study=False)
    sc = base.study
    if sc.multi_objective:
        raise ConfigError("study.objectives", "compare ranks samplers by one value, but the "
                          "study has several objectives; compare on one (study.metric), or "
                          "run each sampler with mltune tune and compare their Pareto fronts",
                          source=base.source)
    if sc.warm_start is not None:
        raise ConfigError("study.warm_start", "compare starts every sampler from nothing, so "
                          "that each is measured on its own trials; remove study.warm_start",
                          source=base.source)
    first_seed = sc.seed if sc.seed is not None else 0
    data_seed = base.data.seed if base.data.seed is not None else first_seed
    planned: list[_Planned] = []
    user: Any = None
    for sampler in samplers:
        for k in range(seeds):
            raw = copy.deepcopy(base.raw)
            section = raw["study"]
            for key in ("n_trials", "timeout"):
                section.pop(key, None)
            if sampler != sc.sampler:
                section.pop("sampler_options", None)
            section.update(name=f"{sc.name}-{sampler}-seed{k}", sampler=sampler,
                           seed=first_seed + k, experiment=sc.experiment or sc.name)
            if limit.trials is not None:
                section["n_trials"] = limit.trials
            else:
                section["timeout"] = limit.seconds
            raw["data"] = {**(raw.get("data") or {}), "seed": data_seed}
            try:
                config, code = _config(dataclasses.replace(base, raw=raw), **objects,
                                       search_space=None, model_params=None, values={},
                                       for_study=True)
            except ConfigError as e:
                if e.key == "study.sampler":  # e.g. gp without PyTorch: the option chose it
                    raise ConfigError("--samplers", e.message) from None
                if e.key == "study.seed":
                    raise ConfigError("--seeds", f"study.seed + {k}: {e.message}") from None
                raise ConfigError(e.key, f"{e.message} (with sampler {sampler!r} of "
                                  "--samplers)", source=e.source) from None
            planned.append(_Planned(sampler, k, config))
            user = user if user is not None else code
    return planned, user, base


def _notes(planned: list[_Planned], limit: Budget, samplers: tuple[str, ...]) -> list[str]:
    from mltune._search_space import grid_size

    notes = []
    grid = next((p for p in planned if p.sampler == "grid"), None)
    if grid is not None and limit.trials is not None:
        points = grid_size(grid.config.search_space)
        if points < limit.trials:
            notes.append(f"the grid has {points} points, fewer than the budget of {limit}: "
                         f"each grid study runs {points}")
    if limit.trials is None:
        return notes
    import optuna

    for sampler, cls in (("tpe", optuna.samplers.TPESampler), ("gp", optuna.samplers.GPSampler)):
        plan = next((p for p in planned if p.sampler == sampler), None)
        if plan is None:
            continue
        startup = plan.config.study.sampler_options.get(
            "n_startup_trials", inspect.signature(cls).parameters["n_startup_trials"].default)
        if isinstance(startup, int) and limit.trials <= startup:
            notes.append(f"{sampler} samples its first {startup} trials at random "
                         f"(n_startup_trials), so with {limit} per study it is a random search; "
                         "give a larger budget, or name the sampler in the study file with "
                         "study.sampler_options.n_startup_trials")
    return notes


def _check_output(folder: Path) -> None:
    """The output folder is a folder, or can be made: checked before any study runs."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError("--output", f"must be a folder, but {folder} is a file")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError("--output", f"must be a folder that can be written, but {existing} "
                          "cannot")


def _check_new(planned: list[_Planned], url: str) -> None:
    """A comparison makes new studies: one of its names in the storage would be resumed,
    with trials on top of its budget."""
    from mltune._secrets import redact
    from mltune._storage import existing_directions, open_storage

    try:
        store = open_storage(url, existing=True)
    except ConfigError:  # no storage yet
        return
    taken = [p.name for p in planned if existing_directions(store, p.name) is not None]
    if taken:
        raise ConfigError("--study-name", f"compare makes new studies, but {', '.join(taken)} "
                          f"exist{'s' if len(taken) == 1 else ''} already in {redact(url)}; "
                          "give the comparison another name (--study-name NEW) or storage")


class _Link:
    """A trial callback that makes the study's parent run a child of the comparison's run once
    its first trial ends (so the UI nests it while it runs); :meth:`ensure` does it when the
    study has ended, however it ended."""

    def __init__(self, tracker: Tracker, run_id: str) -> None:
        self.tracker, self.run_id, self.done = tracker, run_id, False

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.done:
            return
        from mltune._names import Attr

        parent = study.user_attrs.get(Attr.STUDY_PARENT_RUN)
        try:
            if parent:
                self.tracker.nest(str(parent), self.run_id)
                self.done = True
        except Exception:  # the study goes on; ensure() tries again at its end
            pass

    def ensure(self, study_name: str, url: str) -> None:
        """After a study that stopped with an error: nest its parent run, if it has one. Any
        error here gives way to the study's own."""
        if self.done:
            return
        from mltune._names import Attr
        from mltune._storage import load_study

        try:
            parent = load_study(study_name, url)[0].user_attrs.get(Attr.STUDY_PARENT_RUN)
            if parent and self.tracker.run_exists(str(parent)):
                self.tracker.nest(str(parent), self.run_id)
                self.done = True
        except Exception:  # the study was never made, or the store is out of reach
            pass


# -- the measures ----------------------------------------------------------------------------

@dataclass
class _Curve:
    """One study's trials: best so far after each trial (by number), and at each completion
    (by time, in seconds since the study's first trial started)."""

    by_trial: list[float]  # NaN before the first completed trial
    times: list[float]  # completion times of the completed trials, ascending
    by_time: list[float]  # best so far at each of those times
    rows: list[dict[str, Any]]  # one per trial, for curves.csv


def _curve(study: optuna.Study, maximize: bool) -> _Curve:
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    t0 = min(starts) if starts else None

    def seconds(t: optuna.trial.FrozenTrial) -> float:
        if t0 is None or t.datetime_complete is None:
            return math.nan
        return (t.datetime_complete - t0).total_seconds()

    def value(t: optuna.trial.FrozenTrial) -> float:
        if t.state.name != "COMPLETE" or t.values is None:
            return math.nan
        v = float(t.values[0])
        return v if math.isfinite(v) else math.nan

    better = max if maximize else min
    by_trial, rows, best = [], [], math.nan
    for t in trials:
        v = value(t)
        if not math.isnan(v):
            best = v if math.isnan(best) else better(best, v)
        by_trial.append(best)
        rows.append({"trial": t.number, "state": t.state.name, "seconds": seconds(t),
                     "value": v, "best_so_far": best})
    done = sorted((seconds(t), value(t)) for t in trials
                   if not math.isnan(value(t)) and not math.isnan(seconds(t)))
    times, by_time, best = [], [], math.nan
    for s, v in done:
        best = v if math.isnan(best) else better(best, v)
        times.append(s)
        by_time.append(best)
    return _Curve(by_trial, times, by_time, rows)


def reached(best: float, value: float, maximize: bool) -> bool:
    """Whether ``value`` is within 1% of ``best`` (of its absolute value): for maximize
    ``value >= best - 0.01 |best|`` (0.99 best for a positive best), for minimize
    ``value <= best + 0.01 |best|``."""
    if maximize:
        return value >= best - REACHED * abs(best)
    return value <= best + REACHED * abs(best)


def _first_reach(xs: Sequence[float], ys: Sequence[float], best: float, maximize: bool
                 ) -> float:
    for x, y in zip(xs, ys, strict=True):
        if not math.isnan(y) and reached(best, y, maximize):
            return float(x)
    return math.nan


def _test_key(metric: str, test: dict[str, float]) -> str | None:
    """The test column: the study metric's own (``val_accuracy`` -> ``test_accuracy``), else
    test accuracy, else the test loss."""
    for key in ("test_" + metric.removeprefix("val_"), "test_accuracy", "test_loss"):
        if key in test:
            return key
    return None


def _test_scores(session: Session, results: list[StudyResult], say: Any
                 ) -> tuple[str | None, dict[str, float]]:
    """Each study's best model on the test split (also logged on its trial's run, as
    registration does): the test column's name and the value per study."""
    data, tracker = session.data, session.tracker
    if not data.has_test:
        say("note: the data has no test split: the table has no test metric")
        return None, {}
    from mltune._device import native_logs_muted
    from mltune._trainer import compile_model, evaluate, release

    key: str | None = None
    scores: dict[str, float] = {}
    for result in results:
        if result.best_model_uri is None:
            continue
        try:
            with native_logs_muted():
                model = tracker.load_keras_model(result.best_model_uri)
                if not model.compiled or session.config.builder is None:
                    compile_model(model, session.config.settings, one_hot=data.one_hot)
                test = {f"test_{k}": v for k, v in evaluate(model, data).items()}
                del model
                release()
        except Exception as e:  # one model that cannot be evaluated leaves one gap
            say(f"note: the best model of study {result.study_name} could not be evaluated "
                f"({type(e).__name__}: {e})")
            continue
        if result.best_run_id:
            tracker.log_metrics(result.best_run_id, test)
        key = key or _test_key(session.config.study.metric, test)
        if key is not None:
            scores[result.study_name] = float(test.get(key, math.nan))
    return key, scores


def _summarize(name: str, planned: list[_Planned], results: list[StudyResult],
               session: Session, run_id: str, url: str, limit: Budget, seeds: int,
               samplers: tuple[str, ...], folder: Path, say: Any) -> ComparisonResult:
    import pandas as pd

    from mltune._names import Tag
    from mltune._storage import load_study

    sc = session.config.study
    metric, maximize = sc.metric, sc.direction == "maximize"
    curves = {p.name: _curve(load_study(p.name, url)[0], maximize) for p in planned}
    test_key, scores = _test_scores(session, results, say)
    by_name = {r.study_name: r for r in results}
    rows, curve_rows = [], []
    for p in planned:
        c, r = curves[p.name], by_name[p.name]
        best = c.by_trial[-1] if c.by_trial else math.nan
        row = {
            "sampler": p.sampler, "seed": p.seed, "study": p.name, "trials": len(c.by_trial),
            "complete": sum(1 for x in c.rows if x["state"] == "COMPLETE"),
            f"best_{metric}": best,
            "seconds": max((x["seconds"] for x in c.rows if not math.isnan(x["seconds"])),
                           default=math.nan),
            "seconds_to_99": _first_reach(c.times, c.by_time, best, maximize),
            "trials_to_99": _first_reach(range(1, len(c.by_trial) + 1), c.by_trial, best,
                                         maximize),
        }
        if test_key is not None:
            row[test_key] = scores.get(p.name, math.nan)
        row.update(parent_run_id=r.parent_run_id, best_run_id=r.best_run_id)
        rows.append(row)
        curve_rows += [{"sampler": p.sampler, "seed": p.seed, "study": p.name, **x}
                       for x in c.rows]
    studies = pd.DataFrame(rows)
    table = _table(studies, samplers, metric, test_key)
    winner, runner_up, margin, within = _winner(table, metric, maximize)
    summary = _summary(table, metric, winner, runner_up, margin, within, seeds)

    tracker = session.tracker
    metrics: dict[str, float] = {}
    for _, row in table.iterrows():
        s = row["sampler"]
        measures = {f"best_{metric}": row[f"best_{metric}_mean"],
                    f"best_{metric}_min": row[f"best_{metric}_min"],
                    f"best_{metric}_max": row[f"best_{metric}_max"],
                    "seconds_to_99": row["seconds_to_99_mean"]}
        if test_key is not None:
            measures[test_key] = row[f"{test_key}_mean"]
        metrics.update({f"{s}.{k}": float(v) for k, v in measures.items()
                        if not pd.isna(v)})
    if margin is not None:
        metrics["margin"] = margin
    tracker.log_metrics(run_id, metrics)
    tags = {Tag.WINNER: winner} if winner else {}
    if within is not None:
        tags[Tag.WITHIN_SPREAD] = str(within).lower()
    if tags:
        tracker.set_tags(run_id, tags)
    with tempfile.TemporaryDirectory(prefix="mltune-compare-") as tmp:
        files = Path(tmp)
        title = (f"Comparison {name}: {', '.join(samplers)}; {limit} per study, {seeds} seed"
                 f"{'s' if seeds != 1 else ''} each")
        table.to_csv(files / "comparison.csv", index=False)
        studies.to_csv(files / "studies.csv", index=False)
        pd.DataFrame(curve_rows).to_csv(files / "curves.csv", index=False)
        shown = display_table(table, metric, test_key)
        (files / "comparison.md").write_text(
            f"# {title}\n\n{_markdown(shown)}\n\n{summary}\n\n{_legend(metric, maximize)}\n",
            encoding="utf-8")
        bands = _bands(planned, curves, samplers)
        _write_png(files / "comparison.png", bands, metric, title)
        _write_html(files / "comparison.html", bands, metric, title, shown, summary,
                    _legend(metric, maximize))
        tracker.log_artifacts(run_id, files)
        folder.mkdir(parents=True, exist_ok=True)
        for file in FILES:
            shutil.copyfile(files / file, folder / file)
    say(f"comparison {name}: figures and table in {folder}")
    return ComparisonResult(
        run_id=run_id, experiment_id=tracker.ensure_experiment(), tracking_uri=tracker.uri,
        metric=metric, direction=sc.direction, samplers=samplers, budget=str(limit),
        seeds=seeds, table=table, studies=studies, test_metric=test_key, winner=winner,
        runner_up=runner_up, margin=margin, within_spread=within, summary=summary,
        output=str(folder), results=tuple(results))


def _table(studies: pd.DataFrame, samplers: tuple[str, ...], metric: str,
           test_key: str | None) -> pd.DataFrame:
    """One row per sampler, in the order given: the measures over its seeds."""
    import pandas as pd

    rows = []
    for s in samplers:
        group = studies[studies["sampler"] == s]
        best = group[f"best_{metric}"]
        row: dict[str, Any] = {"sampler": s, "studies": len(group),
                               "trials": float(group["trials"].mean())}
        row.update({f"best_{metric}_mean": best.mean(), f"best_{metric}_std": best.std(),
                    f"best_{metric}_min": best.min(), f"best_{metric}_max": best.max()})
        seconds = group["seconds_to_99"]
        row.update({"seconds_to_99_mean": seconds.mean(), "seconds_to_99_min": seconds.min(),
                    "seconds_to_99_max": seconds.max(),
                    "trials_to_99_mean": group["trials_to_99"].mean()})
        if test_key is not None:
            test = group[test_key]
            row.update({f"{test_key}_mean": test.mean(), f"{test_key}_min": test.min(),
                        f"{test_key}_max": test.max()})
        rows.append(row)
    return pd.DataFrame(rows)


def _winner(table: pd.DataFrame, metric: str, maximize: bool
            ) -> tuple[str | None, str | None, float | None, bool | None]:
    """The sampler with the best mean final value; its lead over the runner-up; whether that
    lead is smaller than the spread (max - min over the seeds) of either of the two."""
    mean = f"best_{metric}_mean"
    ranked = table.dropna(subset=[mean]).sort_values(mean, ascending=not maximize,
                                                     kind="stable")
    if ranked.empty:
        return None, None, None, None
    first = ranked.iloc[0]
    if len(ranked) < 2:
        return str(first["sampler"]), None, None, None
    second = ranked.iloc[1]
    margin = abs(float(first[mean]) - float(second[mean]))
    lo, hi = f"best_{metric}_min", f"best_{metric}_max"
    counted = [int(r["studies"]) >= 2 and not any(math.isnan(float(r[k])) for k in (lo, hi))
               for r in (first, second)]
    if not all(counted):
        return str(first["sampler"]), str(second["sampler"]), margin, None
    spread = max(float(r[hi]) - float(r[lo]) for r in (first, second))
    return str(first["sampler"]), str(second["sampler"]), margin, margin < spread


def _summary(table: pd.DataFrame, metric: str, winner: str | None, runner_up: str | None,
             margin: float | None, within: bool | None, seeds: int) -> str:
    if winner is None:
        return "no winner: no study completed a trial"
    row = table[table["sampler"] == winner].iloc[0]
    text = (f"winner: {winner}, best {metric} {row[f'best_{metric}_mean']:.4f} (mean over "
            f"{seeds} seed{'s' if seeds != 1 else ''})")
    if runner_up is None or margin is None:
        return text + "; no other sampler to compare with"
    other = table[table["sampler"] == runner_up].iloc[0]
    text += f", {margin:.4f} ahead of {runner_up} ({other[f'best_{metric}_mean']:.4f})"
    if within is None:
        return text + "; one seed: no spread to weigh the margin against"
    spread = max(float(r[f"best_{metric}_max"]) - float(r[f"best_{metric}_min"])
                 for r in (row, other))
    if within:
        return text + (f": inside the spread over seeds ({spread:.4f}), so the lead may be "
                       "chance")
    return text + f": outside the spread over seeds ({spread:.4f})"


def _legend(metric: str, maximize: bool) -> str:
    sign = ">= best - 1% of |best|" if maximize else "<= best + 1% of |best|"
    return (f"Final best: the study's best {metric}, mean (min-max) over the seeds. Time to "
            f"99%: seconds from the study's first trial start until its best so far was {sign}"
            ". Test: each study's best model on the test split.")


def _fmt(mean: Any, lo: Any, hi: Any, digits: int) -> str:
    import pandas as pd

    if pd.isna(mean):
        return "-"
    if pd.isna(lo) or pd.isna(hi) or lo == hi:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def display_table(table: pd.DataFrame, metric: str, test_key: str | None) -> pd.DataFrame:
    """The table as printed: one text column per measure, ``mean (min-max)``."""
    import pandas as pd

    rows = []
    for _, r in table.iterrows():
        row = {"sampler": r["sampler"], "studies": str(int(r["studies"])),
               "trials": f"{r['trials']:g}",
               f"best {metric}": _fmt(r[f"best_{metric}_mean"], r[f"best_{metric}_min"],
                                      r[f"best_{metric}_max"], 4),
               "seconds to 99%": _fmt(r["seconds_to_99_mean"], r["seconds_to_99_min"],
                                      r["seconds_to_99_max"], 1),
               "trials to 99%": "-" if pd.isna(r["trials_to_99_mean"]) else
               f"{r['trials_to_99_mean']:.1f}"}
        if test_key is not None:
            row[test_key] = _fmt(r[f"{test_key}_mean"], r[f"{test_key}_min"],
                                 r[f"{test_key}_max"], 4)
        rows.append(row)
    return pd.DataFrame(rows)


def _markdown(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(frame.columns) + " |",
             "| " + " | ".join("---" for _ in frame.columns) + " |"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)


# -- the figures -----------------------------------------------------------------------------

@dataclass
class _Band:
    """One sampler's curve over its seeds: the mean and the min-max band, against ``x``
    (NaN where a seed has no completed trial yet)."""

    sampler: str
    x: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    steps: bool  # held until the next point (time), or a value at each point (trials)


def _bands(planned: list[_Planned], curves: dict[str, _Curve], samplers: tuple[str, ...]
           ) -> dict[str, list[_Band]]:
    """Per sampler, against trials (a study that ran fewer keeps its final best) and against
    seconds (at every completion of any of its studies)."""
    import numpy as np

    by_trial, by_time = [], []
    # Every sampler's curve against time runs on to the end of the longest study.
    end = max((t for c in curves.values() for t in c.times), default=None)
    for s in samplers:
        mine = [curves[p.name] for p in planned if p.sampler == s]
        n = max((len(c.by_trial) for c in mine), default=0)
        if n:
            rows = np.array([c.by_trial + [c.by_trial[-1]] * (n - len(c.by_trial)) if
                             c.by_trial else [math.nan] * n for c in mine], dtype=float)
            by_trial.append(_band(s, np.arange(1, n + 1, dtype=float), rows, steps=False))
        xs = np.array(sorted({t for c in mine for t in c.times} | (
            {end} if end is not None else set())), dtype=float)
        if xs.size:
            rows = np.array([_at(c, xs) for c in mine], dtype=float)
            by_time.append(_band(s, xs, rows, steps=True))
    return {"trials": by_trial, "seconds": by_time}


def _at(curve: _Curve, xs: np.ndarray) -> np.ndarray:
    """The study's best so far at each time of ``xs`` (NaN before its first completion)."""
    import numpy as np

    if not curve.times:
        return np.full(xs.shape, np.nan)
    index = np.searchsorted(np.asarray(curve.times), xs, side="right") - 1
    values = np.asarray(curve.by_time, dtype=float)[np.maximum(index, 0)]
    return np.where(index >= 0, values, np.nan)


def _band(sampler: str, x: np.ndarray, rows: np.ndarray, *, steps: bool) -> _Band:
    import numpy as np

    # A point counts once every seed has a value there: a mean of some seeds would jump.
    return _Band(sampler, x, rows.mean(axis=0), np.min(rows, axis=0), np.max(rows, axis=0),
                 steps)


_AXES = (("trials", "trials run"), ("seconds", "seconds since the study's first trial started"))


def _write_png(path: Path, bands: dict[str, list[_Band]], metric: str, title: str) -> None:
    # A Figure of its own, not pyplot: no global backend or figure state is touched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(13, 5.2))
    FigureCanvasAgg(fig)
    colors = _colors([b.sampler for b in bands["trials"] + bands["seconds"]])
    for i, (axis, label) in enumerate(_AXES):
        ax = fig.add_subplot(1, 2, i + 1)
        for b in bands[axis]:
            color = colors[b.sampler]
            ax.fill_between(b.x, b.low, b.high, step="post" if b.steps else None,
                            color=color, alpha=0.18, linewidth=0)
            ax.plot(b.x, b.mean, drawstyle="steps-post" if b.steps else "default",
                    color=color, label=b.sampler, linewidth=2, marker="o", markersize=3)
        ax.set_xlabel(label)
        ax.set_ylabel(f"best {metric} so far")
        ax.set_title(f"Best {metric} so far vs {axis}")
        ax.grid(alpha=0.3)
        if axis == "trials":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(title="line: mean, band: min-max over seeds", fontsize=9, title_fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _colors(samplers: list[str]) -> dict[str, str]:
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    order = list(dict.fromkeys(samplers))
    return {s: palette[i % len(palette)] for i, s in enumerate(order)}


def _rgba(color: str, alpha: float) -> str:
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _plotly(bands: list[_Band], axis: str, label: str, metric: str, colors: dict[str, str]
            ) -> Any:
    import plotly.graph_objects as go

    def values(a: np.ndarray) -> list[float | None]:
        return [None if math.isnan(v) else float(v) for v in a]

    fig = go.Figure()
    for b in bands:
        color, x, shape = colors[b.sampler], values(b.x), "hv" if b.steps else "linear"
        fig.add_trace(go.Scatter(x=x, y=values(b.high), line={"width": 0, "shape": shape},
                                 hoverinfo="skip", showlegend=False, legendgroup=b.sampler))
        fig.add_trace(go.Scatter(x=x, y=values(b.low), line={"width": 0, "shape": shape},
                                 fill="tonexty", fillcolor=_rgba(color, 0.18),
                                 hoverinfo="skip", showlegend=False, legendgroup=b.sampler))
        fig.add_trace(go.Scatter(x=x, y=values(b.mean), name=b.sampler, mode="lines+markers",
                                 line={"color": color, "width": 2, "shape": shape},
                                 legendgroup=b.sampler))
    fig.update_layout(title={"text": f"Best {metric} so far vs {axis} (line: mean over the "
                                     "seeds; band: min to max)"},
                      xaxis={"title": {"text": label}},
                      yaxis={"title": {"text": f"best {metric} so far"}}, height=480)
    return fig


def _write_html(path: Path, bands: dict[str, list[_Band]], metric: str, title: str,
                shown: pd.DataFrame, summary: str, legend: str) -> None:
    """One offline page, as the study's report (:func:`mltune._report.write_html`): plotly.js
    embedded once, each figure a JSON block that one script draws."""
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    from mltune._report import _HTML_PAGE, _HTML_SECTION

    colors = _colors([b.sampler for b in bands["trials"] + bands["seconds"]])
    table = shown.to_html(index=False, border=0, escape=True)
    sections = [f'<section id="summary">\n<p>{html.escape(summary)}</p>\n{table}\n'
                f"<p>{html.escape(legend)}</p>\n</section>"]
    nav = ['<a href="#summary">Summary</a>']
    for axis, label in _AXES:
        fig = _plotly(bands[axis], axis, label, metric, colors)
        text = pio.to_json(fig, validate=False).replace("<", "\\u003c")
        sections.append(_HTML_SECTION.format(name=f"by-{axis}", json=text))
        nav.append(f'<a href="#by-{axis}">Best so far vs {axis}</a>')
    path.write_text(_HTML_PAGE.format(title=html.escape(title), plotlyjs=get_plotlyjs(),
                                      nav=" ".join(nav), sections="\n".join(sections)),
                    encoding="utf-8")
