"""The python_function loader of a trial's Keras model that was built by the user's code.

MLflow ships this module with the model (as ``mltune_keras_loader``, beside the user's files
under ``code/``, which MLflow puts on ``sys.path``). It imports the user's modules, so the
custom layers they register with ``keras.saving.register_keras_serializable`` are known,
then loads the model as MLflow's Keras flavor does. No mltune installation is needed.
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Any

IMPORTS_FILE = "mltune_imports.json"


def _load_pyfunc(path: str) -> Any:
    with open(os.path.join(path, IMPORTS_FILE), encoding="utf-8") as f:
        modules = json.load(f)["modules"]
    for module in modules:
        importlib.import_module(module)
    from mlflow.keras.load import _load_pyfunc as load_keras

    return load_keras(path)
