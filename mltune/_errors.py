"""Exception types, each of which decides what happens next.

Borrowed from keras-tuner's ``errors.py`` and optuna's ``study/_optimize.py``:

* :class:`ConfigError` and :class:`DataError` are bad input. They are raised before
  anything is written to MLflow or the study storage, and the CLI turns them into one
  message and exit code 2.
* :class:`TrialError` fails the one trial it is raised in; the study goes on.
* Any other :class:`MltuneError` stops the command with exit code 1.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ConfigError", "DataError", "MltuneError", "NonFiniteLossError", "Terminated",
           "TrialError"]


class MltuneError(Exception):
    """Base class of the errors mltune reports as a message rather than a traceback."""


class ConfigError(MltuneError):
    """The study file, a ``--set`` override or a command-line option is invalid."""

    def __init__(self, key: str, message: str, *, source: str | None = None) -> None:
        self.key = key
        self.source = source
        self.message = message
        where = f" in {source}" if source else ""
        super().__init__(f"{key}{where}: {message}")

    def __reduce__(self) -> Any:  # pickled by a trial's process (mltune._trial_process)
        return (_config_error, (self.key, self.message, self.source))


def _config_error(key: str, message: str, source: str | None) -> ConfigError:
    return ConfigError(key, message, source=source)


class DataError(MltuneError):
    """The data named by ``data.source`` cannot be used."""


class TrialError(MltuneError):
    """Fails the trial it is raised in; the study continues."""


class NonFiniteLossError(TrialError):
    """The training loss became NaN or infinite."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, which stops a study as Ctrl-C does; the command exits with 143."""
