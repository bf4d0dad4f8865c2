"""One trial: sample settings -> build the model -> train -> report -> return its value.

The only module where Optuna, Keras and MLflow meet.
"""

from __future__ import annotations

import math
import os
import socket
from typing import TYPE_CHECKING, Any

import optuna

from mltune.search_space import suggest_all

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
        self.errors: dict[int, str] = {}
        self.open_runs: dict[int, str] = {}  # trial number -> run id, until after_trial
        # Grid search on several workers: every point was enqueued; a trial made when the
        # queue ran dry (two workers racing for the last point) must not repeat one.
        self.queue_only = queue_only
        self.finished = 0  # trials this process ran to an end
        self.fatal: Exception | None = None  # stops the study: the tracking server is gone

    def __call__(self, trial: optuna.Trial) -> float:
        from mltune.trainer import release

        cfg, data = self.config, self.data
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

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            self.tracker.log_metrics(run_id, metrics, step=epoch)
            self.progress.epoch_ended(trial.number, epoch, epochs, metrics)

        try:
            # Each trial gets its own seed, so a trial reruns the same way.
            seed = None if cfg.study.seed is None else cfg.study.seed + trial.number
            model, result = fit_and_log(settings, data, self.tracker, run_id, cfg.study.metric,
                                        cfg.study.direction, on_epoch, seed)
            # Only a trial that beats the study's best so far logs its model, so model logging
            # costs a few calls per study rather than one per trial.
            if math.isfinite(result.best_value) and self._is_new_best(trial.study,
                                                                      result.best_value):
                self._log_model(trial, run_id, model)
            return result.best_value
        except optuna.TrialPruned:
            raise
        except Exception as e:
            self.errors[trial.number] = f"{type(e).__name__}: {e}"
            self._stop_if_tracking_down(trial, e)
            if self.fatal is None:
                # Marks a trial that failed by itself, not one lost with its worker or server.
                trial.set_user_attr(ERROR_ATTR, self.errors[trial.number][:1000])
                self.tracker.log_error(run_id, e)
                if out_of_memory(e):  # this trial's model was too big: the worker goes on
                    self.tracker.set_tags(run_id, {"mltune.error_kind": "out_of_memory"})
            raise
        finally:
            release()

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

    def _is_new_best(self, study: optuna.Study, value: float) -> bool:
        try:
            best = study.best_value
        except ValueError:  # no completed trial yet
            return True
        return value > best if self.config.study.direction == "maximize" else value < best

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
        best = _best(study)
        detail = self.errors.get(trial.number, "") if state == "FAIL" else ""
        self.progress.trial_finished(trial.number, state, trial.value, detail, best)


def _best(study: optuna.Study) -> tuple[int, float] | None:
    try:
        t = study.best_trial
    except ValueError:
        return None
    value: Any = t.value
    return (t.number, float(value))


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
