"""Worker processes: how many, with which GPU each, started and supervised by the study's
launcher; and the counts that tell a worker when the study has enough trials."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna

from mltune._names import Attr
from mltune._search_space import SearchSpace, grid_of

# How long stopped workers get to fail their trials and close their runs before they are
# killed: well inside Kubernetes' default terminationGracePeriodSeconds (30 s), leaving the
# launcher time to fail a killed worker's trial and end the parent run.
GRACE_S = 20.0

__all__ = ["GRACE_S", "LAUNCHED_ENV", "STORAGE_ENV", "counted", "enqueue_grid", "gpu_slots",
           "stop_workers", "supervise", "waiting", "worker_command"]

STORAGE_ENV = "MLTUNE_STORAGE"
LAUNCHED_ENV = "MLTUNE_LAUNCHED"  # set for workers whose launcher writes the study's summary


def gpu_slots(gpus: list[str], trials_per_gpu: int) -> list[dict[str, str]]:
    """The environment of each worker: one GPU visible, and, when ``trials_per_gpu`` trials
    share it, a cap on its memory. TensorFlow grows its memory as needed (see
    :func:`mltune._device.configure_gpus`); JAX takes a fixed fraction, so it gets its share."""
    share = {} if trials_per_gpu == 1 else {
        "XLA_PYTHON_CLIENT_MEM_FRACTION": f"{0.9 / trials_per_gpu:.3f}"}
    return [{"CUDA_VISIBLE_DEVICES": gpu, **share} for gpu in gpus
            for _ in range(trials_per_gpu)]


def worker_command(study_name: str, storage: str, tracking_uri: str,
                   max_trials: int | None, python_path: tuple[str, ...] = ()
                   ) -> tuple[list[str], dict[str, str], str]:
    """The ``mltune worker`` command line, its environment and the storage URL it uses.
    URLs go by environment, not arguments: a password in one would show in ``ps``.
    ``python_path``: folders the workers need on ``sys.path`` (the user's modules)."""
    url = storage
    if "://" not in url:
        url = str(Path(url).resolve())
    command = [sys.executable, "-m", "mltune", "worker", "--study-name", study_name]
    if max_trials:
        command += ["--max-trials", str(max_trials)]
    env = {**os.environ, STORAGE_ENV: url, "MLFLOW_TRACKING_URI": tracking_uri,
           LAUNCHED_ENV: "1"}
    if python_path:
        env["PYTHONPATH"] = os.pathsep.join([*python_path, *filter(None, [
            os.environ.get("PYTHONPATH")])])
    return command, env, url


def supervise(command: list[str], envs: list[dict[str, str]], study: optuna.Study, *,
              restart: bool, timeout: float | None, killed: list[int] | None = None
              ) -> list[int]:
    """Run one worker process per environment until each ends; returns their exit codes.

    With ``restart``, a worker that ends well (it ran its ``--max-trials``) is replaced by a
    fresh process while the study wants more trials and ``timeout`` has not passed. A fresh
    process is how memory stays bounded: TensorFlow keeps each fitted model's traced graphs
    (about 10 MB) after ``clear_session``, see docs/benchmarks.md.

    Interrupted (Ctrl-C, SIGTERM), the workers are told to stop (SIGTERM: each fails its
    trial and closes its run) and given :data:`GRACE_S` seconds; one still there is killed
    and its pid added to ``killed``, whose trials the caller fails.
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
                more = counted(study) < study.user_attrs[Attr.STUDY_TARGET] or waiting(study)
                in_time = timeout is None or time.monotonic() - start < timeout
                if restart and code == 0 and more and in_time:
                    procs[i] = subprocess.Popen(command, env=envs[i])
                else:
                    codes[i] = code
    finally:
        stop_workers(list(procs.values()), killed)
    return [codes[i] for i in sorted(codes)]


def stop_workers(procs: list[subprocess.Popen[bytes]], killed: list[int] | None = None
                 ) -> None:
    """SIGTERM to each worker, then SIGKILL to those not gone within :data:`GRACE_S`."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + GRACE_S
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            if killed is not None:
                killed.append(proc.pid)


def enqueue_grid(study: optuna.Study, space: SearchSpace, limit: int | None = None) -> int:
    """Queue the grid points no trial has run, runs or waits for, until ``limit`` points wait
    in the queue; returns how many wait (at most ``limit``): the trials to run to take
    them. Points queued by an earlier, interrupted session count, and come first.

    A point a trial failed on is queued again. A trial seeded by a warm start has measured
    its point: ``GridSampler`` alone would hand it out again, blind to added trials."""
    grid = grid_of(space)
    names = list(grid)
    seen = {_point(t, names) for t in study.get_trials(deepcopy=False)
            if t.state != optuna.trial.TrialState.FAIL}
    queued = waiting(study)
    for point in itertools.product(*grid.values()):
        if limit is not None and queued >= limit:
            break
        if point not in seen:
            study.enqueue_trial(dict(zip(names, point, strict=True)))
            queued += 1
    return queued if limit is None else min(queued, limit)


def _point(trial: optuna.trial.FrozenTrial, names: list[str]) -> tuple[object, ...]:
    """The grid point of a trial; a waiting one has no params yet, only the ones it was
    queued with (the system attr Optuna's own ``enqueue_trial(skip_if_exists=True)`` reads)."""
    params = trial.params
    if trial.state == optuna.trial.TrialState.WAITING:
        params = trial.system_attrs.get("fixed_params", params)
    return tuple(params.get(n) for n in names)


def counted(study: optuna.Study) -> int:
    """Trials that count towards the target: all but those waiting in the queue and those
    lost with a worker (a trial that failed by itself counts, so a study whose every trial
    fails still ends)."""
    wait, fail = optuna.trial.TrialState.WAITING, optuna.trial.TrialState.FAIL
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state != wait and (
        t.state != fail or Attr.ERROR in t.user_attrs))


def waiting(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
