"""Search quality per wall-clock second: mltune's samplers against Keras Tuner 1.4.

Eight contenders tune the same CNN on the same MNIST subset under the same epoch budget:

- Keras Tuner ``RandomSearch``, ``BayesianOptimization`` and ``Hyperband``;
- mltune (in-process, through the public ``mltune.tune``) with the ``random``, ``grid`` and
  ``tpe`` samplers, and ``tpe`` with Optuna's Hyperband pruner (``study.pruner: hyperband``)
  or its successive-halving pruner (``study.pruner: successive_halving``: one bracket, so TPE
  models every trial, where under Hyperband it models each bracket's trials apart).

**Data.** ``--samples`` images of ``--data`` (``data.max_samples``; 20% held out for
validation), split by ``mltune._data.load_data`` with the fixed seed ``DATA_SEED`` for every
run, whatever the run's seed; the test split is MNIST's 10,000 test images. A run's seed only
seeds the tuner (Keras Tuner's oracle and ``keras.utils.set_random_seed``; mltune's
``study.seed``, which seeds the sampler and each trial's Keras seed; the study name, which
holds the seed, decides the brackets of Optuna's Hyperband pruner). mltune splits the data
with ``data.seed``, set to ``DATA_SEED``.

**Model and search space.** Both tools build ``mltune._model.build_model`` (mltune's
built-in CNN) from ``mltune._settings.default_settings()`` with the fixed ``TRAINING``
settings and the sampled values on top, and compile it with ``mltune._trainer.compile_model``
(the recipe mltune's trainer compiles with: the settings' optimizer, sparse categorical
cross-entropy, accuracy). The space ``SPACE`` is discrete (162 points), so grid search and
both tools express it identically (``hp.Choice`` / ``type: categorical``).
The objective is the best epoch's ``val_accuracy`` of a trial in both tools.

**Budget.** Every contender gets ``--budget-epochs`` B epochs in all and at most
``--max-epochs`` E per trial. Random, Bayesian, grid and TPE run B // E trials of E epochs.
Keras Tuner's Hyperband runs with ``max_epochs=E, factor=3`` and as many
``hyperband_iterations`` as B needs; mltune's TPE + pruning gets
``pruner_options: {min_resource: 1, max_resource: E, reduction_factor: 3}`` (successive
halving: ``{min_resource: 1, reduction_factor: 3}``) and as many
trials as it likes. The Hyperband and successive-halving contenders stop starting trials
once the epochs they have trained (counted per epoch: Keras Tuner's ``on_epoch_end``,
mltune's ``epochs_run`` trial attribute) reach B; the trial running at that moment
finishes, so they may end a little over B. The epochs actually trained are reported.

**Runs.** Seed-major (``for seed: for contender:``), so the machine's load drifts spread over
all contenders; each run is a fresh subprocess of this script (``--child``), which prints one
JSON line for the parent. A run imports its libraries and warms TensorFlow up (a tiny fit)
before its clock starts, and mltune's runs get an MLflow SQLite store whose schema exists
(as for every study but a user's first); the clock starts right before the tuner is
constructed (Keras Tuner) or ``tune()`` is called (mltune), and stops when the search
returns, so each tool's own set-up, checkpointing, MLflow logging and end-of-study report
count; loading the best model and the test evaluation do not. Keras Tuner gets the NumPy
arrays, as its users pass them; mltune feeds them through its own input pipeline. The best
validation accuracy over time is taken at each trial's end (Keras Tuner:
``Tuner.on_trial_end``; mltune: the trial's ``datetime_complete``; a pruned trial counts
with its best reported epoch).

**Figures.** Per contender: final best validation accuracy (mean ± sd over seeds), time to
reach ``--target`` validation accuracy (median over seeds; a seed that never reaches it
counts as infinite), epochs trained, trials, wall time, and the test accuracy of the best
model (Keras Tuner: ``get_best_models(1)``; mltune: the best trial's model logged to MLflow).
One PNG plots the best validation accuracy against wall time for all contenders. The two
targets of the issue get a PASS/FAIL line each, for the mltune contender ``--mine`` names
(mltune's best configuration; default TPE + successive halving).

Results go to ``bench/results/compare-<time>.json`` (with a PNG and one log per run beside
it); ``--write-docs`` also writes ``docs/images/compare.png`` and the section "Search
quality vs Keras Tuner (bench/compare.py)" of ``docs/benchmarks.md``. ``--from-results``
re-renders a results file without running anything. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import (  # bench/_common.py
    data_file,
    data_parser,
    fmt_table,
    machine_info,
    publish,
    repo_path,
)

DEFAULT_DOCS = Path("docs/benchmarks.md")
DOCS_IMAGE = Path("images/compare.png")  # relative to the docs file
RESULTS = Path(__file__).resolve().parent / "results"
SECTION = "## Search quality vs Keras Tuner (bench/compare.py)"
RESULT_MARK = "COMPARE-RESULT "
DATA_SEED = 0
VALIDATION_SPLIT = 0.2
HB_FACTOR = 3
CHILD_ENV = {"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3",
             "MLFLOW_LOGGING_LEVEL": "WARNING", "MLFLOW_DISABLE_TELEMETRY": "true",
             "DO_NOT_TRACK": "true", "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore"}

SPACE: dict[str, list[Any]] = {
    "filters": [16, 32, 48],
    "conv_blocks": [1, 2],
    "dense_units": [32, 64, 128],
    "dropout": [0.0, 0.25, 0.5],
    "learning_rate": [3e-4, 1e-3, 3e-3],
}
TRAINING: dict[str, Any] = {"optimizer": "adam", "lr_schedule": "constant", "batch_size": 64}

# name -> (label, tool, algorithm)
CONTENDERS: dict[str, tuple[str, str, str]] = {
    "kt-random": ("Keras Tuner RandomSearch", "kt", "random"),
    "kt-bayes": ("Keras Tuner BayesianOptimization", "kt", "bayes"),
    "kt-hyperband": ("Keras Tuner Hyperband", "kt", "hyperband"),
    "mltune-random": ("mltune random", "mltune", "random"),
    "mltune-grid": ("mltune grid", "mltune", "grid"),
    "mltune-tpe": ("mltune TPE", "mltune", "tpe"),
    "mltune-tpe-hyperband": ("mltune TPE + Hyperband pruning", "mltune", "tpe-hyperband"),
    "mltune-tpe-sha": ("mltune TPE + successive halving", "mltune", "tpe-sha"),
}
PRUNED = "mltune-tpe-hyperband"  # mltune's contender for the targets in results files before --mine
MINE = "mltune-tpe-sha"  # mltune's best configuration, by default
PRUNERS = {"tpe-hyperband": "hyperband", "tpe-sha": "successive_halving"}
KT_HYPERBAND = "kt-hyperband"

FULL = {"samples": 3000, "budget_epochs": 32, "max_epochs": 4, "seeds": 3, "target": 0.96}
QUICK = {"samples": 1000, "budget_epochs": 9, "max_epochs": 3, "seeds": 1, "target": 0.85}


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the ones that --quick decides (None here)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = data_parser(__doc__, None, f"data.max_samples: training + validation images "
                    f"({round(VALIDATION_SPLIT * 100)}%% validation) "
                    f"[default: {FULL['samples']}; --quick: {QUICK['samples']}]", _Help)
    p.add_argument("--budget-epochs", type=int, default=None,
                   help="epochs per run, summed over its trials "
                   f"[default: {FULL['budget_epochs']}; --quick: {QUICK['budget_epochs']}]")
    p.add_argument("--max-epochs", type=int, default=None,
                   help="epochs of a full trial (Hyperband: max resource) "
                   f"[default: {FULL['max_epochs']}; --quick: {QUICK['max_epochs']}]")
    p.add_argument("--seeds", type=int, default=None,
                   help=f"runs per contender, seeds 0..N-1 [default: {FULL['seeds']}; "
                   f"--quick: {QUICK['seeds']}]")
    p.add_argument("--contenders", default=",".join(CONTENDERS),
                   help="comma-separated subset of: " + ", ".join(CONTENDERS))
    p.add_argument("--initial-points", type=int, default=None, metavar="N",
                   help="random trials before the model-based samplers take over: Keras "
                   "Tuner BayesianOptimization's num_initial_points and TPE's n_startup_trials "
                   "(both TPE contenders) [default: each tool's own: 3 per hyperparameter = 15, "
                   "and 10]")
    p.add_argument("--pruner-options", type=json.loads, default={}, metavar="JSON",
                   help="added to the pruner_options of the mltune contenders with a pruner "
                   "(tpe-hyperband, tpe-sha), e.g. '{\"bootstrap_count\": 2}' (Optuna's "
                   "SuccessiveHalvingPruner: the first 2 trials to reach each rung stop "
                   "there, so the first trials do not all train to the end)")
    p.add_argument("--mine", default=None, choices=[
                       c for c, (_, tool, _) in CONTENDERS.items() if tool == "mltune"],
                   help="the mltune contender the two targets are checked for (mltune's best "
                   "configuration); it must be among --contenders [default: mltune-tpe-sha "
                   "when it runs, else the first mltune contender of --contenders]")
    p.add_argument("--target", type=float, default=None,
                   help="validation accuracy for the time-to-target figure "
                   f"[default: {FULL['target']}; --quick: {QUICK['target']}; with "
                   "--from-results: the file's]")
    p.add_argument("--quick", action="store_true",
                   help="smoke-test size (2-3 minutes for all eight contenders); explicit "
                   "options still win")
    p.add_argument("--write-docs", action="store_true",
                   help=f"write the section of --docs and the plot next to it "
                   f"(docs/{DOCS_IMAGE})")
    p.add_argument("--docs", type=Path, default=DEFAULT_DOCS,
                   help="markdown file whose section is (re)written with --write-docs; "
                   "relative to the repo root")
    p.add_argument("--from-results", type=Path, default=None, metavar="JSON",
                   help="re-render (and with --write-docs publish) a results file of an "
                   "earlier run instead of running anything")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    size = QUICK if args.quick else FULL
    for key, value in size.items():
        if getattr(args, key) is None and not (key == "target" and args.from_results):
            setattr(args, key, value)
    args.contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = [c for c in args.contenders if c not in CONTENDERS]
    if unknown:
        p.error(f"unknown contender(s) {', '.join(unknown)}; known: {', '.join(CONTENDERS)}")
    if args.mine is None:
        mine = [c for c in args.contenders if CONTENDERS[c][1] == "mltune"]
        args.mine = MINE if MINE in mine else (mine[0] if mine else None)
    elif args.child is None and args.from_results is None and args.mine not in args.contenders:
        p.error(f"--mine {args.mine} is not among --contenders")
    if args.max_epochs < 1 or args.budget_epochs < args.max_epochs:
        p.error("need 1 <= --max-epochs <= --budget-epochs")
    return args


def data_path(args: argparse.Namespace) -> Path:
    return repo_path(args.data).resolve()


def study_dict(args: argparse.Namespace, sampler: str, seed: int) -> dict[str, Any]:
    """The mltune study file of one run, as a dict (also where the data split comes from)."""
    study: dict[str, Any] = {"name": f"compare-{sampler}-{seed}", "sampler": sampler,
                             "seed": seed, "metric": "val_accuracy",
                             "n_trials": args.budget_epochs // args.max_epochs}
    return {
        "study": study,
        "data": {"source": str(data_path(args)), "max_samples": args.samples,
                 "validation_split": VALIDATION_SPLIT, "seed": DATA_SEED},
        "training": {**TRAINING, "epochs": args.max_epochs},
        "search_space": {k: {"type": "categorical", "choices": v} for k, v in SPACE.items()},
    }


def hyperband_epochs_per_iteration(max_epochs: int, factor: int = HB_FACTOR) -> int:
    """Epochs one Keras Tuner Hyperband iteration trains (its oracle's bracket formulas; a
    trial of a later round resumes from its parent's checkpoint)."""
    brackets, e = 0, float(max_epochs)
    while e >= 1:
        e, brackets = e / factor, brackets + 1
    end_size = math.ceil(1 + math.log(max_epochs, factor))
    total = 0
    for b in range(brackets):
        previous = 0
        for r in range(b + 1):
            size = math.ceil(end_size / (b + 1) * factor ** (b - r))
            epochs = math.ceil(max_epochs / factor ** (b - r))
            total += size * (epochs - previous)
            previous = epochs
    return total


# -- child: one contender, one seed ------------------------------------------------------------
def quiet_libraries() -> None:
    import logging

    warnings.filterwarnings("ignore")
    for name in ("optuna", "mlflow", "alembic", "absl", "tensorflow", "keras", "keras_tuner"):
        logging.getLogger(name).setLevel(logging.ERROR)


def warm_up_tensorflow() -> None:
    """TensorFlow's start-up and first graph, paid before the clock by both tools."""
    import keras
    import numpy as np

    from mltune._model import build_model
    from mltune._settings import default_settings
    from mltune._trainer import compile_model

    x = np.zeros((64, 28, 28, 1), dtype=np.uint8)
    y = np.zeros(64, dtype=np.int64)
    model = build_model(default_settings(), input_shape=(28, 28, 1), num_classes=10)
    compile_model(model, default_settings())
    model.fit(x, y, batch_size=32, epochs=1, validation_data=(x, y), verbose=0)
    keras.backend.clear_session()


def load_split(args: argparse.Namespace) -> Any:
    from mltune._config import parse_config
    from mltune._data import load_data

    config = parse_config(study_dict(args, "random", DATA_SEED), source="bench/compare.py")
    return load_data(config.data, seed=DATA_SEED)


def best_so_far(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(seconds, value) at each trial end -> (seconds, best value so far), time-sorted."""
    out: list[tuple[float, float]] = []
    best = -math.inf
    for t, v in sorted(points):
        if v is not None and math.isfinite(v) and v > best:
            best = v
        out.append((t, best))
    return [(t, b) for t, b in out if math.isfinite(b)]


def run_kt(args: argparse.Namespace, algorithm: str, seed: int, folder: Path) -> dict[str, Any]:
    import keras
    import keras_tuner as kt

    from mltune._model import build_model
    from mltune._settings import default_settings
    from mltune._trainer import compile_model

    data = load_split(args)
    steps = math.ceil(len(data.x_train) / TRAINING["batch_size"])
    budget, max_epochs = args.budget_epochs, args.max_epochs

    def build(hp: Any) -> keras.Model:
        settings = default_settings() | TRAINING | {"epochs": max_epochs}
        settings |= {name: hp.Choice(name, values) for name, values in SPACE.items()}
        model = build_model(settings, input_shape=data.input_shape,
                            num_classes=data.num_classes, pixel_max=data.pixel_max)
        compile_model(model, settings, steps_per_epoch=steps)  # as mltune's trainer compiles
        return model

    details: list[dict[str, Any]] = []
    epochs = [0]
    t0 = [0.0]
    began: dict[str, tuple[float, int]] = {}  # trial id -> (start, epochs trained before)

    def mixin(base: type) -> type:
        class Timed(base):  # type: ignore[valid-type,misc]
            def on_trial_begin(self, trial: Any) -> None:
                began[trial.trial_id] = (time.perf_counter() - t0[0], epochs[0])
                super().on_trial_begin(trial)

            def on_epoch_end(self, trial: Any, model: Any, epoch: int, logs: Any = None) -> None:
                super().on_epoch_end(trial, model, epoch, logs)
                epochs[0] += 1

            def on_trial_end(self, trial: Any) -> None:
                super().on_trial_end(trial)
                score = self.oracle.trials[trial.trial_id].score
                end = time.perf_counter() - t0[0]
                value = float(score) if score is not None else math.nan
                start, before = began.get(trial.trial_id, (end, epochs[0]))
                values = trial.hyperparameters.values
                # A Hyperband trial of a later round resumes its parent's checkpoint.
                details.append({"start": start, "end": end, "value": value,
                                "epochs": epochs[0] - before,
                                "from_scratch": not values.get("tuner/trial_id")})
                if epochs[0] >= budget:  # the oracle starts no further trial
                    self.oracle.max_trials = len(self.oracle.trials)
        return Timed

    common: dict[str, Any] = {"objective": "val_accuracy", "seed": seed, "overwrite": True,
                              "directory": str(folder), "project_name": algorithm}
    keras.utils.set_random_seed(seed)
    t0[0] = time.perf_counter()
    if algorithm == "random":
        tuner = mixin(kt.RandomSearch)(build, max_trials=budget // max_epochs, **common)
    elif algorithm == "bayes":
        tuner = mixin(kt.BayesianOptimization)(build, max_trials=budget // max_epochs,
                                               num_initial_points=args.initial_points, **common)
    else:
        iterations = max(1, math.ceil(budget / hyperband_epochs_per_iteration(max_epochs)))
        tuner = mixin(kt.Hyperband)(build, max_epochs=max_epochs, factor=HB_FACTOR,
                                    hyperband_iterations=iterations, **common)
    tuner.search(data.x_train, data.y_train, epochs=max_epochs,
                 batch_size=TRAINING["batch_size"], validation_data=(data.x_val, data.y_val),
                 verbose=0)
    wall = time.perf_counter() - t0[0]

    best_trial = tuner.oracle.get_best_trials(1)[0]
    model = tuner.get_best_models(1)[0]
    test = model.evaluate(data.x_test, data.y_test, batch_size=256, verbose=0,
                          return_dict=True)
    states: dict[str, int] = {}
    for t in tuner.oracle.trials.values():
        states[str(t.status)] = states.get(str(t.status), 0) + 1
    return {
        "wall": wall, "details": details, "epochs": epochs[0],
        "trials": len(details), "states": states,
        "best_params": {k: best_trial.hyperparameters.values[k] for k in SPACE},
        "best_model_val": float(best_trial.score), "test_accuracy": float(test["accuracy"]),
        "hyperband_iterations": iterations if algorithm == "hyperband" else None,
    }


def trial_epochs(trial: Any, max_epochs: int) -> int:
    """Epochs a finished trial trained: mltune's ``epochs_run`` attribute, or else the
    epochs it reported, or else (a complete trial without either) ``max_epochs``."""
    from mltune._names import Attr

    if Attr.EPOCHS in trial.user_attrs:
        return int(trial.user_attrs[Attr.EPOCHS])
    if trial.intermediate_values:
        return len(trial.intermediate_values)
    return max_epochs if trial.state.name == "COMPLETE" else 0


def run_mltune(args: argparse.Namespace, algorithm: str, seed: int, folder: Path
               ) -> dict[str, Any]:
    import mlflow
    import mlflow.keras
    import optuna
    from mlflow.tracking import MlflowClient

    import mltune
    from mltune._names import Attr

    raw = study_dict(args, "tpe" if algorithm in PRUNERS else algorithm, seed)
    if algorithm.startswith("tpe") and args.initial_points is not None:
        raw["study"]["sampler_options"] = {"n_startup_trials": args.initial_points}
    kwargs: dict[str, Any] = {}
    budget, max_epochs = args.budget_epochs, args.max_epochs
    if algorithm in PRUNERS:
        options: dict[str, Any] = {"min_resource": 1, "reduction_factor": HB_FACTOR}
        if algorithm == "tpe-hyperband":
            options["max_resource"] = max_epochs
        options |= args.pruner_options
        raw["study"] |= {"pruner": PRUNERS[algorithm], "n_trials": 10 * budget,
                         "pruner_options": options}

        def stop_at_budget(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            done = study.get_trials(deepcopy=False, states=(
                optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                optuna.trial.TrialState.FAIL))
            if sum(trial_epochs(t, max_epochs) for t in done) >= budget:
                study.stop()

        kwargs["trial_callbacks"] = (stop_at_budget,)
    data = load_split(args)  # cached in-process: tune() gets it without loading again
    storage = str(folder / "journal.log")
    tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
    # An existing tracking store, as for every study but a user's first: its schema is made
    # before the clock starts (as bench/overhead.py does by default).
    MlflowClient(tracking_uri).search_experiments()

    start_epoch = time.time()
    t0 = time.perf_counter()
    result = mltune.tune(raw, storage=storage, tracking_uri=tracking_uri, progress=False,
                         **kwargs)
    wall = time.perf_counter() - t0

    study = mltune.load_study(result.study_name, storage)
    details: list[dict[str, Any]] = []
    epochs = 0
    states: dict[str, int] = {}
    for t in study.trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
        epochs += trial_epochs(t, max_epochs)
        if t.datetime_complete is None:
            continue
        if t.state.name == "COMPLETE":
            value = t.value
        elif t.state.name == "PRUNED" and t.intermediate_values:
            value = max(t.intermediate_values.values())
        else:
            value = math.nan
        end = t.datetime_complete.timestamp() - start_epoch
        start = t.datetime_start.timestamp() - start_epoch if t.datetime_start else end
        details.append({"start": start, "end": end, "value": float(value),
                        "epochs": trial_epochs(t, max_epochs), "from_scratch": True})

    run = {"wall": wall, "details": details, "epochs": epochs,
           "trials": len(details), "states": states, "best_params": {},
           "best_model_val": math.nan, "test_accuracy": math.nan}
    if not states.get("COMPLETE"):  # a budget spent on pruned trials only: no model logged
        return run
    best = study.best_trial
    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.keras.load_model(best.user_attrs[Attr.MODEL_URI])
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    test = model.evaluate(data.x_test, data.y_test, batch_size=256, verbose=0,
                          return_dict=True)
    return run | {"best_params": dict(best.params), "best_model_val": float(best.value),
                  "test_accuracy": float(test["accuracy"])}


def child(args: argparse.Namespace) -> int:
    """One run: prints its result as one JSON line after RESULT_MARK."""
    quiet_libraries()
    name, seed = args.child, args.seed
    _, tool, algorithm = CONTENDERS[name]
    if tool == "kt":
        import keras_tuner  # noqa: F401
    else:
        import mlflow.keras  # noqa: F401
        import optuna  # noqa: F401
    warm_up_tensorflow()
    load_split(args)
    with tempfile.TemporaryDirectory(prefix=f"compare-{name}-") as folder:
        run = (run_kt if tool == "kt" else run_mltune)(args, algorithm, seed, Path(folder))
    data = load_split(args)
    curve = best_so_far([(d["end"], d["value"]) for d in run["details"]])
    run |= {"contender": name, "seed": seed, "curve": curve,
            "n_train": len(data.x_train), "n_val": len(data.x_val), "n_test": len(data.x_test)}
    run["final_best"] = run["curve"][-1][1] if run["curve"] else None
    print(RESULT_MARK + json.dumps(run), flush=True)
    return 0


# -- parent: all runs -----------------------------------------------------------------------------
def run_child(args: argparse.Namespace, name: str, seed: int, log: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--seed", str(seed),
           "--data", str(data_path(args)), "--samples", str(args.samples),
           "--budget-epochs", str(args.budget_epochs), "--max-epochs", str(args.max_epochs)]
    if args.initial_points is not None:
        cmd += ["--initial-points", str(args.initial_points)]
    if args.pruner_options:
        cmd += ["--pruner-options", json.dumps(args.pruner_options)]
    env = os.environ | CHILD_ENV
    load = os.getloadavg()[0]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="compare-cwd-") as cwd:
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    log.write_text(f"$ {' '.join(cmd)}\n# exit {done.returncode}\n{done.stdout}\n"
                   f"# stderr\n{done.stderr}", encoding="utf-8")
    lines = [s for s in done.stdout.splitlines() if s.startswith(RESULT_MARK)]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"contender": name, "seed": seed, "error": f"exit {done.returncode}: {tail}",
                "log": str(log), "process_seconds": elapsed, "load_before": load}
    run = json.loads(lines[-1][len(RESULT_MARK):])
    run |= {"log": str(log), "process_seconds": elapsed, "load_before": load}
    return run


def run_all(args: argparse.Namespace, out: Path, doc: dict[str, Any]) -> None:
    logs = out.with_suffix("")
    logs.mkdir(parents=True, exist_ok=True)
    total = len(args.contenders) * args.seeds
    start = time.perf_counter()
    for seed in range(args.seeds):
        for name in args.contenders:
            n = len(doc["runs"]) + 1
            print(f"[{n}/{total}] {name} seed {seed} ...", end=" ", flush=True)
            run = run_child(args, name, seed, logs / f"{name}-seed{seed}.log")
            doc["runs"].append(run)
            out.write_text(json.dumps(doc, indent=1), encoding="utf-8")
            if "error" in run:
                print(f"FAILED ({run['error']}; see {run['log']})", flush=True)
            else:
                print(f"best val {run['final_best']:.4f}, test {run['test_accuracy']:.4f}, "
                      f"{run['epochs']} epochs in {run['trials']} trials, search "
                      f"{run['wall']:.0f} s (process {run['process_seconds']:.0f} s)",
                      flush=True)
    doc["total_seconds"] = time.perf_counter() - start
    out.write_text(json.dumps(doc, indent=1), encoding="utf-8")


# -- figures --------------------------------------------------------------------------------------
def reached(value: float, target: float) -> bool:
    # Accuracies are float32 fractions of the validation set: 576/600 is 0.95999998.
    return value >= target - 1e-6


def time_to(curve: list[list[float]], target: float) -> float:
    return next((t for t, v in curve if reached(v, target)), math.inf)


def floor(run: dict[str, Any], target: float) -> float:
    """The time to ``target`` of a tuner whose first trial is the cheapest configuration
    that reached it in ``run``: the run's set-up (search start to its first trial's start)
    plus that trial's duration, from scratch (a resumed Keras Tuner Hyperband trial does
    not count). Infinite where no trial reached it; NaN for results without trial
    details (older files)."""
    details = run.get("details")
    if not details:
        return math.nan
    setup = min(d["start"] for d in details)
    durations = [d["end"] - d["start"] for d in details
                 if d["from_scratch"] and reached(d["value"], target)]
    return setup + min(durations) if durations else math.inf


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def summarize(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    target = doc["settings"]["target"]
    out: dict[str, dict[str, Any]] = {}
    for name in doc["settings"]["contenders"]:
        runs = [r for r in doc["runs"] if r["contender"] == name and "error" not in r]
        failed = [r for r in doc["runs"] if r["contender"] == name and "error" in r]
        finals = [r["final_best"] for r in runs if r["final_best"] is not None]
        ttt = [time_to(r["curve"], target) for r in runs]
        floors = [f for f in (floor(r, target) for r in runs) if not math.isnan(f)]
        out[name] = {
            "runs": runs, "failed": len(failed), "finals": finals,
            "final_mean": statistics.fmean(finals) if finals else math.nan,
            "final_sd": statistics.stdev(finals) if len(finals) > 1 else 0.0,
            "ttt": ttt, "ttt_median": _median(ttt), "reached": sum(math.isfinite(t) for t in ttt),
            "floor_median": _median(floors),
            "epochs": _median([r["epochs"] for r in runs]),
            "trials": _median([r["trials"] for r in runs]),
            "wall": _median([r["wall"] for r in runs]),
            "test": [r["test_accuracy"] for r in runs],
        }
    return out


def verdicts(doc: dict[str, Any], summary: dict[str, dict[str, Any]]) -> list[str]:
    target = doc["settings"]["target"]
    lines = []
    name = doc["settings"].get("mine", PRUNED) or PRUNED
    mine, theirs = summary.get(name), summary.get(KT_HYPERBAND)
    if mine and theirs and mine["runs"] and theirs["runs"]:
        a, b = mine["ttt_median"], theirs["ttt_median"]
        ok = math.isfinite(a) and a <= 0.5 * b
        ratio = (f"ratio {a / b:.2f}x" if math.isfinite(a) and math.isfinite(b) else
                 "Keras Tuner Hyperband never reached it" if math.isfinite(a) else "ratio n/a")
        lines.append(
            f"- **Target 1, time to {target:.3f} validation accuracy: {'PASS' if ok else 'FAIL'}."
            f"** {CONTENDERS[name][0]}: {_secs(a)} (median; {mine['reached']}/"
            f"{len(mine['runs'])} seeds reached it) vs {CONTENDERS[KT_HYPERBAND][0]}: {_secs(b)} "
            f"({theirs['reached']}/{len(theirs['runs'])}); {ratio}, needed <= 0.50x. "
            f"(Keras Tuner Hyperband's whole search took {theirs['wall']:.0f} s, median.)")
        f = mine["floor_median"]
        if math.isfinite(b) and not math.isnan(f):
            lines.append(
                f"- Floor of target 1: a tuner whose first trial were the cheapest "
                f"configuration that reached {target:.3f} in the same run would reach it at "
                f"{_secs(f)} (median over {CONTENDERS[name][0]}'s seeds: its set-up plus that "
                f"one trial), {f / b:.2f}x Keras Tuner Hyperband's median.")
    else:
        lines.append("- Target 1 (time to target): not measured; it needs both "
                     f"{name} and {KT_HYPERBAND}.")
    kts = {n: s for n, s in summary.items() if CONTENDERS[n][1] == "kt" and s["runs"]}
    if mine and mine["runs"] and kts:
        best_kt = max(kts, key=lambda n: kts[n]["final_mean"])
        a, b = mine["final_mean"], kts[best_kt]["final_mean"]
        ok = a >= b
        lines.append(
            f"- **Target 2, final best validation accuracy: {'PASS' if ok else 'FAIL'}.** "
            f"{CONTENDERS[name][0]}: {a:.4f} ± {mine['final_sd']:.4f} vs the best Keras Tuner "
            f"tuner ({CONTENDERS[best_kt][0]}): {b:.4f} ± {kts[best_kt]['final_sd']:.4f} "
            f"(mean ± sd over seeds; difference {a - b:+.4f}, i.e. "
            f"{(a - b) * doc['settings']['n_val']:+.1f} validation images).")
    else:
        lines.append(f"- Target 2 (final best): not measured; it needs {name} and at least "
                     "one Keras Tuner contender.")
    return lines


def _secs(t: float) -> str:
    return f"{t:.0f} s" if math.isfinite(t) else "never"


def _ttt_cell(s: dict[str, Any]) -> str:
    n = len(s["runs"])
    if not n:
        return "-"
    shown = _secs(s["ttt_median"])
    return f"{shown} ({s['reached']}/{n})"


def results_table(doc: dict[str, Any], summary: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, s in summary.items():
        if not s["runs"]:
            rows.append([CONTENDERS[name][0], f"all {s['failed']} runs failed", "", "", "", "",
                         "", ""])
            continue
        test = s["test"]
        rows.append([
            CONTENDERS[name][0],
            f"{s['final_mean']:.4f} ± {s['final_sd']:.4f}",
            _ttt_cell(s),
            f"{s['epochs']:.0f}",
            f"{s['trials']:.0f}",
            f"{s['wall']:.0f}",
            f"{statistics.fmean(test):.4f}" + (f" ({min(test):.4f}-{max(test):.4f})"
                                              if len(test) > 1 else ""),
            str(s["failed"]) if s["failed"] else "",
        ])
    target = doc["settings"]["target"]
    return fmt_table(["contender", "final best val acc (mean ± sd)",
                      f"time to val acc >= {target:.3f} (median, seeds reached)",
                      "epochs (median)", "trials (median)", "search wall s (median)",
                      "test acc of best model (mean, range)", "failed runs"], rows)


def per_run_table(doc: dict[str, Any]) -> str:
    target = doc["settings"]["target"]
    rows = []
    for r in doc["runs"]:
        if "error" in r:
            rows.append([r["contender"], str(r["seed"]), "FAILED", "", "", "", "", "", "", ""])
            continue
        least = floor(r, target)
        rows.append([r["contender"], str(r["seed"]), f"{r['final_best']:.4f}",
                     _secs(time_to(r["curve"], target)),
                     "" if math.isnan(least) else _secs(least), str(r["epochs"]), str(r["trials"]),
                     f"{r['wall']:.0f}", f"{r['test_accuracy']:.4f}",
                     f"{r['load_before']:.1f}"])
    return fmt_table(["contender", "seed", "best val acc", "time to target",
                      "floor (set-up + cheapest trial to target)", "epochs", "trials",
                      "search s", "test acc", "load avg before"], rows)


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(10, 6))
    colors = {"kt-random": "#9ecae1", "kt-bayes": "#4292c6", "kt-hyperband": "#08306b",
              "mltune-random": "#fdae6b", "mltune-grid": "#a1d99b",
              "mltune-tpe": "#e6550d", "mltune-tpe-hyperband": "#a50f15",
              "mltune-tpe-sha": "#54278f"}
    lows, finals = [], []
    for name in doc["settings"]["contenders"]:
        runs = [r for r in doc["runs"] if r["contender"] == name and "error" not in r and
                r["curve"]]
        if not runs:
            continue
        color = colors.get(name, "gray")
        style = "--" if CONTENDERS[name][1] == "kt" else "-"
        for r in runs:
            t, v = zip(*r["curve"], strict=True)
            ax.step([*t, r["wall"]], [*v, v[-1]], where="post", color=color, lw=0.7,
                    alpha=0.5, ls=style)
            lows.append(min(v))
            finals.append(v[-1])
        end = max(r["wall"] for r in runs)
        grid = np.linspace(0, end, 400)
        mean = []
        for x in grid:
            values = [max((v for t, v in r["curve"] if t <= x), default=math.nan) for r in runs]
            mean.append(math.nan if any(math.isnan(v) for v in values) else
                        statistics.fmean(values))
        ax.plot(grid, mean, color=color, lw=2.2, ls=style,
                label=f"{CONTENDERS[name][0]} (mean of {len(runs)})")
    target = doc["settings"]["target"]
    ax.axhline(target, color="black", lw=0.8, ls=":", label=f"target {target:.3f}")
    if lows:  # the target and every run's end in view; the early, low trials may be cut
        bottom = max(min(lows) - 0.005, min(*finals, target) - 0.02)
        ax.set_ylim(bottom, max(*finals, target) + 0.005)
    ax.set_xlim(left=0)
    s = doc["settings"]
    ax.set_xlabel("wall-clock seconds since the search started")
    ax.set_ylabel("best validation accuracy so far")
    ax.set_title(f"MNIST, {s['n_train']} train / {s['n_val']} val images, budget "
                 f"{s['budget_epochs']} epochs (<= {s['max_epochs']} per trial), "
                 f"{s['seeds']} seed(s); thin: single seeds")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(doc: dict[str, Any], image: str) -> str:
    s, info = doc["settings"], doc["machine"]
    summary = summarize(doc)
    per_iter = hyperband_epochs_per_iteration(s["max_epochs"])
    space = ", ".join(f"{k} {{{', '.join(f'{v:g}' for v in vals)}}}" for k, vals in SPACE.items())
    total = doc.get("total_seconds")
    took = f" The whole run took {total / 60:.1f} minutes." if total else ""
    loads = [r["load_before"] for r in doc["runs"]]
    return "\n".join([
        SECTION,
        "",
        f"Measured {info['date']} on {info['nproc']} cores ({info['cpu']}), {info['os']}; "
        f"Python {info['python']}, TensorFlow {info['tensorflow']}, Keras {info['keras']}, "
        f"Keras Tuner {info['keras-tuner']}, Optuna {info['optuna']}, MLflow {info['mlflow']}; "
        f"mltune at {info['commit']}. No GPU. The machine is shared (1-minute load average "
        f"before the runs: {min(loads):.1f} to {max(loads):.1f}), so wall times are noisy."
        + took,
        "",
        "Re-run from the repository root (see bench/README.md for the reduced size):",
        "",
        "```sh",
        doc["command"],
        "```",
        "",
        *verdicts(doc, summary),
        "",
        f"MNIST subset: `data.max_samples: {s['samples']}` ({s['n_train']} training, "
        f"{s['n_val']} validation images, one split for all runs), tested on the "
        f"{s['n_test']} MNIST test images. Search space (162 points, categorical in both "
        f"tools): {space}; Adam, constant learning rate, batch size {TRAINING['batch_size']}. "
        f"Budget {s['budget_epochs']} epochs per run, at most {s['max_epochs']} per trial: "
        f"random, Bayesian, grid and TPE run {s['budget_epochs'] // s['max_epochs']} trials of "
        f"{s['max_epochs']} epochs; Keras Tuner Hyperband (factor {HB_FACTOR}, {per_iter} "
        f"epochs per Hyperband iteration) and mltune TPE + Hyperband pruning or successive "
        f"halving (min_resource 1, reduction_factor {HB_FACTOR}"
        + "".join(f", {k} {v}" for k, v in (s.get("pruner_options") or {}).items())
        + ") start trials until "
        f"{s['budget_epochs']} epochs are spent. The targets are checked for "
        f"{CONTENDERS[s.get('mine', PRUNED) or PRUNED][0]} (`--mine`). Seeds "
        f"0-{s['seeds'] - 1}, run seed-major, each run a fresh process. "
        + initial_points(s) +
        "Time is measured from the start of the search (tuner construction / `tune()`), "
        "after imports, data loading, a TensorFlow warm-up and (mltune) the creation of the "
        "MLflow SQLite store's schema; it includes each tool's checkpointing and logging "
        "(mltune: an MLflow run per trial, the models that beat the best so far, the "
        "end-of-study report); Keras Tuner gets the NumPy arrays, mltune feeds its own "
        "input pipeline. The best model's test evaluation is not timed.",
        "",
        results_table(doc, summary),
        "",
        f"![best validation accuracy vs wall time]({image})",
        "",
        "Per run:",
        "",
        per_run_table(doc),
        "",
    ])


def initial_points(s: dict[str, Any]) -> str:
    n = s.get("initial_points")
    if n is not None:
        return (f"Keras Tuner BayesianOptimization and TPE start with {n} random trials "
                "(`--initial-points`). ")
    trials, kt_random = s["budget_epochs"] // s["max_epochs"], 3 * len(SPACE)
    text = ("The samplers run with their defaults: Keras Tuner BayesianOptimization samples "
            f"{kt_random} random points first, Optuna's TPE 10")
    if trials <= 10:
        return text + f", so with {trials} full trials both are random search. "
    if trials <= kt_random:
        return text + (f", so with {trials} full trials BayesianOptimization is random search "
                       f"and TPE models only the last {trials - 10}. ")
    return text + ". "


def finish(args: argparse.Namespace, doc: dict[str, Any], out: Path) -> None:
    png = out.with_suffix(".png")
    plot(doc, png)
    print(f"wrote {out} and {png}")
    docs = None
    image = png.name
    if args.write_docs:
        docs = repo_path(args.docs)
        target = docs.parent / DOCS_IMAGE
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, target)
        image = DOCS_IMAGE.as_posix()
        print(f"wrote {target}")
    publish(render(doc, image), SECTION, docs)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.child:
        return child(args)
    if args.from_results:
        doc = json.loads(args.from_results.read_text(encoding="utf-8"))
        if args.target is not None:
            doc["settings"]["target"] = args.target
        finish(args, doc, args.from_results.resolve())
        return 0
    if data_file(args.data) is None:
        return 2
    os.environ |= CHILD_ENV  # for the data split below and for matplotlib/TF imports
    info = machine_info(("tensorflow", "keras", "keras-tuner", "optuna", "mlflow", "numpy"))
    quiet_libraries()
    split = load_split(args)
    runs = len(args.contenders) * args.seeds
    print(f"{info['nproc']} cores, {info['cpu']}; {runs} runs: {', '.join(args.contenders)} x "
          f"{args.seeds} seed(s); {len(split.x_train)} train / {len(split.x_val)} val images, "
          f"budget {args.budget_epochs} epochs, <= {args.max_epochs} per trial", flush=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"compare-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "command": " ".join(["python", "bench/compare.py", *argv]),
        "machine": info,
        "settings": {"samples": args.samples, "budget_epochs": args.budget_epochs,
                     "max_epochs": args.max_epochs, "seeds": args.seeds,
                     "contenders": args.contenders,
                     "target": args.target, "mine": args.mine,
                     "initial_points": args.initial_points,
                     "pruner_options": args.pruner_options,
                     "data": str(args.data), "data_seed": DATA_SEED,
                     "n_train": len(split.x_train), "n_val": len(split.x_val),
                     "n_test": len(split.x_test), "space": SPACE, "training": TRAINING},
        "runs": [],
    }
    run_all(args, out, doc)
    finish(args, doc, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
