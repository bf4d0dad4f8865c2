from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist" / "mnist.npz"
SERVER_START_S = 90
QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real ``mlflow server`` (SQLite store and proxied artifacts in tmp_path); its URL."""
    port = free_port()
    log_path = tmp_path / "mlflow-server.log"
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
           "--artifacts-destination", str(tmp_path / "mlartifacts")]
    with open(log_path, "w") as log:
        # Its own process group: the server's workers go down with it.
        # No job runner: it starts eight more processes for GenAI features the test never uses.
        env = {**os.environ, **QUIET_ENV, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def stop() -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)  # the server and whatever it started
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=15)
                time.sleep(0.5)  # its workers, a moment behind it
            except subprocess.TimeoutExpired:
                pass

    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}:\n"
                            f"{log_path.read_text()[-3000:]}")
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy after {SERVER_START_S} s:\n"
                            f"{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        stop()
