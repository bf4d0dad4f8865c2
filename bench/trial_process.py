"""What a process per trial costs: the same trials through ``mltune.tune`` with
``trial_process="fork"`` (the default on Linux), with ``trial_process="none"``, and in a bare
Keras loop, side by side in one run.

Three arms, each run in a fresh process of this script (``--arm ARM``, which hands its figures
back as JSON), because a process that has run a TensorFlow op cannot fork trials safely (mltune
then trains in-process and prints ``note: trials train in this process``; the fork arm checks
for that line and fails if it appears):

- ``fork``: ``mltune.tune(study_dict, storage=..., tracking_uri=..., progress=False,
  trial_process="fork")``: the study's process never runs a TensorFlow op; each trial is a
  child process forked from it, which builds and fits one model and exits.
- ``none``: the same call with ``trial_process="none"``: every trial trains in the study's
  process (``clear_session`` after each).
- ``bare``: Keras alone, in one process: for configuration i, ``keras.utils.set_random_seed(
  seed + i)`` (mltune seeds trial i so), ``mltune._model.build_model`` (the built-in CNN),
  ``mltune._trainer.compile_model`` (mltune's compile recipe), ``model.fit(x, y, batch_size=...,
  epochs=..., validation_data=..., verbose=0)`` on the NumPy arrays, ``keras.backend.
  clear_session()``.

The same configurations in all arms: this process (which imports neither TensorFlow nor Keras)
draws ``--trials`` configurations once, with a seeded Optuna ``RandomSampler`` over the search
space (learning_rate 3e-4..3e-3 log, filters 16/32, batch_size 64/128), and hands them to
each arm. The mltune arms create the study (``direction="maximize"``) in their journal file
first and enqueue the configurations (``study.enqueue_trial``), so ``mltune.tune``, which
resumes a study by name, runs exactly those, in that order, as trials 0..n-1. The data is the
same everywhere: MNIST (``data.source``), ``data.max_samples`` ``--samples``, 10% validation,
split by mltune's loader with the study's seed; the bare arm loads it with the same function
(``mltune._data.load_data``). The built-in CNN, ``--epochs`` epochs, Adam, constant learning
rate. Each arm runs its study in a new temporary folder (the current folder while it runs:
MLflow writes ``./mlruns`` there) with an Optuna journal file and an MLflow SQLite store; the
progress lines of ``tune`` are captured (and searched for the fallback note).

Each of ``--repeats`` repeats runs the three arms one after the other, the order rotated each
repeat (fork, none, bare; then none, bare, fork; then bare, fork, none; ...), so that the drift
of a shared machine hits all arms alike.

Figures per arm and repeat:

- **trial phase**: mltune arms: from the first trial's ``datetime_start`` to the last trial's
  ``datetime_complete`` (Optuna's timestamps, read with ``mltune.load_study``); it holds the
  trials and what runs between them (mltune's after-trial callbacks), not the study's set-up
  nor its end-of-study report. Bare: from the first ``set_random_seed`` to the end of the last
  ``clear_session``. Per trial = trial phase / trials.
- **fits**: mltune arms: the sum of the ``train_seconds`` metric of each trial's MLflow run
  (mltune's input pipeline + ``model.fit``; read with ``MlflowClient``); bare: the sum of the
  ``model.fit`` times. Outside fits = trial phase - fits (the forks, building, compiling,
  MLflow, Optuna, clearing).
- **RSS growth** of the study's process from after trial 1 to after the last trial
  (``/proc/self/statm``, sampled by an Optuna callback, ``tune(trial_callbacks=[cb])``; in the
  fork arm that is the parent process, which trains nothing); bare: the arm's process, after
  each ``clear_session``.
- **child peak** (fork arm): the largest peak RSS of a trial's process,
  ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` after ``tune`` returned.
- **arm wall**: the arm's whole process (Python, imports, data, study, report), timed by this
  process around it.

Reported: medians over the repeats of the per-trial seconds, of the per-repeat ratios of the
trial phases (fork / none, fork / bare) and of the overheads against bare ((arm - bare) /
bare; target for fork: at most 2%), the RSS growth, the child peak, then every repeat's
figures. Run from the repository root, e.g.::

    /work/venv/bin/python bench/trial_process.py                  # 3 repeats, 8 trials each
    /work/venv/bin/python bench/trial_process.py --repeats 1 --trials 2 --samples 1000 --epochs 1
    /work/venv/bin/python bench/trial_process.py --write-docs

``--write-docs`` writes the section "A process per trial (bench/trial_process.py)" of
``docs/benchmarks.md`` (other sections are kept).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
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
    quiet_libraries,
    rss_bytes,
    working_dir,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

DOCS = Path("docs/benchmarks.md")
SECTION = "## A process per trial (bench/trial_process.py)"
ARMS = ("fork", "none", "bare")
TARGET_PCT = 2.0  # fork's overhead against the bare loop
FALLBACK = "note: trials train in this process"
STUDY_NAME = "bench-trial-process"
VALIDATION_SPLIT = 0.1
MB = 1024 * 1024
SEARCH_SPACE: dict[str, dict[str, Any]] = {
    "learning_rate": {"type": "float", "low": 3e-4, "high": 3e-3, "log": True},
    "filters": {"type": "categorical", "choices": [16, 32]},
    "batch_size": {"type": "categorical", "choices": [64, 128]},
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = data_parser(__doc__, 8000,
                    "data.max_samples: training + validation images taken from MNIST's "
                    "training set (10%% validation)")
    p.add_argument("--trials", type=int, default=8,
                   help="configurations (trials) per arm and repeat")
    p.add_argument("--epochs", type=int, default=2, help="epochs per trial")
    p.add_argument("--repeats", type=int, default=3,
                   help="repeats of the three arms, their order rotated each repeat")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the configurations' sampler, study.seed (data split, Keras "
                   "seeds: seed + trial number)")
    p.add_argument("--write-docs", action="store_true",
                   help=f"write the section into {DOCS} (else print only)")
    # This script's own child processes, one per arm and repeat.
    p.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    p.add_argument("--configs-json", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result-json", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.trials < 1 or args.repeats < 1 or args.epochs < 1:
        p.error("--trials, --repeats and --epochs must be at least 1")
    if args.arm is not None and (args.configs_json is None or args.result_json is None):
        p.error("--arm needs --configs-json and --result-json")
    return args


# -- the configurations (this process: no TensorFlow, no Keras) ------------------------------
def draw_configs(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` points of the search space, drawn once by a seeded Optuna ``RandomSampler``."""
    import optuna
    from optuna.distributions import (
        BaseDistribution,
        CategoricalDistribution,
        FloatDistribution,
    )

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists: dict[str, BaseDistribution] = {}
    for name, spec in SEARCH_SPACE.items():
        if spec["type"] == "float":
            dists[name] = FloatDistribution(spec["low"], spec["high"], log=spec["log"])
        else:
            dists[name] = CategoricalDistribution(spec["choices"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed),
                                direction="maximize")
    return [dict(study.ask(dists).params) for _ in range(n)]


def study_dict(args: argparse.Namespace, data: Path, n_trials: int) -> dict[str, Any]:
    """The study, in the study-file schema; the data is named (``data.source``), so that
    trials forked from the study's process find it loaded there."""
    return {
        "study": {"name": STUDY_NAME, "sampler": "random", "n_trials": n_trials,
                  "seed": args.seed, "metric": "val_accuracy"},
        "data": {"source": str(data), "max_samples": args.samples,
                 "validation_split": VALIDATION_SPLIT},
        "training": {"epochs": args.epochs, "optimizer": "adam", "lr_schedule": "constant"},
        "search_space": SEARCH_SPACE,
    }


# -- in an arm's process ------------------------------------------------------------------------




@dataclass
class ArmResult:
    """One arm's figures in one repeat, as its process hands them back."""

    arm: str
    trials: int
    phase: float  # the trial phase, seconds
    fits: float  # train_seconds (mltune) or model.fit (bare), summed
    rss: list[int]  # the study's (arm's) process, after each trial
    child_peak: int | None = None  # fork: largest peak RSS of a trial's process, bytes
    tune_wall: float | None = None  # mltune arms: tune() called -> returned
    best_value: float = 0.0  # best val_accuracy (a sanity check)
    device: str = ""  # mltune arms: the device tag of the trials' runs
    wall: float = 0.0  # the whole process, filled in by the main process
    order: str = ""  # filled in by the main process: position in the repeat

    @property
    def per_trial(self) -> float:
        return self.phase / self.trials

    @property
    def outside_fits(self) -> float:
        return self.phase - self.fits

    @property
    def growth(self) -> float:
        """RSS after the last trial - after trial 1, MB."""
        return (self.rss[-1] - self.rss[0]) / MB


def run_mltune_arm(args: argparse.Namespace, data: Path, configs: list[dict[str, Any]],
                   trial_process: str) -> ArmResult:
    """The configurations as the trials of one study through ``mltune.tune``."""
    import optuna
    from mlflow.tracking import MlflowClient

    import mltune
    from mltune._names import Attr, Tag
    from mltune._storage import open_storage

    quiet_libraries()
    samples: list[int] = []

    def after_trial(study: Any, trial: Any) -> None:  # an Optuna callback, in this process
        samples.append(rss_bytes())

    n = len(configs)
    with (tempfile.TemporaryDirectory(prefix="mltune-bench-") as folder,
          working_dir(Path(folder))):  # MLflow's artifacts go to ./mlruns
        journal = str(Path(folder) / "optuna_journal.log")
        uri = f"sqlite:///{Path(folder) / 'mlflow.db'}"
        # mltune resumes the study by name and runs the enqueued trials first.
        pre = optuna.create_study(storage=open_storage(journal), study_name=STUDY_NAME,
                                  direction="maximize")
        for params in configs:
            pre.enqueue_trial(params)
        out = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(out):  # the plain progress lines
            result = mltune.tune(study_dict(args, data, n), storage=journal, tracking_uri=uri,
                                 progress=False, trial_callbacks=[after_trial],
                                 trial_process=trial_process)
        tune_wall = time.perf_counter() - start
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB
        text = out.getvalue()
        if trial_process == "fork" and FALLBACK in text:
            line = next(x for x in text.splitlines() if FALLBACK in x)
            raise RuntimeError(f"the fork arm fell back to training in-process: {line}")
        if result.states.get("COMPLETE", 0) != n:
            raise RuntimeError(f"not every trial completed: {result.states}\n{text}")
        trials = sorted(mltune.load_study(STUDY_NAME, journal).trials, key=lambda t: t.number)
        if [dict(t.params) for t in trials] != configs:
            raise RuntimeError("the study's trials are not the enqueued configurations: "
                               f"{[t.params for t in trials]} != {configs}")
        client = MlflowClient(uri)
        runs = [client.get_run(t.user_attrs[Attr.RUN_ID]) for t in trials]
    if len(samples) != n:
        raise RuntimeError(f"the trial callback ran {len(samples)} times, not {n}")
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    values = [float(t.value) for t in trials if t.value is not None]
    if len(starts) != n or len(ends) != n or len(values) != n:
        raise RuntimeError("a completed trial lacks its start, end or value")
    return ArmResult(
        arm=trial_process, trials=n, phase=(max(ends) - min(starts)).total_seconds(),
        fits=sum(float(r.data.metrics["train_seconds"]) for r in runs), rss=samples,
        child_peak=children if trial_process == "fork" else None, tune_wall=tune_wall,
        best_value=max(values),
        device=", ".join(sorted({r.data.tags.get(Tag.DEVICE, "?") for r in runs})))


def run_bare_arm(args: argparse.Namespace, data: Path, configs: list[dict[str, Any]]
                 ) -> ArmResult:
    """The configurations with Keras alone, one after the other in this process."""
    from mltune._device import backend, native_logs_muted

    backend()  # Keras imported as mltune imports it, TensorFlow's start-up lines muted
    import keras

    from mltune._config import parse_config
    from mltune._data import load_data
    from mltune._model import build_model
    from mltune._trainer import compile_model

    quiet_libraries()
    config = parse_config(study_dict(args, data, len(configs)), source="bench/trial_process.py")
    seed = config.study.seed
    dataset = load_data(config.data, seed=seed)  # as mltune._session.prepare loads it
    if dataset.pixel_max != 255.0:
        raise RuntimeError(f"expected 8-bit images, got pixel_max {dataset.pixel_max}")
    x, y, x_val, y_val = dataset.x_train, dataset.y_train, dataset.x_val, dataset.y_val
    samples: list[int] = []
    fits = 0.0
    best = 0.0
    start = end = time.perf_counter()
    # stderr's descriptor held shut as mltune holds it while TensorFlow starts (its C++ lines
    # ignore TF_CPP_MIN_LOG_LEVEL then); an exception still shows once the block is left.
    with native_logs_muted():
        for i, params in enumerate(configs):
            settings = config.params_for(params)
            batch = int(settings["batch_size"])
            t0 = time.perf_counter()
            if i == 0:
                start = t0
            keras.utils.set_random_seed((seed or 0) + i)
            model = build_model(settings, input_shape=dataset.input_shape,
                                num_classes=dataset.num_classes, pixel_max=255.0)
            compile_model(model, settings, steps_per_epoch=max(1, math.ceil(len(x) / batch)))
            t1 = time.perf_counter()
            history = model.fit(x, y, batch_size=batch, epochs=int(settings["epochs"]),
                                validation_data=(x_val, y_val), verbose=0)
            fits += time.perf_counter() - t1
            best = max(best, *history.history["val_accuracy"])
            del model, history
            keras.backend.clear_session()
            end = time.perf_counter()
            samples.append(rss_bytes())
    return ArmResult(arm="bare", trials=len(configs), phase=end - start, fits=fits,
                     rss=samples, best_value=float(best))


def run_arm(args: argparse.Namespace, data: Path) -> int:
    """This process is one arm: measure it, write its figures to ``--result-json``."""
    configs = json.loads(args.configs_json.read_text())
    result = (run_bare_arm(args, data, configs) if args.arm == "bare" else
              run_mltune_arm(args, data, configs, args.arm))
    args.result_json.write_text(json.dumps(asdict(result)))
    return 0


# -- the main process ---------------------------------------------------------------------------
def rotated(repeat: int) -> tuple[str, ...]:
    """The arms' order in repeat ``repeat`` (0-based): fork, none, bare; none, bare, fork..."""
    k = repeat % len(ARMS)
    return ARMS[k:] + ARMS[:k]




@dataclass
class Repeat:
    order: tuple[str, ...]
    arms: dict[str, ArmResult] = field(default_factory=dict)

    def ratio(self, a: str, b: str) -> float:
        return self.arms[a].phase / self.arms[b].phase

    def overhead_pct(self, arm: str) -> float:
        return 100.0 * (self.arms[arm].phase - self.arms["bare"].phase) / self.arms["bare"].phase


def arm_argv(args: argparse.Namespace, data: Path, arm: str, configs: Path, out: Path
             ) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--data", str(data),
            "--samples", str(args.samples), "--trials", str(args.trials),
            "--epochs", str(args.epochs), "--seed", str(args.seed), "--arm", arm,
            "--configs-json", str(configs), "--result-json", str(out)]


def measure(args: argparse.Namespace, data: Path, configs: list[dict[str, Any]]
            ) -> list[Repeat] | None:
    """Every repeat's three arms, each in a fresh process of this script."""
    repeats: list[Repeat] = []
    with tempfile.TemporaryDirectory(prefix="mltune-bench-trial-process-") as folder:
        configs_path = Path(folder) / "configs.json"
        configs_path.write_text(json.dumps(configs))
        for r in range(args.repeats):
            rep = Repeat(rotated(r))
            for position, arm in enumerate(rep.order, 1):
                out = Path(folder) / f"{r + 1}-{arm}.json"
                start = time.perf_counter()
                done = subprocess.run(arm_argv(args, data, arm, configs_path, out), cwd=REPO)
                wall = time.perf_counter() - start
                if done.returncode != 0 or not out.is_file():
                    print(f"error: arm {arm} of repeat {r + 1} failed (exit code "
                          f"{done.returncode})", file=sys.stderr)
                    return None
                res = ArmResult(**json.loads(out.read_text()))
                res.wall, res.order = wall, f"{position}/{len(rep.order)}"
                rep.arms[arm] = res
                peak = ("" if res.child_peak is None else
                        f", child peak {res.child_peak / MB:.0f} MB")
                peak = f", RSS after trial 1 {res.rss[0] / MB:.0f} MB{peak}"
                print(f"  repeat {r + 1}/{args.repeats}, {arm:4s} ({res.order}): trial phase "
                      f"{res.phase:.2f} s ({res.per_trial:.2f} s a trial), fits {res.fits:.2f} "
                      f"s, RSS growth {res.growth:+.1f} MB{peak}; arm wall {wall:.1f} s; "
                      f"best val_accuracy {res.best_value:.4f}; load {load_avg()}", flush=True)
            repeats.append(rep)
    return repeats


def _med(values: Sequence[float]) -> float:
    return statistics.median(values)


def render(args: argparse.Namespace, argv: Sequence[str], info: dict[str, str],
           configs: list[dict[str, Any]], repeats: list[Repeat], loads: tuple[str, str],
           elapsed: float) -> str:
    def arms(name: str) -> list[ArmResult]:
        return [rep.arms[name] for rep in repeats]

    per_trial = {a: _med([x.per_trial for x in arms(a)]) for a in ARMS}
    fork_none = [rep.ratio("fork", "none") for rep in repeats]
    fork_bare = [rep.ratio("fork", "bare") for rep in repeats]
    over = {a: [rep.overhead_pct(a) for rep in repeats] for a in ("fork", "none")}
    fork_over = _med(over["fork"])
    verdict = "met" if fork_over <= TARGET_PCT else "missed"
    growth = {a: _med([x.growth for x in arms(a)]) for a in ARMS}
    child = [x.child_peak for x in arms("fork") if x.child_peak is not None]
    walls = {a: _med([x.wall for x in arms(a)]) for a in ARMS}
    devices = sorted({x.device for a in ("fork", "none") for x in arms(a) if x.device})

    def spread(values: list[float], fmt: str) -> str:
        if len(values) < 2:
            return ""
        return f" (single repeats {min(values):{fmt}} to {max(values):{fmt}})"

    rows = []
    for i, rep in enumerate(repeats, 1):
        for arm in rep.order:
            x = rep.arms[arm]
            rows.append([str(i), x.order, arm, f"{x.phase:.2f}", f"{x.per_trial:.2f}",
                         f"{x.fits:.2f}", f"{x.outside_fits:.2f}", f"{x.growth:+.1f}",
                         "-" if x.child_peak is None else f"{x.child_peak / MB:.0f}",
                         f"{x.wall:.1f}"])
    table = fmt_table(["repeat", "order", "arm", "trial phase (s)", "per trial (s)", "fits (s)",
                       "outside fits (s)", "RSS growth (MB)", "child peak (MB)",
                       "arm wall (s)"], rows)
    shown = "; ".join(
        f"{i}: lr {c['learning_rate']:.2e}, filters {c['filters']}, batch {c['batch_size']}"
        for i, c in enumerate(configs))
    command = " ".join([sys.executable, "bench/trial_process.py", *argv])
    n = len(repeats)
    return "\n".join([
        SECTION,
        "",
        f"Measured {info['date']} on {info['nproc']} cores ({info['cpu']}), {info['os']}; "
        f"Python {info['python']}, TensorFlow {info['tensorflow']}, Keras {info['keras']}, "
        f"MLflow {info['mlflow']}, Optuna {info['optuna']}, NumPy {info['numpy']}; mltune at "
        f"{info['commit']}. Trials' device (MLflow tag): {', '.join(devices) or 'unknown'}. "
        f"Load average (1 / 5 / 15 min) {loads[0]} at the start, {loads[1]} at the end.",
        "",
        f"Re-run from the repository root (this run took {elapsed / 60:.1f} min):",
        "",
        "```sh",
        command,
        "```",
        "",
        f"{args.trials} configurations drawn once by Optuna's `RandomSampler` (seed "
        f"{args.seed}) over learning_rate (3e-4..3e-3, log), filters (16, 32), batch_size "
        f"(64, 128), the same in every arm ({shown}); the built-in CNN, MNIST "
        f"`data.max_samples: {args.samples}` (10% validation), {args.epochs} epoch(s), Adam; "
        f"{n} repeat(s), the arms' order rotated each repeat; each arm in a fresh process. "
        "`fork` and `none`: `mltune.tune(..., trial_process=...)` with an Optuna journal file "
        "and an MLflow SQLite store in a new temporary folder; `bare`: seed, "
        "`mltune._model.build_model`, `mltune._trainer.compile_model`, `model.fit` on the "
        "NumPy arrays, `keras.backend.clear_session()`. Trial phase: first trial started -> "
        "last trial completed (bare: first build -> last clear_session). Medians over the "
        "repeats; ratios and overheads are medians of the per-repeat figures:",
        "",
        f"- Per trial: fork {per_trial['fork']:.2f} s, none {per_trial['none']:.2f} s, bare "
        f"{per_trial['bare']:.2f} s.",
        f"- Trial phase, fork / none: {_med(fork_none):.3f}{spread(fork_none, '.3f')}; "
        f"fork / bare: {_med(fork_bare):.3f}{spread(fork_bare, '.3f')}.",
        f"- **Overhead against bare, (fork - bare) / bare: {fork_over:+.1f}%**"
        f"{spread(over['fork'], '+.1f')}; target <= {TARGET_PCT:g}%: **{verdict}**.",
        f"- Overhead against bare, (none - bare) / bare: {_med(over['none']):+.1f}%"
        f"{spread(over['none'], '+.1f')}.",
        f"- The study process's RSS growth, after trial 1 -> after the last trial: fork "
        f"{growth['fork']:+.1f} MB, none {growth['none']:+.1f} MB (bare loop's process: "
        f"{growth['bare']:+.1f} MB).",
        "- Largest peak RSS of a trial's process (fork, `ru_maxrss` of the children): "
        + (f"{max(child) / MB:.0f} MB" if child else "-")
        + (f" (median of the repeats {_med(child) / MB:.0f} MB)" if len(child) > 1 else "")
        + f"; the study's process held {_med([x.rss[0] / MB for x in arms('fork')]):.0f} MB "
        "after trial 1, and a trial's process counts the pages it shares with it.",
        f"- Arm wall including start-up (Python, imports, data): fork {walls['fork']:.1f} s, "
        f"none {walls['none']:.1f} s, bare {walls['bare']:.1f} s.",
        "",
        table,
        "",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    data = data_file(args.data)
    if data is None:
        return 2
    if args.arm is not None:  # one arm, in its own process
        return run_arm(args, data.resolve())
    began = time.perf_counter()
    start_load = load_avg()
    info = machine_info(("tensorflow", "keras", "mlflow", "optuna", "numpy"))
    info["date"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"{info['nproc']} cores, {info['cpu']}; {args.trials} trials, {args.samples} "
          f"samples, {args.epochs} epoch(s) per trial, {args.repeats} repeat(s); load "
          f"{start_load}", flush=True)
    configs = draw_configs(args.trials, args.seed)
    repeats = measure(args, data.resolve(), configs)
    if repeats is None:
        return 1
    heavy = [m for m in ("tensorflow", "keras") if m in sys.modules]
    if heavy:  # the arms' processes must be the only ones that start them
        raise RuntimeError(f"the main process imported {', '.join(heavy)}")
    section = render(args, argv, info, configs, repeats, (start_load, load_avg()),
                     time.perf_counter() - began)
    publish(section, SECTION, DOCS if args.write_docs else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
