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
from typing import Any, NamedTuple

import optuna
from optuna.storages.journal import JournalFileOpenLock

from mltune._errors import ConfigError
from mltune._names import Attr
from mltune._secrets import check_userinfo, redact, remember

__all__ = ["DEFAULT_STORAGE", "StaleCallback", "StudyPeek", "all_studies", "check_sqlite",
           "create_study_once", "default_storage", "existing_directions", "load_study",
           "open_storage", "peek_study", "resolve_storage", "sqlite_lock", "storage_exists",
           "store_config", "stored_config"]

try:
    import fcntl  # POSIX: locks the kernel releases when their process dies
except ImportError:  # Windows: Optuna's own journal lock, and no lock around store creation
    fcntl = None  # type: ignore[assignment]

DEFAULT_STORAGE = "optuna_journal.log"
LOCK_WAIT_S = 120.0  # creating a store takes a second or two; a holder this slow is stuck

StaleCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


def default_storage(tracking_uri: str) -> str | None:
    """The journal file beside the MLflow store, where that store is a local file: an SQLite
    database (``sqlite:///dir/mlflow.db`` -> ``dir/optuna_journal.log``) or a file store
    (``./mlruns`` -> ``./optuna_journal.log``). None for a tracking server or a database
    elsewhere, whose studies live in the current folder.

    So every command that uses the same tracking store finds the same studies, from any
    folder: ``mlflow run projects/X`` runs in the project's folder with an absolute
    ``sqlite:////.../mlflow.db``."""
    from urllib.parse import unquote, urlparse

    if tracking_uri.startswith("sqlite:///"):
        database = unquote(tracking_uri[len("sqlite:///"):].split("?")[0])
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        return str(Path(database).parent / DEFAULT_STORAGE)
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "file":
        folder = Path(unquote(parsed.path))
    elif "://" not in tracking_uri and ":" not in tracking_uri[1:3]:  # a plain folder path
        folder = Path(tracking_uri)
    else:
        return None
    return str(folder.parent / DEFAULT_STORAGE)


def resolve_storage(storage: str | None, tracking_uri: str) -> tuple[str, str | None]:
    """The Optuna storage to use and, when it was chosen for the user, where it comes from
    (for messages): the one given, else the journal file beside the MLflow store
    (:func:`default_storage`), else ``optuna_journal.log`` in the current folder."""
    if storage:
        return storage, None
    beside = default_storage(tracking_uri)
    if beside is not None:
        return beside, f"the default: beside the MLflow store {redact(tracking_uri)}"
    return DEFAULT_STORAGE, (f"the default: the current folder, as the MLflow store "
                             f"{redact(tracking_uri)} is not a local file; pass --storage "
                             "(or set MLTUNE_STORAGE) to share studies across folders "
                             "and machines")


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


def open_storage(url: str, *, heartbeat: tuple[int, int | None] | None = None,
                 on_stale: StaleCallback | None = None, existing: bool = False
                 ) -> optuna.storages.BaseStorage:
    """A database URL (``sqlite:///``, ``postgresql://``...) or a journal file path.

    (:func:`resolve_storage` chooses one when the user gave none.)
    ``heartbeat`` (interval, grace period in seconds) turns on Optuna's heartbeat for a
    database: a trial whose worker stopped beating is failed and ``on_stale`` is called.
    ``existing``: the storage must exist already (to read a study or join one): a journal
    file or SQLite database that does not is an error, not created.
    """
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


def create_study_once(storage: optuna.storages.BaseStorage, name: str,
                      directions: list[str]) -> bool:
    """Create study ``name`` unless it exists; True for the one process that created it
    (of several starting at once: Optuna's storage refuses a second study of a name)."""
    if existing_directions(storage, name) is not None:
        return False
    try:
        storage.create_new_study(
            directions=[optuna.study.StudyDirection[d.upper()] for d in directions],
            study_name=name)
    except optuna.exceptions.DuplicatedStudyError:
        return False
    return True


def store_config(study: optuna.Study, storage: optuna.storages.BaseStorage,
                 raw: dict[str, Any]) -> None:
    """Keep the study file with the study (for ``mltune worker`` and ``mltune register``), as
    a study *system* attr: user attrs are what ``optuna studies`` and optuna-dashboard show,
    and a whole study file there makes them unreadable."""
    study_id = storage.get_study_id_from_name(study.study_name)
    storage.set_study_system_attr(study_id, Attr.STUDY_CONFIG, raw)


def stored_config(study: optuna.Study, storage: optuna.storages.BaseStorage
                  ) -> dict[str, Any] | None:
    """The study file kept by :func:`store_config` (or, for a study made by mltune 0.x
    before that, its user attr)."""
    study_id = storage.get_study_id_from_name(study.study_name)
    raw = storage.get_study_system_attrs(study_id).get(Attr.STUDY_CONFIG)
    return raw if raw is not None else study.user_attrs.get(Attr.STUDY_CONFIG)


def storage_exists(url: str) -> bool:
    """Whether opening ``url`` finds a storage rather than making one: a journal file or an
    SQLite database file that is there (a database server is taken to be there)."""
    if "://" not in url:
        return Path(url).exists()
    database = check_sqlite(url, "--storage", write=False)
    return database is None or database.is_file()


class StudyPeek(NamedTuple):
    """An existing study as :func:`peek_study` reads it."""

    user_attrs: dict[str, Any]
    n_trials: int


def peek_study(storage: optuna.storages.BaseStorage, name: str) -> StudyPeek | None:
    """The user attrs and number of trials of study ``name``, read without loading the
    study or writing anything; None when there is no such study."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    return StudyPeek(storage.get_study_user_attrs(study_id), storage.get_n_trials(study_id))


def existing_directions(storage: optuna.storages.BaseStorage, name: str) -> list[str] | None:
    """The directions of study ``name`` when it exists already, else None."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    return [d.name.lower() for d in storage.get_study_directions(study_id)]


def load_study(study_name: str, storage: str, *, where: str | None = None,
               store: optuna.storages.BaseStorage | None = None
               ) -> tuple[optuna.Study, optuna.storages.BaseStorage]:
    """An existing study and its storage; :class:`ConfigError` saying where it looked
    (``where``: how the storage was chosen) and what exists there when it does not. Nothing
    is created: neither a journal file nor a database that is not there already.
    ``store``: ``storage`` opened already (a journal file is read whole at each opening)."""
    if store is None:
        store = _open_existing(storage, where, f"no study named {study_name!r}: ")
    try:
        study = optuna.load_study(study_name=study_name, storage=store)
    except KeyError:
        names = sorted(optuna.get_all_study_names(store))
        known = f"; studies there: {', '.join(names)}" if names else "; it holds no study"
        raise ConfigError("STUDY", f"no study named {study_name!r} in "
                          f"{_where(storage, where)}{known}") from None
    return study, store


def all_studies(storage: str, *, where: str | None = None) -> list[optuna.Study]:
    """Every study in an existing storage, by name."""
    store = _open_existing(storage, where)
    names = sorted(optuna.get_all_study_names(store))
    return [optuna.load_study(study_name=name, storage=store) for name in names]


def _open_existing(storage: str, where: str | None, context: str = ""
                   ) -> optuna.storages.BaseStorage:
    """An existing storage; one that is not there is an error saying where it was looked
    for and, for a default one (``where``), why there."""
    try:
        return open_storage(storage, existing=True)
    except ConfigError as e:
        if where is None:
            raise
        raise ConfigError("--storage", f"{context}no Optuna storage at "
                          f"{_where(storage, where)}") from e


def _where(storage: str, where: str | None) -> str:
    shown = redact(storage)
    if "://" not in storage:
        shown = str(Path(storage).resolve())
    return f"{shown} ({where})" if where else shown
