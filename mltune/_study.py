"""The study loop: one setup path for ``tune`` and ``worker`` (storage, sampler, pruner, crash
recovery), the parent MLflow run, the trials, and the summary a finished study leaves.

Never imports Keras: trials are run by :class:`mltune._objective.Objective`.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from mltune import __version__
from mltune._errors import ConfigError, MltuneError
from mltune._launcher import (
    LAUNCHED_ENV,
    counted,
    enqueue_grid,
    gpu_slots,
    supervise,
    waiting,
    worker_command,
)
from mltune._names import Attr, Tag
from mltune._objective import Objective
from mltune._optuna_compat import unvisited_grid_points
from mltune._progress import PlainProgress
from mltune._recovery import (
    close_orphans,
    fail_trials_of_killed,
    recover_lost_trials,
    stale_trial_handler,
)
from mltune._report import trials_table, write_report
from mltune._results import StudyResult
from mltune._samplers import create_pruner, create_sampler, distributions
from mltune._search_space import grid_size
from mltune._secrets import redact, scrub_value
from mltune._selection import best_of, own_trials, pareto_front
from mltune._selection import best_trial as choose_best
from mltune._selection import rule as selection_rule
from mltune._session import Session, prepare
from mltune._storage import (
    StudyPeek,
    all_studies,
    create_study_once,
    existing_directions,
    load_study,
    open_storage,
    peek_study,
    resolve_storage,
    storage_exists,
    store_config,
    stored_config,
)
from mltune._trial_process import fork_blocker, stops_on_signals
from mltune._usercode import UserCode
from mltune._warm_start import (
    WarmStart,
    grid_points_left,
    read_source,
    seed,
)

if TYPE_CHECKING:
    from mltune._tracking import Tracker
    from mltune._types import Config, StudyConfig

__all__ = ["find_study", "load_studies", "load_trials", "run_study", "run_worker"]

TrialCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


@stops_on_signals
def run_study(
    config: Config,
    *,
    storage: str | None = None,
    tracking_uri: str | None = None,
    progress: PlainProgress | None = None,
    workers: int = 1,
    gpus: list[str] | None = None,
    trials_per_gpu: int = 1,
    callbacks: tuple[TrialCallback, ...] = (),
    trials_per_process: int | None = None,
    user: UserCode | None = None,
    keras_callbacks: tuple[Any, ...] = (),
    fit_kwargs: dict[str, Any] | None = None,
) -> StudyResult:
    """Run (or resume) the study described by ``config``; every trial is an MLflow run.
    See :func:`mltune.tune` for the arguments.

    Everything that can be checked is checked before anything is written: the tracking
    store, the user's code, the data, the storage, the study's direction and parent run, and
    the warm start's source. From the moment the parent run is RUNNING, whatever stops the
    start (an error, Ctrl-C, SIGTERM) ends it.
    """
    sc = config.study
    progress = progress or PlainProgress(sc.metric)
    slots = gpu_slots(gpus, trials_per_gpu) if gpus else [{} for _ in range(workers)]
    user = user or UserCode()
    session = prepare(config, tracking_uri, user=user, callbacks=keras_callbacks,
                      fit_kwargs=fit_kwargs)
    # Decided once the data is loaded: a loader that ran TensorFlow rules out a fork.
    mode = _trial_process(sc, trials_per_process, len(slots), progress)
    launch = mode == "spawn" or not slots  # worker processes, launched or started elsewhere
    if launch:
        _check_for_workers(config, user, keras_callbacks, fit_kwargs)
    for note in config.notes:
        progress.message(f"note: {note}")
    tracker = session.tracker
    storage, chosen = resolve_storage(storage, tracker.uri)
    if chosen and "current folder" in chosen:
        progress.message(f"note: Optuna storage {storage} ({chosen})")
    _check_project_experiment(config, tracker)
    # Read only, up to _open_study: a start refused here leaves no trace. The storage is
    # opened once (a journal file is read whole at each opening), if it is there already.
    store = _open_store(storage, sc, tracker) if storage_exists(storage) else None
    found = peek_study(store, sc.name) if store is not None else None
    known = _known_parent(found.user_attrs if found else {}, config, tracker)
    warm = _warm_start(config, tracker, storage, store, found)
    study, store, created = _open_study(session, storage, store=store, seed=sc.seed,
                                        create=True)
    tags = {
        Tag.STUDY_NAME: sc.name,
        Tag.SAMPLER: sc.sampler,
        Tag.METRIC: sc.metric,
        Tag.DIRECTION: sc.direction,
        Tag.PRUNER: sc.pruner,
        Tag.VERSION: __version__,
        Tag.STORAGE: redact(storage),
        Tag.BUILDER: session.builder_name,
    }
    if sc.multi_objective:
        tags[Tag.OBJECTIVES] = ", ".join(f"{o.metric} ({o.direction})" for o in sc.objectives)
    parent_run_id, unpublished = _parent_run(study, created, config, tracker, tags, progress,
                                             known)
    objective: Objective | None = None
    status, end_parent = "FAILED", True
    failure: MltuneError | None = None
    try:
        store_config(study, store, scrub_value(config.raw))
        _seed(study, warm, config, tracker, parent_run_id, progress)
        if unpublished:  # last: a start that finds the parent finds the study ready
            _publish_parent(study, parent_run_id, tracker)
            unpublished = False
        n_trials, queue_only = _trials_to_run(study, config, queue=launch or len(slots) > 1)
        # Workers that join later (`mltune worker`) run until the study has this many trials.
        study.set_user_attr(Attr.STUDY_TARGET, counted(study) + (n_trials or 0))
        if launch:
            codes = _run_workers(study, config, tracker, progress, n_trials or 0, slots,
                                 storage, trials_per_process,
                                 python_path=_module_roots(user.builder, user.loader))
            if codes is None:  # workers started elsewhere: the last of them ends the parent
                end_parent = False
                return _result(study, tracker, parent_run_id, sc)
            if any(codes):
                failure = MltuneError(f"{sum(1 for c in codes if c)} of {len(codes)} workers "
                                      f"failed (exit codes {codes})")
            status = "FAILED" if failure else "FINISHED"
        else:
            objective = Objective(session, parent_run_id, progress, tags=_trial_tags(sc),
                                  fork=mode == "fork", slots=slots, queue_only=queue_only)
            done = len(own_trials(study))
            progress.study_started(sc.name, n_trials, done)
            if len(slots) > 1:
                progress.message(f"study {sc.name}: {n_trials} trials on {len(slots)} "
                                 "workers (processes forked from this one)")
            if n_trials == 0:
                progress.message(f"study {sc.name}: every point of the grid has been tried")
            else:
                _optimize(study, objective, tracker, callbacks=callbacks, n_trials=n_trials,
                          timeout=sc.timeout, n_jobs=len(slots))
            status = "FINISHED" if objective.stop_error is None else "FAILED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        try:
            if end_parent and (objective is None or objective.fatal is None):
                result = _finish_parent(study, tracker, parent_run_id, config, status)
        finally:
            if unpublished:  # stopped while starting: the study keeps this parent all the same
                _publish_parent(study, parent_run_id, tracker)
            progress.close()
    if objective is not None and objective.fatal is not None:
        raise objective.fatal
    if failure is not None:
        raise failure
    if objective is not None and objective.stop_error is not None:
        raise objective.stop_error
    return result


def _trials_to_run(study: optuna.Study, config: Config, *, queue: bool) -> tuple[int | None, bool]:
    """How many trials this start runs, and whether they take their grid points from the
    queue (:func:`enqueue_grid`, which queues them): a grid runs its points not tried yet
    (at most ``n_trials``), from the queue when ``queue`` (trials at once would race for
    points) or when it was warm-started (``GridSampler`` hands out points by trial number,
    blind to the points of added trials)."""
    sc = config.study
    if sc.sampler != "grid":
        return sc.n_trials, False
    warm = Attr.WARM_START in study.user_attrs
    remaining = (grid_points_left(study, config.search_space) if warm else
                 unvisited_grid_points(study.sampler, study))
    if remaining is None:
        remaining = grid_size(config.search_space)
    n_trials = remaining if sc.n_trials is None else min(sc.n_trials, remaining)
    if not (queue or warm) or not n_trials:
        return n_trials, False
    n_trials = enqueue_grid(study, config.search_space, limit=n_trials)
    study.set_user_attr(Attr.STUDY_GRID_QUEUE, True)
    return n_trials, True


def _trial_process(sc: StudyConfig, trials_per_process: int | None, slots: int,
                   progress: PlainProgress) -> str:
    """Where the trials train: ``fork`` (a child process per trial, forked from this one),
    ``spawn`` (worker processes started afresh, each replaced after ``trials_per_process``
    trials) or ``none`` (this process). A fork that cannot be made safely falls back to
    ``none``, or ``spawn`` for several trials at once, with a note saying why."""
    mode = "spawn" if trials_per_process else sc.trial_process
    if mode == "none" and slots > 1:
        raise ConfigError("study.trial_process", "none trains one trial at a time in this "
                          "process; with workers or GPUs use fork or spawn")
    if mode == "fork" and (why := fork_blocker()):
        mode = "none" if slots <= 1 else "spawn"
        progress.message(f"note: trials train "
                         f"{'in this process' if mode == 'none' else 'in worker processes'}"
                         f" ({why})")
    return mode


def _check_for_workers(config: Config, user: UserCode, keras_callbacks: tuple[Any, ...],
                       fit_kwargs: Any) -> None:
    """Worker processes rebuild the study from its storage: what was passed from Python must
    be importable from there, or they cannot run it."""
    from mltune._usercode import resolve

    if user.builder is not None and config.builder is not None:
        resolve(config.builder, key="model", source=config.source)
    if user.loader is not None and config.data.loader is not None:
        resolve(config.data.loader, key="data", source=config.source)
    if user.data is not None:
        raise ConfigError("data", "worker processes (workers, gpus, trials_per_process) load "
                          "the data themselves: name it with data.source or data.loader "
                          "(a function in a .py file) instead of passing arrays",
                          source=config.source)
    if keras_callbacks or fit_kwargs:
        raise ConfigError("callbacks", "Keras callbacks and fit_kwargs stay in this process; "
                          "they cannot reach worker processes", source=config.source)


def _module_roots(*functions: Callable[..., Any] | None) -> tuple[str, ...]:
    """The folders from which the modules of ``functions`` (passed from Python) import: a
    launched worker gets them on its path, as the launching script or notebook had them."""
    roots = []
    for fn in functions:
        module = sys.modules.get(getattr(fn, "__module__", "") or "")
        file = getattr(module, "__file__", None)
        if fn is None or module is None or not file or module.__name__ == "__main__":
            continue
        root = Path(file).resolve().parent
        for _ in range(module.__name__.count(".") + (Path(file).name == "__init__.py")):
            root = root.parent
        roots.append(str(root))
    return tuple(dict.fromkeys(roots))


def _open_store(storage: str, sc: StudyConfig, tracker: Tracker) -> optuna.storages.BaseStorage:
    """The study's storage, with Optuna's heartbeat for a database: a trial whose worker
    stopped beating is failed, its run with it."""
    return open_storage(storage, heartbeat=(sc.heartbeat_interval, sc.grace_period),
                        on_stale=stale_trial_handler(tracker, sc.retry_failed))


def _open_study(session: Session, storage: str, *, seed: int | None, create: bool,
                store: optuna.storages.BaseStorage | None = None
                ) -> tuple[optuna.Study, optuna.storages.BaseStorage, bool]:
    """The study with its sampler (seeded with ``seed``) and pruner, its lost trials failed
    and their runs closed: the one setup of ``tune`` (``create``) and ``worker``. Also its
    storage (``store``, when it is open already: see :func:`_open_store`), and whether this
    process created the study."""
    config, tracker = session.config, session.tracker
    sc = config.study
    if store is None:
        store = _open_store(storage, sc, tracker)
    existing = existing_directions(store, sc.name)
    if create and existing is not None and existing != sc.directions:
        key = "study.objectives" if sc.multi_objective or len(existing) > 1 else "study.direction"
        raise ConfigError(key, f"study {sc.name!r} already exists in the storage with "
                          f"direction(s) {', '.join(existing)}, but got "
                          f"{', '.join(sc.directions)}", source=config.source)
    created = create and existing is None and create_study_once(store, sc.name, sc.directions)
    if not create and existing is None:
        raise ConfigError("--study-name", f"no study named {sc.name!r} in the storage")
    worker_sc = dataclasses.replace(sc, seed=seed)
    # Loaded, not created with load_if_exists: that appends a study-creation record to a
    # journal file at every start.
    study = optuna.load_study(
        storage=store, sampler=create_sampler(worker_sc, config.search_space),
        study_name=sc.name, pruner=create_pruner(sc, config.settings, config.search_space))
    if seed is not None and study.trials and sc.sampler != "grid":
        # Resumed: the sampler's seed moves on by the trials run so far, so its random
        # (start-up) points do not repeat those of the earlier session. Not GridSampler's: it
        # maps trial numbers onto a seed-shuffled grid, so a new seed would revisit points.
        study.sampler = create_sampler(dataclasses.replace(sc, seed=seed + len(study.trials)),
                                       config.search_space)
    _check_resumed_space(study, config)
    names = [o.metric for o in sc.objectives]
    if create and study.metric_names != names:  # optuna-dashboard and Optuna's plots use them
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)
    recover_lost_trials(study, tracker, stale_trial_handler(tracker, sc.retry_failed))
    return study, store, created


PARENT_WAIT_S = 30.0  # the creator of a study makes its parent run within a second or two


@dataclasses.dataclass(frozen=True)
class _Parent:
    """A study's parent run that exists in the tracking store, and its experiment."""

    run_id: str
    experiment_id: str
    experiment: str  # its name


def _known_parent(attrs: dict[str, Any], config: Config, tracker: Tracker) -> _Parent | None:
    """The parent run recorded in the study's user ``attrs`` (read before anything is
    written), if it exists; :class:`ConfigError` for a start that must not resume it: an
    ``mlflow run`` whose run is another, or an explicit experiment that is not the study's."""
    from mltune._tracking import project_run_id

    parent = attrs.get(Attr.STUDY_PARENT_RUN)
    if parent is None or not tracker.run_exists(parent):
        return None
    sc = config.study
    experiment_id = tracker.run_experiment(parent)
    experiment = tracker.experiment_name_of(experiment_id)
    project = project_run_id()
    if project and project != parent:
        raise ConfigError("--study-name", (
            f"study {sc.name!r} exists already, with its parent run {parent} in "
            f"experiment {experiment!r}, and `mlflow run` made another run ({project}) "
            f"for it: resume the study under its own run (mlflow run ... --run-id "
            f"{parent}) or with `mltune tune`, or start a new study (-P study_name=NEW); "
            f"then delete run {project}"), source=config.source)
    if sc.experiment and sc.experiment != experiment:
        raise ConfigError("--experiment", (
            f"study {sc.name!r} records its runs in experiment {experiment!r} (fixed "
            f"when it was created), but got {sc.experiment!r}: leave the experiment "
            "out to resume it, or start a new study (--study-name NEW)"),
            source=config.source)
    return _Parent(str(parent), experiment_id, experiment)


def _parent_run(study: optuna.Study, created: bool, config: Config, tracker: Tracker,
                tags: dict[str, str], progress: PlainProgress, known: _Parent | None
                ) -> tuple[str, bool]:
    """The study's parent run, fixed when the study is created and never replaced: one
    study, one experiment, one parent run, however its trials are added; and whether it is
    new, to be published (:func:`_publish_parent`) once the study is ready.

    The process that created the study makes the parent (under ``mlflow run``: the
    project's run); every later start, concurrent or not, resumes it in its experiment
    (``known``: as read before the study was opened). Refused before any trial
    (:class:`ConfigError`): see :func:`_known_parent`.
    """
    from mltune._tracking import project_run_id

    sc = config.study
    parent = study.user_attrs.get(Attr.STUDY_PARENT_RUN)
    if parent is None and not created and not own_trials(study):
        parent = _wait_for_parent(study, progress)
    if parent is not None:
        # Published while this process opened the study: checked as it was not before.
        found = known if known and known.run_id == parent else _known_parent(
            {Attr.STUDY_PARENT_RUN: parent}, config, tracker)
        if found is not None:
            tracker.resume_parent(found.run_id, found.experiment_id, tags)
            if not created:
                progress.message(f"study {sc.name}: resumed under parent run {parent} in "
                                 f"experiment {found.experiment!r}")
            return found.run_id, False
        progress.message(f"note: the parent run {parent} of study {sc.name} is deleted; "
                         "a new one is made")
    # Under `mlflow run` the run MLflow made for the project is the parent (no extra run).
    parent = tracker.start_parent(name=sc.name, tags=tags, params=config.fixed_settings(),
                                  project_run_id=project_run_id())
    return parent, True


def _publish_parent(study: optuna.Study, parent_run_id: str, tracker: Tracker) -> None:
    """Record the study's new parent run and its experiment, last: a start that waits for
    the parent (:func:`_wait_for_parent`) then finds the study file stored and the warm
    start seeded."""
    study.set_user_attr(Attr.STUDY_EXPERIMENT, tracker.ensure_experiment())
    study.set_user_attr(Attr.STUDY_PARENT_RUN, parent_run_id)


def _warm_start(config: Config, tracker: Tracker, storage: str,
                store: optuna.storages.BaseStorage | None, found: StudyPeek | None
                ) -> WarmStart | None:
    """The trials ``study.warm_start`` gives the study, read and checked before anything is
    written; None without one, or for a study seeded already or with trials (it can no
    longer start from them). ``found``: the study as it was before it was opened."""
    if config.study.warm_start is None:
        return None
    if found is not None and (Attr.WARM_START in found.user_attrs or found.n_trials):
        return None
    return read_source(config, tracker, storage, store)


def _seed(study: optuna.Study, warm: WarmStart | None, config: Config, tracker: Tracker,
          parent_run_id: str, progress: PlainProgress) -> None:
    """Seed the study with ``warm``'s trials, once, before its first trial: whichever start
    finds it without trials and not seeded (its creator, or the next start if the creator
    was stopped first). The parent run names the source (``mltune.warm_start``). Seeded
    trials have no run of their own: their ``mlflow_run_id`` is the source's run, if any."""
    sc = config.study
    if sc.warm_start is not None and Attr.WARM_START not in study.user_attrs:
        if warm is not None and not study.get_trials(deepcopy=False):
            seed(study, warm)
            progress.message(f"note: {warm.note()}")
        else:
            progress.message(f"note: study {sc.name} has trials already; study.warm_start "
                             "seeds a study only before its first trial (start a new one "
                             "with --study-name NEW)")
    if Attr.WARM_START in study.user_attrs:
        tracker.set_tags(parent_run_id, {Tag.WARM_START: study.user_attrs[Attr.WARM_START]})


def _check_project_experiment(config: Config, tracker: Tracker) -> None:
    """Under ``mlflow run``, the study's runs go to the experiment of the project's run: an
    explicit other experiment is refused, before the study is made."""
    from mltune._tracking import project_run_id

    project, wanted = project_run_id(), config.study.experiment
    if not project or not wanted:
        return
    experiment = tracker.experiment_name_of(tracker.run_experiment(project))
    if experiment != wanted:
        raise ConfigError("--experiment", (
            f"under `mlflow run` the study's runs go to the experiment of the project's "
            f"run ({experiment!r}), but got {wanted!r}: pass --experiment-name {wanted} "
            "to mlflow run"), source=config.source)


def _wait_for_parent(study: optuna.Study, progress: PlainProgress) -> str | None:
    """The parent run of a study another process has just created, once that process has
    recorded it; None if it has not after :data:`PARENT_WAIT_S` in which the study did not
    change either (it died first; while it seeds a warm start, its trials grow)."""
    deadline = time.monotonic() + PARENT_WAIT_S
    told = False
    seen = -1
    while time.monotonic() < deadline:
        parent = study.user_attrs.get(Attr.STUDY_PARENT_RUN)
        if parent is not None:
            return str(parent)
        trials = len(study.get_trials(deepcopy=False))
        if trials != seen:
            seen, deadline = trials, time.monotonic() + PARENT_WAIT_S
        if not told:
            progress.message(f"study {study.study_name}: waiting for the process that "
                             "created it to start its parent run")
            told = True
        time.sleep(0.2)
    return None


def _check_resumed_space(study: optuna.Study, config: Config) -> None:
    """A resumed study's search space must be one Optuna can go on with: the same type for
    each parameter, and the same choices for a categorical one (Optuna refuses "dynamic value
    space" at every later trial). Checked before any trial or run is made."""
    from optuna.distributions import check_distribution_compatibility

    stored = {}
    for t in study.get_trials(deepcopy=False):
        stored.update(t.distributions)
    if not stored:
        return
    new = distributions(config.search_space)
    for name, dist in new.items():
        if name not in stored:
            continue
        try:
            check_distribution_compatibility(stored[name], dist)
        except ValueError:
            raise ConfigError(f"search_space.{name}", (
                f"study {config.study.name!r} already has trials with {_shown(stored[name])}, "
                f"and Optuna cannot go on with {_shown(dist)} in the same study: keep the "
                "earlier definition, or start a new study (--study-name NEW)"),
                source=config.source) from None


def _shown(dist: optuna.distributions.BaseDistribution) -> str:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return f"choices {list(dist.choices)}"
    kind = "int" if isinstance(dist, optuna.distributions.IntDistribution) else "float"
    return f"a {kind} range"


def _trial_tags(sc: StudyConfig) -> dict[str, str]:
    """Tags of every trial run this process makes: the study, and the GPU it was given. (The
    device is tagged by the trial's own process: this one never looks at a GPU.)"""
    tags = {Tag.STUDY_NAME: sc.name, Tag.SAMPLER: sc.sampler}
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES")
    if gpu is not None:  # a worker launched for one GPU
        tags[Tag.CUDA_VISIBLE_DEVICES] = gpu
    return tags


def _optimize(study: optuna.Study, objective: Objective, tracker: Tracker,
              callbacks: tuple[TrialCallback, ...] = (), **kwargs: Any) -> None:
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
        objective.close()
        if objective.fatal is None:
            close_orphans(study, tracker, objective.open_runs)


def _run_workers(study: optuna.Study, config: Config, tracker: Tracker, progress: PlainProgress,
                 n_trials: int, slots: list[dict[str, str]], storage: str,
                 trials_per_process: int | None = None, python_path: tuple[str, ...] = ()
                 ) -> list[int] | None:
    """Start one ``mltune worker`` process per slot on the study and wait for them; returns
    their exit codes.

    They share nothing but the storage and the tracking store: the same command joins the
    study from another machine. A grid was enqueued first, so every point runs exactly once.
    No ``slots`` only prepares the study for workers started elsewhere (a cluster job), and
    returns None: the last of them ends the parent run.
    """
    workers = len(slots)
    command, env, url = worker_command(config.study.name, storage, tracker.uri,
                                       trials_per_process, python_path)
    if workers == 0:
        progress.message(f"study {config.study.name}: ready for {n_trials} trials; start "
                         f"workers with: mltune worker --study-name {config.study.name} "
                         f"--storage {redact(url)} --tracking-uri {redact(tracker.uri)}")
        return None
    progress.message(f"study {config.study.name}: {n_trials} trials on {workers} workers"
                     + (f", each replaced after {trials_per_process} trials"
                        if trials_per_process else ""))
    killed: list[int] = []  # workers that outlived the grace period after a stop
    try:
        return supervise(command, [{**env, **slot} for slot in slots], study,
                         restart=bool(trials_per_process), timeout=config.study.timeout,
                         killed=killed)
    finally:
        if killed:
            fail_trials_of_killed(study, tracker, killed, config.study.retry_failed)


@stops_on_signals
def run_worker(*, study_name: str, storage: str | None, tracking_uri: str | None,
               progress: PlainProgress | None = None, max_trials: int | None = None) -> int:
    """``mltune worker``: join a study (its settings are stored with it) and run trials until
    it has its target number (or this worker has run ``max_trials``); returns how many
    trials this worker ran."""
    from mltune._config import parse_config
    from mltune._tracking import resolve_tracking_uri

    storage, chosen = resolve_storage(storage, resolve_tracking_uri(tracking_uri))
    stored, store = load_study(study_name, storage, where=chosen)
    raw = stored_config(stored, store)
    target = stored.user_attrs.get(Attr.STUDY_TARGET)
    parent_run_id = stored.user_attrs.get(Attr.STUDY_PARENT_RUN)
    if raw is None or target is None or parent_run_id is None:
        raise ConfigError("--study-name", f"study {study_name!r} was not created by "
                          "`mltune tune`; create it with `mltune tune STUDY.yaml --workers 0`")
    config = parse_config(raw, source=f"study {study_name!r}")
    sc = config.study
    progress = progress or PlainProgress(sc.metric)
    session = prepare(config, tracking_uri)
    tracker = session.tracker
    parent = tracker.client.get_run(parent_run_id)
    tracker.experiment_id = parent.info.experiment_id
    if parent.info.status == "KILLED" and not os.environ.get(LAUNCHED_ENV):
        tracker.reopen(parent_run_id)  # stopped by its last worker, now resumed
    grid_queue = bool(stored.user_attrs.get(Attr.STUDY_GRID_QUEUE))
    # Workers must not share a seed, or they would all sample the same points. A grid study
    # was enqueued whole; its sampler only matters for trials outside the queue.
    seed = None if sc.seed is None else sc.seed + os.getpid()
    if grid_queue:
        session.config = config = dataclasses.replace(
            config, study=dataclasses.replace(sc, sampler="random", sampler_options={}))
    # A journal file (no heartbeat) is not read whole a second time; a database is opened
    # again, with the heartbeat of the study's settings.
    study, _, _ = _open_study(session, storage, seed=seed, create=False, store=store if
                              isinstance(store, optuna.storages.JournalStorage) else None)
    # A worker launched by `spawn` trains in its own process; one started by hand (on
    # another machine) forks its trials as `tune` does.
    fork = not os.environ.get(LAUNCHED_ENV) and _trial_process(sc, None, 1, progress) == "fork"
    objective = Objective(session, parent_run_id, progress, tags=_trial_tags(sc),
                          queue_only=grid_queue, fork=fork)

    def stop_at_target(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if counted(study) >= target and not waiting(study):
            study.stop()

    try:
        if counted(study) < target or waiting(study):
            _optimize(study, objective, tracker, callbacks=(stop_at_target,),
                      timeout=sc.timeout, n_trials=max_trials)
    except KeyboardInterrupt:
        # Stopped (Ctrl-C, SIGTERM: a preempted node). Its trial failed and its run closed;
        # the last worker of a study started elsewhere also ends the parent run (KILLED, with
        # its summary); a later worker that completes the study ends it FINISHED.
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if not os.environ.get(LAUNCHED_ENV) and not running and objective.fatal is None:
            _finish_parent(study, tracker, parent_run_id, config, "KILLED")
        progress.close()
        raise
    if objective.fatal is not None:
        progress.close()
        raise objective.fatal
    # Workers started elsewhere: the last one to end writes the summary and ends the parent.
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    if (not os.environ.get(LAUNCHED_ENV) and counted(study) >= target and not waiting(study)
            and not running and tracker.run_status(parent_run_id) != "FINISHED"):
        _finish_parent(study, tracker, parent_run_id, config, "FINISHED")
    progress.close()
    if objective.stop_error is not None:
        raise objective.stop_error
    return objective.finished


def _result(study: optuna.Study, tracker: Tracker, parent_run_id: str, sc: StudyConfig
            ) -> StudyResult:
    best: Any = choose_best(study, sc)
    states: dict[str, int] = {}
    for t in study.trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    return StudyResult(
        study_name=study.study_name,
        parent_run_id=parent_run_id,
        experiment_id=tracker.ensure_experiment(),
        tracking_uri=tracker.uri,
        n_trials=len(study.trials),
        best_trial=best.number if best else None,
        best_value=float(best.values[0]) if best else None,
        best_params=dict(best.params) if best else {},
        best_run_id=best.user_attrs.get(Attr.RUN_ID) if best else None,
        best_model_uri=best.user_attrs.get(Attr.MODEL_URI) if best else None,
        states=states,
        best_values={o.metric: float(v) for o, v in zip(sc.objectives, best.values,
                                                         strict=True)} if best else {},
        selection_rule=selection_rule(sc),
    )


def _finish_parent(study: optuna.Study, tracker: Tracker, parent_run_id: str, config: Config,
                   status: str) -> StudyResult:
    """The study's summary on its parent run (best trial, counts, table, plots); then end it.

    With several objectives, every completed trial's run is tagged ``mltune.pareto_front``
    (true or false), and the best trial is the one :mod:`mltune._selection` chooses; both
    among the study's own trials, not those a warm start seeded."""
    sc = config.study
    result = _result(study, tracker, parent_run_id, sc)
    if result.best_trial is not None and result.best_value is not None:
        tracker.set_tags(parent_run_id, {Tag.BEST_TRIAL: result.best_trial,
                                         Tag.BEST_RUN_ID: result.best_run_id or "",
                                         Tag.SELECTION_RULE: result.selection_rule})
        tracker.log_metrics(parent_run_id, {f"best_{k}": v for k, v in
                                            result.best_values.items()})
    if sc.multi_objective:
        # Among the study's own trials: a seeded trial's run is the source's.
        front = pareto_front(study, sc.directions)
        for t in own_trials(study):
            if t.state.name == "COMPLETE" and (run_id := t.user_attrs.get(Attr.RUN_ID)):
                tracker.set_tags(run_id, {Tag.PARETO_FRONT: str(t.number in front).lower()})
    tracker.log_metrics(parent_run_id, {f"trials_{k.lower()}": v
                                        for k, v in result.states.items()})
    with tempfile.TemporaryDirectory(prefix="mltune-report-") as folder:
        write_report(study, Path(folder), [o.metric for o in sc.objectives])
        tracker.log_artifacts(parent_run_id, folder)
    tracker.end_run(parent_run_id, status)
    return result


def load_trials(study_name: str, storage: str | None = None, *,
                tracking_uri: str | None = None) -> Any:
    """The trials table of an existing study (a pandas DataFrame)."""
    return trials_table(find_study(study_name, storage, tracking_uri=tracking_uri)[0])


def find_study(study_name: str, storage: str | None = None, *,
               tracking_uri: str | None = None
               ) -> tuple[optuna.Study, optuna.storages.BaseStorage]:
    """An existing study, in ``storage`` or, by default, beside the MLflow store; and that
    storage, opened (for the study file, :func:`stored_config`)."""
    from mltune._tracking import resolve_tracking_uri

    url, chosen = resolve_storage(storage, resolve_tracking_uri(tracking_uri))
    return load_study(study_name, url, where=chosen)


def load_studies(storage: str | None = None, *, tracking_uri: str | None = None) -> Any:
    """Every study in ``storage`` (by default, beside the MLflow store): one row per study
    with its trial counts, best value and MLflow experiment (a pandas DataFrame)."""
    import pandas as pd

    from mltune._tracking import Tracker, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    url, chosen = resolve_storage(storage, uri)
    rows = []
    for study in all_studies(url, where=chosen):
        trials = study.get_trials(deepcopy=False)
        counts = {state: sum(t.state.name.lower() == state for t in trials)
                  for state in ("complete", "pruned", "fail", "running")}
        # One objective: the best of its own trials, as `mltune register` would register.
        best = best_of(study) if len(study.directions) == 1 else None
        names = study.metric_names or ["value"] * len(study.directions)
        rows.append({
            "study": study.study_name,
            "trials": len(trials),
            **counts,
            "metric": ", ".join(f"{n} ({d.name.lower()})"
                                for n, d in zip(names, study.directions, strict=True)),
            "best_value": best.value if best is not None else None,
            "best_trial": best.number if best is not None else None,
            "experiment": None,
            "experiment_id": study.user_attrs.get(Attr.STUDY_EXPERIMENT),
            "parent_run_id": study.user_attrs.get(Attr.STUDY_PARENT_RUN),
        })
    frame = pd.DataFrame(rows, columns=[
        "study", "trials", "complete", "pruned", "fail", "running", "metric", "best_value",
        "best_trial", "experiment", "experiment_id", "parent_run_id"])
    if not frame.empty:
        ids = [str(e) for e in frame["experiment_id"].dropna().unique()]
        names_of = Tracker(uri).experiment_names(ids)
        frame["experiment"] = [names_of.get(str(e)) if isinstance(e, str) else None
                               for e in frame["experiment_id"]]
        frame["best_trial"] = frame["best_trial"].astype("Int64")
    return frame
