"""Trials per hour of one study run with ``mltune tune --workers 1`` and ``--workers 2``, on
the local journal file and on PostgreSQL.

Four configurations, side by side: {journal file, PostgreSQL} x {1 worker, 2 workers}. Each
study runs as a subprocess of the CLI (``python -m mltune tune STUDY.yaml --workers N
[--storage URL] --tracking-uri sqlite:///.../mlflow.db``) in a new temporary folder with a new
MLflow SQLite store. The journal configuration passes no ``--storage``: the study uses the
default ``optuna_journal.log`` in that folder. The PostgreSQL configuration gets a unique
study name per run, and the study is deleted afterwards (``optuna.delete_study``).

The study: ``--trials`` trials, random sampler (seed ``--seed``), ``--epochs`` epochs on a
``--samples`` subset of real MNIST (``data.max_samples``). Only ``learning_rate`` and
``dropout`` are searched; the filters and the batch size are fixed, so every trial costs the
same compute whichever points a worker samples (workers seed their samplers with
``seed + pid``, so the sampled points differ from run to run).

Each configuration runs ``--repeats`` times; the order of the four is reversed on every other
repeat, so that a slow minute of this shared machine does not land on one configuration only.
A study counts only if the CLI exited 0 and the study, read back with Optuna, has at least
``--trials`` COMPLETE trials and no other state.

Reported per configuration (medians over the repeats):

- trials/hour = completed trials / wall seconds of the CLI process * 3600 (start-up, the
  MLflow schema creation, the end-of-study report and the workers' TensorFlow imports
  included);
- trials/hour in the trial phase (first trial start to last trial end, from Optuna), to
  separate throughput from start-up;
- start-up (CLI launch to first trial start);
- each trial's ``train_seconds`` (the Keras fit, read from the MLflow child runs), to show
  how much slower one fit gets when two processes share the cores, and the rest of each
  trial's duration (storage, MLflow, model building), to compare the storages without the
  fits' noise;
- the CPU the study used (cores, from ``getrusage`` of the CLI and its workers) and the CPU
  every other process on the machine used meanwhile (``/proc/stat``), because the machine is
  shared;

and the speed-up of 2 workers over 1 per storage, and the PostgreSQL/journal ratio per worker
count. Prints the figures and writes them, with the machine and the library versions, to the
section "Workers (bench/workers.py)" of ``docs/benchmarks.md`` (other sections are kept).

Run from anywhere, e.g. ``python bench/workers.py`` (7-10 minutes with the defaults on 2
cores).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from _common import data_file, data_parser, fmt_table, machine_info, publish  # bench/_common.py

DEFAULT_DOCS = Path("docs/benchmarks.md")
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
SECTION = "## Workers (bench/workers.py)"
STORAGES = ("journal", "postgres")
STORAGE_LABEL = {"journal": "journal file", "postgres": "PostgreSQL"}
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "MLFLOW_LOGGING_LEVEL": "WARNING",
             "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
             "PYTHONUNBUFFERED": "1"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = data_parser(__doc__, 9000,
                    "data.max_samples: training + validation images (about 5 s a trial "
                   "with 2 epochs, one process on 2 cores of an AMD EPYC)")
    p.add_argument("--trials", type=int, default=8, help="trials per study")
    p.add_argument("--epochs", type=int, default=2, help="epochs per trial")
    p.add_argument("--repeats", type=int, default=2,
                   help="runs of each configuration; the order is reversed every other repeat")
    p.add_argument("--seed", type=int, default=0, help="sampler and data-split seed")
    p.add_argument("--postgres", default=DEFAULT_POSTGRES, help="PostgreSQL storage URL")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds after which one study's CLI process is killed")
    p.add_argument("--docs", type=Path, default=DEFAULT_DOCS,
                   help="markdown file whose workers section is (re)written; relative to the "
                   "repo root")
    p.add_argument("--no-docs", action="store_true", help="print only, write no file")
    return p.parse_args(argv)


# -- machine ---------------------------------------------------------------------------------
def postgres_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("show server_version").fetchone()
    return str(row[0]).split()[0] if row else "unknown"


# -- one study -------------------------------------------------------------------------------
@dataclass
class Run:
    storage: str  # "journal" | "postgres"
    workers: int
    repeat: int
    position: int  # 1-4 within its repeat
    wall: float = 0.0
    complete: int = 0
    states: dict[str, int] = field(default_factory=dict)
    trial_phase: float = 0.0  # first trial start -> last trial end
    startup: float = 0.0  # CLI launch -> first trial start
    tail: float = 0.0  # last trial end -> CLI exit
    train_seconds: list[float] = field(default_factory=list)  # per trial, from MLflow
    outside_fit: list[float] = field(default_factory=list)  # per trial: duration - fit
    per_worker: list[int] = field(default_factory=list)
    cpu_ours: float = 0.0  # cores used by the CLI and its workers, on average
    cpu_others: float = 0.0  # cores used by every other process on this machine
    steal: float = 0.0  # cores taken by the hypervisor (steal time)
    problem: str = ""  # why the run does not count ("" if it does)

    @property
    def config(self) -> tuple[str, int]:
        return self.storage, self.workers

    @property
    def counts(self) -> bool:
        return not self.problem

    @property
    def per_hour(self) -> float:
        return self.complete / self.wall * 3600 if self.wall else 0.0

    @property
    def per_hour_trials(self) -> float:
        return self.complete / self.trial_phase * 3600 if self.trial_phase else 0.0


def study_config(args: argparse.Namespace, data: Path, name: str) -> dict[str, Any]:
    return {
        "study": {"name": name, "sampler": "random", "n_trials": args.trials,
                  "seed": args.seed, "metric": "val_accuracy"},
        "data": {"source": str(data), "max_samples": args.samples, "validation_split": 0.1},
        "training": {"epochs": args.epochs, "optimizer": "adam", "batch_size": 64,
                     "lr_schedule": "constant"},
        "model": {"filters": 32},
        "search_space": {
            "learning_rate": {"type": "float", "low": 3e-4, "high": 3e-3, "log": True},
            "dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.1},
        },
    }


def cli_command(study_file: str, workers: int, storage: str | None,
                tracking_uri: str) -> list[str]:
    return [sys.executable, "-m", "mltune", "tune", study_file, "--workers", str(workers),
            *(["--storage", storage] if storage else []), "--tracking-uri", tracking_uri]


def run_cli(command: list[str], cwd: Path, timeout: float) -> tuple[int, str, float]:
    """Run the CLI in its own process group; returns (exit code, output, wall seconds)."""
    env = {**os.environ, **QUIET_ENV}
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and the workers it started
        out, _ = proc.communicate()
        return -9, out + f"\n(killed after {timeout:.0f} s)", time.perf_counter() - start
    return proc.returncode, out, time.perf_counter() - start


def open_storage(kind: str, folder: Path, url: str) -> Any:
    import optuna

    if kind == "postgres":
        return optuna.storages.RDBStorage(url)
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(folder / "optuna_journal.log")))


def machine_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine so far, from ``/proc/stat``."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0, 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def children_cpu() -> float:
    """CPU seconds of this process's finished children and their children (the workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_study(args: argparse.Namespace, data: Path, run: Run) -> Run:
    """One study through the CLI in a new folder; fills ``run`` from Optuna and MLflow."""
    import optuna

    from mltune._names import Attr  # the trial attributes mltune sets

    name = f"bench-workers-{run.storage}-w{run.workers}-r{run.repeat}-{uuid.uuid4().hex[:8]}"
    folder = Path(tempfile.mkdtemp(prefix="mltune-bench-workers-"))
    storage_url = args.postgres if run.storage == "postgres" else None
    try:
        (folder / "study.yaml").write_text(
            yaml.safe_dump(study_config(args, data, name), sort_keys=False), encoding="utf-8")
        tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
        command = cli_command("study.yaml", run.workers, storage_url, tracking_uri)
        busy0, steal0, ours0 = *machine_cpu(), children_cpu()
        launched = dt.datetime.now()  # Optuna stores naive local times
        code, out, run.wall = run_cli(command, folder, args.timeout)
        busy1, steal1, ours1 = *machine_cpu(), children_cpu()
        run.cpu_ours = (ours1 - ours0) / run.wall
        run.cpu_others = max(0.0, (busy1 - busy0) - (ours1 - ours0)) / run.wall
        run.steal = (steal1 - steal0) / run.wall
        if code != 0:
            last = out.strip().splitlines()[-1] if out.strip() else ""
            run.problem = f"exit code {code}: {last}"
            print(out, file=sys.stderr)
        elif run.workers > 1 and out.count("worker done:") != run.workers:
            run.problem = f"{out.count('worker done:')} of {run.workers} workers reported done"
        if run.storage == "journal" and not (folder / "optuna_journal.log").exists():
            run.problem = run.problem or "no optuna_journal.log in the study's folder"
            return run
        store = open_storage(run.storage, folder, args.postgres)
        try:
            study = optuna.load_study(study_name=name, storage=store)
        except KeyError:
            run.problem = run.problem or "the study is not in the storage"
            return run
        trials = study.get_trials(deepcopy=False)
        run.states = dict(Counter(t.state.name for t in trials))
        done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        run.complete = len(done)
        if not run.problem and (run.complete < args.trials or len(done) != len(trials)):
            run.problem = f"trials: {run.states} (wanted {args.trials} COMPLETE)"
        if done:
            first = min(t.datetime_start for t in done if t.datetime_start)
            last = max(t.datetime_complete for t in done if t.datetime_complete)
            run.trial_phase = (last - first).total_seconds()
            run.startup = (first - launched).total_seconds()
            run.tail = run.wall - run.startup - run.trial_phase
        run.per_worker = sorted(Counter(str(t.user_attrs.get(Attr.WORKER, "?"))
                                        for t in done).values(), reverse=True)
        fits = child_train_seconds(tracking_uri, name)
        for t in sorted(done, key=lambda t: t.number):
            fit = fits.get(str(t.user_attrs.get(Attr.RUN_ID)))
            if fit is not None and t.datetime_start and t.datetime_complete:
                run.train_seconds.append(fit)
                run.outside_fit.append(
                    (t.datetime_complete - t.datetime_start).total_seconds() - fit)
        if not run.problem and len(run.train_seconds) != run.complete:
            run.problem = (f"{len(run.train_seconds)} MLflow child runs with train_seconds "
                           f"for {run.complete} complete trials")
    finally:
        if storage_url:
            try:
                optuna.delete_study(study_name=name, storage=storage_url)
            except KeyError:
                pass
        shutil.rmtree(folder, ignore_errors=True)
    return run


def child_train_seconds(tracking_uri: str, experiment: str) -> dict[str, float]:
    """``train_seconds`` of the study's child runs (the trials), by MLflow run id."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return {r.info.run_id: r.data.metrics["train_seconds"] for r in runs
            if r.data.tags.get("mlflow.parentRunId") and "train_seconds" in r.data.metrics}


def warm_up() -> None:
    """Import TensorFlow once, untimed, so that the first study does not pay a cold disk cache."""
    subprocess.run([sys.executable, "-c", "import tensorflow, keras, mlflow, optuna"],
                   env={**os.environ, **QUIET_ENV}, check=True, capture_output=True)


def run_all(args: argparse.Namespace, data: Path) -> list[Run]:
    configs = [(s, w) for s in STORAGES for w in (1, 2)]
    runs: list[Run] = []
    for repeat in range(1, args.repeats + 1):
        order = configs if repeat % 2 else configs[::-1]
        for position, (storage, workers) in enumerate(order, start=1):
            run = run_study(args, data, Run(storage, workers, repeat, position))
            runs.append(run)
            print(f"repeat {repeat} #{position} {STORAGE_LABEL[storage]:12} {workers} worker(s):"
                  f" {run.wall:6.1f} s, {run.complete} complete, {run.per_hour:5.0f} trials/h, "
                  f"start-up {run.startup:4.1f} s, fit median {_med(run.train_seconds):.2f} s, "
                  f"CPU {run.cpu_ours:.2f} + others {run.cpu_others:.2f} cores"
                  + (f"  NOT COUNTED: {run.problem}" if run.problem else ""), flush=True)
    return runs


# -- report ----------------------------------------------------------------------------------
def _med(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def label(storage: str, workers: int) -> str:
    return f"{STORAGE_LABEL[storage]}, {workers} worker{'s' if workers > 1 else ''}"


@dataclass(frozen=True)
class Summary:
    """Medians over the counted studies of one configuration (fit and outside_fit: over all
    their trials)."""

    runs: int
    per_hour: float
    per_hour_trials: float
    wall: float
    startup: float
    fit: float
    outside_fit: float
    cpu_ours: float
    cpu_others: float


def summarise(runs: list[Run]) -> dict[tuple[str, int], Summary]:
    out = {}
    for storage in STORAGES:
        for workers in (1, 2):
            ok = [r for r in runs if r.config == (storage, workers) and r.counts]
            out[storage, workers] = Summary(
                runs=len(ok), per_hour=_med(r.per_hour for r in ok),
                per_hour_trials=_med(r.per_hour_trials for r in ok),
                wall=_med(r.wall for r in ok), startup=_med(r.startup for r in ok),
                fit=_med(s for r in ok for s in r.train_seconds),
                outside_fit=_med(s for r in ok for s in r.outside_fit),
                cpu_ours=_med(r.cpu_ours for r in ok), cpu_others=_med(r.cpu_others for r in ok))
    return out


def per_repeat_ratio(runs: list[Run], num: tuple[str, int], den: tuple[str, int],
                     attr: str) -> str:
    """``num / den`` of one attribute, for each repeat in which both studies count."""
    out = []
    for repeat in sorted({r.repeat for r in runs}):
        a = [r for r in runs if r.repeat == repeat and r.config == num and r.counts]
        b = [r for r in runs if r.repeat == repeat and r.config == den and r.counts]
        if a and b and getattr(b[0], attr):
            out.append(f"{getattr(a[0], attr) / getattr(b[0], attr):.2f}")
    return ", ".join(out)


def tables(runs: list[Run], s: dict[tuple[str, int], Summary]) -> tuple[str, str, str]:
    summary = fmt_table(
        ["configuration", "studies", "wall (s)", "trials/h", "trials/h, trial phase",
         "start-up (s)", "fit per trial (s)", "outside the fit per trial (s)",
         "CPU used (cores)", "others' CPU (cores)"],
        [[label(*c), str(v.runs), f"{v.wall:.1f}", f"{v.per_hour:.0f}",
          f"{v.per_hour_trials:.0f}", f"{v.startup:.1f}", f"{v.fit:.2f}",
          f"{v.outside_fit:.2f}", f"{v.cpu_ours:.2f}", f"{v.cpu_others:.2f}"]
         for c, v in s.items()])

    rows = []
    for st in STORAGES:
        one, two, name = s[st, 1], s[st, 2], STORAGE_LABEL[st]
        rows += [
            [f"speed-up of 2 workers over 1, {name} (trials/h)",
             f"{two.per_hour / one.per_hour:.2f}x",
             per_repeat_ratio(runs, (st, 2), (st, 1), "per_hour")],
            [f"speed-up of 2 workers over 1, {name}, trial phase only",
             f"{two.per_hour_trials / one.per_hour_trials:.2f}x",
             per_repeat_ratio(runs, (st, 2), (st, 1), "per_hour_trials")],
            [f"fit time per trial, 2 workers / 1, {name}", f"{two.fit / one.fit:.2f}x", ""],
        ]
    for w in (1, 2):
        pg, jr = s["postgres", w], s["journal", w]
        rows += [
            [f"PostgreSQL / journal file, {label('postgres', w).split(', ')[1]} (trials/h)",
             f"{pg.per_hour / jr.per_hour:.2f}",
             per_repeat_ratio(runs, ("postgres", w), ("journal", w), "per_hour")],
            [f"PostgreSQL / journal file, {label('postgres', w).split(', ')[1]} (fit time)",
             f"{pg.fit / jr.fit:.2f}", ""],
        ]
    derived = fmt_table(["derived (from the medians)", "value", "per repeat"], rows)

    per_run = fmt_table(
        ["repeat", "#", "configuration", "wall (s)", "complete", "trials/h", "start-up (s)",
         "trial phase (s)", "after last trial (s)", "fit median (s)", "outside fit (s)",
         "CPU used", "others' CPU", "steal", "trials per worker", "counted"],
        [[str(r.repeat), str(r.position), label(*r.config), f"{r.wall:.1f}",
          str(r.complete), f"{r.per_hour:.0f}", f"{r.startup:.1f}", f"{r.trial_phase:.1f}",
          f"{r.tail:.1f}", f"{_med(r.train_seconds):.2f}", f"{_med(r.outside_fit):.2f}",
          f"{r.cpu_ours:.2f}", f"{r.cpu_others:.2f}", f"{r.steal:.2f}",
          "+".join(map(str, r.per_worker)) or "-", "yes" if r.counts else f"no: {r.problem}"]
         for r in runs])
    return summary, derived, per_run


def render(args: argparse.Namespace, argv: Sequence[str], info: dict[str, str], pg: str,
           runs: list[Run], elapsed: float) -> str:
    s = summarise(runs)
    summary, derived, per_run = tables(runs, s)
    counted = sum(r.counts for r in runs)
    command = " ".join([sys.executable, "bench/workers.py", *argv])
    val = round(args.samples * 0.1)
    return "\n".join([
        SECTION,
        "",
        f"Measured {info['date']} on {info['nproc']} cores ({info['cpu']}), {info['os']}; "
        f"Python {info['python']}, TensorFlow {info['tensorflow']}, Keras {info['keras']}, "
        f"MLflow {info['mlflow']}, Optuna {info['optuna']}, psycopg {info['psycopg']}, "
        f"PostgreSQL {pg} on the same machine; mltune at {info['commit']}. No GPU. The "
        "machine is shared, so single figures are noisy.",
        "",
        "Re-run from the repository root with the project's environment (this run took "
        f"{elapsed / 60:.1f} minutes):",
        "",
        "```sh",
        command,
        "```",
        "",
        interpretation(args, s, info),
        "",
        "### Set-up and figures",
        "",
        f"Each study: {args.trials} trials, random sampler (seed {args.seed}; each worker "
        f"seeds its own sampler with seed + pid), MNIST `data.max_samples: {args.samples}` "
        f"({args.samples - val} training, {val} validation images), {args.epochs} epochs, "
        "Adam, batch size 64, 32 filters; searched: learning_rate (3e-4..3e-3, log) and "
        "dropout (0..0.5), which do not change a trial's cost. Each study runs as "
        "`python -m mltune tune study.yaml --workers N [--storage URL] --tracking-uri "
        "sqlite:///.../mlflow.db` in a new temporary folder with a new MLflow SQLite store; "
        "the journal file is the default `optuna_journal.log` in that folder; on PostgreSQL "
        "each run has its own study name and the study is deleted afterwards. Each "
        f"configuration ran {args.repeats} times, the order of the four reversed every other "
        f"repeat; {counted} of {len(runs)} studies completed all their trials and count "
        "(read back with Optuna).",
        "",
        "trials/h = completed trials / wall seconds of the CLI process * 3600, start-up "
        "included. The trial phase runs from the first trial's start to the last trial's end "
        "(Optuna's timestamps); start-up is the time before it. Fit per trial is the median "
        "`train_seconds` of the MLflow child runs; outside the fit is a trial's duration in "
        "Optuna minus its fit (model building, storage calls, MLflow logging, model logging, "
        "`clear_session`). CPU used: CPU seconds of the CLI and its workers / wall seconds; "
        "others' CPU: the rest of the machine's busy time (`/proc/stat`) in the same wall "
        "time; steal: time the hypervisor gave to other machines.",
        "",
        "Medians over the repeats:",
        "",
        summary,
        "",
        derived,
        "",
        "Every study, in the order run:",
        "",
        per_run,
        "",
    ])


def interpretation(args: argparse.Namespace, s: dict[tuple[str, int], Summary],
                   info: dict[str, str]) -> str:
    """What the figures mean, worded from the figures themselves."""
    cores = info["nproc"]
    speed = {st: s[st, 2].per_hour / s[st, 1].per_hour for st in STORAGES}
    phase = {st: s[st, 2].per_hour_trials / s[st, 1].per_hour_trials for st in STORAGES}
    fit = {st: s[st, 2].fit / s[st, 1].fit for st in STORAGES}
    cpu1 = _med(s[st, 1].cpu_ours for st in STORAGES)
    cpu2 = _med(s[st, 2].cpu_ours for st in STORAGES)
    others = _med(v.cpu_others for v in s.values())
    extra_startup = _med(s[st, 2].startup - s[st, 1].startup for st in STORAGES)
    wall2 = _med(s[st, 2].wall for st in STORAGES)
    low, high = sorted(speed.values())

    if high < 0.95:
        gain = "**a loss**"
    elif high < 1.05:
        gain = "**no gain**"
    elif low >= 1.6:
        gain = "close to the 2x of a core per worker"
    else:
        gain = "a gain, but far from the 2x that two workers would give with a core each"
    lines = [
        "What the figures mean:",
        "",
        f"- **2 workers vs 1 on {cores} cores: {speed['journal']:.2f}x the trials per hour on "
        f"the journal file, {speed['postgres']:.2f}x on PostgreSQL**: {gain}. The two "
        "worker processes are TensorFlow processes on the same cores. One worker kept "
        f"{cpu1:.2f} of the {cores} cores busy on average (the fit of this small CNN on "
        "64-image batches does not keep both busy, and the model building, MLflow and Optuna "
        f"work between fits runs on one core); two workers kept {cpu2:.2f} busy, and each fit took "
        f"{fit['journal']:.2f}x (journal) / {fit['postgres']:.2f}x (PostgreSQL) as long as "
        "with one worker. The second worker fills the cores that one leaves idle; it does "
        "not get cores of its own.",
        f"- **Start-up eats part of it.** In the trial phase alone 2 workers give "
        f"{phase['journal']:.2f}x / {phase['postgres']:.2f}x. With `--workers 2` the "
        f"first trial starts {extra_startup:.1f} s later than with one worker: the `tune` "
        "process imports TensorFlow and loads the data, then the two `mltune worker` "
        "processes each import TensorFlow and load the data again, together on the same "
        f"cores. On a study of {args.trials} trials ({wall2:.0f} s with 2 workers) that is "
        f"{100 * extra_startup / wall2:.0f}% of the wall time; it matters less the longer "
        "the study.",
    ]
    if others >= 0.25:
        lines.append(
            f"- **The machine was busy.** Other processes used {others:.2f} cores on average "
            "during the studies (median). Against them, two busy processes get a larger "
            "share of the CPU than one, so part of the gain of 2 workers is taken from the "
            "other tenants and would be smaller on an idle machine; the fits also ran slower "
            "than on an idle one.")
    pg = {w: s["postgres", w].per_hour / s["journal", w].per_hour for w in (1, 2)}
    pg_fit = {w: s["postgres", w].fit / s["journal", w].fit for w in (1, 2)}
    outside = {st: s[st, 1].outside_fit for st in STORAGES}
    lines += [
        f"- **PostgreSQL / journal file: {pg[1]:.2f} (1 worker) and {pg[2]:.2f} (2 workers) "
        "in trials per hour.** The storage's own cost is in the time a trial spends outside "
        f"its fit: {outside['journal']:.2f} s on the journal file and "
        f"{outside['postgres']:.2f} s on PostgreSQL (1 worker, median), a difference of "
        f"{1000 * (outside['postgres'] - outside['journal']):+.0f} ms per trial against a "
        f"{s['journal', 1].fit:.1f} s fit. The rest of the trials/h difference comes from "
        "the fits, which the storage does not touch (PostgreSQL/journal fit time: "
        f"{pg_fit[1]:.2f} with 1 worker, {pg_fit[2]:.2f} with 2): that is this machine's "
        "noise, not the storage.",
        "- Workers pay off when each has cores of its own: a machine with more cores than "
        "one fit uses, or workers on other machines or GPUs sharing a PostgreSQL study "
        "(`mltune worker --storage postgresql://...`); the journal file only serves "
        "processes on one machine.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    data = data_file(args.data)
    if data is None:
        return 2
    try:
        pg = postgres_version(args.postgres)
    except Exception as e:
        print(f"error: cannot reach PostgreSQL at {args.postgres}: {e}", file=sys.stderr)
        return 2
    info = machine_info(("tensorflow", "keras", "mlflow", "optuna", "psycopg"))
    print(f"{info['nproc']} cores, {info['cpu']}; Python {info['python']}, TensorFlow "
          f"{info['tensorflow']}, Keras {info['keras']}, MLflow {info['mlflow']}, Optuna "
          f"{info['optuna']}, PostgreSQL {pg}", flush=True)
    start = time.perf_counter()
    warm_up()
    runs = run_all(args, data.resolve())
    if not all(any(r.config == (st, w) and r.counts for r in runs)
               for st in STORAGES for w in (1, 2)):
        print("error: a configuration has no completed study; nothing written",
              file=sys.stderr)
        return 1

    section = render(args, argv, info, pg, runs, time.perf_counter() - start)
    publish(section, SECTION, None if args.no_docs else args.docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
