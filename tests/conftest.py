from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist" / "mnist.npz"


def tiny_study(**sections: Any) -> dict[str, Any]:
    """A study on 240 of the 8x8 digits, 1 epoch, small models: a trial takes about 1 s.

    ``sections`` are merged into study/data/training/model and replace search_space;
    None removes a section.
    """
    study: dict[str, Any] = {
        "study": {"name": "tiny", "sampler": "random", "n_trials": 3, "seed": 1},
        "data": {"source": "digits", "max_samples": 240, "validation_split": 0.25},
        "training": {"epochs": 1, "batch_size": 32},
        "model": {"dense_units": 16, "conv_blocks": 1},
        "search_space": {
            "learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
            "filters": {"type": "categorical", "choices": [4, 8]},
        },
    }
    for key, value in sections.items():
        if value is None:
            study.pop(key, None)
        elif key != "search_space" and isinstance(study.get(key), dict):
            study[key] = {**study[key], **value}
        else:
            study[key] = value
    return study


@pytest.fixture
def write_study(tmp_path: Path):
    def write(content: dict[str, Any] | None = None, name: str = "study.yaml", **sections: Any
              ) -> Path:
        """Write ``content``, or the tiny study with ``sections`` merged in."""
        path = tmp_path / name
        path.write_text(yaml.safe_dump(content if content is not None else
                                       tiny_study(**sections)))
        return path

    return write


@pytest.fixture
def stores(tmp_path: Path) -> dict[str, str]:
    """A fresh MLflow SQLite store and Optuna journal in tmp_path."""
    return {
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "storage": str(tmp_path / "optuna_journal.log"),
    }


@pytest.fixture
def npz_file(tmp_path: Path):
    """Write a small Keras-layout .npz of random 10x10 uint8 images with 3 classes."""

    def make(name: str = "data.npz", n: int = 120, **arrays: Any) -> Path:
        rng = np.random.default_rng(0)
        data = {
            "x_train": rng.integers(0, 256, (n, 10, 10), dtype=np.uint8),
            "y_train": rng.integers(0, 3, n).astype(np.uint8),
            "x_test": rng.integers(0, 256, (30, 10, 10), dtype=np.uint8),
            "y_test": rng.integers(0, 3, 30).astype(np.uint8),
        }
        data.update(arrays)
        data = {k: v for k, v in data.items() if v is not None}
        path = tmp_path / name
        np.savez(path, **data)
        return path

    return make
