"""The user's own code: a model builder or a data loader, named by a reference.

A reference is ``path/to/file.py:function`` or ``package.module:function``. A study stores
the reference (never the function), so ``mltune worker`` on another machine with the same
code imports the same function; the logged model carries the module's file (MLflow
``code_paths``), so it loads where the user's code is not installed.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from mltune._errors import ConfigError

__all__ = ["UserCode", "code_paths", "reference", "resolve"]


def reference(fn: Callable[..., Any]) -> str:
    """Where ``fn`` can be imported from: ``package.module:function``; ``__main__:name`` for
    a function of a script or notebook (which no other process can import)."""
    module = getattr(fn, "__module__", None) or "__main__"
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", repr(fn))
    return f"{module}:{name}"


def resolve(ref: str, *, key: str, source: str | None = None) -> Callable[..., Any]:
    """Import the function ``ref`` names; :class:`ConfigError` on ``key`` naming the file or
    module when it cannot."""
    target, sep, name = ref.rpartition(":")
    if not sep or not target or not name:
        raise ConfigError(key, "must look like file.py:function or package.module:function, "
                          f"but got {ref!r}", source=source)
    if "<" in name or target == "__main__":
        raise ConfigError(key, f"{ref} is defined in a script, a notebook or a function, so "
                          "another process cannot import it; put it in a module (a .py file) "
                          "and pass it from there, or name it as file.py:function",
                          source=source)
    module = _import(target, key, source)
    obj: Any = module
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigError(key, f"{target} has no function {name!r}", source=source)
    if not callable(obj):
        raise ConfigError(key, f"{ref} is not a function, but a {type(obj).__name__}",
                          source=source)
    return obj


def _import(target: str, key: str, source: str | None) -> ModuleType:
    from mltune._device import native_logs_muted

    try:
        # The user's module imports Keras, which starts TensorFlow: its native start-up lines
        # are muted as mltune's own start of TensorFlow is.
        with native_logs_muted():
            if target.endswith(".py"):
                return _import_file(Path(target), key, source)
            return importlib.import_module(target)
    except ConfigError:
        raise
    except ModuleNotFoundError as e:
        raise ConfigError(key, f"cannot import module {target!r} ({e}); install it, or name "
                          "its file as path/to/file.py:function", source=source) from None
    except Exception as e:
        raise ConfigError(key, f"importing {target} raised {type(e).__name__}: {e}",
                          source=source) from None


def _import_file(path: Path, key: str, source: str | None) -> ModuleType:
    """Import ``path`` as the module of its file name, its folder on ``sys.path`` (as when the
    user runs a script there), so it can import the files beside it and a model saved with
    its layers names the same module the logged model ships."""
    path = path.resolve()
    if not path.is_file():
        raise ConfigError(key, f"no such file: {path}", source=source)
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve() == path:
            return loaded
        raise ConfigError(key, f"{path} would be imported as module {name!r}, but a module "
                          f"of that name is imported already from {loaded.__file__}; rename "
                          "the file", source=source)
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)


def code_paths(fn: Callable[..., Any]) -> tuple[list[str], list[str]]:
    """The files to ship with a model built by ``fn`` (its module's file, or its top-level
    package's folder), and the modules a loader imports before loading the model (so the
    custom layers they register are known). Nothing for mltune's own and for a script's or
    notebook's functions."""
    module_name = getattr(fn, "__module__", None) or "__main__"
    top = module_name.split(".")[0]
    if top in ("__main__", "mltune", "keras", "builtins"):
        return [], []
    top_module = sys.modules.get(top)
    file = getattr(top_module, "__file__", None)
    if not file:
        return [], []
    path = Path(file)
    shipped = path.parent if path.name == "__init__.py" else path
    return [str(shipped)], [module_name]


@dataclass(frozen=True)
class UserCode:
    """What a caller passed from Python that a study file can only name: the model builder,
    the data loader, and the data itself as ``(data, validation_data, test_data)``. Each
    None means "as the study says" (``model.builder``, ``data.loader``/``data.source``)."""

    builder: Callable[..., Any] | None = None
    loader: Callable[..., Any] | None = None
    data: tuple[Any, Any, Any] | None = None
