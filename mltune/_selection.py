"""Which trial is a study's best: the one registered, tagged and reported.

One objective: Optuna's best trial. Several (``study.objectives``): the Pareto front holds
the trials that no other trial beats on every objective, and one of them is chosen by a
stated rule: among the completed trials whose first objective is within
``study.selection_tolerance`` of the best first-objective value, the best by the second
objective, then the third, and finally the first (so the choice is on the Pareto front).
With objectives ``val_accuracy, params`` and tolerance 0.002, that is the smallest model
within 0.2 points of the best accuracy.

Only the study's own trials count: the trials a warm start seeded (user attr
``mltune_warm_start``) guide the sampler, but their runs and models are another study's, so
none of them is this study's best, nor on its Pareto front.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mltune._names import Attr

if TYPE_CHECKING:
    import optuna

    from mltune._types import StudyConfig

__all__ = ["best_of", "best_trial", "dominates", "own_scored", "own_trials", "pareto_front",
           "rule", "values_of"]


def values_of(trial: optuna.trial.FrozenTrial) -> list[float] | None:
    """The trial's objective values when it completed with finite ones, else None."""
    if trial.state.name != "COMPLETE" or not trial.values:
        return None
    values = [float(v) for v in trial.values]
    return values if all(math.isfinite(v) for v in values) else None


def own_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's own trials: not those a warm start seeded (:attr:`Attr.WARM_START`),
    whose runs and models are the source's."""
    return [t for t in study.get_trials(deepcopy=False) if Attr.WARM_START not in t.user_attrs]


def own_scored(study: optuna.Study) -> list[tuple[optuna.trial.FrozenTrial, list[float]]]:
    """The study's own trials (:func:`own_trials`) that completed with finite values, each
    with its values."""
    return [(t, v) for t in own_trials(study) if (v := values_of(t)) is not None]


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


def best_of(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best of the study's own trials by its first objective (the earliest of equals,
    as Optuna's ``best_trial``), or None before any of them completed."""
    sign = 1.0 if study.directions[0].name == "MINIMIZE" else -1.0
    scored = own_scored(study)
    return min(scored, key=lambda tv: (sign * tv[1][0], tv[0].number))[0] if scored else None


def pareto_front(study: optuna.Study, directions: Sequence[str]) -> set[int]:
    """The numbers of the study's own trials that no other of its own trials dominates (as
    Optuna's ``best_trials``, which counts the seeded trials too)."""
    # Minimized and sorted, a trial can only be dominated by an earlier one, and then by one
    # already on the front: each trial is compared with the front, not with every trial.
    lowest = ["minimize"] * len(directions)
    signed = sorted((tuple(x if d == "minimize" else -x for x, d in
                           zip(v, directions, strict=True)), t.number)
                    for t, v in own_scored(study))
    front: list[tuple[float, ...]] = []
    numbers = set()
    for values, number in signed:
        if not any(dominates(f, values, lowest) for f in front):
            front.append(values)
            numbers.add(number)
    return numbers


def best_trial(study: optuna.Study, sc: StudyConfig) -> optuna.trial.FrozenTrial | None:
    """The study's best trial by :func:`rule` among its own trials (:func:`own_scored`), or
    None before any of them completed."""
    if not sc.multi_objective:
        return best_of(study)
    scored = own_scored(study)
    if not scored:
        return None
    sign = [1.0 if o.direction == "minimize" else -1.0 for o in sc.objectives]
    best_first = min(sign[0] * v[0] for _, v in scored)
    near = [(t, v) for t, v in scored if sign[0] * v[0] <= best_first + sc.selection_tolerance]
    return min(near, key=lambda tv: (*(s * x for s, x in zip(sign[1:], tv[1][1:],
                                                              strict=True)),
                                     sign[0] * tv[1][0], tv[0].number))[0]
