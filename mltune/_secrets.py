"""One redaction for every text mltune writes: the console, MLflow (tags, params, text
artifacts), Optuna (user attrs) and logs.

Masked: the password of any URL with user info (``scheme://user:secret@host``, an unencoded
``@`` in the password included), ``password=``/``token=``-style query values, and, anywhere in
a text, the exact secret values of the URLs mltune was configured with (``--storage``,
``--tracking-uri``) and of MLflow's credential variables, once :func:`remember` has seen them:
an error message that quotes only the password is masked too.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

from mltune._errors import ConfigError

__all__ = [
    "check_userinfo",
    "redact",
    "remember",
    "scrub",
    "scrub_console",
    "scrub_files",
    "scrub_value",
    "scrubbed_console",
]

MASK = "***"
# The user info ends at the last "@" before the path: a password may hold an unencoded "@".
_USERINFO = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^/\s]*)@")
_QUERY_SECRET = re.compile(
    r"(?i)([?&;](?:password|passwd|pwd|token|secret|access_token|api_key)=)[^&;\s'\"]*")
# MLflow's credential variables: their values are secrets wherever they show up.
_SECRET_VARS = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "PGPASSWORD")
# A shorter value would mask ordinary words; such a password is still masked inside URLs.
_MIN_SECRET = 4
_TEXT_FILES = {".csv", ".txt", ".json", ".yaml", ".yml", ".html", ".md", ".log"}

_secrets: set[str] = set()
_lock = threading.Lock()


def redact(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    url = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", url)
    return _QUERY_SECRET.sub(rf"\1{MASK}", url)


def remember(*urls: str | None) -> None:
    """Note the secret values in ``urls`` (and MLflow's credential variables), so that
    :func:`scrub` masks them wherever they appear, alone or inside other text."""
    found: set[str] = set()
    for url in urls:
        if not url:
            continue
        m = _USERINFO.search(url)
        if m and m["pw"]:
            # With an unencoded "@" a driver may quote the part after it as the host.
            found |= {m["pw"], unquote(m["pw"]), *m["pw"].split("@")}
        with _suppress():
            query = urlsplit(url).query
            for part in re.split(r"[&;]", query):
                key, _, value = part.partition("=")
                if value and _QUERY_SECRET.match(f"?{key}="):
                    found |= {value, unquote(value)}
    found |= {os.environ[v] for v in _SECRET_VARS if os.environ.get(v)}
    with _lock:
        _secrets.update(s for s in found if len(s) >= _MIN_SECRET)


def check_userinfo(url: str, key: str) -> None:
    """Refuse a URL whose password holds an unencoded ``@`` (drivers split it wrongly)."""
    m = _USERINFO.match(url)
    if m and "@" in m["pw"]:
        raise ConfigError(key, f"the password in {redact(url)} holds an unencoded '@': "
                          "write it as %40 (URLs percent-encode their user info)")


def scrub(text: str) -> str:
    """``text`` with every URL password and every remembered secret masked."""
    text = redact(text)
    for secret in sorted(_secrets, key=len, reverse=True):  # a longer one may hold a shorter
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def scrub_value(value: Any) -> Any:
    """:func:`scrub` on every string in ``value`` (dicts, lists, tuples: new containers)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub_value(k): scrub_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(scrub_value(v) for v in value)
    return value


def scrub_files(folder: str | Path) -> None:
    """Scrub the text files under ``folder`` in place (artifacts before they are logged)."""
    for path in Path(folder).rglob("*"):
        if path.suffix.lower() in _TEXT_FILES and path.is_file():
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            clean = scrub(text)
            if clean != text:
                path.write_text(clean, encoding="utf-8")


class _ScrubbedStream(io.TextIOBase):
    """A console stream that scrubs what is written through it; all else is the stream's."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(scrub(text))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", "utf-8")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def scrub_console() -> Callable[[], None]:
    """Scrub ``sys.stdout``, ``sys.stderr`` and the logging handlers that write to them:
    progress lines, messages, warnings, library logs and tracebacks alike. Returns the undo."""
    saved = sys.stdout, sys.stderr
    wrapped = {id(s): _wrap(s) for s in saved}
    sys.stdout, sys.stderr = wrapped[id(saved[0])], wrapped[id(saved[1])]
    handlers = [h for h in _stream_handlers() if id(h.stream) in wrapped]
    for h in handlers:
        h.setStream(wrapped[id(h.stream)])

    def undo() -> None:
        sys.stdout, sys.stderr = saved
        for h in handlers:
            stream = h.stream
            if isinstance(stream, _ScrubbedStream):
                h.setStream(stream._stream)

    return undo


@contextmanager
def scrubbed_console() -> Iterator[None]:
    """:func:`scrub_console` while the block runs."""
    undo = scrub_console()
    try:
        yield
    finally:
        undo()


def _wrap(stream: Any) -> Any:
    return stream if isinstance(stream, _ScrubbedStream) else _ScrubbedStream(stream)


def _stream_handlers() -> list[logging.StreamHandler[Any]]:
    loggers: list[Any] = [logging.getLogger()]
    loggers += [x for x in list(logging.Logger.manager.loggerDict.values())
                if isinstance(x, logging.Logger)]
    return [h for x in loggers for h in x.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


@contextmanager
def _suppress() -> Iterator[None]:
    try:
        yield
    except ValueError:
        pass
