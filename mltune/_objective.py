"""One trial: sample settings -> build the model -> train -> report -> return its value.

The only module where Optuna, Keras and MLflow meet.
"""

from __future__ import annotations

import functools
import math
import os
import queue
import shutil
import socket
import tempfile
from typing import TYPE_CHECKING, Any

import optuna

from mltune._errors import ConfigError, MltuneError, NonFiniteLossError, TrialError
from mltune._names import RUN_STATUS, Attr, Tag
from mltune._optuna_compat import is_queued
from mltune._pareto import ParetoRecord
from mltune._search_space import suggest_all
from mltune._secrets import scrub
from mltune._selection import best_of, best_trial, dominates, own_scored
from mltune._trial_process import Spares, TrialProcessDied, run_forked, stopping

if TYPE_CHECKING:
    from mltune._progress import PlainProgress
    from mltune._session import Session

__all__ = ["Objective", "run_name", "worker_id"]


def worker_id() -> str:
    """``host:pid`` of this process, stored on each trial it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is the accelerator (or host) running out of memory, under
    TensorFlow (ResourceExhaustedError), JAX (RESOURCE_EXHAUSTED) or PyTorch."""
    text = f"{type(error).__name__}: {error}"
    return isinstance(error, MemoryError) or any(s in text for s in (
        "ResourceExhaustedError", "RESOURCE_EXHAUSTED", "OutOfMemoryError", "out of memory",
        "OOM when allocating"))


def run_name(number: int) -> str:
    return f"trial-{number:03d}"


class Objective:
    """Callable passed to ``study.optimize``; one MLflow child run per trial.

    ``fork``: each trial trains in a child process forked from this one
    (:mod:`mltune._trial_process`), else in this process. ``slots``: the environment of each
    trial that may run at once (a GPU of its own); ``study.optimize`` runs that many trials
    in threads of this process, each waiting on its trial's process.
    """

    def __init__(self, session: Session, parent_run_id: str, progress: PlainProgress,
                 tags: dict[str, str], queue_only: bool = False, fork: bool = False,
                 slots: list[dict[str, str]] | None = None) -> None:
        self.session = session
        self.config = session.config
        self.tracker = session.tracker
        self.parent_run_id = parent_run_id
        self.progress = progress
        self.tags = tags
        self.fork = fork
        self.slots: queue.SimpleQueue[dict[str, str]] = queue.SimpleQueue()
        for slot in slots or [{}]:
            self.slots.put(slot)
        self.errors: dict[int, str] = {}  # why a trial failed, or where it was pruned
        self.open_runs: dict[int, str] = {}  # trial number -> run id, until after_trial
        # Grid search on several workers: every point was enqueued; a trial made when the
        # queue ran dry (two workers racing for the last point) must not repeat one.
        self.queue_only = queue_only
        self.finished = 0  # trials this process ran to an end
        self.fatal: Exception | None = None  # stops the study: the tracking server is gone
        # Stops the study too, with MLflow fine: a setup error every trial would repeat (the
        # model reports no such metric), or study.max_consecutive_failures failed trials.
        self.stop_error: MltuneError | None = None
        self.failed_in_row = 0
        from mltune._session import train_trial, warm_up

        # The same callable for every trial: a process forked ahead (warmed up) serves any
        # trial of this objective. close() ends those left when the study ends.
        self.spares = (Spares(functools.partial(train_trial, session),
                              functools.partial(warm_up, session)) if fork else None)

    def close(self) -> None:
        """End the trials' processes forked ahead that no trial will take."""
        if self.spares is not None:
            self.spares.close()

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        cfg = self.config
        if self.queue_only and not is_queued(trial):
            trial.study.stop()
            raise optuna.TrialPruned("the grid is exhausted: no queued point left")
        try:
            sampled = suggest_all(cfg.search_space, trial)
        except Exception as e:  # every trial would fail the same way: stop at once
            self._stop(trial.study, ConfigError("search_space", f"Optuna cannot draw the "
                                                f"parameters: {type(e).__name__}: {e}",
                                                source=cfg.source))
            raise
        settings = cfg.params_for(sampled)
        slot = self.slots.get()
        try:
            return self._run(trial, sampled, settings, slot)
        finally:
            self.slots.put(slot)

    def _run(self, trial: optuna.Trial, sampled: dict[str, Any], settings: dict[str, Any],
             slot: dict[str, str]) -> float | list[float]:
        from mltune._session import train_trial
        from mltune._trainer import release

        sc = self.config.study
        tags = self.tags | {Tag.TRIAL_NUMBER: str(trial.number), Tag.STATE: "RUNNING"}
        if "CUDA_VISIBLE_DEVICES" in slot:
            tags[Tag.CUDA_VISIBLE_DEVICES] = slot["CUDA_VISIBLE_DEVICES"]
        try:
            run_id = self.tracker.start_child(self.parent_run_id, name=run_name(trial.number),
                                              params=sampled, tags=tags)
        except Exception as e:
            self._stop_if_tracking_down(trial, e)
            raise
        self.open_runs[trial.number] = run_id
        trial.set_user_attr(Attr.RUN_ID, run_id)
        trial.set_user_attr(Attr.WORKER, worker_id())
        self.progress.trial_started(trial.number, sampled)
        record = _TrialRecord(self, trial, run_id, int(settings["epochs"]))
        try:
            # Each trial gets its own seed, so a trial reruns the same way.
            seed = None if sc.seed is None else sc.seed + trial.number
            if self.spares is not None:
                try:
                    run_forked(self.spares, (settings, seed), record, env=slot)
                except TrialProcessDied as e:
                    if record.values is None:
                        raise
                    # Died after it reported its outcome, while it saved the model (the OOM
                    # killer): the trial's result stands, without its model.
                    record.lost_model(str(e))
            else:
                train_trial(self.session, settings, seed, record)
            if record.values is None:
                raise TrialError("the trial's process ended before it reported its outcome")
            return record.values if sc.multi_objective else record.values[0]
        except optuna.TrialPruned:
            self.errors[trial.number] = f"at epoch {record.trained} of {record.epochs}"
            self.tracker.set_tags(run_id, {Tag.PRUNED_AT_EPOCH: str(record.trained)})
            if record.values_so_far:
                best = max if sc.direction == "maximize" else min
                self.tracker.log_metrics(run_id, {f"best_{sc.metric}":
                                                  best(record.values_so_far)})
            raise
        except Exception as e:
            self.errors[trial.number] = scrub(f"{type(e).__name__}: {e}")
            self._stop_if_tracking_down(trial, e)
            if isinstance(e, ConfigError):
                self._stop(trial.study, e)
            if stopping.is_set():  # Ctrl-C or SIGTERM stopped its process: not its fault
                self.errors[trial.number] = "interrupted"
            elif self.fatal is None:
                # Marks a trial that failed by itself, not one lost with its worker or server.
                trial.set_user_attr(Attr.ERROR, self.errors[trial.number][:1000])
                self.tracker.log_error(run_id, e)
                kind = ("out_of_memory" if out_of_memory(e) else "non_finite_loss"
                        if isinstance(e, NonFiniteLossError) else getattr(e, "kind", None))
                if kind:  # this trial alone is at fault: the worker goes on
                    self.tracker.set_tags(run_id, {Tag.ERROR_KIND: kind})
            raise
        finally:
            if self.fatal is None:
                trial.set_user_attr(Attr.EPOCHS, record.trained)
            if record.model_path is not None:
                shutil.rmtree(os.path.dirname(record.model_path), ignore_errors=True)
            if not self.fork:
                release()

    def values(self, outcome: dict[str, Any]) -> list[float]:
        """The trial's value for each objective: a training metric at the best epoch, the
        model's parameter count, or its inference time per image."""
        values = []
        for o in self.config.study.objectives:
            if o.metric == "params":
                values.append(float(outcome["param_count"]))
            elif o.metric == "latency_ms":
                values.append(float(outcome["latency_ms"]))
            elif o.metric == self.config.study.metric:
                values.append(float(outcome["best_value"]))
            else:
                values.append(float(outcome["history"][o.metric][outcome["best_epoch"]]))
        return values

    def _stop(self, study: optuna.Study, error: MltuneError) -> None:
        """End the study after the trials under way: ``error`` is what the user is told."""
        if self.stop_error is None:
            self.stop_error = error
            study.stop()

    def _count_failure(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """``study.max_consecutive_failures`` failed trials in a row (in this process) stop
        the study: a broken setup should not burn the whole budget."""
        limit = self.config.study.max_consecutive_failures
        if trial.state != optuna.trial.TrialState.FAIL:
            self.failed_in_row = 0
            return
        if self.errors.get(trial.number) == "interrupted":
            return
        self.failed_in_row += 1
        if limit and self.failed_in_row >= limit:
            last = self.errors.get(trial.number, "unknown error")
            self._stop(study, MltuneError(
                f"study {self.config.study.name}: {self.failed_in_row} trials in a row failed, "
                f"the last with {last}; the study stops (study.max_consecutive_failures: "
                f"{limit}, 0 never stops)"))

    def _stop_if_tracking_down(self, trial: optuna.Trial, error: Exception) -> None:
        """MLflow retries a request for a while (MLFLOW_HTTP_REQUEST_MAX_RETRIES), so a brief
        outage costs nothing. Past that, the server is down: stop this worker rather than
        fail trial after trial."""
        if self.fatal is None and self.tracker.unavailable(error):
            from mltune._tracking import TrackingUnavailable

            self.fatal = TrackingUnavailable(self.tracker.uri, error)
            trial.study.stop()

    def _is_new_best(self, study: optuna.Study, values: list[float]) -> bool:
        """Whether a trial with ``values`` beats the study's own trials (seeded trials are
        another study's: a warm start whose best no trial beats logs no model at all)."""
        sc = self.config.study
        if sc.multi_objective:
            return not any(dominates(v, values, sc.directions) or v == values
                           for _, v in own_scored(study))
        best = best_of(study)
        if best is None:  # no completed trial of its own yet
            return True
        ahead = values[0] - best.values[0]
        return ahead > 0 if sc.direction == "maximize" else ahead < 0

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Optuna callback: the run's status follows the trial's final state."""
        run_id = trial.user_attrs.get(Attr.RUN_ID)
        state = trial.state.name
        self.open_runs.pop(trial.number, None)
        self.finished += 1
        self._count_failure(study, trial)
        if self.fatal is not None:  # nothing can reach MLflow; the next start closes the run
            self.progress.trial_finished(trial.number, state, None, str(self.fatal), None)
            return
        if run_id:
            self.tracker.set_tags(run_id, {Tag.STATE: state})
            self.tracker.end_run(run_id, RUN_STATUS[state])
        best = best_trial(study, self.config.study)
        detail = self.errors.get(trial.number, "") if state in ("FAIL", "PRUNED") else ""
        value = trial.values[0] if trial.values else None
        self.progress.trial_finished(trial.number, state, value, detail,
                                     (best.number, best.values[0]) if best else None)


class _TrialRecord:
    """One trial's :class:`mltune._trial_process.TrialLink`: what its training reports goes
    to MLflow, the progress display and Optuna (whose pruner decides pruning; with several
    objectives, :mod:`mltune._pareto` does)."""

    def __init__(self, objective: Objective, trial: optuna.Trial, run_id: str, epochs: int
                 ) -> None:
        self.objective, self.trial, self.run_id = objective, trial, run_id
        self.tracker = objective.tracker
        self.epochs = epochs
        self.model_path: str | None = None  # in a folder of its own, when the model is wanted
        self.trained = 0  # epochs so far
        self.values_so_far: list[float] = []  # the finite values of the study metric
        self.values: list[float] | None = None
        self.outputs: Any = None
        self.model_done = False  # saved() came: the model is logged, or why not is tagged
        self.logged: dict[str, float] = {}  # the metrics built() logged
        sc = objective.config.study
        # Several objectives: Optuna takes no intermediate values, so each epoch's values
        # go to a user attr of the trial, which the pareto pruner compares.
        self.pareto = ParetoRecord(trial, sc, epochs) if sc.multi_objective else None

    def started(self, device: str) -> None:
        self.tracker.set_tags(self.run_id, {Tag.DEVICE: device})

    def built(self, param_count: int | None, latency_ms: float | None) -> None:
        # Logged now, so that a pruned or failed run shows its model's size too.
        known = {"param_count": param_count, "latency_ms": latency_ms}
        self.logged = {k: float(v) for k, v in known.items() if v is not None}
        if self.logged:
            self.tracker.log_metrics(self.run_id, self.logged)
        if self.pareto is not None:
            self.pareto.built(param_count, latency_ms)

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        from mltune._session import log_epoch

        sc = self.objective.config.study
        log_epoch(self.tracker, self.run_id, epoch, metrics)
        self.objective.progress.epoch_ended(self.trial.number, epoch, self.epochs, metrics)
        self.trained = epoch + 1
        value = metrics[sc.metric]
        if not math.isfinite(value):
            return  # never reported: no NaN reaches the storage
        self.values_so_far.append(value)
        if self.pareto is not None:
            why = self.pareto.epoch(epoch + 1, metrics)
            if why is not None:
                raise optuna.TrialPruned(why)
            return
        # Reported with or without a pruner: optuna-dashboard draws the learning curves.
        # The step is the number of epochs trained: Hyperband's resource. After its last
        # epoch a trial has nothing left to save: it completes with its value.
        self.trial.report(value, epoch + 1)
        if sc.pruner != "none" and epoch + 1 < self.epochs and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch + 1} of {self.epochs}: "
                                     f"{sc.metric}={value:.4f}")

    def finished(self, outcome: dict[str, Any]) -> str | None:
        from mltune._session import MODEL_FILE, final_metrics, log_kept_epoch

        objective = self.objective
        metrics = final_metrics(objective.config.study, outcome)
        self.tracker.log_metrics(self.run_id, {k: v for k, v in metrics.items()
                                               if k not in self.logged})
        log_kept_epoch(self.tracker, self.run_id, outcome)
        values = objective.values(outcome)
        self.values, self.outputs = values, outcome["outputs"]
        # Only a trial that beats the study's best so far (or, with several objectives,
        # joins the Pareto front) logs its model, so model logging costs a few calls per
        # study rather than one per trial.
        if all(map(math.isfinite, values)) and objective._is_new_best(self.trial.study, values):
            self.model_path = os.path.join(tempfile.mkdtemp(prefix="mltune-trial-"), MODEL_FILE)
        return self.model_path

    def lost_model(self, error: str) -> None:
        """The trial's process died after ``finished``: the model is not logged, unless
        ``saved`` came first (or none was wanted)."""
        if not self.model_done and self.model_path is not None:
            self.saved(error)

    def saved(self, error: str | None) -> None:
        # The trial trained fine: a model that cannot be saved must not lose its result.
        self.model_done = True
        if error is None and self.model_path is not None:
            try:
                uri = self.objective.session.log_model(self.run_id, self.model_path,
                                                       self.outputs)
            except Exception as e:
                error = f"{type(e).__name__}: {e}"
            else:
                self.trial.set_user_attr(Attr.MODEL_URI, uri)
                return
        self.tracker.set_tags(self.run_id, {Tag.MODEL_ERROR: error})
        self.objective.progress.message(f"trial {self.trial.number}: model not logged "
                                        f"({error})")
