"""The MLflow and Optuna stores as a user meets them: a new SQLite store opened by two
processes at once, a store that cannot be written, a URL with a typo, a deleted experiment,
and a journal lock left behind by a killed process."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from mltune._cli import app
from mltune._storage import open_storage

runner = CliRunner()


def invoke(*args: object) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def tables(database: Path) -> set[str]:
    with sqlite3.connect(database) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master "
                                             "WHERE type = 'table'")}


def one_line_error(err: str, start: str) -> None:
    """What the CLI prints for bad input: one line, no traceback."""
    assert err.startswith(f"error: {start}"), err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "sqlite3." not in err


# -- two first starts at once ----------------------------------------------------------------

# Opens a store the way `mltune tune` does (Tracker.check, then the experiment; open_storage,
# then the study), once per line read: both processes get each line at the same moment.
OPEN_STORE = """
import sys

import optuna

from mltune._storage import open_storage
from mltune._tracking import Tracker

print("ready", flush=True)
for line in sys.stdin:
    kind, url = line.split()
    try:
        if kind == "mlflow":
            tracker = Tracker(url, "exp")
            tracker.check()
            tracker.ensure_experiment()
        else:
            optuna.create_study(storage=open_storage(url), study_name="s", load_if_exists=True)
        print("ok", flush=True)
    except BaseException as e:
        print((f"{type(e).__name__}: {e}".splitlines() or ["?"])[0], flush=True)
"""
ROUNDS = 3  # before the lock, 2 of 3 first starts at once failed (alembic or UNIQUE errors)


@pytest.mark.parametrize("kind", [pytest.param("mlflow", marks=pytest.mark.slow), "optuna"])
def test_two_first_starts_on_a_new_store_both_succeed(kind, tmp_path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_STORE], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=open(tmp_path / f"err{i}", "w"),
                              text=True) for i in range(2)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for n in range(ROUNDS):
            url = f"sqlite:///{tmp_path / f'{kind}{n}.db'}"
            for p in procs:
                assert p.stdin is not None
                p.stdin.write(f"{kind} {url}\n")
                p.stdin.flush()
            answers = [p.stdout.readline().strip() for p in procs if p.stdout is not None]
            assert answers == ["ok", "ok"], f"round {n}: {answers}"
            # The store works afterwards, for a third process as well.
            if kind == "mlflow":
                client = MlflowClient(url)
                exp = client.get_experiment_by_name("exp")
                assert exp is not None
                run = client.create_run(exp.experiment_id)
                client.set_terminated(run.info.run_id)
            else:
                study = optuna.load_study(study_name="s", storage=open_storage(url))
                study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
                assert len(study.trials) == 1
    finally:
        for p in procs:
            if p.stdin is not None:
                p.stdin.close()
            p.wait(timeout=60)


# -- the journal's lock ---------------------------------------------------------------------

# Takes the journal's write lock as a worker does while it appends, and holds it.
HOLD_LOCK = """
import sys, time

from mltune._storage import open_storage

lock = open_storage(sys.argv[1])._backend._lock
lock.acquire()
print("locked", flush=True)
sys.stdin.readline()
lock.release()
print("released", flush=True)
time.sleep(600)
"""


def hold_journal_lock(journal: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(journal)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_lock_left_by_a_killed_process_does_not_delay_the_next_start(tmp_path) -> None:
    journal = tmp_path / "optuna_journal.log"
    holder = hold_journal_lock(journal)
    holder.send_signal(signal.SIGKILL)  # killed while it writes: no chance to unlock
    holder.wait()
    start = time.monotonic()
    optuna.create_study(storage=open_storage(str(journal)), study_name="after")
    took = time.monotonic() - start
    # Optuna's own lock file outlives its process: the next start waited its 30 s grace period.
    assert took < 5, f"the first start after a killed lock holder took {took:.1f} s"


def test_the_journal_lock_keeps_writers_apart(tmp_path) -> None:
    journal = tmp_path / "optuna_journal.log"
    holder = hold_journal_lock(journal)
    try:
        worker = threading.Thread(target=optuna.create_study, kwargs={
            "storage": open_storage(str(journal)), "study_name": "waits"})
        worker.start()
        worker.join(1.5)
        assert worker.is_alive(), "wrote to the journal while another process held its lock"
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
        worker.join(10)
        assert not worker.is_alive()
    finally:
        holder.kill()
        holder.wait()
    assert optuna.load_study(study_name="waits", storage=open_storage(str(journal)))


# -- checks before anything is written --------------------------------------------------------

def test_tracking_uri_in_a_missing_folder_exits_2_and_creates_nothing(write_study, tmp_path
                                                                      ) -> None:
    missing = tmp_path / "missing" / "dir"
    code, _, err = invoke("tune", write_study(), "--tracking-uri", f"sqlite:///{missing}/m.db",
                          "--storage", tmp_path / "j.log")
    assert code == 2
    one_line_error(err, f"--tracking-uri: the folder of an SQLite database must exist, but "
                        f"{missing} does not")
    assert not (tmp_path / "missing").exists()
    assert not (tmp_path / "j.log").exists()


@pytest.mark.parametrize(("uri", "message"), [
    ("bogus://x", "must be a tracking URI MLflow supports (a scheme of "),
    ("sqlite://x.db", "an SQLite URL must be sqlite:///PATH (three slashes"),
], ids=["unknown-scheme", "two-slashes"])
def test_unusable_tracking_uri_exits_2_naming_the_option(uri, message, write_study, tmp_path
                                                         ) -> None:
    code, _, err = invoke("tune", write_study(), "--tracking-uri", uri,
                          "--storage", tmp_path / "j.log")
    assert code == 2
    one_line_error(err, "--tracking-uri: ")
    assert message in err and uri in err
    assert not (tmp_path / "j.log").exists()


def test_storage_in_a_missing_folder_exits_2(write_study, stores, tmp_path) -> None:
    code, _, err = invoke("tune", write_study(), "--tracking-uri", stores["tracking_uri"],
                          "--storage", f"sqlite:///{tmp_path}/nodir/o.db")
    assert code == 2
    one_line_error(err, f"--storage: the folder of an SQLite database must exist, but "
                        f"{tmp_path}/nodir does not")
    assert not (tmp_path / "nodir").exists()


def test_deleted_experiment_exits_2_before_the_study_is_created(write_study, stores) -> None:
    client = MlflowClient(stores["tracking_uri"])
    client.delete_experiment(client.create_experiment("tiny"))
    code, _, err = invoke("tune", write_study(), "--tracking-uri", stores["tracking_uri"],
                          "--storage", stores["storage"])
    assert code == 2
    one_line_error(err, "--experiment: the MLflow experiment must be active, but 'tiny' is "
                        "deleted in ")
    assert "mlflow experiments restore --experiment-id" in err
    assert not Path(stores["storage"]).exists()  # no empty study left


@pytest.mark.parametrize("command", ["trials", "worker"])
def test_reading_a_study_from_a_missing_database_creates_none(command, stores, tmp_path
                                                              ) -> None:
    typo = tmp_path / "typo.db"
    args = ["trials", "s"] if command == "trials" else ["worker", "--study-name", "s",
                                                        "--tracking-uri",
                                                        stores["tracking_uri"]]
    code, _, err = invoke(*args, "--storage", f"sqlite:///{typo}")
    assert code == 2
    one_line_error(err, f"--storage: no Optuna database {typo} here")
    assert not typo.exists()
    assert not (tmp_path / "mlflow.db").exists()


def test_reading_a_study_from_another_database_leaves_it_alone(tmp_path) -> None:
    mlflow_db = tmp_path / "mlflow.db"
    MlflowClient(f"sqlite:///{mlflow_db}").search_experiments()  # creates MLflow's tables
    before = tables(mlflow_db)
    code, _, err = invoke("trials", "s", "--storage", f"sqlite:///{mlflow_db}")
    assert code == 2
    one_line_error(err, f"--storage: sqlite:///{mlflow_db} must be an Optuna database, but ")
    assert tables(mlflow_db) == before  # no Optuna tables added to it


# -- stores that cannot be written --------------------------------------------------------------

def unprivileged() -> list[str]:
    """A prefix that runs a command without root's power to write read-only files."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: read-only files stay writable")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]


def run_cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*unprivileged(), sys.executable, "-m", "mltune",
                           *(str(a) for a in args)], capture_output=True, text=True,
                          timeout=300)


def read_only(path: Path) -> Path:
    path.chmod(0o555 if path.is_dir() else 0o444)
    assert subprocess.run([*unprivileged(), "test", "-w", str(path)]).returncode == 1
    return path


def make_mlflow_db(path: Path) -> None:
    MlflowClient(f"sqlite:///{path}").search_experiments()


def make_optuna_db(path: Path) -> None:
    optuna.storages.RDBStorage(f"sqlite:///{path}")


@pytest.mark.parametrize(("option", "kind", "what"), [
    ("--tracking-uri", "sqlite-file", "the SQLite database must be writable, but "),
    ("--tracking-uri", "sqlite-folder", "the folder of an SQLite database must be writable"),
    ("--tracking-uri", "new-in-folder", "the folder of an SQLite database must be writable"),
    ("--storage", "sqlite-file", "the SQLite database must be writable, but "),
    ("--storage", "journal-file", "the journal file must be writable, but "),
])
def test_unwritable_store_exits_2_before_the_study_is_created(option, kind, what,
                                                              write_study, tmp_path) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    store = folder / ("optuna_journal.log" if kind == "journal-file" else "store.db")
    if kind == "journal-file":
        store.touch()
    elif kind != "new-in-folder":
        (make_mlflow_db if option == "--tracking-uri" else make_optuna_db)(store)
    read_only(folder if kind in ("sqlite-folder", "new-in-folder") else store)
    url = str(store) if kind == "journal-file" else f"sqlite:///{store}"
    stores = {"--tracking-uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
              "--storage": str(tmp_path / "optuna_journal.log"), option: url}
    before = sorted(p.name for p in folder.iterdir())
    proc = run_cli("tune", write_study(), *(x for kv in stores.items() for x in kv))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    one_line_error(proc.stderr, f"{option}: {what}")
    assert sorted(p.name for p in folder.iterdir()) == before
    assert not (tmp_path / "optuna_journal.log").exists()  # no empty study left
    folder.chmod(0o755)


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_read_only_storage_can_still_be_read(kind, tmp_path) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    url = f"sqlite:///{folder / 'optuna.db'}" if kind == "sqlite" else str(folder / "j.log")
    optuna.create_study(storage=open_storage(url), study_name="s")
    for path in folder.iterdir():
        read_only(path)
    read_only(folder)
    proc = run_cli("trials", "s", "--storage", url)
    folder.chmod(0o755)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "no trials"
