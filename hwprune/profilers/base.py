"""The contract between latency tables and measurement backends.

A backend measures two things and nothing else:

- :meth:`Profiler.measure_kernels`: the latency of *kernel variants*: one
  :class:`KernelSpec` (a conv with what the backend fuses into it, a pooling, ...)
  at many (cin, cout) widths. Each returned :class:`Measurement` is the kernel's
  own time, without session overhead or layout conversions around it.
- :meth:`Profiler.measure_networks`: end-to-end latency of whole ``nn.Module`` s,
  interleaved so that drift on a shared machine hits every network alike.

Backends are found by name in :mod:`.registry`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Sequence

from ..errors import HwpruneError, check_number
from .protocol import max_wait
from .spec import KernelSpec, Measurement

__all__ = ["Profiler", "ProfilerUnavailableError"]


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
    # longest wait for a quiet machine before a measurement (see .protocol; HWPRUNE_MAX_WAIT_S sets the default)
    max_wait_s: float = field(default_factory=max_wait)
    options: dict = field(default_factory=dict)  # backend-specific settings, recorded in the fingerprint
    # the quietest times of the reference kernel seen so far (ms): "kernel_ref_ms" inside a kernel chunk,
    # "probe_ms" run alone; the kernel store keeps them across sessions so every measurement has one anchor
    anchors: dict = field(default_factory=dict)

    name: ClassVar[str] = "base"  # the name the registry knows it by

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

    def measure_networks_fastest(self, models: Sequence, input_shape: tuple[int, ...], statistic: str,
                                 timings: int = 2, passes: int = 5, runs_per_pass: int = 10,
                                 seed: int = 0) -> list[Measurement]:
        """:meth:`measure_networks` taken ``timings`` times (seeds ``seed``, ``seed + 1``, ...: each in its own
        visiting order), each network keeping the timing with the lowest ``statistic``: one timing a busy machine
        slowed throughout is outvoted (on an H200 one call in eight read every network 1.6x,
        ``benchmarks/gpu_repeat.py``), while a machine slower on every timing still reads slow."""
        check_number("timings", timings, integer=True, minimum=1, inclusive=True)
        each = [self.measure_networks(models, input_shape, passes=passes, runs_per_pass=runs_per_pass, seed=seed + k)
                for k in range(timings)]
        return [min(timed, key=lambda m: m.value(statistic)) for timed in zip(*each)]

    def layout(self) -> dict:
        """The runtime's blocked conv layout (see :mod:`hwprune.latency.layouts`), empty where it has none:
        where layouts change between kernels, the table adds the measured reorders."""
        return {}

    def probe(self):
        """A function timing one run of :data:`.protocol.REFERENCE` alone (ms), or None (no checks)."""
        return None

    def size_chunks(self, weights: int) -> None:
        """Told how many weights the widest network about to be profiled has, before anything is measured; a
        backend whose chunk budget follows the networks' (onnxruntime's "auto") sets it here."""

    def chunk_limits(self) -> tuple[int, int]:
        """(max variants, max weight bytes) measured together; backends override.

        The weight budget keeps a chunk's weights in the last-level cache between
        runs, as a small network's are; a 64 MB chunk streamed every weight from DRAM.
        """
        return 256, 8 << 20

    def close(self) -> None:
        """Release what the backend holds (threads settings are restored here)."""
