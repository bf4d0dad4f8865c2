"""Resident memory over the trials of a study: with a process per trial (the default; target:
the study's process grows less than 50 MB over 30 trials), in one process and in recycled
worker processes.

Three measurements of the same study (``--mode all``, the default, runs each in a fresh
process of this script, in the order fork, in-process, recycled, and reports them; ``--mode
fork``, ``--mode in-process`` or ``--mode recycled`` runs one, in this process).

A process per trial (``mltune.tune(study_dict, ..., trial_process="fork")``, the default): the
same study as in one process, below; the Optuna callback runs in the study's process, so its
samples are that process's RSS, which holds the libraries, the data, Optuna and MLflow but
never a model. The largest peak RSS of a trial's process is the children's ``ru_maxrss``
(``getrusage(RUSAGE_CHILDREN)``).

In one process (``trial_process="none"``): a real study runs in-process through
the public API, ``mltune.tune(study_dict, ...)``: random sampler (fixed seed) over a
small CNN search space (filters, dense_units, learning_rate, batch_size), ``--epochs``
epoch(s) per trial on a ``--samples`` subset of real MNIST, an Optuna journal file and an
MLflow SQLite store in a new temporary folder; MLflow logs every trial's params and metrics,
and the model of every trial that beats the best so far, as in any study. An Optuna callback
passed to ``mltune.tune(trial_callbacks=...)`` samples the resident set size (psutil, else
``/proc/self/statm``) after each trial, once mltune has released the trial's model
(``clear_session``).

Reported: RSS before the study (imports done), after trial 1 (the baseline: everything
imported and warmed), after trial 5 and after the last trial; growth = last - trial 1 (the
target's figure) and last - trial 5 (without the warm-up of the first trials); the slope of a
least-squares line through trials 5..last; the highest sample and the process's peak RSS
(``ru_maxrss``, within trials too); RSS after ``tune`` returned (end-of-study report); every
trial's sample.

Recycled (``mltune.tune(study_dict, trials_per_process=N)``, the CLI's
``--trials-per-process N``, N from
``--trials-per-process``, default 10): the same study config, its trials run by one
``mltune worker --max-trials N`` process at a time, which the launcher (this process: it
holds the study and the MLflow client and trains nothing) replaces with a fresh one after N
trials. A background thread samples, every ``--interval`` seconds, the RSS of this process
and of each of its child processes (psutil, recursively; needs psutil). Each trial's
``mltune_worker`` attribute (``host:pid``) says which process ran it. Reported per worker
process: its trials; its RSS after its first trial (the first sample taken after that
trial's ``datetime_complete``: approximate, the next trial may have started); its peak
(highest sample) and growth = peak - after first trial (target < 150 MB, the same figure as
in one process, per process); its trend (MB per trial, least-squares over its samples after
each trial); its start-up (process created -> first trial started: Python, TensorFlow,
MLflow, the data). Also the launcher's RSS, and wall time of both modes: time inside trials
(sum of the trials' durations) and outside them, whose difference per worker process is what
recycling costs. Workers seed their samplers with study.seed + pid, so they sample other
points than the in-process study (trials take other times; compare time outside trials).

Diagnostics, when growth is in question (they change what is measured, so they are off for
the figure of record; they apply to the in-process measurement only): ``--tracemalloc``
traces Python allocations and prints the lines that grew most between trial 1 and the last
trial; ``--malloc-trim`` hands glibc's free heap pages back after each sample. Nothing of
mltune is patched or wrapped: the study runs as a user runs it.

Run from the repository root, e.g.::

    /work/venv/bin/python bench/memory.py                     # all three, 30 trials, ~5 min
    /work/venv/bin/python bench/memory.py --mode in-process   # ~1.5 min
    /work/venv/bin/python bench/memory.py --trials 12 --samples 2000 --trials-per-process 4
    /work/venv/bin/python bench/memory.py --write-docs

``--write-docs`` writes the section "Memory over trials (bench/memory.py)" of
``docs/benchmarks.md`` (other sections are kept).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _common import (  # bench/_common.py
    REPO,
    data_file,
    data_parser,
    fmt_table,
    machine_info,
    publish,
    quiet_libraries,
    rss_bytes,
    working_dir,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

DOCS = Path("docs/benchmarks.md")
SECTION = "## Memory over trials (bench/memory.py)"
TARGET_MB = 150.0
WARM_TRIAL = 5  # growth is also reported from this trial on
MB = 1024 * 1024
MODES = ("fork", "in-process", "recycled")
FORK_TARGET_MB = 50.0  # the study process's growth with a process per trial
STUDY_NAME = "bench-memory"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = data_parser(__doc__, 4000,
                    "data.max_samples: training + validation images (10%% validation)")
    p.add_argument("--trials", type=int, default=30, help="trials of the study")
    p.add_argument("--epochs", type=int, default=1, help="epochs per trial")
    p.add_argument("--seed", type=int, default=0, help="sampler and data-split seed")
    p.add_argument("--mode", choices=("all", *MODES), default="all",
                   help="all: each measurement in a fresh process of this script, in the "
                   "order fork, in-process, recycled; else one, in this process")
    p.add_argument("--trials-per-process", type=int, default=10,
                   help="recycled mode: trials per worker process (tune(trials_per_process=))")
    p.add_argument("--interval", type=float, default=0.5,
                   help="recycled mode: seconds between RSS samples of the processes")
    p.add_argument("--result-json", type=Path, help=argparse.SUPPRESS)  # --mode all's children
    p.add_argument("--tracemalloc", action="store_true",
                   help="diagnostic: trace Python allocations; print what grew most (slows "
                   "the study down about 2x and adds its own memory)")
    p.add_argument("--malloc-trim", action="store_true",
                   help="diagnostic: after each trial's sample, call glibc's malloc_trim(0) "
                   "and sample again (free heap pages handed back)")
    p.add_argument("--write-docs", action="store_true",
                   help=f"write the section into {DOCS} (else print only)")
    return p.parse_args(argv)


# -- measuring -------------------------------------------------------------------------------


def rss_source() -> str:
    try:
        import psutil
    except ImportError:
        return "/proc/self/statm"
    return f"psutil {psutil.__version__}"


def malloc_trim() -> None:
    """Hand the C heap's free pages back to the system (glibc), so that RSS shows what is
    still in use rather than what the allocator keeps for reuse."""
    import ctypes

    ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


@dataclass
class Sample:
    trial: int  # 1-based
    rss: int
    seconds: float  # since the study started
    state: str
    model_logged: bool
    params: dict[str, Any]
    trimmed: int | None = None  # RSS after malloc_trim(0), with --malloc-trim
    started: float = 0.0  # the trial's datetime_start, seconds since the epoch
    completed: float = 0.0  # its datetime_complete


@dataclass
class Sampler:
    """Optuna callback ``(study, frozen_trial)``: RSS after each trial."""

    total: int
    trace: bool = False
    trim: bool = False
    start: float = field(default_factory=time.perf_counter)
    samples: list[Sample] = field(default_factory=list)
    snapshots: dict[int, Any] = field(default_factory=dict)  # trial -> tracemalloc snapshot

    def __call__(self, study: Any, trial: Any) -> None:
        from mltune._names import Attr

        s = Sample(trial=len(self.samples) + 1, rss=rss_bytes(),
                   seconds=time.perf_counter() - self.start, state=trial.state.name,
                   model_logged=Attr.MODEL_URI in trial.user_attrs, params=dict(trial.params),
                   started=epoch(trial.datetime_start), completed=epoch(trial.datetime_complete))
        if self.trim:
            malloc_trim()
            s.trimmed = rss_bytes()
        self.samples.append(s)
        if self.trace and s.trial in (1, min(WARM_TRIAL, self.total), self.total):
            self.snapshots[s.trial] = tracemalloc.take_snapshot()
        shown = " ".join(f"{k}={v:.2g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in sorted(s.params.items()))
        print(f"  trial {s.trial:3d}/{self.total} {s.state:8s} RSS {s.rss / MB:7.1f} MB"
              + ("" if s.trimmed is None else f" (trimmed {s.trimmed / MB:7.1f})")
              + f"  {shown}" + ("  model logged" if s.model_logged else ""),
              file=sys.__stdout__, flush=True)  # past tune()'s redirected progress lines


def epoch(when: Any) -> float:
    """Seconds since the epoch of an Optuna trial's (naive, local) datetime; 0 for None."""
    return 0.0 if when is None else when.timestamp()


def study_config(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    return {
        "study": {"name": STUDY_NAME, "sampler": "random", "n_trials": args.trials,
                  "seed": args.seed, "metric": "val_accuracy"},
        "data": {"source": str(data), "max_samples": args.samples, "validation_split": 0.1},
        "training": {"epochs": args.epochs, "optimizer": "adam", "lr_schedule": "constant"},
        "search_space": {
            "filters": {"type": "categorical", "choices": [8, 16, 32]},
            "dense_units": {"type": "categorical", "choices": [32, 64, 128]},
            "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            "batch_size": {"type": "categorical", "choices": [64, 128, 256]},
        },
    }




@dataclass
class Run:
    """The measurement of the study's own process: trials forked from it (``fork``, the
    default), or trained in it (``none``)."""

    before: int  # RSS before tune(), imports done
    after: int  # RSS after tune() returned
    peak: int  # ru_maxrss at the end
    wall: float
    samples: list[Sample]
    trace: str | None  # --tracemalloc's report
    states: dict[str, int]
    trial_process: str = "none"
    child_peak: int | None = None  # fork: the largest peak RSS of a trial's process

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Run:
        return cls(**{**d, "samples": [Sample(**x) for x in d["samples"]]})


def import_libraries() -> None:
    """What a study imports (TensorFlow, Keras, Optuna, MLflow), before RSS is first taken."""
    import keras  # noqa: F401  (TensorFlow)
    import mlflow  # noqa: F401
    import optuna  # noqa: F401


def run_study(args: argparse.Namespace, data: Path, trial_process: str = "none") -> Run:
    import mltune

    import_libraries()
    quiet_libraries()
    sampler = Sampler(total=args.trials, trace=args.tracemalloc, trim=args.malloc_trim)
    with (tempfile.TemporaryDirectory(prefix="mltune-bench-") as folder,
          working_dir(Path(folder))):  # MLflow's artifacts go to ./mlruns
        journal = str(Path(folder) / "optuna_journal.log")
        uri = f"sqlite:///{Path(folder) / 'mlflow.db'}"
        if args.tracemalloc:
            tracemalloc.start(1)  # one frame: the allocating line
        before = rss_bytes()
        start = sampler.start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the plain progress lines
            result = mltune.tune(study_config(args, data), storage=journal, tracking_uri=uri,
                                 progress=False, trial_callbacks=[sampler],
                                 trial_process=trial_process)
        wall = time.perf_counter() - start
        after = rss_bytes()
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return Run(before=before, after=after, peak=peak_rss_bytes(), wall=wall,
               samples=sampler.samples, trace=trace_report(sampler.snapshots),
               states=result.states, trial_process=trial_process,
               child_peak=children if trial_process == "fork" else None)


# -- recycled worker processes ---------------------------------------------------------------
@dataclass
class Proc:
    """A child process of the launcher, as the monitor saw it."""

    pid: int
    created: float  # seconds since the epoch (see created_at)
    command: str
    samples: list[tuple[float, int]]  # (seconds since the epoch, RSS)

    @property
    def is_worker(self) -> bool:
        return "mltune" in self.command and " worker" in self.command


@dataclass
class TrialInfo:
    number: int
    pid: int | None  # of the process that ran it (its mltune_worker attribute)
    state: str
    started: float  # seconds since the epoch; 0 if never
    completed: float
    model_logged: bool


@dataclass
class RecycledRun:
    """The measurement with ``tune(trials_per_process=N)``."""

    per_process: int
    interval: float
    wall: float
    before: int  # launcher RSS before tune()
    after: int  # launcher RSS after tune() returned
    peak: int  # launcher ru_maxrss
    children_peak: int  # ru_maxrss of the largest child process (RUSAGE_CHILDREN)
    launcher: list[tuple[float, int]]  # the launcher's samples
    procs: list[Proc]
    trials: list[TrialInfo]
    states: dict[str, int]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RecycledRun:
        return cls(**{**d, "launcher": [tuple(x) for x in d["launcher"]],
                      "procs": [Proc(**{**p, "samples": [tuple(x) for x in p["samples"]]})
                                for p in d["procs"]],
                      "trials": [TrialInfo(**t) for t in d["trials"]]})


class Monitor:
    """A background thread that samples, every ``interval`` seconds, the RSS of this process
    and of each of its child processes (recursively), keyed by pid."""

    def __init__(self, interval: float) -> None:
        import psutil

        self.psutil = psutil
        self.me = psutil.Process()
        self.interval = interval
        self.launcher: list[tuple[float, int]] = []
        self.procs: dict[int, Proc] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-monitor", daemon=True)

    def __enter__(self) -> Monitor:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        now = time.time()
        self.launcher.append((now, int(self.me.memory_info().rss)))
        for child in self.me.children(recursive=True):
            try:
                with child.oneshot():
                    rss = int(child.memory_info().rss)
                    new = child.pid not in self.procs
                    if new:
                        cmd, created = child.cmdline(), created_at(child)
            except self.psutil.Error:  # gone meanwhile
                continue
            if not rss:  # a zombie: exited, not reaped yet
                continue
            if new:
                shown = " ".join([Path(cmd[0]).name, *cmd[1:]]) if cmd else "?"
                self.procs[child.pid] = Proc(child.pid, created, shown, [])
                print(f"  process {child.pid} started: {shown}", file=sys.__stdout__,
                      flush=True)  # past tune()'s redirected progress lines
            self.procs[child.pid].samples.append((now, rss))


def created_at(proc: Any) -> float:
    """When ``proc`` (a psutil.Process) started, seconds since the epoch: from its start
    time in clock ticks since boot and ``/proc/uptime`` (10 ms; psutil's ``create_time``
    adds the boot time in whole seconds, up to 1 s off)."""
    try:
        ticks = int(Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return float(proc.create_time())
    return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")


def worker_pid(trial: Any) -> int | None:
    from mltune._names import Attr

    worker = trial.user_attrs.get(Attr.WORKER)
    try:
        return int(str(worker).rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


def run_recycled(args: argparse.Namespace, data: Path) -> RecycledRun:
    import mltune
    from mltune._names import Attr

    import_libraries()  # as the CLI's launcher has: TensorFlow imported
    quiet_libraries()
    with (tempfile.TemporaryDirectory(prefix="mltune-bench-") as folder,
          working_dir(Path(folder))):  # MLflow's artifacts go to ./mlruns
        journal = str(Path(folder) / "optuna_journal.log")
        uri = f"sqlite:///{Path(folder) / 'mlflow.db'}"
        before = rss_bytes()
        with Monitor(args.interval) as monitor, contextlib.redirect_stdout(io.StringIO()):
            start = time.perf_counter()
            result = mltune.tune(study_config(args, data), storage=journal, tracking_uri=uri,
                                 progress=False, trials_per_process=args.trials_per_process)
            wall = time.perf_counter() - start
        after = rss_bytes()
        study = mltune.load_study(STUDY_NAME, journal)
        trials = [TrialInfo(number=t.number, pid=worker_pid(t), state=t.state.name,
                            started=epoch(t.datetime_start), completed=epoch(t.datetime_complete),
                            model_logged=Attr.MODEL_URI in t.user_attrs) for t in study.trials]
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return RecycledRun(per_process=args.trials_per_process, interval=args.interval, wall=wall,
                       before=before, after=after, peak=peak_rss_bytes(),
                       children_peak=children, launcher=monitor.launcher,
                       procs=sorted(monitor.procs.values(), key=lambda p: p.created),
                       trials=trials, states=result.states)


# -- reporting -------------------------------------------------------------------------------
def slope_mb(samples: list[Sample]) -> float | None:
    """MB per trial of a least-squares line through ``samples``."""
    if len(samples) < 2:
        return None
    xs = [float(s.trial) for s in samples]
    ys = [s.rss / MB for s in samples]
    return statistics.linear_regression(xs, ys).slope


def growth(run: Run) -> dict[str, float | None]:
    s = run.samples
    first, last = s[0].rss, s[-1].rss
    warm = s[WARM_TRIAL - 1].rss if len(s) > WARM_TRIAL else None
    return {
        "growth": (last - first) / MB,
        "growth_warm": None if warm is None else (last - warm) / MB,
        "slope": slope_mb(s[WARM_TRIAL - 1:]) if len(s) > WARM_TRIAL else slope_mb(s),
    }


def trace_report(snapshots: dict[int, Any], limit: int = 12) -> str | None:
    """The source lines whose live Python allocations grew most from trial 1 to the last."""
    if len(snapshots) < 2:
        return None
    first, last = snapshots[min(snapshots)], snapshots[max(snapshots)]
    diff = last.compare_to(first, "lineno")
    rows = [[f"{d.traceback[0].filename.split('site-packages/')[-1]}:{d.traceback[0].lineno}",
             f"{d.size_diff / MB:+.2f}", f"{d.count_diff:+d}"]
            for d in diff[:limit]]
    total = sum(d.size_diff for d in diff) / MB
    head = (f"tracemalloc, trial {min(snapshots)} -> trial {max(snapshots)}: Python "
            f"allocations {total:+.1f} MB in all; top lines:")
    return head + "\n\n" + fmt_table(["allocated at", "MB", "blocks"], rows)


@dataclass
class WorkerStats:
    proc: Proc
    trials: list[TrialInfo]  # the trials it ran, in order
    after_each: list[int | None]  # RSS in the first sample after each trial ended
    startup: float | None  # process created -> its first trial started, s
    peak: int  # highest sample

    @property
    def after_first(self) -> int | None:
        return self.after_each[0] if self.after_each else None

    @property
    def growth(self) -> float | None:
        return None if self.after_first is None else (self.peak - self.after_first) / MB

    @property
    def slope(self) -> float | None:
        pts = [(float(i), r / MB) for i, r in enumerate(self.after_each, 1) if r is not None]
        if len(pts) < 2:
            return None
        return statistics.linear_regression([x for x, _ in pts], [y for _, y in pts]).slope


def worker_stats(rec: RecycledRun) -> tuple[list[WorkerStats], list[Proc]]:
    """The worker processes (those that ran trials or run ``mltune worker``), in the order
    they started, and the other child processes."""
    workers, others = [], []
    for proc in rec.procs:
        ran = sorted((t for t in rec.trials if t.pid == proc.pid), key=lambda t: t.started)
        if not ran and not proc.is_worker:
            others.append(proc)
            continue
        after = [next((rss for when, rss in proc.samples if when >= t.completed), None)
                 for t in ran if t.completed]
        workers.append(WorkerStats(
            proc=proc, trials=ran, after_each=after,
            startup=ran[0].started - proc.created if ran else None,
            peak=max(rss for _, rss in proc.samples)))
    return workers, others


@dataclass
class Timing:
    wall: float
    inside: float  # sum of the trials' durations
    gaps: list[float]  # a trial's end -> the next trial's start, same process
    restarts: list[float]  # the same, where the next trial runs in a new process
    processes: int  # processes that trained

    @property
    def outside(self) -> float:
        return self.wall - self.inside


def timing(wall: float, trials: Sequence[tuple[int | None, float, float]]) -> Timing:
    """``trials``: (pid, started, completed) of each trial."""
    done = sorted((t for t in trials if t[1] and t[2]), key=lambda t: t[1])
    gaps: list[float] = []
    restarts: list[float] = []
    for a, b in itertools.pairwise(done):
        (gaps if a[0] == b[0] else restarts).append(b[1] - a[2])
    return Timing(wall=wall, inside=sum(c - s for _, s, c in done), gaps=gaps,
                  restarts=restarts, processes=len({t[0] for t in done}))


def mb(value: int | None) -> str:
    return "-" if value is None else f"{value / MB:.1f}"


def signed(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:+.{digits}f}"


def median(values: Sequence[float], digits: int = 1) -> str:
    return f"{statistics.median(values):.{digits}f}" if values else "-"


def render_header(info: dict[str, str], argv: Sequence[str], walls: str) -> list[str]:
    command = " ".join([sys.executable, "bench/memory.py", *argv])
    return [
        SECTION,
        "",
        f"Measured {info['date']} on {info['nproc']} cores ({info['cpu']}), {info['os']}; "
        f"Python {info['python']}, Keras {info['keras']} on the **{info['backend']}** backend, "
        f"TensorFlow {info['tensorflow']}, "
        f"MLflow {info['mlflow']}, Optuna {info['optuna']}, NumPy {info['numpy']}; mltune at "
        f"{info['commit']}. No GPU. RSS from {rss_source()}.",
        "",
        f"Re-run from the repository root ({walls}):",
        "",
        "```sh",
        command,
        "```",
        "",
    ]


def study_words(args: argparse.Namespace) -> str:
    return (f"{args.trials} trials, random sampler (seed {args.seed}), MNIST "
            f"`data.max_samples: {args.samples}`, {args.epochs} epoch(s) per trial, Adam; "
            "searched: filters (8, 16, 32), dense_units (32, 64, 128), learning_rate "
            "(1e-4..1e-2, log), batch_size (64, 128, 256). Optuna journal file and MLflow "
            "SQLite store in a new temporary folder; each trial is an MLflow run, and a trial "
            "that beats the best so far logs its model")


def inprocess_bullet(run: Run) -> str:
    s = run.samples
    g = growth(run)
    ok = g["growth"] is not None and g["growth"] < TARGET_MB
    warm = ("" if g["growth_warm"] is None else
            f"; from trial {WARM_TRIAL} to the last: {g['growth_warm']:+.1f} MB")
    slope = "" if g["slope"] is None else f"; trend {g['slope']:+.2f} MB per trial"
    return (f"- **Growth over {len(s)} trials (RSS after the last trial - after trial 1): "
            f"{g['growth']:+.1f} MB**{warm}{slope}; target < {TARGET_MB:.0f} MB: "
            f"**{'PASS' if ok else 'FAIL'}**.")


def fork_bullet(run: Run, inproc: Run | None) -> str:
    g = growth(run)
    ok = g["growth"] is not None and g["growth"] < FORK_TARGET_MB
    slope = "" if g["slope"] is None else f"; trend {g['slope']:+.2f} MB per trial"
    versus = ""
    if inproc is not None:
        gi = growth(inproc)
        versus = (f" (in one process, `trial_process: none`: {signed(gi['growth'])} MB; its "
                  f"peak {inproc.peak / MB:.0f} MB)")
    return (f"- **A process per trial (`trial_process: fork`, the default): the study's process "
            f"grew {g['growth']:+.1f} MB over {len(run.samples)} trials** (RSS after the last "
            f"trial - after trial 1){slope}; target < {FORK_TARGET_MB:.0f} MB: "
            f"**{'PASS' if ok else 'FAIL'}**{versus}. The largest trial process peaked at "
            f"{mb(run.child_peak)} MB (`ru_maxrss` of the children), and handed it all back "
            "when it exited.")


def recycled_bullet(rec: RecycledRun) -> str:
    workers, _ = worker_stats(rec)
    growths = [w.growth for w in workers if w.growth is not None]
    worst = max(growths) if growths else None
    ok = worst is not None and worst < TARGET_MB
    return (f"- **Recycled (`--trials-per-process {rec.per_process}`, {len(workers)} worker "
            f"processes): largest growth of one worker process (its peak - its RSS after its "
            f"first trial): {signed(worst)} MB**; target < {TARGET_MB:.0f} MB per process: "
            f"**{'PASS' if ok else 'FAIL'}**.")


def render_inprocess(args: argparse.Namespace, run: Run) -> list[str]:
    """The table of the study's process, for either ``trial_process`` (fork or none)."""
    s = run.samples
    highest = max(s, key=lambda x: x.rss)
    checkpoints = sorted({1, min(WARM_TRIAL, len(s)), (len(s) + 1) // 2, len(s)})
    table = fmt_table(
        ["point", "RSS (MB)", "vs trial 1 (MB)"],
        [["before the study (imports done)", f"{run.before / MB:.1f}",
          f"{(run.before - s[0].rss) / MB:+.1f}"]]
        + [[f"after trial {k}", f"{s[k - 1].rss / MB:.1f}",
            f"{(s[k - 1].rss - s[0].rss) / MB:+.1f}"] for k in checkpoints]
        + [["after tune() returned (report, parent run ended)", f"{run.after / MB:.1f}",
            f"{(run.after - s[0].rss) / MB:+.1f}"],
           [f"highest sample (after trial {highest.trial})", f"{highest.rss / MB:.1f}",
            f"{(highest.rss - s[0].rss) / MB:+.1f}"],
           ["process peak (ru_maxrss, within trials too)", f"{run.peak / MB:.1f}",
            f"{(run.peak - s[0].rss) / MB:+.1f}"]])
    per_trial = ", ".join(f"{x.rss / MB:.0f}{'*' if x.model_logged else ''}" for x in s)
    states = ", ".join(f"{v} {k}" for k, v in sorted(run.states.items()))
    logged = sum(x.model_logged for x in s)
    lines = [
        ("### A process per trial (`mltune.tune(..., trial_process=\"fork\")`)\n\n"
         "The study's process, which forks a child for each trial: "
         if run.trial_process == "fork" else
         "### In one process (`mltune.tune(..., trial_process=\"none\")`)\n\n"
         "One process: ")
        + f"one study through `mltune.tune`: {study_words(args)} ({logged} "
        f"of {len(s)} here). Trials: {states}. RSS is sampled by an Optuna callback after "
        "each trial, in the study's process"
        + (f"; the trials' processes peaked at {mb(run.child_peak)} MB at most."
           if run.trial_process == "fork" else ", after mltune has released the trial's model."),
        "",
        table,
        "",
        f"RSS after each trial, MB (`*`: the trial logged its model): {per_trial}.",
        "",
    ]
    if run.trace:
        lines += [run.trace, ""]
    return lines


def render_recycled(args: argparse.Namespace, rec: RecycledRun, run: Run | None) -> list[str]:
    workers, others = worker_stats(rec)
    states = ", ".join(f"{v} {k}" for k, v in sorted(rec.states.items()))
    logged = sum(t.model_logged for t in rec.trials)
    rows = [[f"{i} (pid {w.proc.pid})", str(len(w.trials)),
             "-" if w.startup is None else f"{w.startup:.1f}", mb(w.after_first), mb(w.peak),
             signed(w.growth), signed(w.slope, 2)] for i, w in enumerate(workers, 1)]
    table = fmt_table(["worker process", "trials", "start-up (s)", "after its first trial (MB)",
                       "peak (MB)", "growth (MB)", "trend (MB/trial)"], rows)
    per_worker = "; ".join(
        f"{i}: " + ", ".join(mb(r).split(".")[0] + ("*" if t.model_logged else "")
                             for r, t in zip(w.after_each, w.trials, strict=False))
        for i, w in enumerate(workers, 1))
    highest = max(rec.launcher, key=lambda x: x[1])[1]
    totals = dict(rec.launcher)  # launcher + children, by sample time
    for proc in rec.procs:
        for when, rss in proc.samples:
            totals[when] = totals.get(when, 0) + rss
    sampled_peak = max((w.peak for w in workers), default=0)
    rt = timing(rec.wall, [(t.pid, t.started, t.completed) for t in rec.trials])
    lines = [
        f"### In recycled worker processes (`--trials-per-process {rec.per_process}`)",
        "",
        f"The same study through `mltune.tune(study, trials_per_process={rec.per_process})` (the "
        f"CLI's `mltune tune study.yaml --trials-per-process {rec.per_process}`): "
        f"{study_words(args)} ({logged} of {len(rec.trials)} here). Its trials run in one "
        f"`mltune worker --max-trials {rec.per_process}` process at a time, which the "
        "launcher (the bench process: it holds the study and the MLflow client and trains "
        f"nothing) replaces with a fresh one after {rec.per_process} trials. Workers seed "
        "their sampler with study.seed + pid, so they try other points than the in-process "
        f"study. Trials: {states}. A thread in the launcher samples the RSS of every child "
        f"process (psutil, recursively) every {rec.interval:g} s; a trial's `mltune_worker` "
        "attribute (host:pid) says which process ran it. RSS after its first trial: the "
        "first sample of the process after that trial's `datetime_complete` (approximate: "
        "the next trial may have started); peak: its highest sample; growth = peak - after "
        "its first trial; trend: least-squares slope through its samples after each trial; "
        "start-up: process created -> its first trial started (Python, TensorFlow, MLflow, "
        "the data, the study).",
        "",
        table,
        "",
        f"RSS after each trial, MB, by worker process (`*`: the trial logged its model; `-`: "
        f"no sample, the process had ended): {per_worker}.",
        "",
        f"Highest worker sample {mb(sampled_peak)} MB; the kernel's peak of the largest child "
        f"process (`ru_maxrss` of RUSAGE_CHILDREN, within trials too): "
        f"{mb(rec.children_peak)} MB. Launcher: RSS {mb(rec.before)} MB before `tune()`, "
        f"highest sample {mb(highest)} MB, {mb(rec.after)} MB after `tune()` returned "
        f"({(rec.after - rec.before) / MB:+.1f} MB); its peak (`ru_maxrss`) "
        f"{mb(rec.peak)} MB. Launcher and its children together, highest sample: "
        f"{mb(max(totals.values()))} MB (RSS counts the pages they share, such as "
        "libraries, in each process).",
    ]
    if others:
        lines.append(f"Other child processes seen: {len(others)} ("
                     + ", ".join(sorted({p.command.split()[0] for p in others})) + ").")
    head = ["time", "recycled"]
    columns = [rt]
    if run is not None:
        head.insert(1, "in one process")
        columns.insert(0, timing(run.wall, [(0, x.started, x.completed) for x in run.samples]))
    timed = fmt_table(head, [
        ["wall time of `tune()` (s)", *(f"{c.wall:.1f}" for c in columns)],
        ["inside trials (s, sum of their durations)", *(f"{c.inside:.1f}" for c in columns)],
        ["outside trials (s)", *(f"{c.outside:.1f}" for c in columns)],
        ["processes that trained", *(str(c.processes) for c in columns)],
        ["between two trials of one process, median (s)", *(median(c.gaps, 2) for c in columns)],
        ["between two trials at a worker restart, median (s)",
         *(median(c.restarts, 2) for c in columns)],
        ["worker start-up, median (s)",
         *(["-"] if run is not None else []),
         median([w.startup for w in workers if w.startup is not None])],
    ])
    lines += ["", timed, ""]
    if run is not None and rt.processes:
        inproc = columns[0]
        cost = (rt.outside - inproc.outside) / rt.processes
        lines += [
            f"Recycling costs about {cost:.1f} s per worker process (time outside trials, "
            f"recycled - in one process, over {rt.processes} processes): "
            f"{cost * rt.processes / inproc.wall * 100:+.0f}% of the in-process study's wall "
            "time. Time inside trials differs because the workers sample other points.",
            "",
        ]
    return lines


def render(args: argparse.Namespace, argv: Sequence[str], info: dict[str, str],
           fork: Run | None, run: Run | None, rec: RecycledRun | None,
           total: float | None = None) -> str:
    walls = []
    if fork is not None:
        walls.append(f"{fork.wall / 60:.1f} min with a process per trial")
    if run is not None:
        walls.append(f"{run.wall / 60:.1f} min in one process")
    if rec is not None:
        walls.append(f"{rec.wall / 60:.1f} min recycled")
    took = "the study took " + " and ".join(walls)
    if total is not None:
        took += f"; {total / 60:.1f} min in all, with the processes' start-up"
    lines = render_header(info, argv, took)
    if fork is not None:
        lines.append(fork_bullet(fork, run))
    if run is not None:
        lines.append(inprocess_bullet(run))
    if rec is not None:
        lines.append(recycled_bullet(rec))
    diagnostics = [name for name, on in (("--tracemalloc", args.tracemalloc),
                                         ("--malloc-trim", args.malloc_trim)) if on]
    if diagnostics and run is not None:
        lines.append(f"- Diagnostic run ({', '.join(diagnostics)}): not the figure of record.")
    lines.append("")
    if fork is not None:
        lines += render_inprocess(args, fork)
    if run is not None:
        lines += render_inprocess(args, run)
    if rec is not None:
        lines += render_recycled(args, rec, run)
    return "\n".join(lines)


# -- running ---------------------------------------------------------------------------------
def child_argv(args: argparse.Namespace, data: Path, mode: str, out: Path) -> list[str]:
    """The arguments of this script's child process that measures ``mode`` (--mode all)."""
    argv = ["--data", str(data), "--trials", str(args.trials), "--samples", str(args.samples),
            "--epochs", str(args.epochs), "--seed", str(args.seed), "--mode", mode,
            "--trials-per-process", str(args.trials_per_process),
            "--interval", str(args.interval), "--result-json", str(out)]
    if mode == "in-process":
        argv += [flag for flag, on in (("--tracemalloc", args.tracemalloc),
                                       ("--malloc-trim", args.malloc_trim)) if on]
    return argv


def measure_in_children(args: argparse.Namespace, data: Path
                        ) -> tuple[Run, Run, RecycledRun] | None:
    """Each measurement in a fresh process of this script, so that neither starts with what
    the other left in memory."""
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="mltune-bench-memory-") as folder:
        for mode in MODES:
            out = Path(folder) / f"{mode}.json"
            print(f"{mode}:", flush=True)
            done = subprocess.run([sys.executable, str(Path(__file__).resolve()),
                                   *child_argv(args, data, mode, out)], cwd=REPO)
            if done.returncode != 0 or not out.is_file():
                print(f"error: the {mode} measurement failed (exit code {done.returncode})",
                      file=sys.stderr)
                return None
            results[mode] = json.loads(out.read_text())
    return (Run.from_json(results["fork"]), Run.from_json(results["in-process"]),
            RecycledRun.from_json(results["recycled"]))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    data = data_file(args.data)
    if data is None:
        return 2
    if args.mode in ("all", "recycled"):
        try:
            import psutil  # noqa: F401
        except ImportError:
            print("error: the recycled measurement needs psutil (pip install psutil)",
                  file=sys.stderr)
            return 2
    if args.result_json is not None:  # a child of --mode all: measure, hand the result back
        result = (run_recycled(args, data.resolve()) if args.mode == "recycled" else
                  run_study(args, data.resolve(),
                            "fork" if args.mode == "fork" else "none"))
        args.result_json.write_text(json.dumps(asdict(result)))
        return 0
    info = machine_info(("tensorflow", "keras", "mlflow", "optuna", "numpy"))
    info["backend"] = os.environ["KERAS_BACKEND"]
    print(f"{info['nproc']} cores, {info['cpu']}; {args.trials} trials, "
          f"{args.samples} samples, {args.epochs} epoch(s) per trial; {args.mode}"
          + ("" if args.mode in ("fork", "in-process") else
             f", {args.trials_per_process} trials per worker process"), flush=True)
    start = time.perf_counter()
    fork: Run | None = None
    run: Run | None = None
    rec: RecycledRun | None = None
    total = None
    if args.mode == "all":
        measured = measure_in_children(args, data.resolve())
        if measured is None:
            return 1
        fork, run, rec = measured
        total = time.perf_counter() - start
    elif args.mode == "fork":
        fork = run_study(args, data.resolve(), "fork")
    elif args.mode == "in-process":
        run = run_study(args, data.resolve())
    else:
        rec = run_recycled(args, data.resolve())
    section = render(args, argv, info, fork, run, rec, total)
    publish(section, SECTION, DOCS if args.write_docs else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
