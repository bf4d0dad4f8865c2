"""Helpers the benchmark scripts share: git state, markdown tables, docs sections."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path("../shared/data/mnist/mnist.npz")  # relative to the repo root


def repo_path(path: Path) -> Path:
    """``path`` as given on the command line: relative paths are relative to the repo root."""
    return path if path.is_absolute() else REPO / path


def data_file(path: Path) -> Path | None:
    """The ``--data`` file, or None after saying on stderr that it does not exist."""
    data = repo_path(path)
    if not data.is_file():
        print(f"error: no such file: {data} (see --data)", file=sys.stderr)
        return None
    return data


@contextlib.contextmanager
def working_dir(path: Path) -> Iterator[None]:
    """Run the block with ``path`` as the current folder (``contextlib.chdir`` of 3.11).

    MLflow keeps the artifacts of a ``sqlite:///`` store (logged models, the study report)
    under ``./mlruns`` of the folder that is current when the process first opens the store,
    not next to the database; a benchmark runs its studies from their temporary folder so
    that those go, and are deleted, with it (instead of piling up in the repository)."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def data_parser(doc: str | None, samples: int | None, samples_help: str,
                formatter: type[argparse.HelpFormatter] = argparse.ArgumentDefaultsHelpFormatter
                ) -> argparse.ArgumentParser:
    """A script's parser, its description the docstring's first paragraph, with the options
    every benchmark has: ``--data`` (the MNIST file) and ``--samples`` (data.max_samples)."""
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0],
                                formatter_class=formatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="MNIST .npz (x_train, y_train, x_test, y_test); relative to the repo root")
    p.add_argument("--samples", type=int, default=samples, help=samples_help)
    return p


def git_state() -> str:
    """The commit measured, and whether mltune/ differs from it (read-only git calls)."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", "--no-optional-locks", *args], cwd=REPO,
                              capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown commit"
    dirty = git("status", "--porcelain", "--", "mltune")
    return f"commit {commit}" + (" with uncommitted changes in mltune/" if dirty else "")


def fmt_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table, padded so that it also reads as plain text."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def write_section(path: Path, heading: str, section: str) -> None:
    """Replace the section that starts with ``heading`` in ``path`` (up to the next ``## ``
    heading), or add it at the end."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section.rstrip("\n") + "\n\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


def machine_info(packages: Sequence[str]) -> dict[str, str]:
    """Date, CPU, OS, Python, the versions of ``packages`` and the git state."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                     else os.cpu_count()),  # what `nproc` prints
        "cpu": cpu,
        "os": platform.platform(),
        "python": platform.python_version(),
    }
    for pkg in packages:
        info[pkg] = version(pkg)
    info["commit"] = git_state()
    return info


def publish(section: str, heading: str, docs: Path | None) -> None:
    """Print ``section`` and, unless ``docs`` is None, write it into that markdown file
    (relative to the repo root) in place of its ``heading`` section."""
    print()
    print(section)
    if docs is not None:
        path = repo_path(docs)
        write_section(path, heading, section)
        print(f"wrote {path}")


def quiet_libraries() -> None:
    """What ``mltune``'s CLI does before a study: keep library chatter off the screen."""
    import logging
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for name in ("optuna", "mlflow", "alembic", "absl", "tensorflow", "keras"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def load_avg() -> str:
    """The load average over 1, 5 and 15 minutes."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def rss_bytes() -> int:
    """Resident set size of this process (psutil, else ``/proc/self/statm``)."""
    try:
        import psutil
    except ImportError:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    return int(psutil.Process().memory_info().rss)

