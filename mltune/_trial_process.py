"""Where a trial trains: in a child process forked from this warm one (``fork``, the default
on Linux), or in this process (``none``; ``spawn`` launches worker processes that train in
their own process, see :mod:`mltune._launcher`).

The two sides of a trial meet at a :class:`TrialLink`. The Keras side
(:func:`mltune._session.train_trial`) calls it: ``started`` with the device, ``built`` with
what the untrained model already tells (its size), ``epoch`` after each epoch (which raises
to stop training: a pruned trial), ``finished`` with the outcome (which answers with a path
when the model is wanted), ``saved`` once it is written. The
Optuna and MLflow side (:class:`mltune._objective.Objective`) implements it. In one process
the Keras side calls the link directly; forked, :func:`run_forked` carries each call over a
pipe and its answer back, so the child never touches a database connection, an MLflow
client or the Optuna storage, and the parent never runs a TensorFlow op.

A fork is safe only before the backend's runtime has started (TensorFlow's thread pools, a
CUDA context): :func:`fork_blocker` says when this process can no longer fork trials.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Callable
from typing import Any, ParamSpec, Protocol, TypeVar

from mltune._errors import Terminated, TrialError
from mltune._secrets import scrub_console

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["MODES", "Spares", "TrialLink", "TrialProcessDied", "fork_blocker", "output_lock",
           "run_forked", "stopping", "stops_on_signals"]

MODES = ("fork", "spawn", "none")

# Held while a trial's process is forked and while the parent writes to the console: a child
# forked while another thread held a stream's lock would inherit it locked.
output_lock = threading.RLock()
# Set by Ctrl-C or SIGTERM: the trials' processes are being stopped, no new one starts.
stopping = threading.Event()
_live: set[Any] = set()  # the trials' processes running now


def stops_on_signals(function: Callable[P, R]) -> Callable[P, R]:
    """Run ``function`` with SIGINT and SIGTERM stopping it the same way (in the main
    thread): every trial's process is killed at once, then ``KeyboardInterrupt`` (or
    :class:`mltune._errors.Terminated` for SIGTERM) is raised where this process is, so its
    trials fail, their runs close and the parent run ends KILLED. Kubernetes, Slurm and
    systemd stop jobs with SIGTERM."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if threading.current_thread() is not threading.main_thread():
            return function(*args, **kwargs)

        def stop(signum: int, frame: Any) -> None:
            if stopping.is_set():  # stopping already: let the clean-up finish (it is bounded)
                return
            stopping.set()
            for child in list(_live):
                with contextlib.suppress(Exception):
                    child.kill()
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

        stopping.clear()
        previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            return function(*args, **kwargs)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    return wrapper


class TrialLink(Protocol):
    """What the Keras side of a trial tells the side that owns Optuna and MLflow."""

    def started(self, device: str) -> None: ...

    def built(self, param_count: int | None, latency_ms: float | None) -> None:
        """The model is built, not yet trained: its parameter count (None when the builder's
        model is not built until it sees data) and, when an objective needs it, its
        inference time per image. What several objectives compare from the first epoch."""

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Record an epoch; raises to stop training (a pruned trial)."""

    def finished(self, outcome: dict[str, Any]) -> str | None:
        """Record the trained model's outcome; returns the path to save the model to, or
        None when it is not wanted."""

    def saved(self, error: str | None) -> None:
        """The model is at the path ``finished`` gave (``error``: why it is not)."""


class TrialProcessDied(TrialError):
    """The trial's process ended without a word: killed by a signal (a segfault, the
    kernel's OOM killer) or exited by itself. ``kind`` is ``signal:SIGKILL`` or
    ``exit_code:N``."""

    def __init__(self, exitcode: int | None) -> None:
        code = -1 if exitcode is None else exitcode
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            self.kind = f"signal:{name}"
            hint = (" (the kernel's OOM killer sends SIGKILL when memory runs out)"
                    if name == "SIGKILL" else "")
            message = f"the trial's process was killed by {name}{hint}"
        else:
            self.kind = f"exit_code:{code}"
            message = f"the trial's process exited with code {code}"
        super().__init__(message)
        self.exitcode = exitcode

    def __reduce__(self) -> Any:
        return (TrialProcessDied, (self.exitcode,))


def fork_blocker() -> str | None:
    """Why this process cannot fork a trial's process, or None when it can."""
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return "forking a trial's process is done on Linux only"
    from mltune._device import runtime_started

    started = runtime_started()
    if started:
        return (f"{started} has already run in this process, and a process cannot be forked "
                "safely after that")
    return None


class Spares:
    """Trial processes forked ahead for the trials of one objective: ``target`` is what each
    runs, ``warm`` what each does first (start the backend's runtime, make the data's
    tensors). When a trial's training has finished, :func:`run_forked` forks the process of
    the next trial on the same ``env`` (a GPU slot); it warms up while this process logs the
    finished trial and samples the next one, then waits for its arguments. One list per
    ``env``: several slots on the same environment (CPU workers) each keep their own.
    :meth:`close` ends those no trial came for; a signal kills them with the trials'."""

    def __init__(self, target: Callable[..., None], warm: Callable[[], None]) -> None:
        self.target, self.warm = target, warm
        self._waiting: dict[tuple[tuple[str, str], ...], list[tuple[Any, Any]]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def take(self, env: dict[str, str] | None) -> tuple[Any, Any] | None:
        """A waiting process for ``env`` still alive, or None."""
        with self._lock:
            waiting = self._waiting.get(_env_key(env), [])
            spare = waiting.pop() if waiting else None
        if spare is not None and not spare[0].is_alive():
            _end(*spare)
            return None
        return spare

    def keep(self, env: dict[str, str] | None) -> None:
        """Fork a process for the next trial on ``env``; one that cannot be forked (memory)
        leaves that trial to fork its own."""
        if stopping.is_set() or self._closed:
            return
        try:
            spare = _fork(self.target, env, self.warm)
        except Exception:
            return
        with self._lock:
            if not self._closed:
                self._waiting.setdefault(_env_key(env), []).append(spare)
                return
        _end(*spare)

    def close(self) -> None:
        """End the processes that wait for trials that will not come."""
        with self._lock:
            self._closed = True
            spares = [s for waiting in self._waiting.values() for s in waiting]
            self._waiting.clear()
        for spare in spares:
            _end(*spare)


def _env_key(env: dict[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((env or {}).items()))


def run_forked(spares: Spares, args: tuple[Any, ...], link: TrialLink,
               env: dict[str, str] | None = None) -> None:
    """Run ``spares.target(*args, link)`` in a child process forked from this one, with
    ``env`` added to its environment (a GPU of its own). Each call the child makes on its
    link is made here on ``link``, and its answer or exception goes back. An exception of the
    target is raised here; a child that dies raises :class:`TrialProcessDied`. However this
    ends, the child is gone when it returns.

    The trial takes a process of ``spares`` forked ahead when one waits, and forks the next
    one ahead as soon as its training has finished."""
    if stopping.is_set():
        raise TrialError("not started: the study is stopping")
    child, ours = spares.take(env) or _fork(spares.target, env, spares.warm)
    try:
        if not _handed(ours, args):  # the spare died while it waited: a fresh one takes it
            _end(child, ours)
            child, ours = _fork(spares.target, env, spares.warm)
            if not _handed(ours, args):
                child.join()
                raise TrialProcessDied(child.exitcode)
        _serve(ours, child, link, functools.partial(spares.keep, env))
    finally:
        _end(child, ours)


def _handed(conn: Any, args: tuple[Any, ...]) -> bool:
    """Give a waiting trial's process its arguments; False when it died before it took
    them (a signal that was on its way when it was taken)."""
    try:
        conn.send(("start", args))
        return bool(conn.recv()[0] == "taken")
    except (EOFError, OSError):
        return False


def _fork(target: Callable[..., None], env: dict[str, str] | None,
          warm: Callable[[], None] | None) -> tuple[Any, Any]:
    """A new trial's process, waiting for its arguments: ``(process, our end of its pipe)``."""
    ctx = multiprocessing.get_context("fork")
    # The pipe is made, and the child's end closed here, under the lock every fork takes:
    # a process forked by another thread in between would hold that end open, and this
    # child's death would never reach us as the end of its pipe.
    with output_lock, warnings.catch_warnings():
        ours, theirs = ctx.Pipe()
        child = ctx.Process(target=_child_main,
                            args=(target, theirs, dict(env or {}), os.getpid(), warm),
                            name="mltune-trial")
        # Python 3.12+ warns of a fork in a process with threads (Optuna's heartbeat, other
        # trials' threads): the child only trains and talks over its pipe.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            child.start()
            _live.add(child)
        finally:
            theirs.close()
    return child, ours


def _end(child: Any, conn: Any) -> None:
    _live.discard(child)
    if child.is_alive():
        child.kill()
    child.join()
    conn.close()


def _serve(conn: Any, child: Any, link: TrialLink,
           spare: Callable[[], None] | None = None) -> None:
    """Answer the child's calls on ``link`` until it is done. ``spare``: fork the next
    trial's process, once, when training is over (``finished``) or stopped (pruned)."""
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            child.join()
            raise TrialProcessDied(child.exitcode) from None
        kind = message[0]
        if kind == "call":
            _, name, args = message
            if name == "finished" and spare is not None:
                spare()  # training is over: the next trial's process warms up meanwhile
                spare = None
            try:
                answer = getattr(link, name)(*args)
            except BaseException:
                if spare is not None:
                    spare()  # pruned: the same
                with contextlib.suppress(OSError):
                    conn.send(("stop",))
                raise
            conn.send(("answer", answer))
        elif kind == "error":
            raise _restored(message[1], message[2])
        elif kind == "done":
            return


class _PipeLink:
    """The child's link: each call goes to the parent, which answers or says stop."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def _call(self, name: str, *args: Any) -> Any:
        self.conn.send(("call", name, args))
        reply = self.conn.recv()
        if reply[0] == "stop":  # the parent ends the trial (pruned): nothing left to do
            os._exit(0)
        return reply[1]

    def started(self, device: str) -> None:
        self._call("started", device)

    def built(self, param_count: int | None, latency_ms: float | None) -> None:
        self._call("built", param_count, latency_ms)

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self._call("epoch", epoch, metrics)

    def finished(self, outcome: dict[str, Any]) -> str | None:
        return self._call("finished", outcome)

    def saved(self, error: str | None) -> None:
        self._call("saved", error)


def _child_main(target: Callable[..., None], conn: Any, env: dict[str, str], parent: int,
                warm: Callable[[], None] | None) -> None:
    # Ctrl-C reaches the whole process group: the parent decides, and stops the child.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with(parent)
    # Fresh console streams: the inherited ones' locks may have been held by another thread.
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    scrub_console()  # what the trial prints passes the study's redaction too
    os.environ.update(env)
    if warm is not None:
        with contextlib.suppress(Exception):  # what fails here fails again in the trial
            warm()
    try:
        message = conn.recv()
    except (EOFError, OSError):  # a spare no trial came for
        os._exit(0)
    with contextlib.suppress(OSError):
        conn.send(("taken",))
    code = 0
    try:
        target(*message[1], _PipeLink(conn))
        conn.send(("done",))
    except BaseException as e:
        code = 1
        text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        with contextlib.suppress(BaseException):
            conn.send(("error", _portable(e), text))
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)  # no atexit handler of the parent's (MLflow's) runs here


def _die_with(parent: int) -> None:
    """The child gets SIGKILL when its parent dies (Linux ``PR_SET_PDEATHSIG``), so a dead
    worker leaves no training process behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def _portable(error: BaseException) -> bytes:
    """``error`` pickled, or a :class:`TrialError` with its text when it does not survive
    the trip (an exception type of the user's with its own constructor)."""
    try:
        data = pickle.dumps(error)
        pickle.loads(data)
        return data
    except Exception:
        return pickle.dumps(TrialError(f"{type(error).__name__}: {error}"))


def _restored(data: bytes, text: str) -> BaseException:
    error: BaseException = pickle.loads(data)
    error.add_note(f"In the trial's process:\n{text.rstrip()}")
    return error

