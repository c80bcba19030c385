"""The backend registry: backends by name, and building one that can run here.

The built-in backends are imported on first use; :func:`register_profiler` adds a
backend of the user's own. :func:`get_profiler` raises
:class:`~hwprune.profilers.base.ProfilerUnavailableError` with a one-line reason when a
backend cannot run on this machine.
"""
from __future__ import annotations

from typing import Callable

from ..errors import HwpruneError
from .base import Profiler, ProfilerUnavailableError

__all__ = ["register_profiler", "get_profiler", "list_profilers"]


_PROFILERS: dict[str, type[Profiler]] = {}


def register_profiler(name: str) -> Callable[[type[Profiler]], type[Profiler]]:
    """Class decorator: make a backend available to :func:`get_profiler` under ``name``."""

    def wrap(cls: type[Profiler]) -> type[Profiler]:
        cls.name = name
        _PROFILERS[name] = cls
        return cls

    return wrap


def list_profilers() -> list[str]:
    _load_builtin()
    return sorted(_PROFILERS)


def get_profiler(backend: str, device: str = "cpu", **settings) -> Profiler:
    """Build backend ``backend`` for ``device``; refused in one line when it cannot run here."""
    _load_builtin()
    if backend not in _PROFILERS:
        raise HwpruneError(f"unknown latency backend {backend!r}; available: {', '.join(sorted(_PROFILERS))}")
    cls = _PROFILERS[backend]
    reason = cls.unavailable_reason(device)
    if reason:
        raise ProfilerUnavailableError(f"backend {backend!r} cannot run on {device!r} here: {reason}")
    settings = {k: v for k, v in settings.items() if v is not None}
    if settings.get("threads", 1) < 1 or settings.get("batch_size", 1) < 1:
        raise HwpruneError("threads and batch_size must be positive integers")
    return cls(device=device, **settings)


def _load_builtin() -> None:
    """Register the built-in backends (each module imports its heavy library only when used)."""
    if "onnxruntime" in _PROFILERS:
        return
    from .onnxruntime import OnnxruntimeProfiler
    from .tensorrt import TensorRTProfiler
    from .torch_backend import TorchProfiler

    for cls in (OnnxruntimeProfiler, TorchProfiler, TensorRTProfiler):
        _PROFILERS.setdefault(cls.name, cls)
