"""The package's shape, as DESIGN.md draws it: the public API is what ``mltune`` exports, and
the boundaries between its parts hold. ``lint-imports`` (in the test command) checks the
imports; these tests check what it cannot."""

from __future__ import annotations

import inspect
import io
import subprocess
import sys
import tokenize
from pathlib import Path

import tomllib

import mltune

PACKAGE = Path(mltune.__file__).parent
REPO = PACKAGE.parent


def _modules() -> list[str]:
    return sorted(f"mltune.{p.stem}" for p in PACKAGE.glob("_*.py")
                  if p.stem not in ("__main__", "__init__"))


def test_every_module_is_held_to_the_mlflow_boundary() -> None:
    """A new module cannot dodge the rule by not being listed."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["forbidden_modules"] == ["mlflow"])
    # _keras_loader and _serving ship with logged models; _serving is MLflow's pyfunc loader.
    tracking = {"mltune._tracking", "mltune._keras_loader", "mltune._serving"}
    assert sorted(set(contract["source_modules"]) | tracking) == _modules()


def test_optunas_private_api_is_used_in_one_adapter_module() -> None:
    private = {"_storage", "_trial_id", "_get_unvisited_grid_ids"}
    users = set()
    for path in PACKAGE.glob("*.py"):
        tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
        before, previous = None, None
        for tok in tokens:
            if (tok.type == tokenize.NAME and tok.string in private and previous == "."
                    and before != "mltune"):  # mltune._storage is our module, not Optuna's
                users.add(path.name)
            before, previous = previous, tok.string
    assert users == {"_optuna_compat.py"}


def test_the_public_api_is_typed_and_documented() -> None:
    for name in mltune.__all__:
        obj = getattr(mltune, name)
        assert obj is not None, name
        if inspect.isfunction(obj):
            assert obj.__doc__ and len(obj.__doc__) > 80, f"{name} has no docstring"
            signature = inspect.signature(obj)
            assert signature.return_annotation is not inspect.Signature.empty, name
    for fn in (mltune.tune, mltune.train, mltune.register_best):
        kinds = {p.kind for p in inspect.signature(fn).parameters.values()}
        assert inspect.Parameter.POSITIONAL_OR_KEYWORD not in kinds, fn.__name__
    # what users read back: the public functions are the package's, not a private module's
    assert mltune.tune.__module__ == "mltune._api"


def test_importing_mltune_and_its_help_stay_light() -> None:
    """``import mltune`` and ``mltune --help`` must not pay for TensorFlow, Keras or MLflow."""
    code = ("import sys, mltune, mltune._cli; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'mlflow', 'optuna') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
