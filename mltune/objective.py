"""One trial: sample settings -> build the model -> train -> report -> return its value.

The only module where Optuna, Keras and MLflow meet.
"""

from __future__ import annotations

import math
import os
import socket
from typing import TYPE_CHECKING, Any

import optuna

from mltune.errors import NonFiniteLossError
from mltune.search_space import suggest_all
from mltune.selection import best_trial, dominates, values_of

if TYPE_CHECKING:
    from mltune.config import Config
    from mltune.data import Dataset
    from mltune.progress import PlainProgress
    from mltune.tracking import Tracker

__all__ = ["RUN_ID_ATTR", "Objective", "run_name"]

RUN_ID_ATTR = "mlflow_run_id"
MODEL_URI_ATTR = "mlflow_model_uri"


WORKER_ATTR = "mltune_worker"
ERROR_ATTR = "mltune_error"
EPOCHS_ATTR = "epochs_run"  # epochs a trial trained, pruned ones included
PRUNED_TAG = "mltune.pruned_at_epoch"


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
    """Callable passed to ``study.optimize``; one MLflow child run per trial."""

    def __init__(self, config: Config, data: Dataset, tracker: Tracker, parent_run_id: str,
                 progress: PlainProgress, tags: dict[str, str], queue_only: bool = False
                 ) -> None:
        self.config = config
        self.data = data
        self.tracker = tracker
        self.parent_run_id = parent_run_id
        self.progress = progress
        self.tags = tags
        self.errors: dict[int, str] = {}  # why a trial failed, or where it was pruned
        self.open_runs: dict[int, str] = {}  # trial number -> run id, until after_trial
        # Grid search on several workers: every point was enqueued; a trial made when the
        # queue ran dry (two workers racing for the last point) must not repeat one.
        self.queue_only = queue_only
        self.finished = 0  # trials this process ran to an end
        self.fatal: Exception | None = None  # stops the study: the tracking server is gone

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        from mltune.trainer import release

        cfg, data = self.config, self.data
        sc = cfg.study
        if self.queue_only and "fixed_params" not in trial.study._storage.get_trial_system_attrs(
                trial._trial_id):
            trial.study.stop()
            raise optuna.TrialPruned("the grid is exhausted: no queued point left")
        sampled = suggest_all(cfg.search_space, trial)
        settings = cfg.params_for(sampled)
        try:
            run_id = self.tracker.start_child(
                self.parent_run_id, name=run_name(trial.number), params=sampled,
                tags=self.tags | {"mltune.trial_number": str(trial.number),
                                  "mltune.state": "RUNNING"})
        except Exception as e:
            self._stop_if_tracking_down(trial, e)
            raise
        self.open_runs[trial.number] = run_id
        trial.set_user_attr(RUN_ID_ATTR, run_id)
        trial.set_user_attr(WORKER_ATTR, worker_id())
        self.progress.trial_started(trial.number, sampled)
        epochs = int(settings["epochs"])
        prune = sc.pruner != "none"
        trained = 0  # epochs so far
        values_so_far: list[float] = []  # the finite values of the study metric

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            nonlocal trained
            self.tracker.log_metrics(run_id, metrics, step=epoch)
            self.progress.epoch_ended(trial.number, epoch, epochs, metrics)
            trained = epoch + 1
            value = metrics[sc.metric]
            if not math.isfinite(value):
                return  # never reported: no NaN reaches the storage
            values_so_far.append(value)
            if prune:
                # The step is the number of epochs trained: Hyperband's resource.
                trial.report(value, epoch + 1)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {epoch + 1} of {epochs}: "
                                             f"{sc.metric}={value:.4f}")

        try:
            # Each trial gets its own seed, so a trial reruns the same way.
            seed = None if sc.seed is None else sc.seed + trial.number
            model, result = fit_and_log(settings, data, self.tracker, run_id, sc.metric,
                                        sc.direction, on_epoch, seed)
            values = self._values(model, result, run_id)
            # Only a trial that beats the study's best so far (or, with several objectives,
            # joins the Pareto front) logs its model, so model logging costs a few calls per
            # study rather than one per trial.
            if all(map(math.isfinite, values)) and self._is_new_best(trial.study, values):
                self._log_model(trial, run_id, model)
            return values if sc.multi_objective else values[0]
        except optuna.TrialPruned:
            self.errors[trial.number] = f"at epoch {trained} of {epochs}"
            self.tracker.set_tags(run_id, {PRUNED_TAG: str(trained)})
            if values_so_far:
                best = max if sc.direction == "maximize" else min
                self.tracker.log_metrics(run_id, {f"best_{sc.metric}": best(values_so_far)})
            raise
        except Exception as e:
            self.errors[trial.number] = f"{type(e).__name__}: {e}"
            self._stop_if_tracking_down(trial, e)
            if self.fatal is None:
                # Marks a trial that failed by itself, not one lost with its worker or server.
                trial.set_user_attr(ERROR_ATTR, self.errors[trial.number][:1000])
                self.tracker.log_error(run_id, e)
                kind = ("out_of_memory" if out_of_memory(e) else "non_finite_loss"
                        if isinstance(e, NonFiniteLossError) else None)
                if kind:  # this trial alone is at fault: the worker goes on
                    self.tracker.set_tags(run_id, {"mltune.error_kind": kind})
            raise
        finally:
            if self.fatal is None:
                trial.set_user_attr(EPOCHS_ATTR, trained)
            release()

    def _values(self, model: Any, result: Any, run_id: str) -> list[float]:
        """The trial's value for each objective: a training metric at the best epoch, the
        model's parameter count, or its inference time per image."""
        from mltune.trainer import latency_ms

        values = []
        for o in self.config.study.objectives:
            if o.metric == "params":
                values.append(float(model.count_params()))
            elif o.metric == "latency_ms":
                ms = latency_ms(model, self.data.x_val)
                self.tracker.log_metrics(run_id, {"latency_ms": ms})
                values.append(ms)
            elif o.metric == self.config.study.metric:
                values.append(result.best_value)
            else:
                values.append(result.history[o.metric][result.best_epoch])
        return values

    def _stop_if_tracking_down(self, trial: optuna.Trial, error: Exception) -> None:
        """MLflow retries a request for a while (MLFLOW_HTTP_REQUEST_MAX_RETRIES), so a brief
        outage costs nothing. Past that, the server is down: stop this worker rather than
        fail trial after trial."""
        if self.fatal is None and self.tracker.unavailable(error):
            from mltune.tracking import TrackingUnavailable

            self.fatal = TrackingUnavailable(self.tracker.uri, error)
            trial.study.stop()

    def _log_model(self, trial: optuna.Trial, run_id: str, model: Any) -> None:
        # The trial trained fine: a model that cannot be saved must not lose its result.
        try:
            uri = self.tracker.log_model(run_id, model, self.data.x_val[:5])
        except Exception as e:
            self.tracker.set_tags(run_id, {"mltune.model_error": f"{type(e).__name__}: {e}"})
            self.progress.message(f"trial {trial.number}: model not logged ({e})")
            return
        trial.set_user_attr(MODEL_URI_ATTR, uri)

    def _is_new_best(self, study: optuna.Study, values: list[float]) -> bool:
        sc = self.config.study
        if sc.multi_objective:
            front = (v for t in study.get_trials(deepcopy=False) if (v := values_of(t)))
            return not any(dominates(v, values, sc.directions) or v == values for v in front)
        try:
            best = study.best_value
        except ValueError:  # no completed trial yet
            return True
        return values[0] > best if sc.direction == "maximize" else values[0] < best

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Optuna callback: the run's status follows the trial's final state."""
        from mltune.tracking import RUN_STATUS

        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        state = trial.state.name
        self.open_runs.pop(trial.number, None)
        self.finished += 1
        if self.fatal is not None:  # nothing can reach MLflow; the next start closes the run
            self.progress.trial_finished(trial.number, state, None, str(self.fatal), None)
            return
        if run_id:
            self.tracker.set_tags(run_id, {"mltune.state": state})
            self.tracker.end_run(run_id, RUN_STATUS[state])
        best = best_trial(study, self.config.study)
        detail = self.errors.get(trial.number, "") if state in ("FAIL", "PRUNED") else ""
        value = trial.values[0] if trial.values else None
        self.progress.trial_finished(trial.number, state, value, detail,
                                     (best.number, best.values[0]) if best else None)


def prepare(config: Config, tracking_uri: str | None) -> tuple[Tracker, Dataset]:
    """The checks that come before anything is written: the tracking store, then the data
    (loaded once per process). GPUs are set up before TensorFlow touches them."""
    from mltune.data import load_data
    from mltune.device import configure_gpus
    from mltune.tracking import Tracker

    sc = config.study
    tracker = Tracker(tracking_uri, sc.experiment or sc.name)
    tracker.check()
    configure_gpus()
    return tracker, load_data(config.data, seed=sc.seed)


def fit_and_log(settings: dict[str, Any], data: Dataset, tracker: Tracker, run_id: str,
                metric: str, direction: str, on_epoch: Any, seed: int | None
                ) -> tuple[Any, Any]:
    """Build and train a model on ``data``, logging its final metrics to ``run_id``."""
    import keras

    from mltune.model import build_model
    from mltune.trainer import train

    if seed is not None:
        # Before building, so the initial weights are seeded as well as shuffling and dropout.
        keras.utils.set_random_seed(seed)
    model = build_model(settings, input_shape=data.input_shape, num_classes=data.num_classes,
                        pixel_max=data.pixel_max)
    result = train(model, settings, x_train=data.x_train, y_train=data.y_train,
                   x_val=data.x_val, y_val=data.y_val, metric=metric,
                   maximize=direction == "maximize", on_epoch=on_epoch)
    tracker.log_metrics(run_id, {
        f"best_{metric}": result.best_value,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "train_seconds": result.train_seconds,
        "param_count": model.count_params(),
    })
    return model, result


def train_run(config: Config, *, tracking_uri: str | None = None,
              progress: PlainProgress | None = None) -> tuple[str, dict[str, float]]:
    """``mltune train``: one MLflow run with fixed settings, no study.

    Searched settings that are not fixed take their defaults. The model is evaluated on the
    test split and logged. Returns the run id and the test metrics.
    """
    from mltune.device import device_name
    from mltune.progress import PlainProgress
    from mltune.tracking import project_run_id
    from mltune.trainer import evaluate, release

    sc = config.study
    progress = progress or PlainProgress(sc.metric)
    tracker, data = prepare(config, tracking_uri)
    settings = dict(config.settings)
    run_id = tracker.start_parent(name=f"train-{sc.name}", params=settings, tags={
        "mltune.study_name": sc.name, "mltune.metric": sc.metric, "mltune.kind": "train",
        "mltune.device": device_name()}, project_run_id=project_run_id())
    epochs = int(settings["epochs"])
    progress.trial_started(0, {})

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        tracker.log_metrics(run_id, metrics, step=epoch)
        progress.epoch_ended(0, epoch, epochs, metrics)
        progress.message(f"epoch {epoch + 1}/{epochs}: " + " ".join(
            f"{k}={v:.4g}" for k, v in metrics.items()))

    status = "FAILED"
    try:
        model, _ = fit_and_log(settings, data, tracker, run_id, sc.metric, sc.direction,
                               on_epoch, sc.seed)
        test = {f"test_{k}": v for k, v in evaluate(model, data.x_test, data.y_test).items()}
        tracker.log_metrics(run_id, test)
        tracker.log_model(run_id, model, data.x_val[:5])
        status = "FINISHED"
        return run_id, test
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except Exception as e:
        tracker.log_error(run_id, e)
        raise
    finally:
        tracker.end_run(run_id, status)
        progress.close()
        release()
