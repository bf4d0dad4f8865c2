"""Crash recovery: trials lost with their worker, and MLflow runs left RUNNING. Nothing a
study started is left RUNNING, in Optuna or in MLflow."""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import optuna

from mltune._names import RUN_STATUS, Attr, Tag
from mltune._optuna_compat import fail_trial, is_database
from mltune._storage import StaleCallback

if TYPE_CHECKING:
    from mltune._tracking import Tracker

__all__ = ["close_orphans", "fail_trials_of_killed", "recover_lost_trials",
           "stale_trial_handler"]


def stale_trial_handler(tracker: Tracker, retry: int) -> StaleCallback:
    """What happens to a trial whose worker died: its MLflow run is FAILED (never left
    RUNNING) with the reason, and, with ``study.retry_failed``, the trial is queued again."""
    retry_callback = (optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retry)
                      if retry else None)

    def handle(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        run_id = trial.user_attrs.get(Attr.RUN_ID)
        if run_id:
            worker = trial.user_attrs.get(Attr.WORKER, "?")
            tracker.set_tags(run_id, {Tag.STATE: "FAIL", Tag.ERROR:
                                      f"worker {worker} stopped during the trial"})
            tracker.end_run(run_id, RUN_STATUS["FAIL"])
        if retry_callback is not None:
            retry_callback(study, trial)
        elif study.user_attrs.get(Attr.STUDY_GRID_QUEUE):
            # A grid point is run once: the point of a lost trial goes back into the queue.
            study.enqueue_trial(trial.params)

    return handle


def recover_lost_trials(study: optuna.Study, tracker: Tracker, on_stale: StaleCallback
                        ) -> None:
    """Before this process runs trials: fail the trials lost with their worker, close the
    runs of failed trials that the tracking server could not be told about, and fail the
    logged models a killed process left PENDING."""
    _fail_lost_trials(study, on_stale)
    _close_lost_runs(study, tracker)
    experiment_id = study.user_attrs.get(Attr.STUDY_EXPERIMENT)
    if experiment_id:  # a resumed study: models its killed processes left half-logged
        tracker.fail_pending_models(str(experiment_id))


def _fail_lost_trials(study: optuna.Study, on_stale: StaleCallback) -> None:
    """Fail the RUNNING trials whose worker is gone, before this worker adds its own.

    A database storage knows from Optuna's heartbeat. A journal file has no heartbeat: a
    trial run on this host by a process that no longer exists is lost (the journal file is
    for processes on one machine).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    if is_database(study):
        return
    _fail_trials_of(study, on_stale, lambda pid: not _alive(pid))


def fail_trials_of_killed(study: optuna.Study, tracker: Tracker, pids: list[int],
                          retry: int) -> None:
    """The trials of workers this process killed (they outlived the grace period) fail now,
    their runs with them, whatever the storage (a database's heartbeat would take minutes)."""
    _fail_trials_of(study, stale_trial_handler(tracker, retry), lambda pid: pid in pids)


def _fail_trials_of(study: optuna.Study, on_stale: StaleCallback,
                    lost: Callable[[int], bool]) -> None:
    """Fail the RUNNING trials run on this host by a process for which ``lost(pid)``."""
    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker_host, _, pid = str(trial.user_attrs.get(Attr.WORKER, "")).rpartition(":")
        if worker_host != host or not pid.isdigit() or not lost(int(pid)):
            continue
        failed = fail_trial(study, trial)
        if failed is not None:
            on_stale(study, failed)


def _close_lost_runs(study: optuna.Study, tracker: Tracker) -> None:
    """Failed trials whose run is still RUNNING in MLflow (the tracking server was down when
    they ended): their runs become FAILED now."""
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
        run_id = trial.user_attrs.get(Attr.RUN_ID)
        if run_id and tracker.run_status(run_id) == "RUNNING":
            tracker.set_tags(run_id, {Tag.STATE: "FAIL", Tag.ERROR: trial.user_attrs.get(
                Attr.ERROR, "the trial ended while the tracking server was unreachable")})
            tracker.end_run(run_id, RUN_STATUS["FAIL"])


def close_orphans(study: optuna.Study, tracker: Tracker, open_runs: dict[int, str]) -> None:
    """End the runs whose trial callback never came (an interrupt): none is left RUNNING."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    for number, run_id in list(open_runs.items()):
        state = trials[number].state.name if number in trials else "FAIL"
        tracker.set_tags(run_id, {Tag.STATE: state})
        tracker.end_run(run_id, RUN_STATUS[state])
        del open_runs[number]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
