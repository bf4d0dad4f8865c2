"""The study: storage, sampler, the parent MLflow run, and the trial loop.

Never imports Keras: trials are run by :class:`mltune.objective.Objective`.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from mltune import __version__
from mltune.config import Config, StudyConfig
from mltune.errors import ConfigError, MltuneError
from mltune.objective import ERROR_ATTR, RUN_ID_ATTR, WORKER_ATTR, Objective, prepare
from mltune.progress import PlainProgress
from mltune.report import trials_table, write_report
from mltune.samplers import create_pruner, create_sampler
from mltune.search_space import grid_of, grid_size
from mltune.selection import best_trial as choose_best
from mltune.selection import rule as selection_rule
from mltune.tracking import RUN_STATUS, Tracker, project_run_id
from mltune.urls import redact

__all__ = ["DEFAULT_STORAGE", "StudyResult", "load_study", "load_trials", "open_storage", "tune"]

logger = logging.getLogger(__name__)

DEFAULT_STORAGE = "optuna_journal.log"
PARENT_RUN_ATTR = "mlflow_parent_run_id"
EXPERIMENT_ATTR = "mlflow_experiment_id"
CONFIG_ATTR = "mltune_config"


@dataclass(frozen=True)
class StudyResult:
    study_name: str
    parent_run_id: str
    experiment_id: str
    n_trials: int  # all trials of the study, earlier sessions included
    best_trial: int | None
    best_value: float | None
    best_run_id: str | None
    states: dict[str, int]
    best_values: dict[str, float]  # each objective's value on the best trial
    selection_rule: str  # how the best trial was chosen, in words


StaleCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


def open_storage(url: str | None, *, heartbeat: tuple[int, int | None] | None = None,
                 on_stale: StaleCallback | None = None) -> optuna.storages.BaseStorage:
    """A database URL (``sqlite:///``, ``postgresql://``...) or a journal file path.

    No URL means the journal file ``optuna_journal.log`` in the current folder, which is safe
    for several processes on one machine (Optuna's FAQ advises against SQLite there).
    ``heartbeat`` (interval, grace period in seconds) turns on Optuna's heartbeat for a
    database: a trial whose worker stopped beating is failed and ``on_stale`` is called.
    """
    url = url or DEFAULT_STORAGE
    shown = redact(url)
    try:
        if "://" in url:
            interval, grace = heartbeat if heartbeat else (None, None)
            with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=interval,
                    grace_period=grace, heartbeat_stale_trial_callback=on_stale)
        path = Path(url)
        if not path.parent.is_dir():
            raise ConfigError("--storage", f"the folder of {shown} does not exist")
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    except ConfigError:
        raise
    except Exception as e:
        reason = redact(str(e).splitlines()[0]) if str(e) else type(e).__name__
        raise ConfigError("--storage", f"cannot open Optuna storage {shown}: {reason}") from None


def _existing_directions(storage: optuna.storages.BaseStorage, name: str) -> list[str] | None:
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    return [d.name.lower() for d in storage.get_study_directions(study_id)]


def tune(
    config: Config,
    *,
    storage: str | None = None,
    tracking_uri: str | None = None,
    progress: PlainProgress | None = None,
    workers: int = 1,
    gpus: list[str] | None = None,
    trials_per_gpu: int = 1,
    callbacks: tuple[Callable[[optuna.Study, optuna.trial.FrozenTrial], None], ...] = (),
    trials_per_process: int | None = None,
) -> StudyResult:
    """Run (or resume) the study described by ``config``; every trial is an MLflow run.

    Everything that can be checked is checked before anything is written: the tracking
    store, the data, the storage and the study's direction. With ``workers`` > 1, that many
    ``mltune worker`` processes share the study (through its storage) and this process
    waits for them. ``gpus`` starts ``trials_per_gpu`` workers per listed GPU, each seeing
    only its GPU and, when they share one, a share of its memory. ``callbacks`` are Optuna
    trial callbacks ``f(study, trial)`` run in this process after each trial (one worker).
    ``trials_per_process`` runs the trials in worker processes that are replaced after that
    many trials each, which bounds memory (see :func:`_supervise`).
    """
    sc = config.study
    progress = progress or PlainProgress(sc.metric)
    for note in config.notes:
        progress.message(f"note: {note}")
    tracker, data = prepare(config, tracking_uri)
    store, on_stale = _trial_storage(sc, storage, tracker)
    existing = _existing_directions(store, sc.name)
    if existing is not None and existing != sc.directions:
        key = "study.objectives" if sc.multi_objective or len(existing) > 1 else "study.direction"
        raise ConfigError(key, f"study {sc.name!r} already exists in the storage with "
                          f"direction(s) {', '.join(existing)}, but got "
                          f"{', '.join(sc.directions)}", source=config.source)

    sampler = create_sampler(sc, config.search_space)
    study = optuna.create_study(storage=store, sampler=sampler, study_name=sc.name,
                                directions=sc.directions,  # type: ignore[arg-type]
                                load_if_exists=True,
                                pruner=create_pruner(sc, config.settings, config.search_space))
    if sc.multi_objective:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([o.metric for o in sc.objectives])
    recover_lost_trials(study, tracker, on_stale)
    done = len(study.trials)
    tags = {
        "mltune.study_name": sc.name,
        "mltune.sampler": sc.sampler,
        "mltune.metric": sc.metric,
        "mltune.direction": sc.direction,
        "mltune.pruner": sc.pruner,
        "mltune.version": __version__,
        "mltune.storage": redact(storage or DEFAULT_STORAGE),
    }
    if sc.multi_objective:
        tags["mltune.objectives"] = ", ".join(f"{o.metric} ({o.direction})"
                                              for o in sc.objectives)
    # Under `mlflow run` the run MLflow made for the project is the parent (no extra run).
    parent_run_id = tracker.start_parent(
        name=sc.name, tags=tags, params=config.fixed_settings(),
        resume_run_id=study.user_attrs.get(PARENT_RUN_ATTR), project_run_id=project_run_id())
    study.set_user_attr(PARENT_RUN_ATTR, parent_run_id)
    study.set_user_attr(EXPERIMENT_ATTR, tracker.ensure_experiment())
    study.set_user_attr(CONFIG_ATTR, config.raw)

    n_trials = sc.n_trials
    if sc.sampler == "grid":
        remaining = _grid_remaining(sampler, study, config)
        n_trials = remaining if n_trials is None else min(n_trials, remaining)
    # Workers that join later (`mltune worker`) run until the study has this many trials.
    study.set_user_attr(TARGET_ATTR, _counted(study) + (n_trials or 0))
    slots = gpu_slots(gpus, trials_per_gpu) if gpus else [{} for _ in range(workers)]
    if len(slots) != 1 or gpus or trials_per_process:
        return _run_workers(study, config, tracker, parent_run_id, progress, n_trials or 0,
                            slots, storage, tracking_uri, trials_per_process)
    objective = Objective(config, data, tracker, parent_run_id, progress, tags=_trial_tags(sc))
    status = "FAILED"
    try:
        progress.study_started(sc.name, n_trials, done)
        if n_trials == 0:
            progress.message(f"study {sc.name}: every point of the grid has been tried")
        else:
            _optimize(study, objective, tracker, callbacks=callbacks, n_trials=n_trials,
                      timeout=sc.timeout)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if objective.fatal is None:
            result = _finish_parent(study, tracker, parent_run_id, config, status)
        progress.close()
    if objective.fatal is not None:
        raise objective.fatal
    return result


def _trial_storage(sc: StudyConfig, storage: str | None, tracker: Tracker
                   ) -> tuple[optuna.storages.BaseStorage, StaleCallback]:
    """The storage trials run against, with the heartbeat of ``sc`` and what a lost trial
    triggers."""
    on_stale = stale_trial_handler(tracker, sc.retry_failed)
    store = open_storage(storage, heartbeat=(sc.heartbeat_interval, sc.grace_period),
                         on_stale=on_stale)
    return store, on_stale


def _trial_tags(sc: StudyConfig) -> dict[str, str]:
    """Tags of every trial run this process makes: the study, and where it trains."""
    from mltune.device import device_name

    tags = {"mltune.study_name": sc.name, "mltune.sampler": sc.sampler,
            "mltune.device": device_name()}
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES")
    if gpu is not None:  # a worker of --gpus
        tags["mltune.cuda_visible_devices"] = gpu
    return tags


def _optimize(study: optuna.Study, objective: Objective, tracker: Tracker,
              callbacks: tuple[Callable[..., None], ...] = (), **kwargs: Any) -> None:
    """Run trials; afterwards no run this process started is left RUNNING (unless the
    tracking server is gone, see ``objective.fatal``)."""
    # Freeze what start-up made (TensorFlow, MLflow, the data) out of the garbage collector's
    # reach: the full collection after each trial then takes ~10 ms instead of ~400 ms.
    gc.freeze()
    try:
        study.optimize(objective, catch=(Exception,),
                       callbacks=[objective.after_trial, *callbacks], **kwargs)
    finally:
        gc.unfreeze()
        if objective.fatal is None:
            _close_orphans(study, tracker, objective.open_runs)


TARGET_ATTR = "mltune_target_trials"
STORAGE_ENV = "MLTUNE_STORAGE"
LAUNCHED_ENV = "MLTUNE_LAUNCHED"  # set for workers whose launcher writes the study's summary
GRID_QUEUE_ATTR = "mltune_grid_queue"


def gpu_slots(gpus: list[str], trials_per_gpu: int) -> list[dict[str, str]]:
    """The environment of each worker: one GPU visible, and, when ``trials_per_gpu`` trials
    share it, a cap on its memory. TensorFlow grows its memory as needed (see
    :func:`mltune.device.configure_gpus`); JAX takes a fixed fraction, so it gets its share."""
    share = {} if trials_per_gpu == 1 else {
        "XLA_PYTHON_CLIENT_MEM_FRACTION": f"{0.9 / trials_per_gpu:.3f}"}
    return [{"CUDA_VISIBLE_DEVICES": gpu, **share} for gpu in gpus
            for _ in range(trials_per_gpu)]


def _run_workers(study: optuna.Study, config: Config, tracker: Tracker, parent_run_id: str,
                 progress: PlainProgress, n_trials: int, slots: list[dict[str, str]],
                 storage: str | None, tracking_uri: str | None,
                 trials_per_process: int | None = None) -> StudyResult:
    """Start ``workers`` processes of ``mltune worker`` on the study and wait for them.

    They share nothing but the storage and the tracking store: the same command joins the
    study from another machine. A grid is enqueued first, so every point runs exactly once.
    No ``slots`` only prepares the study for workers started elsewhere (a cluster job); the
    last of them ends the parent run.
    """
    workers = len(slots)
    if config.study.sampler == "grid":
        n_trials = _enqueue_grid(study, config, limit=n_trials or None)
        study.set_user_attr(GRID_QUEUE_ATTR, True)
    study.set_user_attr(TARGET_ATTR, _counted(study) + n_trials)
    url = storage or DEFAULT_STORAGE
    if "://" not in url:
        url = str(Path(url).resolve())
    command = [sys.executable, "-m", "mltune", "worker", "--study-name", config.study.name]
    if trials_per_process:
        command += ["--max-trials", str(trials_per_process)]
    # URLs go by environment, not arguments: a password in one would show in `ps`.
    env = {**os.environ, STORAGE_ENV: url, "MLFLOW_TRACKING_URI": tracker.uri,
           LAUNCHED_ENV: "1"}
    if workers == 0:
        progress.message(f"study {config.study.name}: ready for {n_trials} trials; start "
                         f"workers with: mltune worker --study-name {config.study.name} "
                         f"--storage {redact(url)} --tracking-uri {redact(tracker.uri)}")
        progress.close()
        return _result(study, tracker, parent_run_id, config.study)
    progress.message(f"study {config.study.name}: {n_trials} trials on {workers} workers"
                     + (f", each replaced after {trials_per_process} trials"
                        if trials_per_process else ""))
    status = "FINISHED"
    codes: list[int] = []
    try:
        codes = _supervise(command, [{**env, **slot} for slot in slots], study,
                           restart=bool(trials_per_process), timeout=config.study.timeout)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if status == "FINISHED" and any(codes):
            status = "FAILED"
        result = _finish_parent(study, tracker, parent_run_id, config, status)
        progress.close()
    if status == "FAILED":
        raise MltuneError(f"{sum(1 for c in codes if c)} of {workers} workers failed "
                          f"(exit codes {codes})")
    return result


def _supervise(command: list[str], envs: list[dict[str, str]], study: optuna.Study, *,
               restart: bool, timeout: float | None) -> list[int]:
    """Run one worker process per environment until each ends; returns their exit codes.

    With ``restart``, a worker that ends well (it ran its ``--max-trials``) is replaced by a
    fresh process while the study wants more trials and ``timeout`` has not passed. A fresh
    process is how memory stays bounded: TensorFlow keeps each fitted model's traced graphs
    (about 10 MB) after ``clear_session``, see docs/benchmarks.md.
    """
    start = time.monotonic()
    procs = {i: subprocess.Popen(command, env=env) for i, env in enumerate(envs)}
    codes: dict[int, int] = {}
    try:
        while procs:
            time.sleep(0.2)
            for i, proc in list(procs.items()):
                code = proc.poll()
                if code is None:
                    continue
                del procs[i]
                more = _counted(study) < study.user_attrs[TARGET_ATTR] or _waiting(study)
                in_time = timeout is None or time.monotonic() - start < timeout
                if restart and code == 0 and more and in_time:
                    procs[i] = subprocess.Popen(command, env=envs[i])
                else:
                    codes[i] = code
    finally:
        for proc in procs.values():  # interrupted: stop the workers, which close their runs
            proc.terminate()
        for proc in procs.values():
            proc.wait()
    return [codes[i] for i in sorted(codes)]


def _enqueue_grid(study: optuna.Study, config: Config, limit: int | None = None) -> int:
    """Queue the grid points the study has not run yet (at most ``limit``); returns how many
    are queued."""
    import itertools

    grid = grid_of(config.search_space)
    names = list(grid)
    seen = {tuple(t.params.get(n) for n in names) for t in study.trials
            if t.state != optuna.trial.TrialState.FAIL}
    queued = 0
    for point in itertools.product(*grid.values()):
        if limit is not None and queued >= limit:
            break
        if point not in seen:
            study.enqueue_trial(dict(zip(names, point, strict=True)))
            queued += 1
    return queued


def _counted(study: optuna.Study) -> int:
    """Trials that count towards the target: all but those waiting in the queue and those
    lost with a worker (a trial that failed by itself counts, so a study whose every trial
    fails still ends)."""
    waiting, fail = optuna.trial.TrialState.WAITING, optuna.trial.TrialState.FAIL
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state != waiting and (
        t.state != fail or ERROR_ATTR in t.user_attrs))


def _waiting(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))


def run_worker(*, study_name: str, storage: str | None, tracking_uri: str | None,
               progress: PlainProgress | None = None, max_trials: int | None = None) -> int:
    """``mltune worker``: join a study (its settings are stored with it) and run trials until
    it has its target number (or this worker has run ``max_trials``); returns how many
    trials this worker ran."""
    from mltune.config import parse_config

    stored = load_study(study_name, storage)
    raw = stored.user_attrs.get(CONFIG_ATTR)
    target = stored.user_attrs.get(TARGET_ATTR)
    parent_run_id = stored.user_attrs.get(PARENT_RUN_ATTR)
    if raw is None or target is None or parent_run_id is None:
        raise ConfigError("--study-name", f"study {study_name!r} was not created by "
                          "`mltune tune`; create it with `mltune tune STUDY.yaml --workers 0`")
    config = parse_config(raw, source=f"study {study_name!r}")
    sc = config.study
    progress = progress or PlainProgress(sc.metric)
    tracker, data = prepare(config, tracking_uri)
    tracker.experiment_id = tracker.client.get_run(parent_run_id).info.experiment_id
    store, on_stale = _trial_storage(sc, storage, tracker)
    grid_queue = bool(stored.user_attrs.get(GRID_QUEUE_ATTR))
    # Workers must not share a seed, or they would all sample the same points.
    seed = None if sc.seed is None else sc.seed + os.getpid()
    worker_sc = dataclasses.replace(sc, seed=seed)
    # A grid study was enqueued whole; the sampler only matters for trials outside the queue.
    sampler = (optuna.samplers.RandomSampler(seed=seed) if grid_queue
               else create_sampler(worker_sc, config.search_space))
    study = optuna.load_study(study_name=study_name, storage=store, sampler=sampler,
                              pruner=create_pruner(sc, config.settings, config.search_space))
    recover_lost_trials(study, tracker, on_stale)
    objective = Objective(config, data, tracker, parent_run_id, progress, tags=_trial_tags(sc),
                          queue_only=grid_queue)

    def stop_at_target(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if _counted(study) >= target and not _waiting(study):
            study.stop()

    if _counted(study) < target or _waiting(study):
        _optimize(study, objective, tracker, callbacks=(stop_at_target,), timeout=sc.timeout,
                  n_trials=max_trials)
    if objective.fatal is not None:
        progress.close()
        raise objective.fatal
    # Workers started elsewhere: the last one to end writes the summary and ends the parent.
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    if (not os.environ.get(LAUNCHED_ENV) and _counted(study) >= target and not _waiting(study)
            and not running and tracker.run_status(parent_run_id) != "FINISHED"):
        _finish_parent(study, tracker, parent_run_id, config, "FINISHED")
    progress.close()
    return objective.finished


def stale_trial_handler(tracker: Tracker, retry: int) -> StaleCallback:
    """What happens to a trial whose worker died: its MLflow run is FAILED (never left
    RUNNING) with the reason, and, with ``study.retry_failed``, the trial is queued again."""
    retry_callback = (optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retry)
                      if retry else None)

    def handle(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if run_id:
            worker = trial.user_attrs.get(WORKER_ATTR, "?")
            tracker.set_tags(run_id, {"mltune.state": "FAIL", "mltune.error":
                                      f"worker {worker} stopped during the trial"})
            tracker.end_run(run_id, RUN_STATUS["FAIL"])
        if retry_callback is not None:
            retry_callback(study, trial)
        elif study.user_attrs.get(GRID_QUEUE_ATTR):
            # A grid point is run once: the point of a lost trial goes back into the queue.
            study.enqueue_trial(trial.params)

    return handle


def recover_lost_trials(study: optuna.Study, tracker: Tracker, on_stale: StaleCallback
                        ) -> None:
    """Before this process runs trials: fail the trials lost with their worker, and close
    the runs of failed trials that the tracking server could not be told about."""
    _fail_lost_trials(study, on_stale)
    _close_lost_runs(study, tracker)


def _fail_lost_trials(study: optuna.Study, on_stale: StaleCallback) -> None:
    """Fail the RUNNING trials whose worker is gone, before this worker adds its own.

    A database storage knows from Optuna's heartbeat. A journal file has no heartbeat: a
    trial run on this host by a process that no longer exists is lost (the journal file is
    for processes on one machine).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    if isinstance(study._storage, optuna.storages.RDBStorage):
        return
    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker_host, _, pid = str(trial.user_attrs.get(WORKER_ATTR, "")).rpartition(":")
        if worker_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            study._storage.set_trial_state_values(trial._trial_id,
                                                  state=optuna.trial.TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        on_stale(study, study._storage.get_trial(trial._trial_id))


def _close_lost_runs(study: optuna.Study, tracker: Tracker) -> None:
    """Failed trials whose run is still RUNNING in MLflow (the tracking server was down when
    they ended): their runs become FAILED now."""
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if run_id and tracker.run_status(run_id) == "RUNNING":
            tracker.set_tags(run_id, {"mltune.state": "FAIL", "mltune.error": trial.user_attrs.get(
                ERROR_ATTR, "the trial ended while the tracking server was unreachable")})
            tracker.end_run(run_id, RUN_STATUS["FAIL"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _grid_remaining(sampler: optuna.samplers.BaseSampler, study: optuna.Study,
                    config: Config) -> int:
    unvisited = getattr(sampler, "_get_unvisited_grid_ids", None)
    if unvisited is not None:
        return len(unvisited(study))
    return grid_size(config.search_space)


def _close_orphans(study: optuna.Study, tracker: Tracker, open_runs: dict[int, str]) -> None:
    """End the runs whose trial callback never came (an interrupt): none is left RUNNING."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    for number, run_id in list(open_runs.items()):
        state = trials[number].state.name if number in trials else "FAIL"
        tracker.set_tags(run_id, {"mltune.state": state})
        tracker.end_run(run_id, RUN_STATUS[state])
        del open_runs[number]


def _result(study: optuna.Study, tracker: Tracker, parent_run_id: str, sc: StudyConfig
            ) -> StudyResult:
    best_trial: Any = choose_best(study, sc)
    states: dict[str, int] = {}
    for t in study.trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    return StudyResult(
        study_name=study.study_name,
        parent_run_id=parent_run_id,
        experiment_id=tracker.ensure_experiment(),
        n_trials=len(study.trials),
        best_trial=best_trial.number if best_trial else None,
        best_value=float(best_trial.values[0]) if best_trial else None,
        best_run_id=best_trial.user_attrs.get(RUN_ID_ATTR) if best_trial else None,
        states=states,
        best_values={o.metric: float(v) for o, v in zip(sc.objectives, best_trial.values,
                                                         strict=True)} if best_trial else {},
        selection_rule=selection_rule(sc),
    )


def _finish_parent(study: optuna.Study, tracker: Tracker, parent_run_id: str, config: Config,
                   status: str) -> StudyResult:
    """The study's summary on its parent run (best trial, counts, table, plots); then end it.

    With several objectives, every completed trial's run is tagged ``mltune.pareto_front``
    (true or false), and the best trial is the one :mod:`mltune.selection` chooses."""
    sc = config.study
    result = _result(study, tracker, parent_run_id, sc)
    if result.best_trial is not None and result.best_value is not None:
        tracker.set_tags(parent_run_id, {"mltune.best_trial": result.best_trial,
                                         "mltune.best_run_id": result.best_run_id or "",
                                         "mltune.selection_rule": result.selection_rule})
        tracker.log_metrics(parent_run_id, {f"best_{k}": v for k, v in
                                            result.best_values.items()})
    if sc.multi_objective:
        front = {t.number for t in study.best_trials}
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if run_id := t.user_attrs.get(RUN_ID_ATTR):
                tracker.set_tags(run_id, {"mltune.pareto_front": str(t.number in front).lower()})
    tracker.log_metrics(parent_run_id, {f"trials_{k.lower()}": v
                                        for k, v in result.states.items()})
    with tempfile.TemporaryDirectory(prefix="mltune-report-") as folder:
        write_report(study, Path(folder), [o.metric for o in sc.objectives])
        tracker.log_artifacts(parent_run_id, folder)
    tracker.end_run(parent_run_id, status)
    return result


def load_trials(study_name: str, storage: str | None = None) -> Any:
    """The trials table of an existing study (a pandas DataFrame)."""
    return trials_table(load_study(study_name, storage))


def load_study(study_name: str, storage: str | None = None) -> optuna.Study:
    """An existing study; :class:`ConfigError` naming what exists when it does not."""
    path = storage or DEFAULT_STORAGE
    if "://" not in path and not Path(path).exists():
        raise ConfigError("--storage", f"no Optuna journal file {path} here; pass --storage "
                          "with the storage the study was run with")
    store = open_storage(storage)
    try:
        study = optuna.load_study(study_name=study_name, storage=store)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(store)]
        known = f"; studies there: {', '.join(names)}" if names else "; it holds no study"
        raise ConfigError("STUDY", f"no study named {study_name!r} in "
                          f"{redact(storage or DEFAULT_STORAGE)}{known}") from None
    return study
