"""What a process per trial costs: the same trials through ``mltune.tune`` with
``trial_process="fork"`` (the default on Linux), with ``trial_process="none"``, and in a bare
Keras loop, side by side in one run, the three arms taking turns trial by trial.

Three arms, each a long-lived process of this script (``--arm ARM``), because a process that
has run a TensorFlow op cannot fork trials safely (mltune then trains in-process and prints
``note: trials train in this process``; the fork arm checks for that line and fails if it
appears):

- ``fork``: ``mltune.tune(study_dict, storage=..., tracking_uri=..., progress=False,
  trial_process="fork")``: the study's process never runs a TensorFlow op; each trial is a
  child process forked from it, which builds and fits one model and exits (the next trial's
  process is forked ahead, as mltune does).
- ``none``: the same call with ``trial_process="none"``: every trial trains in the study's
  process (``clear_session`` after each).
- ``bare``: Keras alone, in one process: for configuration i, ``keras.utils.set_random_seed(
  seed + i)`` (mltune seeds trial i so), ``mltune._model.build_model`` (the built-in CNN),
  ``mltune._trainer.compile_model`` (mltune's compile recipe), ``model.fit(x, y, batch_size=...,
  epochs=..., validation_data=..., verbose=0)`` on the NumPy arrays, ``keras.backend.
  clear_session()``.

**Turns.** This process starts the arms one after the other (each says when it is ready:
imports, data, study created; that time is its start-up), then runs ``--trials`` rounds; in
round i each arm runs trial i while the other two wait on a pipe, the arms' order rotated each
round (fork, none, bare; then none, bare, fork; ...). So a shared machine's drift hits all arms
alike, and no arm's work overlaps another's. The mltune arms wait in an Optuna trial callback
(``tune(trial_callbacks=[cb])``), so a trial's turn holds what mltune does between trials
(logging, the after-trial callbacks, sampling the next trial, handing it its process); the
fork arm's turn lasts until its processes were last seen using CPU (the next trial's process,
forked ahead, has warmed up; sampled every 20 ms, idle for 0.1 s), so that warm-up is counted
in the fork arm's own time and the idle wait is not. After the last
round each arm finishes (the mltune arms' end-of-study report) in turn.

The same configurations in all arms: this process (which imports neither TensorFlow nor Keras)
draws ``--trials`` configurations once, with a seeded Optuna ``RandomSampler`` over the search
space (learning_rate 3e-4..3e-3 log, filters 16/32, batch_size 64/128), and hands them to
each arm. The mltune arms create the study (``direction="maximize"``) in their journal file
first and enqueue the configurations (``study.enqueue_trial``), so ``mltune.tune``, which
resumes a study by name, runs exactly those, in that order, as trials 0..n-1. The data is the
same everywhere: MNIST (``data.source``), ``data.max_samples`` ``--samples``, 10% validation,
split by mltune's loader with the study's seed; the bare arm loads it with the same function
(``mltune._data.load_data``). The built-in CNN, ``--epochs`` epochs, Adam, constant learning
rate. Each mltune arm runs its study in a new temporary folder (the current folder while it
runs: MLflow writes ``./mlruns`` there) with an Optuna journal file and an MLflow SQLite store.

Figures per arm and trial:

- **turn**: seconds from the arm being told to go to its saying it is done. The first trial's
  turn also holds the set-up of ``tune`` (data, parent run) in the mltune arms and the start of
  TensorFlow's runtime in all arms, so the overheads are taken over trials 1..n-1 (the steady
  state); trial 0 is reported on its own.
- **fit**: mltune arms: the ``train_seconds`` metric of the trial's MLflow run (mltune's input
  pipeline + ``model.fit``; read with ``MlflowClient``); bare: the ``model.fit`` time.
- **CPU** seconds (user + system) and minor page faults in the turn: ``getrusage`` of the arm's
  process, plus, in the fork arm, of its trials' processes (counted when each is reaped).
- **RSS** of the study's (arm's) process after each trial (in the fork arm, the parent, which
  trains nothing), and the largest peak RSS of a trial's process (fork:
  ``getrusage(RUSAGE_CHILDREN).ru_maxrss``).

Reported: over trials 1..n-1, the summed turns per arm and the overheads against bare,
``(arm - bare) / bare`` (target for fork: at most 2%), with the median of the per-trial
overheads beside it; the same for the fits and what lies outside them; trial 0; RSS growth;
every trial's figures. Run from the repository root, e.g.::

    /work/venv/bin/python bench/trial_process.py                  # 12 trials
    /work/venv/bin/python bench/trial_process.py --trials 2 --samples 1000 --epochs 1
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
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
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
    p.add_argument("--trials", type=int, default=12,
                   help="configurations (trials) per arm; the arms take turns trial by trial")
    p.add_argument("--epochs", type=int, default=2, help="epochs per trial")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the configurations' sampler, study.seed (data split, Keras "
                   "seeds: seed + trial number)")
    p.add_argument("--write-docs", action="store_true",
                   help=f"write the section into {DOCS} (else print only)")
    # This script's own child processes, one per arm.
    p.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    p.add_argument("--configs-json", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result-json", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--baton", help=argparse.SUPPRESS)  # READ_FD,WRITE_FD of the turns
    args = p.parse_args(argv)
    if args.trials < 2 or args.epochs < 1:
        p.error("--trials must be at least 2 and --epochs at least 1")
    if args.arm is not None and (args.configs_json is None or args.result_json is None
                                 or args.baton is None):
        p.error("--arm needs --configs-json, --result-json and --baton")
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
class Baton:
    """The arm's end of its turns: wait to be told to go, say when done (with the turn's
    figures), measuring the turn in between."""

    def __init__(self, spec: str, fork: bool) -> None:
        r, w = (int(x) for x in spec.split(","))
        self._in = os.fdopen(r, "r")
        self._out = os.fdopen(w, "w", buffering=1)
        self._fork = fork
        self.turns: list[dict[str, float]] = []
        self._go = 0.0
        self._usage = (0.0, 0)

    def ready(self) -> None:
        self._out.write("ready\n")

    def wait(self) -> None:
        line = self._in.readline()
        if line.strip() != "go":
            raise RuntimeError(f"the main process said {line!r}, not 'go'")
        self._go = time.perf_counter()
        self._usage = _usage()

    def done(self) -> None:
        # fork: the turn ends when the next trial's process, forked ahead, has warmed up
        end = _settle() if self._fork else time.perf_counter()
        seconds = end - self._go
        cpu, faults = _usage()
        turn = {"seconds": seconds, "cpu": cpu - self._usage[0],
                "faults": float(faults - self._usage[1])}
        self.turns.append(turn)
        self._out.write(json.dumps(turn) + "\n")


def _usage() -> tuple[float, int]:
    """CPU seconds (user + system) and minor page faults of this process and its reaped
    children so far."""
    me, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                               resource.RUSAGE_CHILDREN))
    return (me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
            me.ru_minflt + kids.ru_minflt)


def _settle(limit: float = 60.0, quiet: float = 0.1, every: float = 0.02) -> float:
    """Wait until this process's children have used no CPU for ``quiet`` s (or ``limit``
    passed); return when they were last seen using it (``time.perf_counter``; the start
    of the wait if never), so the quiet wait itself is not counted. /proc counts CPU in
    ticks of 10 ms: a warm-up shows within ``every``."""
    def ticks() -> dict[int, int]:
        out = {}
        for child in multiprocessing.active_children():
            with contextlib.suppress(OSError, TypeError):
                fields = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
                out[int(child.pid or 0)] = int(fields[11]) + int(fields[12])  # utime, stime
        return out

    last = time.perf_counter()
    end = last + limit
    before = ticks()
    while time.perf_counter() < end:
        time.sleep(every)
        now, now_t = ticks(), time.perf_counter()
        if now != before:
            before, last = now, now_t
        elif now_t - last >= quiet:
            return last
    return time.perf_counter()


@dataclass
class ArmResult:
    """One arm's figures, as its process hands them back."""

    arm: str
    turns: list[dict[str, float]]  # per trial: seconds, cpu, faults
    fits: list[float]  # per trial: train_seconds (mltune) or model.fit (bare)
    first_epochs: list[float]  # per trial: the first epoch's seconds
    rss: list[int]  # the study's (arm's) process, after each trial
    child_peak: int | None = None  # fork: largest peak RSS of a trial's process, bytes
    best_value: float = 0.0  # best val_accuracy (a sanity check)
    device: str = ""  # mltune arms: the device tag of the trials' runs
    startup: float = 0.0  # filled in by the main process: started -> ready

    def steady(self, key: str) -> float:
        """``key`` summed over trials 1..n-1 (``fit``: the fits; ``outside``: turn - fit)."""
        if key == "fit":
            return sum(self.fits[1:])
        if key == "first_epoch":
            return sum(self.first_epochs[1:])
        if key == "outside":
            return sum(t["seconds"] - f for t, f in zip(self.turns[1:], self.fits[1:], strict=True))
        return sum(t[key] for t in self.turns[1:])

    @property
    def growth(self) -> float:
        """RSS after the last trial - after trial 1, MB."""
        return (self.rss[-1] - self.rss[0]) / MB


def run_mltune_arm(args: argparse.Namespace, data: Path, configs: list[dict[str, Any]],
                   trial_process: str, baton: Baton) -> ArmResult:
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
        baton.done()
        baton.wait()  # the next trial, or (after the last) the end of the study

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
        baton.ready()
        baton.wait()
        with contextlib.redirect_stdout(out):  # the plain progress lines
            result = mltune.tune(study_dict(args, data, n), storage=journal, tracking_uri=uri,
                                 progress=False, trial_callbacks=[after_trial],
                                 trial_process=trial_process)
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
        first = [next(m.value for m in client.get_metric_history(r.info.run_id, "epoch_seconds")
                      if m.step == 1) for r in runs]
    if len(samples) != n:
        raise RuntimeError(f"the trial callback ran {len(samples)} times, not {n}")
    values = [float(t.value) for t in trials if t.value is not None]
    return ArmResult(
        arm=trial_process, turns=baton.turns,
        fits=[float(r.data.metrics["train_seconds"]) for r in runs], first_epochs=first,
        rss=samples,
        child_peak=children if trial_process == "fork" else None, best_value=max(values),
        device=", ".join(sorted({r.data.tags.get(Tag.DEVICE, "?") for r in runs})))


def run_bare_arm(args: argparse.Namespace, data: Path, configs: list[dict[str, Any]],
                 baton: Baton) -> ArmResult:
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
    fits: list[float] = []
    first: list[float] = []

    class FirstEpoch(keras.callbacks.Callback):  # as mltune's epoch_seconds: begin -> end
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if epoch == 0:
                first.append(time.perf_counter() - self.start)

    best = 0.0
    baton.ready()
    # stderr's descriptor held shut as mltune holds it while TensorFlow starts (its C++ lines
    # ignore TF_CPP_MIN_LOG_LEVEL then); an exception still shows once the block is left.
    with native_logs_muted():
        for i, params in enumerate(configs):
            baton.wait()
            settings = config.params_for(params)
            batch = int(settings["batch_size"])
            keras.utils.set_random_seed((seed or 0) + i)
            model = build_model(settings, input_shape=dataset.input_shape,
                                num_classes=dataset.num_classes, pixel_max=255.0)
            compile_model(model, settings, steps_per_epoch=max(1, math.ceil(len(x) / batch)))
            t1 = time.perf_counter()
            history = model.fit(x, y, batch_size=batch, epochs=int(settings["epochs"]),
                                validation_data=(x_val, y_val), verbose=0,
                                callbacks=[FirstEpoch()])
            fits.append(time.perf_counter() - t1)
            best = max(best, *history.history["val_accuracy"])
            del model, history
            keras.backend.clear_session()
            samples.append(rss_bytes())
            baton.done()
    baton.wait()  # the end
    return ArmResult(arm="bare", turns=baton.turns, fits=fits, first_epochs=first, rss=samples,
                     best_value=float(best))


def run_arm(args: argparse.Namespace, data: Path) -> int:
    """This process is one arm: take its turns, write its figures to ``--result-json``."""
    configs = json.loads(args.configs_json.read_text())
    baton = Baton(args.baton, fork=args.arm == "fork")
    result = (run_bare_arm(args, data, configs, baton) if args.arm == "bare" else
              run_mltune_arm(args, data, configs, args.arm, baton))
    args.result_json.write_text(json.dumps(asdict(result)))
    return 0


# -- the main process ---------------------------------------------------------------------------
def rotated(i: int) -> tuple[str, ...]:
    """The arms' order in round ``i`` (0-based): fork, none, bare; none, bare, fork..."""
    k = i % len(ARMS)
    return ARMS[k:] + ARMS[:k]


class Arm:
    """An arm's process, seen from the main process."""

    def __init__(self, args: argparse.Namespace, data: Path, arm: str, folder: Path) -> None:
        self.arm = arm
        self.result_path = folder / f"{arm}.json"
        # The arm reads what we write on self._w and writes what we read on self._r.
        arm_r, self._w = os.pipe()
        self._r, arm_w = os.pipe()
        argv = [sys.executable, str(Path(__file__).resolve()), "--data", str(data),
                "--samples", str(args.samples), "--trials", str(args.trials),
                "--epochs", str(args.epochs), "--seed", str(args.seed), "--arm", arm,
                "--configs-json", str(folder / "configs.json"),
                "--result-json", str(self.result_path), "--baton", f"{arm_r},{arm_w}"]
        start = time.perf_counter()
        self.process = subprocess.Popen(argv, cwd=REPO, pass_fds=(arm_r, arm_w))
        os.close(arm_r)
        os.close(arm_w)
        self._reader = os.fdopen(self._r, "r")
        self._writer = os.fdopen(self._w, "w", buffering=1)
        self._expect("ready")
        self.startup = time.perf_counter() - start

    def _expect(self, word: str | None) -> dict[str, float]:
        line = self._reader.readline()
        if not line:
            code = self.process.wait()
            raise RuntimeError(f"arm {self.arm} ended (exit code {code})")
        if word is not None:
            if line.strip() != word:
                raise RuntimeError(f"arm {self.arm} said {line!r}, not {word!r}")
            return {}
        return dict(json.loads(line))

    def turn(self) -> dict[str, float]:
        self._writer.write("go\n")
        return self._expect(None)

    def finish(self) -> ArmResult:
        self._writer.write("go\n")
        code = self.process.wait()
        if code != 0 or not self.result_path.is_file():
            raise RuntimeError(f"arm {self.arm} failed at its end (exit code {code})")
        result = ArmResult(**json.loads(self.result_path.read_text()))
        result.startup = self.startup
        return result

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def measure(args: argparse.Namespace, data: Path, configs: list[dict[str, Any]]
            ) -> dict[str, ArmResult] | None:
    """The arms' processes, started one after the other, taking turns trial by trial."""
    arms: dict[str, Arm] = {}
    with tempfile.TemporaryDirectory(prefix="mltune-bench-trial-process-") as name:
        folder = Path(name)
        (folder / "configs.json").write_text(json.dumps(configs))
        try:
            for arm in ARMS:
                arms[arm] = Arm(args, data, arm, folder)
                print(f"  {arm}: ready after {arms[arm].startup:.1f} s", flush=True)
            for i in range(len(configs)):
                line = []
                for arm in rotated(i):
                    turn = arms[arm].turn()
                    line.append(f"{arm} {turn['seconds']:.2f} s (CPU {turn['cpu']:.1f} s)")
                print(f"  trial {i}: {', '.join(line)}; load {load_avg()}", flush=True)
            return {arm: arms[arm].finish() for arm in ARMS}
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return None
        finally:
            for a in arms.values():
                a.kill()


def _med(values: Sequence[float]) -> float:
    return statistics.median(values)


def _pct(a: float, b: float) -> float:
    return 100.0 * (a - b) / b


def render(args: argparse.Namespace, argv: Sequence[str], info: dict[str, str],
           configs: list[dict[str, Any]], results: dict[str, ArmResult],
           loads: tuple[str, str], elapsed: float) -> str:
    fork, none, bare = (results[a] for a in ARMS)
    n = len(configs)
    turns = {a: r.steady("seconds") for a, r in results.items()}
    over = {a: _pct(turns[a], turns["bare"]) for a in ("fork", "none")}
    per_trial = {a: [_pct(results[a].turns[i]["seconds"], bare.turns[i]["seconds"])
                     for i in range(1, n)] for a in ("fork", "none")}
    fork_none = [fork.turns[i]["seconds"] / none.turns[i]["seconds"] for i in range(1, n)]
    verdict = "met" if over["fork"] <= TARGET_PCT else "missed"
    devices = sorted({r.device for r in results.values() if r.device})

    def figures(key: str, fmt: str = ".1f") -> str:
        return ", ".join(f"{a} {results[a].steady(key):{fmt}}" for a in ARMS)

    rows = []
    for i, c in enumerate(configs):
        row = [str(i), f"{c['learning_rate']:.2e} / {c['filters']} / {c['batch_size']}",
               "/".join(a[0] for a in rotated(i))]
        row += [f"{results[a].turns[i]['seconds']:.2f}" for a in ARMS]
        row += [f"{results[a].fits[i]:.2f}" for a in ARMS]
        row += [f"{results[a].turns[i]['cpu']:.1f}" for a in ARMS]
        row += [f"{results[a].first_epochs[i]:.2f}" for a in ARMS]
        rows.append(row)
    table = fmt_table(["trial", "lr / filters / batch", "order",
                       "fork turn (s)", "none turn (s)", "bare turn (s)",
                       "fork fit (s)", "none fit (s)", "bare fit (s)",
                       "fork CPU (s)", "none CPU (s)", "bare CPU (s)",
                       "fork epoch 1 (s)", "none epoch 1 (s)", "bare epoch 1 (s)"], rows)
    command = " ".join([sys.executable, "bench/trial_process.py", *argv])
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
        f"{n} configurations drawn once by Optuna's `RandomSampler` (seed {args.seed}) over "
        "learning_rate (3e-4..3e-3, log), filters (16, 32), batch_size (64, 128), the same in "
        f"every arm; the built-in CNN, MNIST `data.max_samples: {args.samples}` (10% "
        f"validation), {args.epochs} epoch(s), Adam. The three arms are long-lived processes "
        "that take turns trial by trial, the order rotated each round (see the script's "
        "docstring). `fork` and `none`: `mltune.tune(..., trial_process=...)` with an Optuna "
        "journal file and an MLflow SQLite store; a trial's turn holds what mltune does "
        "between trials, and the fork arm's turn ends when the next trial's process, forked "
        "ahead, was last seen using CPU (warmed up). `bare`: seed, `mltune._model.build_model`, "
        "`mltune._trainer.compile_model`, `model.fit` on the NumPy arrays, "
        "`keras.backend.clear_session()`. Figures over trials 1..{} (trial 0 also starts "
        "TensorFlow and, in the mltune arms, the study):".format(n - 1),
        "",
        f"- Turns summed: {figures('seconds', '.2f')} s.",
        f"- **Overhead against bare, (fork - bare) / bare: {over['fork']:+.1f}%** (median "
        f"of the per-trial overheads {_med(per_trial['fork']):+.1f}%, single trials "
        f"{min(per_trial['fork']):+.1f} to {max(per_trial['fork']):+.1f}); target <= "
        f"{TARGET_PCT:g}%: **{verdict}**.",
        f"- Overhead against bare, (none - bare) / bare: {over['none']:+.1f}% (median of the "
        f"per-trial overheads {_med(per_trial['none']):+.1f}%).",
        f"- fork / none, summed: {turns['fork'] / turns['none']:.3f} (median of the per-trial "
        f"ratios {_med(fork_none):.3f}).",
        f"- Fits summed: {figures('fit', '.2f')} s; of which first epochs (tracing, "
        f"first pass over the validation data): {figures('first_epoch', '.2f')} s; outside "
        f"the fits: {figures('outside', '.2f')} s.",
        f"- CPU seconds summed (user + system; fork: the study's process and its trials' "
        f"processes): {figures('cpu')}; minor page faults: "
        + ", ".join(f"{a} {results[a].steady('faults') / 1e6:.2f} M" for a in ARMS) + ".",
        "- Trial 0 (with TensorFlow's start and, in the mltune arms, the study's set-up): "
        + ", ".join(f"{a} {results[a].turns[0]['seconds']:.2f} s" for a in ARMS)
        + "; start-up before it (Python, imports, data): "
        + ", ".join(f"{a} {results[a].startup:.1f} s" for a in ARMS) + ".",
        f"- The study process's RSS growth, after trial 1 -> after the last trial: fork "
        f"{fork.growth:+.1f} MB, none {none.growth:+.1f} MB (bare loop's process: "
        f"{bare.growth:+.1f} MB). Largest peak RSS of a trial's process (fork, `ru_maxrss` "
        "of the children): "
        + (f"{fork.child_peak / MB:.0f} MB" if fork.child_peak else "-") + ".",
        "- Best val_accuracy (a check that the arms trained alike): "
        + ", ".join(f"{a} {results[a].best_value:.4f}" for a in ARMS) + ".",
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
          f"samples, {args.epochs} epoch(s) per trial; load {start_load}", flush=True)
    configs = draw_configs(args.trials, args.seed)
    results = measure(args, data.resolve(), configs)
    if results is None:
        return 1
    heavy = [m for m in ("tensorflow", "keras") if m in sys.modules]
    if heavy:  # the arms' processes must be the only ones that start them
        raise RuntimeError(f"the main process imported {', '.join(heavy)}")
    section = render(args, argv, info, configs, results, (start_load, load_avg()),
                     time.perf_counter() - began)
    publish(section, SECTION, DOCS if args.write_docs else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
