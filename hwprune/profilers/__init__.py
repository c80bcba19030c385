"""Latency measurement backends: one module per backend, one small interface (:mod:`.base`).

``onnxruntime`` (CPU execution provider), ``torch`` (eager, CPU or CUDA) and
``tensorrt`` (TensorRT 10, CUDA), found by name in :mod:`.registry`. Each imports its
heavy library only when used.
"""
from .base import Profiler, ProfilerUnavailableError
from .registry import get_profiler, list_profilers, register_profiler
from .spec import KernelSpec, Measurement

__all__ = ["KernelSpec", "Measurement", "Profiler", "ProfilerUnavailableError", "get_profiler", "list_profilers",
           "register_profiler"]
