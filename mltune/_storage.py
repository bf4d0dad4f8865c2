"""Optuna storage: a database URL or a journal file, opened with the checks and messages a
user needs; and the lookup of an existing study.

Also the two checks every SQLite store gets, the MLflow one (:mod:`mltune._tracking`) as well
as Optuna's: its folder exists and can be written, and its first opening (which creates the
tables) is done by one process at a time.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages.journal import JournalFileOpenLock

from mltune._errors import ConfigError
from mltune._secrets import check_userinfo, redact, remember

__all__ = ["DEFAULT_STORAGE", "StaleCallback", "check_sqlite", "existing_directions",
           "load_study", "open_storage", "sqlite_lock"]

try:
    import fcntl  # POSIX: locks the kernel releases when their process dies
except ImportError:  # Windows: Optuna's own journal lock, and no lock around store creation
    fcntl = None  # type: ignore[assignment]

DEFAULT_STORAGE = "optuna_journal.log"
LOCK_WAIT_S = 120.0  # creating a store takes a second or two; a holder this slow is stuck

StaleCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


def check_sqlite(url: str, key: str, *, write: bool = True) -> Path | None:
    """The database file of an SQLite URL (None for another kind of URL, or an in-memory
    database), checked before anything opens it: the URL has the form SQLAlchemy reads,
    the folder exists (SQLAlchemy would fail, MLflow would create it silently) and, with
    ``write``, the file or its folder can be written (found out otherwise only at the first
    write, after the study or run exists). :class:`ConfigError` naming ``key`` if not."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return None  # not a database URL: the store's own opening says so
    if parsed.get_backend_name() != "sqlite":
        return None
    shown = redact(url)
    if parsed.host:  # sqlite://x.db: SQLAlchemy's "Invalid SQLite URL"
        raise ConfigError(key, "an SQLite URL must be sqlite:///PATH (three slashes, four "
                          f"before an absolute path), but got {shown}")
    if not parsed.database or parsed.database == ":memory:" or parsed.database.startswith(
            "file:"):
        return None
    path = Path(parsed.database)
    folder = path.parent
    if not folder.is_dir():
        raise ConfigError(key, f"the folder of an SQLite database must exist, but {folder} "
                          f"does not (in {shown})")
    if write:
        # SQLite writes a journal file beside the database: the folder must be writable too.
        if path.exists() and not os.access(path, os.W_OK):
            raise ConfigError(key, f"the SQLite database must be writable, but {path} is "
                              f"read-only (in {shown})")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(key, f"the folder of an SQLite database must be writable (SQLite "
                              f"writes its journal there), but {folder} is read-only "
                              f"(in {shown})")
    return path


@contextlib.contextmanager
def sqlite_lock(database: Path, key: str) -> Iterator[None]:
    """Held while this process opens the SQLite store ``database`` for the first time.

    The first opening of a new store creates its tables and runs its migrations (MLflow's
    ``MlflowClient``, Optuna's ``RDBStorage``); two processes doing that at once fail with
    SQL errors, and can leave the store half-migrated for good ("table
    _alembic_tmp_latest_metrics already exists"). ``flock`` on ``DATABASE.lock`` serializes
    the openings; the kernel releases it when its process dies, so a killed process leaves
    no stale lock. Where the lock file cannot be made (a read-only folder, where no process
    creates a store either), the store is opened without it.
    """
    lock = database.with_name(database.name + ".lock")
    if fcntl is None:
        yield
        return
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError:
        yield
        return
    try:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ConfigError(key, f"another process has held {lock} for "
                                      f"{LOCK_WAIT_S:.0f} s while opening {database}; stop "
                                      "it, or the store is not usable") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


class _JournalLock(JournalFileOpenLock):
    """The journal's write lock: ``flock`` on ``JOURNAL.flock``, released by the kernel when
    its process dies.

    Optuna's own locks create ``JOURNAL.lock`` and delete it on release, so a process killed
    while writing (SIGKILL, out of memory) leaves it behind, and every later process waits out
    a 30 s grace period before taking it over. Optuna exports no base class for journal locks
    (``BaseJournalFileLock`` is in a private module), so this subclasses a public one and
    replaces all it does. A lock on a local disk: journal storage is for processes on one
    machine (DESIGN.md).
    """

    def __init__(self, journal: str) -> None:  # no super().__init__: nothing of it is used
        self._lock_file = journal + ".flock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self._lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            # Unlocked before closing: a process forked meanwhile shares the descriptor.
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __getstate__(self) -> dict[str, Any]:  # JournalStorage pickles its backend
        return {"_lock_file": self._lock_file, "_fd": None}


def open_storage(url: str | None, *, heartbeat: tuple[int, int | None] | None = None,
                 on_stale: StaleCallback | None = None, existing: bool = False
                 ) -> optuna.storages.BaseStorage:
    """A database URL (``sqlite:///``, ``postgresql://``...) or a journal file path.

    No URL means the journal file ``optuna_journal.log`` in the current folder, which is safe
    for several processes on one machine (Optuna's FAQ advises against SQLite there).
    ``heartbeat`` (interval, grace period in seconds) turns on Optuna's heartbeat for a
    database: a trial whose worker stopped beating is failed and ``on_stale`` is called.
    ``existing``: the storage must exist already (to read a study or join one): a journal
    file or SQLite database that does not is an error, not created.
    """
    url = url or DEFAULT_STORAGE
    remember(url)
    check_userinfo(url, "--storage")
    shown = redact(url)
    if existing:
        _check_exists(url)
    try:
        if "://" in url:
            database = check_sqlite(url, "--storage", write=not existing)
            interval, grace = heartbeat if heartbeat else (None, None)
            with contextlib.ExitStack() as stack:
                if database is not None:
                    stack.enter_context(sqlite_lock(database, "--storage"))
                with warnings.catch_warnings():  # heartbeats "experimental" since Optuna 2.9
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return optuna.storages.RDBStorage(
                        url, engine_kwargs={"pool_pre_ping": True},
                        heartbeat_interval=interval, grace_period=grace,
                        heartbeat_stale_trial_callback=on_stale)
        path = Path(url)
        if not path.parent.is_dir():
            raise ConfigError("--storage", f"the folder of a journal file must exist, but "
                              f"{path.parent} does not (in {shown})")
        if not existing:
            _check_writable_journal(path, shown)
        from optuna.storages.journal import JournalFileBackend

        lock = _JournalLock(str(path)) if fcntl is not None else None
        return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=lock))
    except ConfigError:
        raise
    except Exception as e:
        reason = redact(str(e).splitlines()[0]) if str(e) else type(e).__name__
        raise ConfigError("--storage", f"cannot open Optuna storage {shown}: {reason}") from None


def _check_writable_journal(path: Path, shown: str) -> None:
    """The journal file, or its folder when it is new, can be written; so can its lock."""
    lock = Path(str(path) + ".flock")
    for needed, what in ((path, "journal file"), (lock, "journal's lock file")):
        if needed.exists():
            if not os.access(needed, os.W_OK):
                raise ConfigError("--storage", f"the {what} must be writable, but {needed} is "
                                  f"read-only (in {shown})")
        elif not os.access(needed.parent, os.W_OK | os.X_OK):
            raise ConfigError("--storage", f"the folder of a journal file must be writable, "
                              f"but {needed.parent} is read-only (in {shown})")


def _check_exists(url: str) -> None:
    """A journal file or SQLite database to read a study from exists and is one; opening
    one that does not would create it, empty (Optuna creates its tables in any database)."""
    hint = "pass --storage with the storage the study was run with"
    if "://" not in url:
        if not Path(url).exists():
            raise ConfigError("--storage", f"no Optuna journal file {url} here; {hint}")
        return
    database = check_sqlite(url, "--storage", write=False)
    if database is None:
        return
    shown = redact(url)
    if not database.is_file():
        raise ConfigError("--storage", f"no Optuna database {database} here ({shown}); {hint}")
    try:
        # Read-only, so looking creates nothing.
        with contextlib.closing(sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro",
                                                uri=True)) as db:
            tables = {row[0] for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as e:
        raise ConfigError("--storage", f"{shown} must be an Optuna database, but {database} "
                          f"cannot be read as one ({e}); {hint}") from None
    if "studies" not in tables:
        raise ConfigError("--storage", f"{shown} must be an Optuna database, but {database} "
                          f"has no Optuna tables; {hint}")


def existing_directions(storage: optuna.storages.BaseStorage, name: str) -> list[str] | None:
    """The directions of study ``name`` when it exists already, else None."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    return [d.name.lower() for d in storage.get_study_directions(study_id)]


def load_study(study_name: str, storage: str | None = None) -> optuna.Study:
    """An existing study; :class:`ConfigError` naming what exists when it does not. Nothing
    is created: neither a journal file nor a database that is not there already."""
    store = open_storage(storage, existing=True)
    try:
        study = optuna.load_study(study_name=study_name, storage=store)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(store)]
        known = f"; studies there: {', '.join(names)}" if names else "; it holds no study"
        raise ConfigError("STUDY", f"no study named {study_name!r} in "
                          f"{redact(storage or DEFAULT_STORAGE)}{known}") from None
    return study
