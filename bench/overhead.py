"""What mltune costs on top of the Keras training it runs, and how fast ``mltune --help`` is.

Two measurements, in one run:

1. **Study overhead.** An mltune study of ``--trials`` trials (random sampler, fixed seed,
   a small search space over learning_rate, filters and batch_size) on a ``--samples``
   subset of real MNIST runs in-process through ``mltune.config.parse_config`` and
   ``mltune.study.tune`` (Optuna journal file and MLflow SQLite store in a new temporary
   folder; with ``--store existing`` the SQLite schema is created before the timed part).
   The same configurations are trained with bare Keras: ``mltune.model.build_model``
   + ``model.compile`` + ``model.fit`` on the same arrays with ``verbose=0`` and
   ``keras.backend.clear_session()`` after each. The overhead is
   ``(study wall - bare sum) / bare sum``; the median over ``--repeats`` studies is reported.

   The machine this was written for is shared and noisy (a fit's time varies by 10-40%
   from minute to minute), so by default (``--interleave trial``) each trial's bare twin
   runs inside the study, right before the trial or right after it (alternating), and its
   time is taken out of the study's wall time; the settings are checked against the trials'
   params read back from the finished study. ``--interleave study`` instead runs the whole
   bare loop after the study (before it on odd repeats). TensorFlow, the data and the lazy
   imports of a study (MLflow's model flavor, matplotlib) are warmed up beforehand, so
   start-up lands on neither side; their one-time cost is reported separately.

   The study's wall time is broken down by timing mltune's own functions while it runs
   (exclusive times: a nested timed call counts only to its own row): Keras build and
   fit, MLflow runs/params/metrics, MLflow model logging, the end-of-study report, and the
   rest (Optuna's bookkeeping, mltune's glue). The child runs' ``train_seconds`` metric is
   read back as a cross-check of the fit time.

2. **CLI start-up.** Wall time of ``python -m mltune --help`` and of the ``mltune`` console
   script next to the running interpreter, against ``python -c pass`` as a floor.

Prints the figures as tables and writes them, with the machine and the library versions, to
the section "Overhead (bench/overhead.py)" of ``docs/benchmarks.md`` (other sections of
that file are kept). Run from anywhere; e.g. ``python bench/overhead.py --repeats 3``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (  # bench/_common.py
    REPO,
    data_file,
    data_parser,
    fmt_table,
    machine_info,
    publish,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

DEFAULT_DOCS = Path("docs/benchmarks.md")
SECTION = "## Overhead (bench/overhead.py)"
STUDY_TARGET_PCT = 5.0
HELP_TARGET_S = 0.5

# Rows of the breakdown: (module or class, attribute, row). Tracker methods call one
# another (start_child -> log_params); exclusive timing keeps each second in one row.
TRACKER_METHODS = ("start_parent", "start_child", "log_params", "set_tags", "log_metrics",
                   "end_run", "log_artifacts", "ensure_experiment", "run_exists", "log_error")
FIT = "Keras compile + fit (mltune.trainer.train)"
BUILD = "Keras build_model"
RELEASE = "mltune.trainer.release (clear_session)"
MLFLOW_OPEN = "MLflow store open + check"
MLFLOW_RUNS = "MLflow runs, params, metrics, tags"
MODEL_LOG = "MLflow log_model: rest"
MODEL_SAVE = "MLflow log_model: save .keras + files"
MODEL_VALIDATE = "MLflow log_model: serving-input check"
REPORT = "study report (trials.csv + plots)"
DATA = "load_data (cached in-process)"
REST = "rest: Optuna storage/sampler, mltune glue"
ROWS = (FIT, BUILD, RELEASE, MLFLOW_OPEN, MLFLOW_RUNS, MODEL_LOG, MODEL_SAVE, MODEL_VALIDATE,
        REPORT, DATA, REST)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = data_parser(__doc__, 8000,
                    "data.max_samples: training + validation images (about 5 s a trial "
                   "with 2 epochs on 2 cores of an AMD EPYC)")
    p.add_argument("--trials", type=int, default=6, help="trials per study")
    p.add_argument("--epochs", type=int, default=2, help="epochs per trial")
    p.add_argument("--repeats", type=int, default=3, help="studies, each with its bare twin")
    p.add_argument("--interleave", choices=("trial", "study"), default="trial",
                   help="trial: each trial's bare twin runs inside the study, right before or "
                   "after it; study: the whole bare loop runs after the study (before it on "
                   "odd repeats)")
    p.add_argument("--seed", type=int, default=0, help="sampler and data-split seed")
    p.add_argument("--store", choices=("existing", "fresh"), default="existing",
                   help="existing: the MLflow SQLite file has its schema before the study "
                   "starts, as for every study but a user's first; fresh: the study creates "
                   "it (a one-time 0.8 s)")
    p.add_argument("--cli-repeats", type=int, default=10, help="runs of each CLI command")
    p.add_argument("--docs", type=Path, default=DEFAULT_DOCS,
                   help="markdown file whose overhead section is (re)written; relative to the "
                   "repo root")
    p.add_argument("--no-docs", action="store_true", help="print only, write no file")
    return p.parse_args(argv)


# -- machine ---------------------------------------------------------------------------------
def quiet_libraries() -> None:
    """What ``mltune``'s CLI does before a study: keep library chatter off the screen."""
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for name in ("optuna", "mlflow", "alembic", "absl", "tensorflow", "keras"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


# -- timing of mltune's functions inside a study ---------------------------------------------
class Probes:
    """Exclusive wall time per row of the functions wrapped while a study runs."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[list[float]] = []  # per open call: time spent in nested probes

    def _wrap(self, fn: Callable[..., Any], row: str, name: str) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            nested = [0.0]
            self._stack.append(nested)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                self._stack.pop()
                self.seconds[row] += elapsed - nested[0]
                self.calls[name] += 1
                if self._stack:
                    self._stack[-1][0] += elapsed
        return timed

    @contextlib.contextmanager
    def installed(self) -> Iterator[Probes]:
        import mlflow.keras
        import mlflow.models.utils

        import mltune.data
        import mltune.model
        import mltune.study
        import mltune.trainer
        from mltune.tracking import Tracker

        targets: list[tuple[Any, str, str]] = [
            (mltune.trainer, "train", FIT),
            (mltune.model, "build_model", BUILD),
            (mltune.trainer, "release", RELEASE),
            (Tracker, "__init__", MLFLOW_OPEN),
            (Tracker, "check", MLFLOW_OPEN),
            (Tracker, "log_model", MODEL_LOG),
            (mlflow.keras, "save_model", MODEL_SAVE),
            (mlflow.models.utils, "_validate_serving_input", MODEL_VALIDATE),
            (mltune.study, "write_report", REPORT),
            (mltune.data, "load_data", DATA),
        ] + [(Tracker, m, MLFLOW_RUNS) for m in TRACKER_METHODS]
        saved = []
        for owner, attr, row in targets:
            original = getattr(owner, attr)
            saved.append((owner, attr, original))
            setattr(owner, attr, self._wrap(original, row, attr))
        try:
            yield self
        finally:
            for owner, attr, original in reversed(saved):
                setattr(owner, attr, original)


@contextlib.contextmanager
def gc_clock() -> Iterator[list[float]]:
    """Seconds spent in Python's garbage collector (automatic and explicit) in the block."""
    import gc

    total = [0.0]
    started = [0.0]

    def hook(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            total[0] += time.perf_counter() - started[0]

    gc.callbacks.append(hook)
    try:
        yield total
    finally:
        gc.callbacks.remove(hook)


# -- the two sides -----------------------------------------------------------------------------
@dataclass
class StudyRun:
    wall: float
    params: list[dict[str, Any]]
    train_seconds: list[float]  # the child runs' metric, in trial order
    rows: dict[str, float]
    calls: dict[str, int]
    gc: float  # seconds in the garbage collector
    states: dict[str, int] = field(default_factory=dict)


@dataclass
class BareRun:
    wall: float
    build: list[float]
    fit: list[float]  # compile + fit
    clear: list[float]
    gc: float


def study_config(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    return {
        "study": {"name": "bench-overhead", "sampler": "random", "n_trials": args.trials,
                  "seed": args.seed, "metric": "val_accuracy"},
        "data": {"source": str(data), "max_samples": args.samples, "validation_split": 0.1},
        "training": {"epochs": args.epochs, "optimizer": "adam", "lr_schedule": "constant"},
        "search_space": {
            "learning_rate": {"type": "float", "low": 3e-4, "high": 3e-3, "log": True},
            "filters": {"type": "categorical", "choices": [16, 32]},
            "batch_size": {"type": "categorical", "choices": [64, 128]},
        },
    }


def run_study(raw: dict[str, Any], folder: Path, twins: Twins | None = None,
              store: str = "existing") -> StudyRun:
    """One study in ``folder`` (journal + SQLite store), timed as a whole and by row.

    With ``twins``, each trial's bare-Keras twin runs inside the study; its time is taken
    out of the study's wall time (and its garbage collections out of the study's).
    """
    import optuna
    from mlflow.tracking import MlflowClient

    from mltune.config import parse_config
    from mltune.progress import PlainProgress
    from mltune.study import open_storage, tune

    config = parse_config(raw, source="bench/overhead.py")
    journal = str(folder / "optuna_journal.log")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    progress = PlainProgress(config.study.metric, stream=io.StringIO())
    if store == "existing":
        MlflowClient(uri).search_experiments()  # creates the schema, untimed
    probes = Probes()
    with contextlib.ExitStack() as stack:
        if twins is not None:
            stack.enter_context(twins.installed())
        stack.enter_context(probes.installed())
        in_gc = stack.enter_context(gc_clock())
        start = time.perf_counter()
        result = tune(config, storage=journal, tracking_uri=uri, progress=progress)
        wall = time.perf_counter() - start
    if result.states.get("COMPLETE", 0) != config.study.n_trials:
        raise RuntimeError(f"the study did not complete all its trials: {result.states}")
    study = optuna.load_study(study_name=result.study_name, storage=open_storage(journal))
    trials = sorted(study.trials, key=lambda t: t.number)
    client = MlflowClient(uri)
    seconds = []
    for t in trials:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        seconds.append(float(run.data.metrics["train_seconds"]))
    params = [dict(t.params) for t in trials]
    gc_seconds = in_gc[0]
    if twins is not None:
        if [twins.params.get(t.number) for t in trials] != params:
            raise RuntimeError("a bare twin trained other settings than its trial")
        wall -= twins.seconds
        gc_seconds -= twins.gc
    rows = dict(probes.seconds)
    rows[REST] = wall - sum(rows.values())
    return StudyRun(wall=wall, params=params, train_seconds=seconds, rows=rows,
                    calls=dict(probes.calls), gc=gc_seconds, states=dict(result.states))


def run_bare(raw: dict[str, Any], params: list[dict[str, Any]]) -> BareRun:
    """The study's configurations, trained with Keras alone on the same arrays."""
    from mltune.config import parse_config
    from mltune.data import load_data
    from mltune.model import build_model

    config = parse_config(raw, source="bench/overhead.py")
    data = load_data(config.data, seed=config.study.seed)  # the study's arrays (cached)
    with gc_clock() as in_gc:
        start = time.perf_counter()
        steps = [bare_trial(config, data, sampled, build_model) for sampled in params]
        wall = time.perf_counter() - start
    build, fit, clear = (list(x) for x in zip(*steps, strict=True))
    return BareRun(wall=wall, build=build, fit=fit, clear=clear, gc=in_gc[0])


def bare_trial(config: Any, data: Any, sampled: dict[str, Any],
               build_model: Callable[..., Any]) -> tuple[float, float, float]:
    """Build, compile + fit, clear_session for one configuration; seconds of each step."""
    import keras

    s = config.params_for(sampled)
    if s["optimizer"] != "adam" or s["lr_schedule"] != "constant":
        raise ValueError("the bare side compiles with a constant-rate Adam only")
    t0 = time.perf_counter()
    model = build_model(s, input_shape=data.input_shape, num_classes=data.num_classes,
                        pixel_max=data.pixel_max)
    t1 = time.perf_counter()
    model.compile(optimizer=keras.optimizers.Adam(float(s["learning_rate"])),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(data.x_train, data.y_train, batch_size=int(s["batch_size"]),
              epochs=int(s["epochs"]), validation_data=(data.x_val, data.y_val), verbose=0)
    t2 = time.perf_counter()
    del model
    keras.backend.clear_session()
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2


class Twins:
    """The bare-Keras twin of every trial, run inside the study right before the trial
    (its settings sampled first; Optuna then hands the trial the same values) or right after
    it, alternating, so that both sides see the same load on a shared machine."""

    def __init__(self, raw: dict[str, Any], offset: int) -> None:
        from mltune.config import parse_config
        from mltune.data import load_data
        from mltune.model import build_model

        self.config = parse_config(raw, source="bench/overhead.py")
        self.data = load_data(self.config.data, seed=self.config.study.seed)
        self.build_model = build_model  # the original, not the probe
        self.offset = offset
        self.params: dict[int, dict[str, Any]] = {}
        self.steps: dict[int, tuple[float, float, float]] = {}
        self.seconds = 0.0
        self.gc = 0.0

    def before(self, number: int) -> bool:
        return (number + self.offset) % 2 == 1

    def run(self, number: int, sampled: dict[str, Any]) -> None:
        with gc_clock() as in_gc:
            start = time.perf_counter()
            self.steps[number] = bare_trial(self.config, self.data, sampled, self.build_model)
            self.seconds += time.perf_counter() - start
        self.gc += in_gc[0]
        self.params[number] = dict(sampled)

    def bare_run(self) -> BareRun:
        steps = [self.steps[k] for k in sorted(self.steps)]
        build, fit, clear = (list(x) for x in zip(*steps, strict=True))
        return BareRun(wall=self.seconds, build=build, fit=fit, clear=clear, gc=self.gc)

    @contextlib.contextmanager
    def installed(self) -> Iterator[Twins]:
        from mltune.objective import Objective
        from mltune.search_space import suggest_all

        call, after = Objective.__call__, Objective.after_trial
        twins = self

        def call_with_twin(objective: Any, trial: Any) -> float:
            if twins.before(trial.number):
                twins.run(trial.number, suggest_all(objective.config.search_space, trial))
            return call(objective, trial)

        def after_with_twin(objective: Any, study: Any, trial: Any) -> None:
            after(objective, study, trial)
            if not twins.before(trial.number):
                twins.run(trial.number, dict(trial.params))

        setattr(Objective, "__call__", call_with_twin)  # noqa: B010
        setattr(Objective, "after_trial", after_with_twin)  # noqa: B010
        try:
            yield self
        finally:
            setattr(Objective, "__call__", call)  # noqa: B010
            setattr(Objective, "after_trial", after)  # noqa: B010


def warm_up(args: argparse.Namespace, raw: dict[str, Any]) -> dict[str, float]:
    """Start TensorFlow, load the data and import what a study imports lazily; timed."""
    out: dict[str, float] = {}
    t = time.perf_counter()
    from mltune.device import configure_gpus

    configure_gpus()  # imports TensorFlow with its C++ start-up lines muted, as mltune does
    import keras
    import numpy as np

    from mltune.config import parse_config
    from mltune.data import load_data
    from mltune.model import build_model
    from mltune.settings import default_settings
    from mltune.study import tune  # noqa: F401  (optuna, mlflow)

    out["import TensorFlow, Keras, Optuna, MLflow"] = time.perf_counter() - t

    t = time.perf_counter()
    x = np.zeros((64, 28, 28, 1), dtype=np.uint8)
    y = np.zeros(64, dtype=np.int64)
    model = build_model(default_settings(), input_shape=(28, 28, 1), num_classes=10)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=1, validation_data=(x, y), verbose=0)
    del model
    keras.backend.clear_session()
    out["first tiny fit (graph/runtime start-up)"] = time.perf_counter() - t

    t = time.perf_counter()
    config = parse_config(raw, source="bench/overhead.py")
    load_data(config.data, seed=config.study.seed)
    out["load + split MNIST (once per process)"] = time.perf_counter() - t

    t = time.perf_counter()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot
    import mlflow.keras
    import mlflow.models  # noqa: F401
    import optuna.visualization.matplotlib  # noqa: F401
    out["lazy imports of a study (mlflow.keras, matplotlib)"] = time.perf_counter() - t

    # A tiny study exercises the remaining first-call paths (SQLAlchemy, Alembic, model
    # saving and loading, the plots) so that they do not land on the first timed study.
    tiny = study_config(args, Path(raw["data"]["source"]))
    tiny["study"] |= {"name": "bench-warm-up", "n_trials": 2}
    tiny["data"] |= {"max_samples": 200}
    tiny["training"] |= {"epochs": 1}
    with tempfile.TemporaryDirectory(prefix="mltune-bench-") as folder:
        t = time.perf_counter()
        run_study(tiny, Path(folder))
        out["tiny warm-up study (2 trials x 180 images)"] = time.perf_counter() - t
    return out


# -- CLI start-up ------------------------------------------------------------------------------
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


# -- the whole benchmark -------------------------------------------------------------------------
@dataclass
class Pair:
    study: StudyRun
    bare: BareRun
    order: str

    @property
    def overhead_pct(self) -> float:
        return 100.0 * (self.study.wall - self.bare.wall) / self.bare.wall


def run_pairs(args: argparse.Namespace, raw: dict[str, Any]) -> list[Pair]:
    """Study and bare side by side, ``--repeats`` times.

    ``--interleave trial``: each trial's bare twin runs inside the study, before or after the
    trial (alternating by trial and repeat). ``--interleave study``: the whole bare loop runs
    after the study, or before it on odd repeats (with the seeded sampler's configurations
    from the previous study, checked to be the same).
    """
    pairs: list[Pair] = []
    params: list[dict[str, Any]] | None = None
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="mltune-bench-") as folder:
            if args.interleave == "trial":
                twins = Twins(raw, offset=r)
                study = run_study(raw, Path(folder), twins, args.store)
                bare, order = twins.bare_run(), "per trial"
            elif r % 2 == 1 and params is not None:
                bare, order = run_bare(raw, params), "bare, study"
                study = run_study(raw, Path(folder), store=args.store)
                if study.params != params:
                    raise RuntimeError("the seeded study sampled other configurations than "
                                       "before; cannot run bare first")
            else:
                study = run_study(raw, Path(folder), store=args.store)
                bare, order = run_bare(raw, study.params), "study, bare"
        params = study.params
        pair = Pair(study, bare, order)
        pairs.append(pair)
        print(f"  repeat {r + 1}/{args.repeats} ({order}): study {study.wall:.2f} s, "
              f"bare {bare.wall:.2f} s, overhead {pair.overhead_pct:+.1f}%", flush=True)
    return pairs


def _med(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def outside_keras(p: Pair) -> float:
    """Seconds of the study spent outside Keras (build, compile + fit, clear_session)."""
    return p.study.wall - sum(p.study.rows.get(r, 0.0) for r in (FIT, BUILD, RELEASE))


def outside_pct(p: Pair) -> float:
    """The noise-robust overhead: no fit time on the numerator, only on the denominator."""
    return 100.0 * outside_keras(p) / p.bare.wall


def study_tables(args: argparse.Namespace, pairs: list[Pair], gc_info: dict[str, Any]
                 ) -> tuple[str, str, str]:
    n = args.trials
    per_repeat = fmt_table(
        ["repeat", "order", "study wall (s)", "bare sum (s)", "overhead"],
        [[str(i + 1), p.order, f"{p.study.wall:.2f}",
          f"{p.bare.wall:.2f}", f"{p.overhead_pct:+.1f}%"] for i, p in enumerate(pairs)]
        + [["median", "", f"{_med(p.study.wall for p in pairs):.2f}",
            f"{_med(p.bare.wall for p in pairs):.2f}",
            f"{_med(p.overhead_pct for p in pairs):+.1f}%"]])

    bare = _med(p.bare.wall for p in pairs)
    series: list[tuple[str, list[float]]] = [
        (row, [p.study.rows.get(row, 0.0) for p in pairs]) for row in ROWS]
    series += [
        ("**study wall**", [p.study.wall for p in pairs]),
        ("bare: build_model", [sum(p.bare.build) for p in pairs]),
        ("bare: compile + fit", [sum(p.bare.fit) for p in pairs]),
        ("bare: clear_session (includes one gc.collect)", [sum(p.bare.clear) for p in pairs]),
        ("**bare sum**", [p.bare.wall for p in pairs]),
        ("child runs' train_seconds (sum)", [sum(p.study.train_seconds) for p in pairs]),
    ]
    rows = []
    for name, values in series:
        m = _med(values)
        rows.append([name, *(f"{v:.2f}" for v in values), f"{m:.2f}", f"{1000 * m / n:.0f}",
                     f"{100 * m / bare:.1f}%"])
    breakdown = fmt_table(["seconds per study", *(f"r{i + 1}" for i in range(len(pairs))),
                           "median", "ms / trial", "% of bare sum"], rows)

    def logging(p: Pair) -> float:
        return sum(p.study.rows.get(r, 0.0) for r in (MODEL_LOG, MODEL_SAVE, MODEL_VALIDATE))

    logged = [p.study.calls.get("log_model", 0) for p in pairs]
    per_model = [logging(p) / k for p, k in zip(pairs, logged, strict=True) if k]
    derived = fmt_table(["derived (median over repeats)", "value"], [
        ["study time outside Keras (wall - fit - build - release)",
         f"{_med(outside_keras(p) for p in pairs):.2f} s = "
         f"{_med(outside_pct(p) for p in pairs):.1f}% of bare sum (per repeat: "
         + ", ".join(f"{outside_pct(p):.1f}%" for p in pairs) + ")"],
        ["release - bare clear_session",
         f"{_med(p.study.rows.get(RELEASE, 0.0) - sum(p.bare.clear) for p in pairs):+.2f} s"],
        ["time in Python's garbage collector: study / bare",
         f"{_med(p.study.gc for p in pairs):.2f} s / {_med(p.bare.gc for p in pairs):.2f} s"],
        ["one full gc.collect() afterwards, heap as tune() left it / unfrozen (median of 5)",
         f"{_med(gc_info['frozen']):.3f} s / {_med(gc_info['unfrozen']):.3f} s"],
        ["objects frozen by tune() (gc.get_freeze_count) / garbage freed once unfrozen",
         f"{gc_info['frozen_objects']} / {gc_info['freed_on_unfreeze']}"],
        ["fit inside the study - bare compile+fit (callbacks + noise)",
         f"{_med(p.study.rows.get(FIT, 0.0) - sum(p.bare.fit) for p in pairs):+.2f} s"],
        ["models logged per study (trials that beat the best so far)",
         ", ".join(map(str, logged))],
        ["MLflow log_model, per model",
         f"{_med(per_model):.2f} s" if per_model else "-"],
        ["MLflow log_batch-type calls per study (params, metrics, tags)",
         str(_med(sum(p.study.calls.get(k, 0) for k in ("log_params", "log_metrics",
                                                       "set_tags")) for p in pairs))],
    ])
    return per_repeat, breakdown, derived


def gc_probe(times: int = 5) -> dict[str, Any]:
    """Full garbage collections with everything a study imports loaded: as the study leaves
    the heap (``tune`` freezes it), then unfrozen; and what unfreezing lets go."""
    import gc

    def collect() -> float:
        start = time.perf_counter()
        gc.collect()
        return time.perf_counter() - start

    frozen_objects = gc.get_freeze_count()
    frozen = [collect() for _ in range(times)]
    gc.unfreeze()
    freed = gc.collect()
    unfrozen = [collect() for _ in range(times)]
    return {"frozen": frozen, "unfrozen": unfrozen, "frozen_objects": frozen_objects,
            "freed_on_unfreeze": freed}


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
           gc_info: dict[str, Any]) -> str:
    per_repeat, breakdown, derived = study_tables(args, pairs, gc_info)
    median = statistics.median(p.overhead_pct for p in pairs)
    bare_trial = statistics.median(p.bare.wall for p in pairs) / args.trials
    verdict = "met" if median <= STUDY_TARGET_PCT else "MISSED"
    robust = _med(outside_pct(p) for p in pairs)
    robust_verdict = "met" if robust <= STUDY_TARGET_PCT else "MISSED"
    overheads = [p.overhead_pct for p in pairs]
    spread = f"{min(overheads):+.1f}% to {max(overheads):+.1f}%"
    helps = [statistics.median(v) for k, v in cli.items() if "help" in k]
    help_verdict = "met" if max(helps) < HELP_TARGET_S else "MISSED"
    command = " ".join([sys.executable, "bench/overhead.py", *argv])
    warm_rows = [[k, f"{v:.2f}"] for k, v in warm.items()]
    return "\n".join([
        SECTION,
        "",
        f"Measured {info['date']} on {info['nproc']} cores ({info['cpu']}), {info['os']}; "
        f"Python {info['python']}, TensorFlow {info['tensorflow']}, Keras {info['keras']}, "
        f"MLflow {info['mlflow']}, Optuna {info['optuna']}, NumPy {info['numpy']}, "
        f"Typer {info['typer']}; mltune at {info['commit']}. No GPU. The machine is shared, "
        "so single figures are noisy.",
        "",
        "Re-run from the repository root with the project's environment (about a minute per "
        "repeat, plus a minute of start-up and CLI timing):",
        "",
        "```sh",
        command,
        "```",
        "",
        f"- **Study overhead, (study wall - bare sum) / bare sum: {median:+.1f}%** (median of "
        f"{len(pairs)} repeats; single repeats {spread}); target <= {STUDY_TARGET_PCT:g}%: "
        f"**{verdict}**.",
        f"- **Time the study spends outside Keras / bare sum: {robust:.1f}%** (median; the "
        "same question with the fit times taken out of the numerator, so that the machine's "
        f"fit-to-fit noise does not swing it); target <= {STUDY_TARGET_PCT:g}%: "
        f"**{robust_verdict}**.",
        f"- **`mltune --help`: {max(helps):.2f} s** (median; `python -c pass`: "
        f"{statistics.median(cli['python -c pass']):.2f} s); target < {HELP_TARGET_S} s: "
        f"**{help_verdict}**.",
        "",
        "### Study vs bare Keras",
        "",
        f"{args.trials} trials per study, random sampler (seed {args.seed}), MNIST "
        f"`data.max_samples: {args.samples}` (validation_split 0.1: "
        f"{args.samples - round(args.samples * 0.1)} training, {round(args.samples * 0.1)} "
        f"validation images), {args.epochs} epochs, Adam; searched: learning_rate "
        "(3e-4..3e-3, log), filters (16, 32), batch_size (64, 128). A new Optuna journal and "
        "MLflow SQLite file per study"
        + (", its schema created before the timing starts (`--store existing`, as for every "
           "study but a user's first)" if args.store == "existing" else
           ", the schema created by the study (`--store fresh`: a user's first study)")
        + ". Bare Keras trains the same configurations on the same "
        f"arrays; a bare trial takes {bare_trial:.2f} s (median). Interleaving: "
        + ("each trial's bare twin runs inside the study, right before or after the trial "
           "(alternating), and its time is taken out of the study's wall time."
           if args.interleave == "trial" else
           "the whole bare loop runs after the study, or before it on odd repeats."),
        "",
        per_repeat,
        "",
        "Where the study's time goes, per repeat (exclusive times of mltune's functions, "
        "timed in-process by wrapping them; MLflow logging done from the epoch callback counts "
        "to the MLflow row, not to fit; the medians of the rows need not add up):",
        "",
        breakdown,
        "",
        derived,
        "",
        "One-time costs before the timed part (they land on neither side; a CLI run pays the "
        "imports and the data load once per process):",
        "",
        fmt_table(["warm-up", "s"], warm_rows),
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
    info = machine_info(("tensorflow", "keras", "mlflow", "optuna", "numpy", "typer"))
    print(f"{info['nproc']} cores, {info['cpu']}; Python {info['python']}, TensorFlow "
          f"{info['tensorflow']}, Keras {info['keras']}, MLflow {info['mlflow']}, Optuna "
          f"{info['optuna']}", flush=True)

    print("CLI start-up ...", flush=True)
    cli = time_cli(args.cli_repeats)

    raw = study_config(args, data.resolve())
    print("warming up ...", flush=True)
    quiet_libraries()
    warm = warm_up(args, raw)
    print(f"study vs bare Keras, {args.repeats} repeats ...", flush=True)
    pairs = run_pairs(args, raw)
    gc_info = gc_probe()

    section = render(args, argv, info, warm, pairs, cli, gc_info)
    publish(section, SECTION, None if args.no_docs else args.docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
