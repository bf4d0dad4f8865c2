"""Pruning in multi-objective studies (``study.pruner: pareto``).

Optuna refuses ``Trial.report`` and ``Trial.should_prune`` when a study has several objectives
(optuna/optuna#3450), so each trial stores the values of all its objectives after every epoch
in a user attr of its own (:data:`mltune._names.Attr.INTERMEDIATE_VALUES`). A training metric
takes the epoch's value; ``params`` and ``latency_ms`` are known once the model is built,
before the first epoch. After epoch k, a trial is pruned when at least ``n_dominating`` other
trials of the study (in any state) that reached epoch k were, at epoch k, no worse on every
objective and better on one: they *dominate* it there.

The decision is :func:`should_prune`, a pure function of stored values;
:class:`ParetoRecord` is the thin adapter that stores a trial's values and reads the others'.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mltune._errors import ConfigError
from mltune._names import Attr
from mltune._selection import dominates

if TYPE_CHECKING:
    import optuna

    from mltune._types import ObjectiveSpec, StudyConfig

__all__ = ["STATIC", "ParetoOptions", "ParetoRecord", "dominating", "epoch_values",
           "should_prune", "stored_values"]

# Objectives that a model has from the moment it is built: they do not change with training.
STATIC = ("params", "latency_ms")


@dataclass(frozen=True)
class ParetoOptions:
    """``study.pruner_options`` of the pareto pruner, named as Optuna's pruners name them.

    ``n_startup_trials``: no trial is pruned at epoch k before that many other trials have
    reached epoch k. ``n_warmup_steps``: no trial is pruned before it has trained more than
    that many epochs (the epoch-1 values of a large model say little about its last ones).
    ``n_dominating``: how many trials must dominate a trial at epoch k to prune it.
    """

    n_startup_trials: int = 5
    n_warmup_steps: int = 1
    n_dominating: int = 1

    @classmethod
    def parse(cls, options: Mapping[str, Any], *, source: str = "<config>") -> ParetoOptions:
        """The options from ``study.pruner_options``; a :class:`ConfigError` names a bad one."""
        lowest = {"n_startup_trials": 0, "n_warmup_steps": 0, "n_dominating": 1}
        for key, value in options.items():
            if key not in lowest:
                raise ConfigError(f"study.pruner_options.{key}", "is not an option of pruner "
                                  f"'pareto'; its options: {', '.join(lowest)}", source=source)
            if not isinstance(value, int) or isinstance(value, bool) or value < lowest[key]:
                raise ConfigError(f"study.pruner_options.{key}", f"must be an integer >= "
                                  f"{lowest[key]}, but got {value!r}", source=source)
        return cls(**options)


def dominating(values: Sequence[float], others: Iterable[Sequence[float]],
               directions: Sequence[str]) -> int:
    """How many of ``others`` dominate ``values``: no worse on every objective, better on
    one."""
    return sum(1 for other in others if dominates(other, values, directions))


def should_prune(values: Sequence[float], others: Sequence[Sequence[float]],
                 directions: Sequence[str], *, epoch: int, options: ParetoOptions) -> bool:
    """Whether a trial whose objectives are ``values`` after ``epoch`` epochs (counted from 1)
    stops there, given the values of the other trials at the same epoch (``others``)."""
    if epoch <= options.n_warmup_steps or len(others) < options.n_startup_trials:
        return False
    return dominating(values, others, directions) >= options.n_dominating


def epoch_values(objectives: Sequence[ObjectiveSpec], metrics: Mapping[str, float],
                 static: Mapping[str, float | None]) -> list[float] | None:
    """Each objective's value after an epoch: the epoch's metric, or the built model's
    ``params``/``latency_ms``; None when one is missing or not finite (nothing is stored)."""
    values = []
    for o in objectives:
        value = static.get(o.metric) if o.metric in STATIC else metrics.get(o.metric)
        if value is None or not math.isfinite(value):
            return None
        values.append(float(value))
    return values


def stored_values(trial: optuna.trial.FrozenTrial, epoch: int) -> list[float] | None:
    """The values ``trial`` stored after ``epoch`` epochs, or None when it has none."""
    stored = trial.user_attrs.get(Attr.INTERMEDIATE_VALUES)
    values = stored.get(str(epoch)) if isinstance(stored, dict) else None
    return [float(v) for v in values] if isinstance(values, list) else None


class ParetoRecord:
    """One trial's side of the pruner: stores its values after each epoch, and (with
    ``study.pruner: pareto``) compares them with those of the study's other trials."""

    def __init__(self, trial: optuna.Trial, sc: StudyConfig, epochs: int) -> None:
        self.trial, self.sc, self.epochs = trial, sc, epochs
        self.options = ParetoOptions.parse(sc.pruner_options) if sc.pruner == "pareto" else None
        self.static: dict[str, float | None] = {}
        self.history: dict[str, list[float]] = {}

    def built(self, param_count: int | None, latency_ms: float | None) -> None:
        self.static = {"params": None if param_count is None else float(param_count),
                       "latency_ms": latency_ms}

    def epoch(self, epoch: int, metrics: Mapping[str, float]) -> str | None:
        """Store the values after ``epoch`` epochs (counted from 1); return why the trial is
        pruned, or None when it goes on."""
        values = epoch_values(self.sc.objectives, metrics, self.static)
        if values is None:
            return None
        self.history[str(epoch)] = values
        self.trial.set_user_attr(Attr.INTERMEDIATE_VALUES, dict(self.history))
        # After its last epoch a trial has nothing left to save: it completes with its values.
        if self.options is None or epoch >= self.epochs:
            return None
        others = [v for t in self.trial.study.get_trials(deepcopy=False)
                  if t.number != self.trial.number and (v := stored_values(t, epoch))]
        directions = self.sc.directions
        if not should_prune(values, others, directions, epoch=epoch, options=self.options):
            return None
        shown = ", ".join(f"{o.metric}={v:.4g}" for o, v in zip(self.sc.objectives, values,
                                                                  strict=True))
        return (f"pruned after epoch {epoch} of {self.epochs}: {shown}, dominated by "
                f"{dominating(values, others, directions)} of {len(others)} trials at that "
                f"epoch")
