"""What mltune costs on top of the Keras training it runs, and how fast ``mltune --help`` is.

Two measurements, in one run:

1. **Study overhead.** A study of ``--trials`` trials (random sampler, fixed seed, a small
   search space over learning_rate, filters and batch_size) of the built-in CNN on a
   ``--samples`` subset of real MNIST runs in-process (``trial_process="none"``: this
   process runs TensorFlow for its warm-up and the bare twins, so it could not fork trials;
   ``bench/trial_process.py`` sets the default, a process per trial, against this path and
   a bare loop) through the public API,
   ``mltune.tune(study_dict, data=(x, y), validation_data=(x_val, y_val), storage=...,
   tracking_uri=...)``, with an Optuna journal file and an MLflow SQLite store in a
   temporary folder. The same configurations are trained by a bare Keras loop: the same
   model (``mltune._model.build_model``, the built-in CNN, with the trial's settings),
   compiled by ``mltune._trainer.compile_model`` (the recipe mltune compiles with), then
   ``model.fit`` on the same NumPy arrays with ``verbose=0``, ``keras.backend.
   clear_session()`` after each, and the same Keras seed per configuration (``study.seed``
   + trial number, as mltune seeds a trial). Nothing of mltune is patched or wrapped.

   With ``--store existing`` (default) every timed study is a later study in a store that
   already holds one: a small warm-up study runs first in the same journal and MLflow file
   (so MLflow's schema exists), then one study per repeat, each under its own name. With
   ``--store fresh`` each repeat gets a new folder and its study creates the MLflow schema
   (a user's very first study).

   The machine this was written for is shared and noisy (a fit's time varies by 10-40%
   from minute to minute), so by default (``--interleave trial``) each trial's bare twin runs
   right after the trial, from an Optuna trial callback (``mltune.tune(trial_callbacks=...)``,
   after mltune has closed the trial's MLflow run); its time is taken out of the study's
   wall time. ``--interleave study`` instead runs the whole bare loop after the study (before
   it on odd repeats, with the configurations of the previous repeat, checked to be the same).

   Figures, per repeat, and their medians:

   - **wall overhead**: (study wall - bare wall) / bare wall; carries the fit-to-fit noise.
   - **mltune's own time**: the study's wall time minus the ``train_seconds`` metric every
     trial logs to MLflow (input pipeline + ``model.fit``; read back with ``MlflowClient``),
     minus what the bare loop spends outside ``model.fit`` too (build, compile,
     ``clear_session``), plus what mltune's epoch-end hook (MLflow metrics, best weights,
     progress) takes inside the fits, timed by a Keras callback passed with
     ``mltune.tune(callbacks=...)`` (the gap between its ``on_epoch_end`` and the next
     ``on_epoch_begin``/``on_train_end``, less the same gap in the bare fits). As a share of
     the bare wall time this is the overhead without the fits' noise in the numerator.
     Target: at most 2%.
   - where it goes, from Optuna's trial timestamps (``mltune.load_study``): in the trials
     outside the fit (MLflow child run, model logging, Keras build/compile/clear_session),
     and outside the trials (set-up, the parent run, the end-of-study report).

   TensorFlow, the data and the lazy imports of a study are warmed up beforehand, so
   start-up lands on neither side; their one-time cost is reported separately.

2. **CLI start-up.** Wall time of ``python -m mltune --help`` and of the ``mltune`` console
   script next to the running interpreter, against ``python -c pass`` as a floor.

Prints the figures as tables and writes them, with the machine, its load and the library
versions, to the section "Overhead (bench/overhead.py)" of ``docs/benchmarks.md`` (other
sections of that file are kept). Run from anywhere; e.g. ``python bench/overhead.py
--repeats 3``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import itertools
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (  # bench/_common.py
    REPO,
    data_file,
    data_parser,
    fmt_table,
    load_avg,
    machine_info,
    publish,
    working_dir,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

DEFAULT_DOCS = Path("docs/benchmarks.md")
SECTION = "## Overhead (bench/overhead.py)"
STUDY_TARGET_PCT = 2.0
HELP_TARGET_S = 0.5
VALIDATION_SPLIT = 0.1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = data_parser(__doc__, 8000,
                    "training + validation images taken from MNIST's training set (about "
                    "5 s a trial with 2 epochs on 2 cores of an AMD EPYC)")
    p.add_argument("--trials", type=int, default=6, help="trials per study")
    p.add_argument("--epochs", type=int, default=2, help="epochs per trial")
    p.add_argument("--repeats", type=int, default=3, help="studies, each with its bare twin")
    p.add_argument("--interleave", choices=("trial", "study"), default="trial",
                   help="trial: each trial's bare twin runs right after it, from a trial "
                   "callback; study: the whole bare loop runs after the study (before it on "
                   "odd repeats)")
    p.add_argument("--seed", type=int, default=0, help="study.seed (sampler, Keras seeds) and "
                   "the seed of the subset and split")
    p.add_argument("--store", choices=("existing", "fresh"), default="existing",
                   help="existing: the timed studies go into a store that a warm-up study "
                   "made (as every study but a user's first); fresh: each study gets a new "
                   "folder and creates MLflow's schema")
    p.add_argument("--cli-repeats", type=int, default=10, help="runs of each CLI command")
    p.add_argument("--docs", type=Path, default=DEFAULT_DOCS,
                   help="markdown file whose overhead section is (re)written; relative to the "
                   "repo root")
    p.add_argument("--no-docs", action="store_true", help="print only, write no file")
    return p.parse_args(argv)


def quiet_libraries() -> None:
    """What ``mltune``'s CLI does before a study: keep library chatter off the screen."""
    import logging

    for name in ("optuna", "mlflow", "alembic", "absl", "tensorflow", "keras"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")




# -- data and study ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Arrays:
    """The subset both sides train on: the same NumPy arrays, passed to ``mltune.tune``."""

    x_train: Any
    y_train: Any
    x_val: Any
    y_val: Any

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_val.max())) + 1


def load_arrays(path: Path, samples: int, seed: int) -> Arrays:
    """``samples`` images of MNIST's training set, shuffled with ``seed``; the first 10% are
    the validation split. Images as uint8 (N, 28, 28, 1), labels int64."""
    import numpy as np

    with np.load(path) as f:
        x, y = f["x_train"], f["y_train"]
    idx = np.random.default_rng(seed).permutation(len(x))[:samples]
    n_val = max(1, round(len(idx) * VALIDATION_SPLIT))
    x = x[..., None] if x.ndim == 3 else x
    y = y.astype(np.int64)
    val, train = idx[:n_val], idx[n_val:]
    return Arrays(np.ascontiguousarray(x[train]), y[train], np.ascontiguousarray(x[val]),
                  y[val])


def study_dict(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """The study, in the study-file schema (the data is passed as arrays)."""
    return {
        "study": {"name": name, "sampler": "random", "n_trials": args.trials,
                  "seed": args.seed, "metric": "val_accuracy"},
        "training": {"epochs": args.epochs, "optimizer": "adam", "lr_schedule": "constant"},
        "search_space": {
            "learning_rate": {"type": "float", "low": 3e-4, "high": 3e-3, "log": True},
            "filters": {"type": "categorical", "choices": [16, 32]},
            "batch_size": {"type": "categorical", "choices": [64, 128]},
        },
    }


# -- timing inside the fits: a Keras callback, the same on both sides ---------------------------
def fit_clock() -> Any:
    """A Keras callback that records, per fit, the span from ``on_train_begin`` to
    ``on_train_end`` and the gaps between its ``on_epoch_end`` and the next ``on_epoch_begin``
    (or ``on_train_end``). Callbacks passed to ``mltune.tune`` run before mltune's own, so in
    a study the gaps hold mltune's epoch-end hook; in a bare fit only Keras' epoch loop."""
    import keras

    class Clock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.spans: list[float] = []
            self.gaps: list[float] = []
            self._begin = 0.0
            self._gap = 0.0
            self._epoch_end: float | None = None

        def on_train_begin(self, logs: Any = None) -> None:
            self._begin = time.perf_counter()
            self._gap = 0.0
            self._epoch_end = None

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            if self._epoch_end is not None:
                self._gap += time.perf_counter() - self._epoch_end
                self._epoch_end = None

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self._epoch_end = time.perf_counter()

        def on_train_end(self, logs: Any = None) -> None:
            now = time.perf_counter()
            if self._epoch_end is not None:
                self._gap += now - self._epoch_end
                self._epoch_end = None
            self.spans.append(now - self._begin)
            self.gaps.append(self._gap)

    return Clock()


# -- the bare side -------------------------------------------------------------------------------
@dataclass
class BareFit:
    build: float
    compile: float
    fit: float
    clear: float
    gap: float  # Keras' own epoch-end gaps (fit_clock)
    val_accuracy: float

    @property
    def total(self) -> float:
        return self.build + self.compile + self.fit + self.clear


def bare_fit(settings: dict[str, Any], arrays: Arrays, seed: int) -> BareFit:
    """One configuration with Keras alone: seed, build, compile, fit, clear_session."""
    import keras

    from mltune._model import build_model
    from mltune._trainer import compile_model

    batch = int(settings["batch_size"])
    clock = fit_clock()
    t0 = time.perf_counter()
    keras.utils.set_random_seed(seed)
    model = build_model(settings, input_shape=arrays.input_shape,
                        num_classes=arrays.num_classes, pixel_max=255.0)
    t1 = time.perf_counter()
    compile_model(model, settings, steps_per_epoch=max(1, math.ceil(len(arrays.x_train) / batch)))
    t2 = time.perf_counter()
    history = model.fit(arrays.x_train, arrays.y_train, batch_size=batch,
                        epochs=int(settings["epochs"]), callbacks=[clock],
                        validation_data=(arrays.x_val, arrays.y_val), verbose=0)
    t3 = time.perf_counter()
    del model
    keras.backend.clear_session()
    t4 = time.perf_counter()
    return BareFit(build=t1 - t0, compile=t2 - t1, fit=t3 - t2, clear=t4 - t3,
                   gap=clock.gaps[-1], val_accuracy=max(history.history["val_accuracy"]))


class Twins:
    """The bare twin of each trial, run from an Optuna trial callback right after the trial
    (``mltune.tune(trial_callbacks=[twins])``), or all at once (:meth:`run_all`)."""

    def __init__(self, settings_for: Callable[[dict[str, Any]], dict[str, Any]],
                 arrays: Arrays, seed: int) -> None:
        self.settings_for = settings_for
        self.arrays = arrays
        self.seed = seed
        self.fits: dict[int, BareFit] = {}
        self.params: dict[int, dict[str, Any]] = {}
        self.inside = 0.0  # wall seconds of the twins that ran inside a study
        self.inside_after: dict[int, float] = {}  # trial number -> its twin's seconds, inside

    def run(self, number: int, params: dict[str, Any]) -> None:
        self.fits[number] = bare_fit(self.settings_for(params), self.arrays,
                                     self.seed + number)
        self.params[number] = dict(params)

    def __call__(self, study: Any, trial: Any) -> None:  # an Optuna callback
        start = time.perf_counter()
        self.run(trial.number, dict(trial.params))
        seconds = time.perf_counter() - start
        self.inside += seconds
        self.inside_after[trial.number] = seconds

    def run_all(self, params: list[dict[str, Any]]) -> float:
        start = time.perf_counter()
        for number, p in enumerate(params):
            self.run(number, p)
        return time.perf_counter() - start


# -- the study side ------------------------------------------------------------------------------
@dataclass
class Trial:
    number: int
    params: dict[str, Any]
    duration: float  # Optuna: datetime_complete - datetime_start
    started: dt.datetime  # Optuna's datetime_start (naive, local)
    completed: dt.datetime  # datetime_complete
    train_seconds: float  # the run's metric
    span: float  # fit_clock: on_train_begin .. on_train_end
    gap: float  # fit_clock: mltune's epoch-end hook (and Keras' own loop)
    model_logged: bool
    value: float


@dataclass
class StudyRun:
    wall: float  # tune(), less the twins that ran inside it
    trials: list[Trial]
    states: dict[str, int]
    setup: float  # tune() called -> first trial started
    between: float  # between trials (after-trial callbacks, Optuna), twins taken out
    end: float  # last trial completed -> tune() returned, its twin taken out
    load_before: str
    load_after: str


def run_study(raw: dict[str, Any], arrays: Arrays, storage: str, uri: str,
              twins: Twins | None) -> StudyRun:
    """One study through ``mltune.tune``, timed as a whole; what each trial logged is read
    back afterwards (Optuna's trials, MLflow's ``train_seconds``)."""
    from mlflow.tracking import MlflowClient

    import mltune
    from mltune._names import Attr  # the trial attributes mltune sets (README)

    clock = fit_clock()
    load_before = load_avg()
    began = dt.datetime.now()  # Optuna's trial timestamps are naive local times
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the plain progress lines
        result = mltune.tune(raw, data=(arrays.x_train, arrays.y_train),
                             validation_data=(arrays.x_val, arrays.y_val), storage=storage,
                             tracking_uri=uri, progress=False, callbacks=[clock],
                             trial_callbacks=[twins] if twins is not None else [],
                             trial_process="none")
    wall = time.perf_counter() - start - (twins.inside if twins is not None else 0.0)
    ended = dt.datetime.now()
    n = raw["study"]["n_trials"]
    if result.states.get("COMPLETE", 0) != n:
        raise RuntimeError(f"the study did not complete all its trials: {result.states}")
    study = mltune.load_study(result.study_name, storage)
    client = MlflowClient(uri)
    trials = []
    for t in sorted(study.trials, key=lambda t: t.number):
        run = client.get_run(t.user_attrs[Attr.RUN_ID])
        trials.append(Trial(
            number=t.number, params=dict(t.params),
            duration=(t.datetime_complete - t.datetime_start).total_seconds(),
            started=t.datetime_start, completed=t.datetime_complete,
            train_seconds=float(run.data.metrics["train_seconds"]),
            span=clock.spans[t.number], gap=clock.gaps[t.number],
            model_logged=Attr.MODEL_URI in t.user_attrs, value=float(t.value)))
    if len(clock.spans) != n:
        raise RuntimeError(f"the Keras callback saw {len(clock.spans)} fits, not {n}")
    twin = twins.inside_after if twins is not None else {}
    gaps = [(b.started - a.completed).total_seconds() - twin.get(a.number, 0.0)
            for a, b in itertools.pairwise(trials)]
    last = trials[-1]
    return StudyRun(wall=wall, trials=trials, states=dict(result.states),
                    setup=(trials[0].started - began).total_seconds(), between=sum(gaps),
                    end=(ended - last.completed).total_seconds() - twin.get(last.number, 0.0),
                    load_before=load_before, load_after=load_avg())


# -- one repeat: a study and its bare twin ---------------------------------------------------------
@dataclass
class Pair:
    study: StudyRun
    bare: list[BareFit]
    bare_wall: float
    order: str

    @property
    def overhead_pct(self) -> float:
        return 100.0 * (self.study.wall - self.bare_wall) / self.bare_wall

    # The parts of mltune's own time (seconds per study).
    @property
    def outside_train(self) -> float:
        """Study wall - the trials' train_seconds (the brief's "time outside Keras")."""
        return self.study.wall - sum(t.train_seconds for t in self.study.trials)

    @property
    def bare_outside_fit(self) -> float:
        """What the bare loop spends outside model.fit: build, compile, clear_session."""
        return sum(b.build + b.compile + b.clear for b in self.bare)

    @property
    def hook(self) -> float:
        """mltune's epoch-end hook inside the fits, less Keras' own epoch-end gap."""
        return sum(t.gap for t in self.study.trials) - sum(b.gap for b in self.bare)

    @property
    def own(self) -> float:
        return self.outside_train - self.bare_outside_fit + self.hook

    @property
    def own_pct(self) -> float:
        return 100.0 * self.own / self.bare_wall

    @property
    def in_trials_outside_fit(self) -> float:
        return sum(t.duration - t.train_seconds for t in self.study.trials)

    @property
    def outside_trials(self) -> float:
        return self.study.wall - sum(t.duration for t in self.study.trials)

    @property
    def fit_rest(self) -> float:
        """train_seconds - bare model.fit - the hook: mltune's input pipeline and per-batch
        callback, and noise."""
        return (sum(t.train_seconds for t in self.study.trials) - sum(b.fit for b in self.bare)
                - self.hook)


def run_pairs(args: argparse.Namespace, arrays: Arrays, store: Path) -> list[Pair]:
    """Study and bare loop side by side, ``--repeats`` times."""
    from mltune._config import parse_config

    pairs: list[Pair] = []
    previous: list[dict[str, Any]] | None = None
    for r in range(args.repeats):
        raw = study_dict(args, f"bench-overhead-{r + 1}")
        config = parse_config(raw, source="bench/overhead.py", data_given=True)
        twins = Twins(config.params_for, arrays, args.seed)
        folder = store if args.store == "existing" else Path(tempfile.mkdtemp(
            prefix=f"repeat-{r + 1}-", dir=store))
        storage, uri = str(folder / "optuna_journal.log"), f"sqlite:///{folder / 'mlflow.db'}"
        bare_first = args.interleave == "study" and r % 2 == 1 and previous is not None
        if args.interleave == "trial":
            study, order = run_study(raw, arrays, storage, uri, twins), "per trial"
            bare_wall = twins.inside
        elif bare_first:
            assert previous is not None
            bare_wall = twins.run_all(previous)
            study, order = run_study(raw, arrays, storage, uri, None), "bare, study"
        else:
            study = run_study(raw, arrays, storage, uri, None)
            bare_wall = twins.run_all([t.params for t in study.trials])
            order = "study, bare"
        params = [t.params for t in study.trials]
        if [twins.params[t.number] for t in study.trials] != params:
            raise RuntimeError("a bare twin trained other settings than its trial (the seeded "
                               "sampler drew other configurations than the previous study)")
        previous = params
        pair = Pair(study, [twins.fits[t.number] for t in study.trials], bare_wall, order)
        pairs.append(pair)
        print(f"  repeat {r + 1}/{args.repeats} ({order}): study {study.wall:.2f} s, "
              f"bare {bare_wall:.2f} s, wall overhead {pair.overhead_pct:+.1f}%, mltune's own "
              f"time {pair.own:.2f} s = {pair.own_pct:.2f}%; load {study.load_before} -> "
              f"{study.load_after}", flush=True)
    return pairs


# -- warm-up -------------------------------------------------------------------------------------
def warm_up(args: argparse.Namespace, arrays_path: Path, store: Path
            ) -> tuple[dict[str, float], Arrays]:
    """Start TensorFlow, load the data, run a first fit and a small study; timed."""
    out: dict[str, float] = {}
    t = time.perf_counter()
    import keras  # TensorFlow
    import mlflow  # noqa: F401
    import optuna  # noqa: F401

    out["import TensorFlow, Keras, Optuna, MLflow"] = time.perf_counter() - t

    t = time.perf_counter()
    arrays = load_arrays(arrays_path, args.samples, args.seed)
    out["load MNIST, take the subset"] = time.perf_counter() - t

    t = time.perf_counter()
    from mltune._config import parse_config

    settings = parse_config(study_dict(args, "warm"), data_given=True).params_for(
        {"learning_rate": 1e-3, "filters": 16, "batch_size": 64, "epochs": 1})
    tiny = Arrays(arrays.x_train[:256], arrays.y_train[:256], arrays.x_val[:64],
                  arrays.y_val[:64])
    bare_fit(settings, tiny, args.seed)
    keras.backend.clear_session()
    out["first tiny bare fit (graph/runtime start-up)"] = time.perf_counter() - t

    # A small study exercises the first-call paths (MLflow's schema, model logging, the
    # report's plots) so that they land on no timed study; with --store existing it also
    # leaves the store that the timed studies find.
    folder = store if args.store == "existing" else Path(tempfile.mkdtemp(dir=store))
    small = study_dict(args, "bench-warm-up")
    small["study"]["n_trials"] = 2
    small["training"]["epochs"] = 1
    t = time.perf_counter()
    run_study(small, tiny, str(folder / "optuna_journal.log"),
              f"sqlite:///{folder / 'mlflow.db'}", None)
    out[f"warm-up study (2 trials x {len(tiny.x_train)} images, new store)"] = (
        time.perf_counter() - t)
    return out, arrays


# -- CLI start-up --------------------------------------------------------------------------------
def time_cli(repeats: int) -> dict[str, list[float]]:
    """Wall time of each command, run round-robin so drifts hit all alike."""
    python = sys.executable
    script = Path(python).parent / "mltune"
    if not script.exists():
        script = Path(shutil.which("mltune") or "mltune")
    commands = {
        "python -c pass": [python, "-c", "pass"],
        "python -m mltune --help": [python, "-m", "mltune", "--help"],
        "mltune --help (console script)": [str(script), "--help"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for cmd in commands.values():  # one untimed run each: page cache, .pyc files
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    for _ in range(repeats):
        for name, cmd in commands.items():
            start = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           check=True, cwd=REPO)
            times[name].append(time.perf_counter() - start)
    return times


# -- report ----------------------------------------------------------------------------------------
def _med(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def study_tables(args: argparse.Namespace, pairs: list[Pair]) -> tuple[str, str]:
    n = args.trials
    per_repeat = fmt_table(
        ["repeat", "order", "load before -> after", "study wall (s)", "bare wall (s)",
         "wall overhead", "mltune's own time (s)", "own / bare wall"],
        [[str(i + 1), p.order, f"{p.study.load_before} -> {p.study.load_after}",
          f"{p.study.wall:.2f}", f"{p.bare_wall:.2f}", f"{p.overhead_pct:+.1f}%",
          f"{p.own:.2f}", f"{p.own_pct:.2f}%"] for i, p in enumerate(pairs)]
        + [["median", "", "", f"{_med(p.study.wall for p in pairs):.2f}",
            f"{_med(p.bare_wall for p in pairs):.2f}",
            f"{_med(p.overhead_pct for p in pairs):+.1f}%", f"{_med(p.own for p in pairs):.2f}",
            f"{_med(p.own_pct for p in pairs):.2f}%"]])

    bare = _med(p.bare_wall for p in pairs)
    series: list[tuple[str, list[float]]] = [
        ("**study wall** (`mltune.tune`, twins taken out)", [p.study.wall for p in pairs]),
        ("trials' `train_seconds` (MLflow), sum",
         [sum(t.train_seconds for t in p.study.trials) for p in pairs]),
        ("= study wall - train_seconds", [p.outside_train for p in pairs]),
        ("  of which in the trials (Optuna duration - train_seconds)",
         [p.in_trials_outside_fit for p in pairs]),
        ("  of which outside the trials", [p.outside_trials for p in pairs]),
        ("    before the first trial (checks, data, storage, parent run)",
         [p.study.setup for p in pairs]),
        ("    between trials (after-trial callbacks: run status, end)",
         [p.study.between for p in pairs]),
        ("    after the last trial (its callbacks, summary, report, parent run end)",
         [p.study.end for p in pairs]),
        ("- bare: build + compile + clear_session", [p.bare_outside_fit for p in pairs]),
        ("+ mltune's epoch-end hook in the fits (Keras callback, net)",
         [p.hook for p in pairs]),
        ("**= mltune's own time**", [p.own for p in pairs]),
        ("**bare wall**", [p.bare_wall for p in pairs]),
        ("bare: model.fit, sum", [sum(b.fit for b in p.bare) for p in pairs]),
        ("bare: build_model, sum", [sum(b.build for b in p.bare) for p in pairs]),
        ("bare: compile, sum", [sum(b.compile for b in p.bare) for p in pairs]),
        ("bare: clear_session, sum", [sum(b.clear for b in p.bare) for p in pairs]),
        ("train_seconds - bare fit - hook (input pipeline, batch callback, noise)",
         [p.fit_rest for p in pairs]),
    ]
    rows = []
    for name, values in series:
        m = _med(values)
        rows.append([name, *(f"{v:.2f}" for v in values), f"{m:.2f}", f"{1000 * m / n:.0f}",
                     f"{100 * m / bare:.1f}%"])
    breakdown = fmt_table(["seconds per study", *(f"r{i + 1}" for i in range(len(pairs))),
                           "median", "ms / trial", "% of bare wall"], rows)

    trials = [t for p in pairs for t in p.study.trials]
    bare_fits = [b for p in pairs for b in p.bare]

    def outside(logged: bool) -> list[float]:
        return [t.duration - t.train_seconds for t in trials if t.model_logged == logged]

    def ms(values: list[float]) -> str:
        return f"{1000 * _med(values):.0f} ms ({len(values)} trials)" if values else "-"

    with_model, without = outside(True), outside(False)
    hook = (_med([t.gap for t in trials]) - _med([b.gap for b in bare_fits])) / args.epochs
    per_trial = fmt_table(["per trial, all repeats (medians)", "value"], [
        ["in the trial, outside the fit: trials that logged their model", ms(with_model)],
        ["in the trial, outside the fit: trials that did not", ms(without)],
        ["so logging one model costs about",
         f"{1000 * (_med(with_model) - _med(without)):.0f} ms" if with_model and without
         else "-"],
        ["bare: build + compile + clear_session",
         ms([b.build + b.compile + b.clear for b in bare_fits])],
        ["mltune's epoch-end hook, per epoch (net of Keras' own gap)",
         f"{1000 * hook:.0f} ms"],
        ["train_seconds / bare model.fit (same configuration, per pair)",
         f"{_med([t.train_seconds / b.fit for t, b in zip(trials, bare_fits, strict=True)]):.3f}"],
    ])
    return per_repeat, breakdown, per_trial


def cli_table(times: dict[str, list[float]]) -> str:
    rows = []
    for name, ts in times.items():
        target = "" if "pass" in name else (
            "met" if statistics.median(ts) < HELP_TARGET_S else "MISSED")
        rows.append([name, f"{statistics.median(ts):.3f}", f"{min(ts):.3f}", f"{max(ts):.3f}",
                     str(len(ts)), target])
    return fmt_table(["command", "median (s)", "min (s)", "max (s)", "runs",
                      f"< {HELP_TARGET_S} s"], rows)


def render(args: argparse.Namespace, argv: Sequence[str], info: dict[str, str],
           warm: dict[str, float], pairs: list[Pair], cli: dict[str, list[float]],
           arrays: Arrays, loads: tuple[str, str], elapsed: float) -> str:
    per_repeat, breakdown, per_trial = study_tables(args, pairs)
    median = _med(p.overhead_pct for p in pairs)
    own = _med(p.own_pct for p in pairs)
    verdict = "met" if own <= STUDY_TARGET_PCT else "MISSED"
    overheads = [p.overhead_pct for p in pairs]
    owns = [p.own_pct for p in pairs]
    bare_trial = _med(p.bare_wall for p in pairs) / args.trials
    helps = [statistics.median(v) for k, v in cli.items() if "help" in k]
    help_verdict = "met" if max(helps) < HELP_TARGET_S else "MISSED"
    command = " ".join([sys.executable, "bench/overhead.py", *argv])
    logged = ", ".join(str(sum(t.model_logged for t in p.study.trials)) for p in pairs)
    bare_acc = _med(max(b.val_accuracy for b in p.bare) for p in pairs)
    study_acc = _med(max(t.value for t in p.study.trials) for p in pairs)
    store = ("each study the next one in a store (journal + MLflow SQLite file) that a "
             "warm-up study created, so MLflow's schema exists (`--store existing`, as for "
             "every study but a user's first)" if args.store == "existing" else
             "a new Optuna journal and MLflow SQLite file per study, whose schema the study "
             "creates (`--store fresh`: a user's very first study)")
    return "\n".join([
        SECTION,
        "",
        f"Measured {info['date']} on {info['nproc']} cores ({info['cpu']}), {info['os']}; "
        f"Python {info['python']}, TensorFlow {info['tensorflow']}, Keras {info['keras']}, "
        f"MLflow {info['mlflow']}, Optuna {info['optuna']}, NumPy {info['numpy']}, "
        f"Typer {info['typer']}; mltune at {info['commit']}. No GPU. The machine is shared: "
        f"load average (1 / 5 / 15 min) {loads[0]} at the start, {loads[1]} at the end; the "
        "per-repeat loads are in the table below.",
        "",
        f"Re-run from the repository root with the project's environment (this run took "
        f"{elapsed / 60:.1f} min):",
        "",
        "```sh",
        command,
        "```",
        "",
        f"- **mltune's own time / bare wall: {own:.2f}%** (median of {len(pairs)} repeats; "
        f"single repeats {min(owns):.2f}% to {max(owns):.2f}%): the study's wall time minus "
        "the trials' `train_seconds`, minus the bare loop's own build/compile/clear_session, "
        "plus mltune's epoch-end hook inside the fits; target <= "
        f"{STUDY_TARGET_PCT:g}%: **{verdict}**.",
        f"- Wall overhead, (study wall - bare wall) / bare wall: {median:+.1f}% (median; "
        f"single repeats {min(overheads):+.1f}% to {max(overheads):+.1f}%). It carries the "
        "fit-to-fit noise of a shared machine, and the difference between the fits (mltune's "
        "`tf.data` input pipeline and per-batch callback against `model.fit` on NumPy arrays).",
        f"- **`mltune --help`: {max(helps):.2f} s** (median; `python -c pass`: "
        f"{statistics.median(cli['python -c pass']):.2f} s); target < {HELP_TARGET_S} s: "
        f"**{help_verdict}**.",
        "",
        "### Study vs bare Keras",
        "",
        f"{args.trials} trials per study through `mltune.tune` (the public API; nothing of "
        f"mltune patched), random sampler (`study.seed` {args.seed}), the built-in CNN, "
        f"{args.samples} images of MNIST's training set passed as arrays "
        f"(`data=`/`validation_data=`: {len(arrays.x_train)} training, {len(arrays.x_val)} "
        f"validation, uint8), {args.epochs} epochs, Adam; searched: learning_rate "
        f"(3e-4..3e-3, log), filters (16, 32), batch_size (64, 128); {store}. The bare loop "
        "trains the same configurations on the same arrays with the same Keras seeds: "
        "`mltune._model.build_model`, `mltune._trainer.compile_model`, `model.fit(x, y, "
        "validation_data=..., verbose=0)`, `keras.backend.clear_session()`; a bare trial "
        f"takes {bare_trial:.2f} s (median). Best val_accuracy per study (median): mltune "
        f"{study_acc:.4f}, bare {bare_acc:.4f}. Models logged per study (trials that beat the "
        f"best so far): {logged}. Interleaving: "
        + ("each trial's bare twin runs right after the trial, from an Optuna trial callback "
           "(`trial_callbacks=`), and its time is taken out of the study's wall time."
           if args.interleave == "trial" else
           "the whole bare loop runs after the study, or before it on odd repeats."),
        "",
        per_repeat,
        "",
        "Where the time goes, per repeat. From the public side only: `train_seconds` is the "
        "metric each trial run logs (mltune's input pipeline + `model.fit`), read back with "
        "`MlflowClient`; the trials' durations come from `mltune.load_study`; the epoch-end "
        "hook is timed by a Keras callback passed with `callbacks=` (the same callback times "
        "Keras' own epoch-end gap in the bare fits, which is subtracted). The build, compile "
        "and clear_session inside the study cannot be timed from outside, so the bare loop's "
        "are subtracted as theirs. Each row is its median over the repeats (so the medians "
        "need not add up); the last column is that median over the median bare wall:",
        "",
        breakdown,
        "",
        per_trial,
        "",
        "One-time costs before the timed part (they land on neither side; a CLI run pays the "
        "imports and the data load once per process):",
        "",
        fmt_table(["warm-up", "s"], [[k, f"{v:.2f}"] for k, v in warm.items()]),
        "",
        "### CLI start-up",
        "",
        f"Each command {args.cli_repeats} times, round-robin, after one untimed run each.",
        "",
        cli_table(cli),
        "",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    data = data_file(args.data)
    if data is None:
        return 2
    began = time.perf_counter()
    loads = [load_avg()]
    info = machine_info(("tensorflow", "keras", "mlflow", "optuna", "numpy", "typer"))
    print(f"{info['nproc']} cores, {info['cpu']}; Python {info['python']}, TensorFlow "
          f"{info['tensorflow']}, Keras {info['keras']}, MLflow {info['mlflow']}, Optuna "
          f"{info['optuna']}; load {loads[0]}", flush=True)

    print("CLI start-up ...", flush=True)
    cli = time_cli(args.cli_repeats)

    print("warming up ...", flush=True)
    quiet_libraries()
    # The store's folder is the current folder: MLflow's artifacts go to ./mlruns.
    with (tempfile.TemporaryDirectory(prefix="mltune-bench-") as folder,
          working_dir(Path(folder))):
        warm, arrays = warm_up(args, data.resolve(), Path(folder))
        print(f"study vs bare Keras, {args.repeats} repeats ...", flush=True)
        pairs = run_pairs(args, arrays, Path(folder))
    loads.append(load_avg())

    section = render(args, argv, info, warm, pairs, cli, arrays, (loads[0], loads[1]),
                     time.perf_counter() - began)
    publish(section, SECTION, None if args.no_docs else args.docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
