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


# Test tiers that need a component besides Python packages. Without it a laptop skips the tier
# with a message naming what is missing; CI (CI=true, .ci/run provides both) fails instead.
def _postgres_missing() -> str | None:
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
    except OSError:
        return "no PostgreSQL on 127.0.0.1:5432 (start one with trust auth for loopback)"
    return None


def _browser_missing() -> str | None:
    import importlib.util
    import shutil

    if importlib.util.find_spec("playwright") is None:
        return "no playwright package (pip install -e '.[test]')"
    if not (os.environ.get("CHROMIUM") or shutil.which("chromium")
            or shutil.which("chromium-browser")):
        return "no Chromium (apt-get install chromium, or set CHROMIUM to its binary)"
    return None


_TIERS = {"postgres": _postgres_missing, "browser": _browser_missing}
_missing: dict[str, str | None] = {}


def pytest_runtest_setup(item: pytest.Item) -> None:
    for tier, probe in _TIERS.items():
        if item.get_closest_marker(tier) is None:
            continue
        if tier not in _missing:
            _missing[tier] = probe()
        why = _missing[tier]
        if why is None:
            continue
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"the {tier} tier must run on CI: {why}")
        pytest.skip(f"{tier} tier: {why}")


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


def small_cnn(params: dict[str, Any], *, input_shape: tuple[int, ...], num_classes: int
              ) -> Any:
    """A custom builder, as a user writes one: one convolution of ``params["filters"]``."""
    import keras

    inputs = keras.Input(input_shape)
    x = keras.layers.Rescaling(1 / 16)(inputs)
    x = keras.layers.Conv2D(int(params.get("filters", 4)), 3, padding="same",
                            activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))


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


class MlflowServer:
    """A real ``mlflow server`` process (SQLite store, proxied artifacts in ``folder``) that a
    test can stop and start again on the same port and store."""

    def __init__(self, folder: Path, backend_store_uri: str | None = None) -> None:
        self.folder = folder
        self.backend_store_uri = backend_store_uri or f"sqlite:///{folder / 'mlflow.db'}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = folder / "mlflow-server.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port",
               str(self.port), "--workers", "1", "--backend-store-uri", self.backend_store_uri,
               "--artifacts-destination", str(self.folder / "mlartifacts")]
        with open(self.log_path, "a") as log:
            # Its own process group: the server's workers go down with it. No job runner: it
            # starts eight more processes for GenAI features the tests never use.
            env = {**os.environ, **QUIET_ENV, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
            self.proc = subprocess.Popen(cmd, cwd=self.folder, stdout=log,
                                         stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {self.proc.returncode}:\n"
                            f"{self.log_path.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy after {SERVER_START_S} s:\n"
                            f"{self.log_path.read_text()[-3000:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)  # the server and whatever it started
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=15)
                time.sleep(0.5)  # its workers, a moment behind it
            except subprocess.TimeoutExpired:
                pass
        self.proc = None


@pytest.fixture
def mlflow_process(tmp_path: Path) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mlflow_server(mlflow_process: MlflowServer) -> str:
    """The URL of a real ``mlflow server`` (SQLite store and artifacts in tmp_path)."""
    return mlflow_process.url


@pytest.fixture(autouse=True)
def _mlflow_tracking_uri_restored() -> Iterator[None]:
    """A test that calls ``mlflow.set_tracking_uri`` (to load a logged model, as a user
    would) leaves MLflow's process-wide URI set; clear it, so that the next test in this
    process resolves its URI from its own arguments and environment. (``set_tracking_uri``
    sets ``MLFLOW_TRACKING_URI`` too, and ``None`` unsets it: the variable is put back.)"""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        mlflow.set_tracking_uri(None)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
