"""The contract between latency tables and measurement backends, and the backend registry.

A backend measures two things and nothing else:

- :meth:`Profiler.measure_kernels`: the latency of *kernel variants*: one
  :class:`KernelSpec` (a conv with what the backend fuses into it, a pooling, ...)
  at many (cin, cout) widths. Each returned :class:`Measurement` is the kernel's
  own time, without session overhead or layout conversions around it.
- :meth:`Profiler.measure_networks`: end-to-end latency of whole ``nn.Module`` s,
  interleaved so that drift on a shared machine hits every network alike.

Backends register under a name with :func:`register_profiler`; :func:`get_profiler`
builds one and raises :class:`ProfilerUnavailableError` with a one-line reason when
it cannot run on this machine.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Sequence

from ..errors import HwpruneError
from .spec import KernelSpec, Measurement

__all__ = ["Profiler", "ProfilerUnavailableError", "register_profiler", "get_profiler", "list_profilers",
           "cpu_name", "cpu_count", "version_of"]


class ProfilerUnavailableError(HwpruneError):
    """The backend cannot run here (library or device missing); the message says why."""


@dataclass
class Profiler(ABC):
    """A measurement backend bound to a device and settings; see the module docstring."""

    device: str = "cpu"
    threads: int = 1  # intra-op threads (CPU backends); recorded for GPU ones
    batch_size: int = 1
    dtype: str = "float32"
    repeats: int = 25  # timed runs per kernel chunk
    warmup: int = 3  # untimed runs first (caches, allocators, autotuners)
    max_wait_s: float = 10.0  # longest wait for a quiet machine before a measurement (see .protocol)
    options: dict = field(default_factory=dict)  # backend-specific settings, recorded in the fingerprint
    # the quietest times of the reference kernel seen so far (ms): "kernel_ref_ms" inside a kernel chunk,
    # "probe_ms" run alone; the kernel store keeps them across sessions so every measurement has one anchor
    anchors: dict = field(default_factory=dict)

    name: ClassVar[str] = "base"  # set by @register_profiler

    @classmethod
    def unavailable_reason(cls, device: str) -> str | None:
        """None when the backend can run on ``device`` here, else one line saying why not."""
        return None

    @abstractmethod
    def fingerprint(self) -> dict:
        """Everything a measurement depends on: backend, device name, threads, batch, dtype, versions."""

    @abstractmethod
    def measure_kernels(self, spec: KernelSpec, pairs: Sequence[tuple[int, int]]) -> list[Measurement]:
        """The kernel time of ``spec`` at each (cin, cout), one :class:`Measurement` per pair."""

    @abstractmethod
    def measure_networks(self, models: Sequence, input_shape: tuple[int, ...], passes: int = 5,
                         runs_per_pass: int = 10, seed: int = 0) -> list[Measurement]:
        """End-to-end latency of each ``nn.Module`` on an input of ``input_shape``, interleaved."""

    def probe(self):
        """A function timing one run of :data:`.protocol.REFERENCE` alone (ms), or None (no checks)."""
        return None

    def chunk_limits(self) -> tuple[int, int]:
        """(max variants, max weight bytes) measured together; backends override.

        The weight budget keeps a chunk's weights in the last-level cache between
        runs, as a small network's are; a 64 MB chunk streamed every weight from DRAM.
        """
        return 256, 8 << 20

    def close(self) -> None:
        """Release what the backend holds (threads settings are restored here)."""


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
    # importing the modules registers them; each imports its heavy library lazily
    from . import onnxruntime, tensorrt, torch_backend  # noqa: F401


def cpu_name() -> str:
    """The CPU model as the OS reports it, e.g. 'AMD EPYC 7B13' (cheap; no heavy imports)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def version_of(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
