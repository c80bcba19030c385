"""What a measurement depends on besides the backend: the CPU, its cores, library versions."""
from __future__ import annotations

import importlib.metadata
import os
import platform

__all__ = ["cpu_name", "cpu_count", "version_of"]


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
