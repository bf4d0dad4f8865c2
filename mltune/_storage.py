"""Optuna storage: a database URL or a journal file, opened with the checks and messages a
user needs; and the lookup of an existing study."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import optuna

from mltune._errors import ConfigError
from mltune._secrets import check_userinfo, redact, remember

__all__ = ["DEFAULT_STORAGE", "StaleCallback", "existing_directions", "load_study",
           "open_storage"]

DEFAULT_STORAGE = "optuna_journal.log"

StaleCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


def open_storage(url: str | None, *, heartbeat: tuple[int, int | None] | None = None,
                 on_stale: StaleCallback | None = None) -> optuna.storages.BaseStorage:
    """A database URL (``sqlite:///``, ``postgresql://``...) or a journal file path.

    No URL means the journal file ``optuna_journal.log`` in the current folder, which is safe
    for several processes on one machine (Optuna's FAQ advises against SQLite there).
    ``heartbeat`` (interval, grace period in seconds) turns on Optuna's heartbeat for a
    database: a trial whose worker stopped beating is failed and ``on_stale`` is called.
    """
    url = url or DEFAULT_STORAGE
    remember(url)
    check_userinfo(url, "--storage")
    shown = redact(url)
    try:
        if "://" in url:
            interval, grace = heartbeat if heartbeat else (None, None)
            with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=interval,
                    grace_period=grace, heartbeat_stale_trial_callback=on_stale)
        path = Path(url)
        if not path.parent.is_dir():
            raise ConfigError("--storage", f"the folder of {shown} does not exist")
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    except ConfigError:
        raise
    except Exception as e:
        reason = redact(str(e).splitlines()[0]) if str(e) else type(e).__name__
        raise ConfigError("--storage", f"cannot open Optuna storage {shown}: {reason}") from None


def existing_directions(storage: optuna.storages.BaseStorage, name: str) -> list[str] | None:
    """The directions of study ``name`` when it exists already, else None."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    return [d.name.lower() for d in storage.get_study_directions(study_id)]


def load_study(study_name: str, storage: str | None = None) -> optuna.Study:
    """An existing study; :class:`ConfigError` naming what exists when it does not."""
    path = storage or DEFAULT_STORAGE
    if "://" not in path and not Path(path).exists():
        raise ConfigError("--storage", f"no Optuna journal file {path} here; pass --storage "
                          "with the storage the study was run with")
    store = open_storage(storage)
    try:
        study = optuna.load_study(study_name=study_name, storage=store)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(store)]
        known = f"; studies there: {', '.join(names)}" if names else "; it holds no study"
        raise ConfigError("STUDY", f"no study named {study_name!r} in "
                          f"{redact(storage or DEFAULT_STORAGE)}{known}") from None
    return study
