"""Which trial is a study's best: the one registered, tagged and reported.

One objective: Optuna's best trial. Several (``study.objectives``): the Pareto front holds
the trials that no other trial beats on every objective, and one of them is chosen by a
stated rule: among the completed trials whose first objective is within
``study.selection_tolerance`` of the best first-objective value, the best by the second
objective, then the third, and finally the first (so the choice is on the Pareto front).
With objectives ``val_accuracy, params`` and tolerance 0.002, that is the smallest model
within 0.2 points of the best accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

    from mltune._types import StudyConfig

__all__ = ["best_trial", "dominates", "rule", "values_of"]


def values_of(trial: optuna.trial.FrozenTrial) -> list[float] | None:
    """The trial's objective values when it completed with finite ones, else None."""
    if trial.state.name != "COMPLETE" or not trial.values:
        return None
    values = [float(v) for v in trial.values]
    return values if all(math.isfinite(v) for v in values) else None


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """Whether ``a`` is at least as good as ``b`` on every objective and better on one."""
    signed = [(x, y) if d == "minimize" else (-x, -y) for x, y, d in
              zip(a, b, directions, strict=True)]
    return all(x <= y for x, y in signed) and any(x < y for x, y in signed)


def rule(sc: StudyConfig) -> str:
    """The selection rule in words, as tagged on the parent run."""
    if not sc.multi_objective:
        return f"best {sc.metric}"
    first, *rest = sc.objectives
    then = ", then ".join(f"{'lowest' if o.direction == 'minimize' else 'highest'} {o.metric}"
                          for o in rest)
    return (f"{then} among the trials within {sc.selection_tolerance:g} of the best "
            f"{first.metric}")


def best_trial(study: optuna.Study, sc: StudyConfig) -> optuna.trial.FrozenTrial | None:
    """The study's best trial by :func:`rule`, or None before any trial completed."""
    if not sc.multi_objective:
        try:
            return study.best_trial
        except ValueError:
            return None
    scored = [(t, v) for t in study.get_trials(deepcopy=False) if (v := values_of(t))]
    if not scored:
        return None
    sign = [1.0 if o.direction == "minimize" else -1.0 for o in sc.objectives]
    best_first = min(sign[0] * v[0] for _, v in scored)
    near = [(t, v) for t, v in scored if sign[0] * v[0] <= best_first + sc.selection_tolerance]
    return min(near, key=lambda tv: (*(s * x for s, x in zip(sign[1:], tv[1][1:],
                                                              strict=True)),
                                     sign[0] * tv[1][0], tv[0].number))[0]
