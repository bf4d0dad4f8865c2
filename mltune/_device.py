"""Which device trains, and GPU memory settings, for whichever Keras backend is active."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["configure_gpus", "device_name", "native_logs_muted"]


@contextlib.contextmanager
def native_logs_muted() -> Iterator[None]:
    """TensorFlow's C++ start-up lines (oneDNN, CUDA probing) ignore TF_CPP_MIN_LOG_LEVEL
    before absl logging is initialised; when that variable asks for quiet, hold stderr's
    file descriptor shut while TensorFlow starts."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") < "2":
        yield
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _backend() -> str:
    with native_logs_muted():
        import keras

    return str(keras.backend.backend())


def configure_gpus() -> None:
    """Let TensorFlow grow GPU memory as needed instead of taking all of it at start.

    Must run before TensorFlow touches a GPU; a no-op on other backends and without GPUs.
    """
    if _backend() != "tensorflow":
        return
    from mltune._backend_tf import configure_gpus as configure

    with native_logs_muted():
        configure()


def device_name() -> str:
    """The GPU's name (e.g. ``NVIDIA H100 80GB HBM3``) or ``CPU``."""
    backend = _backend()
    if backend == "tensorflow":
        from mltune._backend_tf import gpu_name

        return gpu_name() or "CPU"
    if backend == "jax":
        import jax

        dev = jax.devices()[0]
        if dev.platform != "cpu":
            return str(dev.device_kind)
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(0))
    return "CPU"
