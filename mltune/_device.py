"""Which device trains, and GPU memory settings, for whichever Keras backend is active."""

from __future__ import annotations

from mltune._serving import native_logs_muted

__all__ = ["backend", "configure_gpus", "device_name", "native_logs_muted", "runtime_started"]


def backend() -> str:
    """The Keras backend's name, Keras (and so the backend) imported with its native
    start-up lines muted. Starts no runtime and touches no GPU."""
    with native_logs_muted():
        import keras

    return str(keras.backend.backend())


def configure_gpus() -> None:
    """Let TensorFlow grow GPU memory as needed instead of taking all of it at start.

    Must run before TensorFlow touches a GPU; a no-op on other backends and without GPUs.
    """
    if backend() != "tensorflow":
        return
    from mltune._backend_tf import configure_gpus as configure

    with native_logs_muted():
        configure()


def device_name() -> str:
    """The GPU's name (e.g. ``NVIDIA H100 80GB HBM3``) or ``CPU``."""
    name = backend()
    if name == "tensorflow":
        from mltune._backend_tf import gpu_name

        with native_logs_muted():
            return gpu_name() or "CPU"
    if name == "jax":
        import jax

        dev = jax.devices()[0]
        if dev.platform != "cpu":
            return str(dev.device_kind)
    elif name == "torch":
        import torch

        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(0))
    return "CPU"


def runtime_started() -> str | None:
    """The backend whose runtime (thread pools, devices) this process has started, or None.

    A process forked after that inherits the runtime's locks without its threads and hangs
    on its first op (a CUDA context cannot cross a fork at all). Checked without starting
    it; an unknown backend, or a check this backend version no longer allows, counts as
    started, so trials then run in this process rather than risk a hang."""
    name = backend()
    try:
        if name == "tensorflow":
            from mltune._backend_tf import runtime_started as tf_started

            return "TensorFlow" if tf_started() else None
        if name == "jax":
            from jax._src import xla_bridge

            return "JAX" if xla_bridge.backends_are_initialized() else None
        if name == "torch":
            import torch

            return "PyTorch (CUDA)" if torch.cuda.is_initialized() else None
    except (ImportError, AttributeError):
        pass
    return name
