"""Every command of the README's ```bash blocks runs as written from the root of a fresh clone.

The README's shell lines are parsed (trailing ``# comments`` stripped, ``\\`` continuations
joined) and each one is looked up, by its exact text with runs of spaces made one, in
``COMMANDS`` below, which says what this test does with it:

- ``Run()``: run as written; ``Run(add=..., replace=...)``: run with small overrides (fewer
  trials, one epoch, fewer samples), so that the whole README runs in a few minutes;
  ``Run(check=...)``: then read back the runs that the command added to ``./mlflow.db`` and
  check them as the README describes them (an ``mlflow run`` adds one parent run, no other);
- ``Serve``: a server (``mlflow ui``, ``mlflow models serve``), started in the background on a
  free port instead of the README's (the one substitution in these commands), and up once a
  GET of its ``ready`` path returns 200; ``Request``: the ``curl`` to the server started last,
  which must get HTTP 200 and a JSON body of predictions;
- ``Download``: needs the internet; the test links the shared copy of the file instead;
- ``NotHere``: not runnable here, with the reason.

A README command in no class fails the test (quick, ``test_every_readme_command_is_classified``,
and the slow one for that command), with a message saying to classify it here; so does a
class for a command that the README no longer has. The README and this file change together.

The runnable commands run in README order, like a user in ONE fresh copy of the working tree
(no ``.git``, no ``mlflow.db``/``optuna_journal.log``/``mlruns`` left over), with ``bash -c``,
the copy as the current folder, and no ``MLFLOW_*``/``MLTUNE_*`` variables (so the embedded
stores ``./mlflow.db`` and ``./optuna_journal.log`` are used). Later commands need earlier ones
(``mltune register`` a tuned study, ``mlflow models serve`` a registered model): run the module
as a whole, not single commands of it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import QUIET_ENV, REPO, SHARED_MNIST, free_port
from mlflow import MlflowClient

README = REPO / "README.md"
COMMAND_TIMEOUT_S = 420  # one command; all of them take 3 to 5 minutes on 2 busy cores
SERVER_TIMEOUT_S = 180  # a server to answer its ready path

# One trial of one epoch: a command's cost is then mostly its start (TensorFlow, MLflow),
# and every command still runs its study, logs its model and writes its report.
SMALL_TUNE = "--n-trials 1 --set training.epochs=1"
SMALL_MLFLOW_RUN = "-P n_trials=1 -P set=training.epochs=1"
DIGITS = "projects/digits_cnn/study.yaml"


@dataclass(frozen=True)
class Run:
    """Run it: as written, or with small overrides (each ``replace`` pair's first text, which
    must be in the command, becomes the second; then ``add`` is appended). Exit code 0.
    ``mnist``: the command reads the ``mnist.npz`` that the README downloads. ``check``:
    called with the runs (parents and children) that the command added to ``./mlflow.db``."""

    add: str = ""
    replace: tuple[tuple[str, str], ...] = ()
    mnist: bool = False
    check: Callable[[list[Any]], None] | None = field(default=None, compare=False)

    def command(self, readme: str, port: int | None = None) -> str:
        command = readme
        for old, new in self.replace:
            assert old in command, f"the override replaces {old!r}, not in `{readme}`"
            command = command.replace(old, new)
        command = f"{command} {self.add}" if self.add else command
        if "{port}" in command:
            assert port is not None, f"`{readme}` needs a server started before it"
            command = command.replace("{port}", str(port))
        return command


@dataclass(frozen=True)
class Serve(Run):
    """A server, started in the background on a free port (``{port}`` in the overrides), up
    when GET ``ready`` returns 200. ``keep``: left running for the commands after it (until a
    ``Request`` to it has been checked); else stopped once it is up."""

    ready: str = "/"
    keep: bool = False


@dataclass(frozen=True)
class Request(Run):
    """A client of the server started last (``{port}`` in the overrides): HTTP 200 and a JSON
    body of ``predictions``, one row of class probabilities per image."""

    images: int = 1
    classes: int = 10


@dataclass(frozen=True)
class Download:
    """Downloads ``file`` from the internet: the test links ``source`` there instead, and
    skips (with a message) the download and the commands that read it where it is missing."""

    file: str
    source: Path


@dataclass(frozen=True)
class NotHere:
    """Not runnable here, for the reason given."""

    reason: str


Step = Run | Download | NotHere


# What a command adds to ./mlflow.db, as README.md describes it.

def project_parent(study: str, trials: int = 1) -> Callable[[list[Any]], None]:
    """``mlflow run`` of the main entry point: the run that MLflow creates for the project is
    the study's parent run; the trials nest under it, and no extra run appears."""

    def check(added: list[Any]) -> None:
        parents = [r for r in added if "mlflow.parentRunId" not in r.data.tags]
        assert len(parents) == 1, f"an extra run appeared: {[r.info.run_name for r in parents]}"
        (parent,) = parents
        assert parent.data.tags["mlflow.source.type"] == "PROJECT"
        assert parent.data.tags["mlflow.project.entryPoint"] == "main"
        assert parent.info.status == "FINISHED"
        assert parent.data.tags["mltune.study_name"] == study
        children = sorted((r for r in added if r is not parent), key=lambda r: r.info.run_name)
        assert [c.info.run_name for c in children] == [f"trial-{i:03d}" for i in range(trials)]
        assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
        assert [c.info.status for c in children] == ["FINISHED"] * trials

    return check


def train_run(added: list[Any]) -> None:
    """``mlflow run . -e train``: the project's run is the training run, and the only one."""
    (run,) = added
    assert run.data.tags["mlflow.project.entryPoint"] == "train"
    assert run.info.status == "FINISHED"
    assert run.data.params["epochs"] == "1"
    assert {"test_accuracy", "val_accuracy"} <= set(run.data.metrics)


POSTGRES = "needs a PostgreSQL server at host `db` and an MLflow tracking server at mlflow:5000"

COMMANDS: dict[str, Step] = {
    # The install-and-run line and the test command.
    f"pip install . && mltune tune {DIGITS}": NotHere(
        "`pip install .` installs into the environment this test runs in; its `mltune tune` "
        "is the first command of 1. Run, which runs"),
    'pip install -e ".[test]" && ruff check . && mypy && lint-imports && pytest': NotHere(
        "the test command: it runs this test"),
    # 1. Run: tune a CNN.
    f"mltune tune {DIGITS}": Run(add="--n-trials 1 --set training.epochs=1"),
    f"mltune tune {DIGITS} --sampler grid --study-name digits-grid "
    "--set training.learning_rate=3e-3": Run(add=SMALL_TUNE),
    f"mltune tune {DIGITS} --sampler tpe --n-trials 40 --study-name cnn-tpe": Run(
        replace=(("--n-trials 40", "--n-trials 1"),), add="--set training.epochs=1"),
    f"mltune tune {DIGITS} --set training.epochs=10 --set "
    "'search_space.filters.choices=[16,32]' --study-name digits-wide": Run(
        replace=(("training.epochs=10", "training.epochs=1"),), add="--n-trials 1"),
    "curl -LO https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz": Download(
        "mnist.npz", SHARED_MNIST),
    f"mltune tune {DIGITS} --data mnist.npz --study-name digits-mnist": Run(
        add=f"{SMALL_TUNE} --set data.max_samples=1000", mnist=True),
    "mltune trials cnn-tpe": Run(),
    "mltune studies": Run(),
    f"mltune train {DIGITS} --set training.learning_rate=3e-3": Run(
        add="--set training.epochs=1"),
    "mlflow run . --env-manager local -P sampler=tpe -P n_trials=10 -P study_name=digits-tpe":
        Run(replace=(("-P n_trials=10", "-P n_trials=1"),), add="-P set=training.epochs=1",
            check=project_parent("digits-tpe")),
    "mlflow run . -e train --env-manager local -P set=training.epochs=3": Run(
        replace=(("training.epochs=3", "training.epochs=1"),), check=train_run),
    "mlflow run projects/digits_cnn --env-manager local -P study_name=digits-project": Run(
        add=SMALL_MLFLOW_RUN, check=project_parent("digits-project")),
    "mlflow run projects/mnist_cnn --env-manager local -P data=$PWD/mnist.npz": Run(
        add="-P n_trials=1 -P set=data.max_samples=1000", mnist=True),
    # 2. Compare: the MLflow UI, on a free port instead of 5000.
    "mlflow ui --backend-store-uri sqlite:///mlflow.db": Serve(add="--port {port}", ready="/"),
    # 3. Register.
    f"mltune tune {DIGITS} --register-as digits-cnn": Run(add=SMALL_TUNE),
    "mltune register --study digits-cnn --name digits-cnn": Run(),
    "mlflow run . -e register --env-manager local -P study_name=digits-cnn -P name=digits-cnn":
        Run(),
    # Serving, on a free port instead of 5001; curl's -w adds the HTTP status after the body.
    "mlflow models serve -m models:/digits-cnn@champion --env-manager local -p 5001": Serve(
        replace=(("-p 5001", "-p {port}"),), ready="/ping", keep=True),
    "curl -s 127.0.0.1:5001/invocations -H 'Content-Type: application/json' -d '{\"inputs\": "
    "[[[0, 0, 5, 13, 9, 1, 0, 0], [0, 0, 13, 15, 10, 15, 5, 0], [0, 3, 15, 2, 0, 11, 8, 0], "
    "[0, 4, 12, 0, 0, 8, 8, 0], [0, 5, 8, 0, 0, 9, 8, 0], [0, 4, 11, 0, 1, 12, 7, 0], "
    "[0, 2, 14, 5, 10, 12, 0, 0], [0, 0, 6, 13, 10, 0, 0, 0]]]}'": Request(
        replace=(("127.0.0.1:5001", "127.0.0.1:{port}"),), add="-w '\\n%{http_code}'"),
    # Scale out: two trials, so that two of the workers train at once.
    f"mltune tune {DIGITS} --workers 4": Run(add="--n-trials 2 --set training.epochs=1"),
    "mltune tune projects/mnist_cnn/study.yaml --workers 2 --storage "
    "postgresql://user:pw@db:5432/optuna --tracking-uri http://mlflow:5000": NotHere(POSTGRES),
    "mltune worker --study-name mnist-cnn --storage postgresql://user:pw@db:5432/optuna "
    "--tracking-uri http://mlflow:5000": NotHere(POSTGRES),
    "mltune tune projects/mnist_cnn/study.yaml --gpus 0,1 --trials-per-gpu 4": NotHere(
        "needs two GPUs"),
    f"mltune tune {DIGITS} --trials-per-process 10": Run(add=SMALL_TUNE),
    # Compare samplers.
    f"mltune compare {DIGITS} --samplers random,tpe --budget 8 --seeds 3 --set "
    "training.epochs=3 --set study.sampler_options.n_startup_trials=3": Run(replace=(
        ("--budget 8", "--budget 2"), ("--seeds 3", "--seeds 1"),
        ("training.epochs=3", "training.epochs=1"))),
}


# ------------------------------------------------------------------------ the README's lines

@dataclass(frozen=True)
class Command:
    line: int  # where it starts in README.md
    text: str  # as a shell runs it: comment stripped, continuations joined

    @property
    def key(self) -> str:
        return normalize(self.text)

    def __str__(self) -> str:
        return f"README.md:{self.line}: `{self.text}`"


def normalize(command: str) -> str:
    return " ".join(command.split())


def strip_comment(line: str) -> str:
    """``line`` without a trailing shell comment: a ``#`` that starts a word outside quotes."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def readme_commands(text: str) -> list[Command]:
    commands: list[Command] = []
    in_bash, pending, start = False, "", 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not in_bash:
            in_bash = line.strip() == "```bash"
            continue
        if line.strip().startswith("```"):
            assert not pending, f"README.md:{start}: a `\\` continuation runs off its block"
            in_bash = False
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):  # a continuation: no comment can precede it
            pending += line.rstrip()[:-1] + " "
            continue
        command = (pending + strip_comment(line)).strip()
        pending = ""
        if command:
            commands.append(Command(start, command))
    return commands


README_COMMANDS = readme_commands(README.read_text())


def test_the_parser_strips_comments_and_joins_continuations() -> None:
    text = ("```bash\nmltune tune a.yaml   # tune it\ncurl -d '{\"a\": \"#1\"}' x#y\n"
            "mlflow run . \\\n  -P n=1   # comment\n\n# a comment line\n```\n"
            "```python\nprint(1)\n```\n")
    assert [(c.line, c.key) for c in readme_commands(text)] == [
        (2, "mltune tune a.yaml"), (3, "curl -d '{\"a\": \"#1\"}' x#y"),
        (4, "mlflow run . -P n=1")]


def unclassified_message(commands: list[Command]) -> str:
    return ("README.md has shell commands that tests/test_readme.py does not classify; add each "
            "to COMMANDS there, as Run() (as written), Run(add=..., replace=...) (with small "
            "overrides), Serve/Request/Download, or NotHere(reason):\n"
            + "\n".join(f"  {c}" for c in commands))


def test_every_readme_command_is_classified() -> None:
    assert len(README_COMMANDS) >= 20, "the README's bash blocks were not found"
    unclassified = [c for c in README_COMMANDS if c.key not in COMMANDS]
    assert not unclassified, unclassified_message(unclassified)
    keys = {c.key for c in README_COMMANDS}
    stale = [k for k in COMMANDS if k not in keys]
    assert not stale, ("tests/test_readme.py classifies commands that README.md no longer has; "
                       "remove them from COMMANDS (or fix the README):\n  " + "\n  ".join(stale))
    for command in README_COMMANDS:  # every override applies to the text it overrides
        step = COMMANDS[command.key]
        if isinstance(step, Run):
            step.command(command.text, port=5000)
    runnable = [c for c in README_COMMANDS if isinstance(COMMANDS[c.key], Run)]
    assert len(runnable) >= 15


# ----------------------------------------------------------------- the user's fresh clone

# What a fresh clone lacks: git's own folder, and what .gitignore keeps out of it.
NOT_IN_A_CLONE = (".git", "__pycache__", "*.egg-info", ".venv", "venv", ".ci-venv",
                  ".mypy_cache", ".ruff_cache", ".pytest_cache", ".import_linter_cache",
                  "mlflow.db*", "mlruns", "mlartifacts", "optuna_journal.log*", "*.flock",
                  "*.log", "test-artifacts", ".whl", "build", "dist", "mnist.npz")


@dataclass
class Session:
    """One user's copy of the repository and the servers they started from it."""

    root: Path
    env: dict[str, str]
    servers: list[subprocess.Popen] = field(default_factory=list)
    port: int | None = None  # of the server started last

    def stop_servers(self) -> None:
        while self.servers:
            proc = self.servers.pop()
            for sig in (signal.SIGTERM, signal.SIGKILL):  # then whatever is left of the group
                try:
                    os.killpg(proc.pid, sig)  # the server and the workers it started
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    pass


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    root = tmp_path_factory.mktemp("readme") / "mltune"
    shutil.copytree(REPO, root, ignore=shutil.ignore_patterns(*NOT_IN_A_CLONE), symlinks=True)
    assert (root / "README.md").exists() and (root / "projects/digits_cnn/study.yaml").exists()
    assert not any((root / name).exists() for name in ("mlflow.db", "optuna_journal.log",
                                                          "mlruns", ".git"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLTUNE_"))}
    # The virtualenv's mltune and mlflow first; no telemetry; no MLflow job runner (a server
    # starts eight more processes for GenAI features without it set).
    env.update(QUIET_ENV, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
               PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    user = Session(root, env)
    yield user
    user.stop_servers()


def shown(proc: subprocess.CompletedProcess) -> str:
    return (f"exit code {proc.returncode}\n--- stdout ---\n{proc.stdout[-6000:]}\n"
            f"--- stderr ---\n{proc.stderr[-6000:]}")


def run(user: Session, command: str) -> subprocess.CompletedProcess:
    started = time.monotonic()
    try:
        proc = subprocess.run(["bash", "-c", command], cwd=user.root, env=user.env,
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"`{command}` ran over {COMMAND_TIMEOUT_S} s:\n{e.stdout!r}\n{e.stderr!r}")
    print(f"\n[{time.monotonic() - started:5.1f} s] {command}")
    return proc


def serve(user: Session, command: str, step: Serve) -> None:
    assert user.port is not None
    log_path = user.root.parent / f"server-{user.port}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=user.root, env=user.env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    user.servers.append(proc)
    started = time.monotonic()
    url = f"http://127.0.0.1:{user.port}{step.ready}"
    while True:
        if proc.poll() is not None:
            pytest.fail(f"`{command}` exited with {proc.returncode}:\n"
                        f"{log_path.read_text()[-6000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    break
        except OSError:  # refused, or not 200 yet (HTTPError)
            pass
        if time.monotonic() - started > SERVER_TIMEOUT_S:
            pytest.fail(f"`{command}`: GET {url} not 200 after {SERVER_TIMEOUT_S} s:\n"
                        f"{log_path.read_text()[-6000:]}")
        time.sleep(0.5)
    print(f"\n[{time.monotonic() - started:5.1f} s] {command} (GET {step.ready}: 200)")
    if not step.keep:
        user.stop_servers()


def runs_in(user: Session) -> dict[str, Any]:
    """Every run in the user's ./mlflow.db (parents and children), by id."""
    db = user.root / "mlflow.db"
    if not db.exists():
        return {}
    client = MlflowClient(f"sqlite:///{db}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return {r.info.run_id: r for r in client.search_runs(experiments, max_results=10_000)}


# The commands that cannot run here (each with its reason in COMMANDS) are checked by
# test_every_readme_command_is_classified, and not made test items to skip.
RUNNABLE = [c for c in README_COMMANDS if not isinstance(COMMANDS.get(c.key), NotHere)]


@pytest.mark.slow
@pytest.mark.parametrize("command", RUNNABLE, ids=lambda c: f"line{c.line}")
def test_readme_command(command: Command, session: Session) -> None:
    step = COMMANDS.get(command.key)
    if step is None:
        pytest.fail(unclassified_message([command]))
    if isinstance(step, Download):
        if not step.source.exists():
            pytest.skip(f"{step.file}: no copy at {step.source}, and this test does not "
                        "download it; the commands that read it are skipped too")
        (session.root / step.file).symlink_to(step.source)
        return
    assert isinstance(step, Run)
    if step.mnist and not (session.root / "mnist.npz").exists():
        pytest.skip(f"needs mnist.npz, which the README downloads: no copy at {SHARED_MNIST}")
    if isinstance(step, Serve):
        session.port = free_port()
        serve(session, step.command(command.text, session.port), step)
        return
    shell = step.command(command.text, session.port)
    before = runs_in(session) if step.check else {}
    proc = run(session, shell)
    assert proc.returncode == 0, f"{command}\nran as `{shell}`: {shown(proc)}"
    if step.check:
        step.check([r for run_id, r in runs_in(session).items() if run_id not in before])
    if isinstance(step, Request):
        body, _, status = proc.stdout.rpartition("\n")
        assert status == "200", f"{command}: HTTP {status}\n{body}\n{proc.stderr}"
        predictions = np.asarray(json.loads(body)["predictions"], dtype=float)
        assert predictions.shape == (step.images, step.classes), body
        np.testing.assert_allclose(predictions.sum(axis=1), 1.0, rtol=1e-4)
        session.stop_servers()



@pytest.mark.slow
def test_the_commands_kept_their_stores_at_the_root(session: Session) -> None:
    """After the commands above (``mlflow run`` of projects in their own folders included),
    the embedded stores are ``./mlflow.db`` and ``./optuna_journal.log``, and no other."""
    assert (session.root / "mlflow.db").is_file()
    assert (session.root / "optuna_journal.log").is_file()
    stores = ("mlflow.db", "optuna_journal.log", "mlruns")
    strays = [p for p in session.root.rglob("*") if p.name in stores and p.parent != session.root]
    assert not strays, f"stores outside the root: {strays}"
