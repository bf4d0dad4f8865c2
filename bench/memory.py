"""Resident memory of one process over the trials of a study (target: 30 trials grow RSS by
less than 150 MB).

A real study runs in-process through ``mltune.config.parse_config`` and
``mltune.study.tune``: random sampler (fixed seed) over a small CNN search space (filters,
dense_units, learning_rate, batch_size), ``--epochs`` epoch(s) per trial on a ``--samples``
subset of real MNIST, an Optuna journal file and an MLflow SQLite store in a new temporary
folder; MLflow logs every trial's params and metrics, and the model of every trial that
beats the best so far, as in any study. An Optuna callback passed to ``tune(callbacks=...)``
samples the resident set size (psutil, else ``/proc/self/statm``) after each trial, once
mltune has released the trial's model (``clear_session``).

Reported: RSS before the study (imports done), after trial 1 (the baseline: everything
imported and warmed), after trial 5 and after the last trial; growth = last - trial 1 (the
target's figure) and last - trial 5 (without the warm-up of the first trials); the slope of a
least-squares line through trials 5..last; the highest sample and the process's peak RSS
(``ru_maxrss``, within trials too); RSS after ``tune`` returned (end-of-study report); every
trial's sample.

Diagnostics, when growth is in question (they change what is measured, so they are off for
the figure of record): ``--tracemalloc`` traces Python allocations and prints the lines that
grew most between trial 1 and the last trial; ``--no-model-logging`` replaces the bench
process's ``Objective._log_model`` with a no-op (mltune's code is not changed) to show what
model logging holds on to.

Run from the repository root, e.g.::

    /work/venv/bin/python bench/memory.py                     # 30 trials, ~2-3 min
    /work/venv/bin/python bench/memory.py --trials 12 --samples 2000  # ~40 s
    /work/venv/bin/python bench/memory.py --write-docs

``--write-docs`` writes the section "Memory over trials (bench/memory.py)" of
``docs/benchmarks.md`` (other sections are kept).
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import fmt_table, machine_info, publish  # bench/_common.py

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path("../shared/data/mnist/mnist.npz")
DOCS = Path("docs/benchmarks.md")
SECTION = "## Memory over trials (bench/memory.py)"
TARGET_MB = 150.0
WARM_TRIAL = 5  # growth is also reported from this trial on
MB = 1024 * 1024


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="MNIST .npz (x_train, y_train, x_test, y_test); relative to the repo root")
    p.add_argument("--trials", type=int, default=30, help="trials of the study")
    p.add_argument("--samples", type=int, default=4000,
                   help="data.max_samples: training + validation images (10%% validation)")
    p.add_argument("--epochs", type=int, default=1, help="epochs per trial")
    p.add_argument("--seed", type=int, default=0, help="sampler and data-split seed")
    p.add_argument("--tracemalloc", action="store_true",
                   help="diagnostic: trace Python allocations; print what grew most (slows "
                   "the study down about 2x and adds its own memory)")
    p.add_argument("--no-model-logging", action="store_true",
                   help="diagnostic: no trial logs its model (bench process only)")
    p.add_argument("--malloc-trim", action="store_true",
                   help="diagnostic: after each trial's sample, call glibc's malloc_trim(0) "
                   "and sample again (free heap pages handed back)")
    p.add_argument("--write-docs", action="store_true",
                   help=f"write the section into {DOCS} (else print only)")
    return p.parse_args(argv)


# -- measuring -------------------------------------------------------------------------------
def rss_bytes() -> int:
    """Resident set size of this process."""
    try:
        import psutil
    except ImportError:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    return int(psutil.Process().memory_info().rss)


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
        from mltune.objective import MODEL_URI_ATTR

        s = Sample(trial=len(self.samples) + 1, rss=rss_bytes(),
                   seconds=time.perf_counter() - self.start, state=trial.state.name,
                   model_logged=MODEL_URI_ATTR in trial.user_attrs, params=dict(trial.params))
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
              + f"  {shown}" + ("  model logged" if s.model_logged else ""), flush=True)


def study_config(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    return {
        "study": {"name": "bench-memory", "sampler": "random", "n_trials": args.trials,
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


def quiet_libraries() -> None:
    """What ``mltune``'s CLI does before a study: keep library chatter off the screen."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for name in ("optuna", "mlflow", "alembic", "absl", "tensorflow", "keras"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


@dataclass
class Run:
    before: int  # RSS before tune(), imports done
    after: int  # RSS after tune() returned
    peak: int  # ru_maxrss at the end
    wall: float
    samples: list[Sample]
    snapshots: dict[int, Any]
    states: dict[str, int]


def run_study(args: argparse.Namespace, data: Path) -> Run:
    from mltune.config import parse_config
    from mltune.device import configure_gpus
    from mltune.progress import PlainProgress
    from mltune.study import tune

    configure_gpus()  # imports TensorFlow with its start-up lines muted, as mltune does
    quiet_libraries()
    config = parse_config(study_config(args, data), source="bench/memory.py")
    if args.no_model_logging:
        from mltune.objective import Objective

        setattr(Objective, "_log_model", lambda self, trial, run_id, model: None)  # noqa: B010
    sampler = Sampler(total=args.trials, trace=args.tracemalloc, trim=args.malloc_trim)
    with tempfile.TemporaryDirectory(prefix="mltune-bench-") as folder:
        journal = str(Path(folder) / "optuna_journal.log")
        uri = f"sqlite:///{Path(folder) / 'mlflow.db'}"
        progress = PlainProgress(config.study.metric, stream=io.StringIO())
        if args.tracemalloc:
            tracemalloc.start(1)  # one frame: the allocating line
        before = rss_bytes()
        start = sampler.start = time.perf_counter()
        result = tune(config, storage=journal, tracking_uri=uri, progress=progress,
                      callbacks=(sampler,))
        wall = time.perf_counter() - start
        after = rss_bytes()
    return Run(before=before, after=after, peak=peak_rss_bytes(), wall=wall,
               samples=sampler.samples, snapshots=sampler.snapshots, states=result.states)


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


def render(args: argparse.Namespace, argv: Sequence[str], info: dict[str, str],
           run: Run) -> str:
    s = run.samples
    g = growth(run)
    ok = g["growth"] is not None and g["growth"] < TARGET_MB
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
    command = " ".join([sys.executable, "bench/memory.py", *argv])
    warm = ("" if g["growth_warm"] is None else
            f"; from trial {WARM_TRIAL} to the last: {g['growth_warm']:+.1f} MB")
    slope = "" if g["slope"] is None else f"; trend {g['slope']:+.2f} MB per trial"
    diagnostics = [name for name, on in (("--tracemalloc", args.tracemalloc),
                                         ("--no-model-logging", args.no_model_logging),
                                         ("--malloc-trim", args.malloc_trim)) if on]
    lines = [
        SECTION,
        "",
        f"Measured {info['date']} on {info['nproc']} cores ({info['cpu']}), {info['os']}; "
        f"Python {info['python']}, Keras {info['keras']} on the **{info['backend']}** backend, "
        f"TensorFlow {info['tensorflow']}, "
        f"MLflow {info['mlflow']}, Optuna {info['optuna']}, NumPy {info['numpy']}; mltune at "
        f"{info['commit']}. No GPU. RSS from {rss_source()}.",
        "",
        f"Re-run from the repository root (this study took {run.wall / 60:.1f} min):",
        "",
        "```sh",
        command,
        "```",
        "",
        f"- **Growth over {len(s)} trials (RSS after the last trial - after trial 1): "
        f"{g['growth']:+.1f} MB**{warm}{slope}; target < {TARGET_MB:.0f} MB: "
        f"**{'PASS' if ok else 'FAIL'}**.",
    ]
    if diagnostics:
        lines.append(f"- Diagnostic run ({', '.join(diagnostics)}): not the figure of record.")
    lines += [
        "",
        f"One process, one study through `mltune.study.tune`: {args.trials} trials, random "
        f"sampler (seed {args.seed}), MNIST `data.max_samples: {args.samples}`, "
        f"{args.epochs} epoch(s) per trial, Adam; searched: filters (8, 16, 32), dense_units "
        "(32, 64, 128), learning_rate (1e-4..1e-2, log), batch_size (64, 128, 256). Optuna "
        "journal file and MLflow SQLite store in a new temporary folder; each trial is an "
        f"MLflow run, and a trial that beats the best so far logs its model ({logged} of "
        f"{len(s)} here). Trials: {states}. RSS is sampled by an Optuna callback after each "
        "trial, after mltune has released the trial's model.",
        "",
        table,
        "",
        f"RSS after each trial, MB (`*`: the trial logged its model): {per_trial}.",
        "",
    ]
    traced = trace_report(run.snapshots)
    if traced:
        lines += [traced, ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    data = args.data if args.data.is_absolute() else (REPO / args.data)
    if not data.is_file():
        print(f"error: no such file: {data} (see --data)", file=sys.stderr)
        return 2
    info = machine_info(("tensorflow", "keras", "mlflow", "optuna", "numpy"))
    info["backend"] = os.environ["KERAS_BACKEND"]
    print(f"{info['nproc']} cores, {info['cpu']}; {args.trials} trials, "
          f"{args.samples} samples, {args.epochs} epoch(s) per trial", flush=True)
    run = run_study(args, data.resolve())
    section = render(args, argv, info, run)
    publish(section, SECTION, DOCS if args.write_docs else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
