"""The few things mltune needs from Optuna that its public API does not offer. Every use of
Optuna's private API is here, each with why, so an Optuna upgrade has one file to check.
"""

from __future__ import annotations

from typing import Any

import optuna

__all__ = ["fail_trial", "is_database", "is_queued", "unvisited_grid_points"]


def is_queued(trial: optuna.Trial) -> bool:
    """Whether ``trial`` took a point from the queue (``study.enqueue_trial``).

    Optuna marks an enqueued trial only with the system attr ``fixed_params``, which the
    public ``Trial`` does not expose (``trial.system_attrs`` was removed in Optuna 4)."""
    attrs = trial.study._storage.get_trial_system_attrs(trial._trial_id)
    return "fixed_params" in attrs


def fail_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial
               ) -> optuna.trial.FrozenTrial | None:
    """Mark a RUNNING trial of a dead worker FAIL, as Optuna's heartbeat does for a database
    (a journal file has no heartbeat, and ``study.tell`` refuses a trial it did not ask
    for). Returns the failed trial, or None when another worker got there first."""
    storage = study._storage
    try:
        storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return None
    return storage.get_trial(trial._trial_id)


def is_database(study: optuna.Study) -> bool:
    """Whether the study lives in a database (which has Optuna's heartbeat). ``Study`` keeps
    its storage private."""
    return isinstance(study._storage, optuna.storages.RDBStorage)


def unvisited_grid_points(sampler: Any, study: optuna.Study) -> int | None:
    """How many grid points ``GridSampler`` has not run yet, or None for another sampler.
    Optuna has no public call for it; the study's trials alone miss queued points."""
    unvisited = getattr(sampler, "_get_unvisited_grid_ids", None)
    return None if unvisited is None else len(unvisited(study))
