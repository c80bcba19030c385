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
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from typing import Callable, ClassVar, Iterable, Sequence

import numpy as np

from ..errors import HwpruneError

__all__ = ["KernelSpec", "Measurement", "Profiler", "REFERENCE", "quiet_runs", "ProfilerUnavailableError", "register_profiler",
           "get_profiler", "list_profilers", "summarize", "interleaved", "cpu_name", "version_of", "STATISTICS"]

STATISTICS = ("p10", "median", "p90")  # what every measurement records, in ms
QUIET_TOLERANCE = 0.10  # a probe within 10% of the quietest one seen means the machine is not disturbed


class ProfilerUnavailableError(HwpruneError):
    """The backend cannot run here (library or device missing); the message says why."""


@dataclass(frozen=True)
class KernelSpec:
    """What one table row measures, apart from its channel widths (cin, cout).

    A conv or linear kernel carries what a deployed network runs with it: the
    BatchNorm folded in, the activation, and a residual add (plus the activation
    after it) when the add directly follows. Pooling, standalone BatchNorm and adds
    have their own ``op``. ``height``/``width`` are the input's spatial size.
    """

    op: str  # conv2d | linear | maxpool2d | avgpool2d | global_(avg|max)pool2d | batchnorm2d | add | activation
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: str = "1"  # "1", "depthwise" (groups = cin = cout) or a fixed count such as "4"
    height: int = 1
    width: int = 1
    bias: bool = False  # the conv/linear's own bias (a folded BatchNorm adds one anyway)
    batchnorm: bool = False  # a BatchNorm follows (folded by inference runtimes)
    activation: str = "none"  # relu | relu6 | hardswish | hardsigmoid | sigmoid | silu | tanh | leaky_relu | gelu
    residual: bool = False  # an elementwise add of another tensor of the output's shape follows
    residual_activation: str = "none"  # activation after that add
    batch: int = 1
    dtype: str = "float32"

    @property
    def out_size(self) -> tuple[int, int]:
        """Output (height, width)."""
        if self.op in ("linear", "batchnorm2d", "add", "activation"):
            return self.height, self.width
        if self.op.startswith("global_"):
            return 1, 1
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel, self.stride, self.padding, self.dilation
        return ((self.height + 2 * ph - dh * (kh - 1) - 1) // sh + 1,
                (self.width + 2 * pw - dw * (kw - 1) - 1) // sw + 1)

    def macs(self, cin: int, cout: int) -> int:
        """Multiply-accumulates (conv/linear) or elements touched (others): a cost scale for planning."""
        oh, ow = self.out_size
        if self.op == "conv2d":
            per_out = cin // self.groups_for(cin) * self.kernel[0] * self.kernel[1]
            return self.batch * cout * oh * ow * per_out
        if self.op == "linear":
            return self.batch * cin * cout
        return self.batch * cin * self.height * self.width

    def groups_for(self, cin: int) -> int:
        return cin if self.groups == "depthwise" else int(self.groups)

    def key(self) -> str:
        """A compact, stable text key (the cache and the table index rows by it)."""
        return self._key

    @cached_property
    def _key(self) -> str:  # computed once: tables look keys up tens of thousands of times
        return "|".join(self.to_row().values())

    def to_row(self) -> dict:
        """Column values for a CSV row (tuples as '3x3')."""
        return {k: _fmt(getattr(self, k)) for k in _SPEC_FIELDS}

    @classmethod
    def from_row(cls, row: dict) -> "KernelSpec":
        kw = {}
        for f in fields(cls):
            v = row[f.name]
            if f.name in ("kernel", "stride", "padding", "dilation"):
                v = tuple(int(x) for x in str(v).split("x"))
            elif f.name in ("height", "width", "batch"):
                v = int(v)
            elif f.name in ("bias", "batchnorm", "residual"):
                v = v if isinstance(v, bool) else str(v).strip().lower() in ("true", "1")
            else:
                v = str(v)
            kw[f.name] = v
        return cls(**kw)


SPEC_COLUMNS = _SPEC_FIELDS = [f.name for f in fields(KernelSpec)]


def _fmt(v) -> str:
    if isinstance(v, tuple):
        return "x".join(str(int(x)) for x in v)
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    return str(v)


@dataclass(frozen=True)
class Measurement:
    """Latency of one thing, in ms, over ``runs`` timed repetitions."""

    p10_ms: float
    median_ms: float
    p90_ms: float
    runs: int
    note: str = ""  # what the backend ran, e.g. "Conv/nchwc" (onnxruntime's fused NCHWc conv), quiet runs
    reference_ms: float = 0.0  # the quiet reference time the runs were selected against (0: none)

    def value(self, statistic: str) -> float:
        return getattr(self, f"{statistic}_ms")


# measured inside every kernel chunk and around every network visit: its time says how fast the machine is
REFERENCE = KernelSpec("conv2d", (3, 3), (1, 1), (1, 1), (1, 1), "1", 32, 32, batchnorm=True, activation="relu")


def quiet_runs(kernel_ms: np.ndarray, ref_ms: np.ndarray, anchors: dict, min_runs: int
               ) -> tuple[np.ndarray, str, float]:
    """Kernel run times (runs x variants) from the runs the machine was quiet in, how, and the state (ms).

    A run is quiet when the reference kernel in it took at most QUIET_TOLERANCE more
    than its quietest time (``anchors["kernel_ref_ms"]``, updated here). With fewer
    than ``min_runs`` quiet runs every run is kept ("unverified"): scaling by the
    reference would be worse, since another job slows a kernel that streams from L3
    more than the reference, which fits in L2. The state returned, the reference's
    median over the kept runs, lets a later, quieter anchor flag the entry as stale.
    """
    best = float(np.percentile(ref_ms, 10))
    anchors["kernel_ref_ms"] = min(anchors.get("kernel_ref_ms", best), best)
    quiet = ref_ms <= (1 + QUIET_TOLERANCE) * anchors["kernel_ref_ms"]
    if quiet.sum() >= min_runs:
        return kernel_ms[quiet], f"{int(quiet.sum())}/{len(quiet)} quiet", float(np.median(ref_ms[quiet]))
    return kernel_ms, f"unverified, {int(quiet.sum())}/{len(quiet)} quiet", float(np.median(ref_ms))


def summarize(samples_ms: Sequence[float] | np.ndarray) -> Measurement:
    """p10 / median / p90 of timed runs (linear interpolation between order statistics)."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise HwpruneError("no timed runs to summarize; increase repeats")
    p10, p50, p90 = np.percentile(a, [10, 50, 90])
    return Measurement(float(p10), float(p50), float(p90), int(a.size))


@dataclass
class Profiler(ABC):
    """A measurement backend bound to a device and settings; see the module docstring."""

    device: str = "cpu"
    threads: int = 1  # intra-op threads (CPU backends); recorded for GPU ones
    batch_size: int = 1
    dtype: str = "float32"
    repeats: int = 25  # timed runs per kernel chunk
    warmup: int = 3  # untimed runs first (caches, allocators, autotuners)
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
        """A function timing one run of :data:`REFERENCE` alone (ms), or None (no disturbance checks)."""
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


def chunked(items: Sequence, spec: KernelSpec, max_items: int, max_bytes: int) -> Iterable[list]:
    """Split (cin, cout) pairs into chunks under a variant count and a weight-bytes budget."""
    chunk, size = [], 0
    for cin, cout in items:
        k = spec.kernel[0] * spec.kernel[1] if spec.op == "conv2d" else 1
        nbytes = 4 * (cout * (cin // max(1, spec.groups_for(cin))) * k if spec.op in ("conv2d", "linear") else cin)
        if chunk and (len(chunk) >= max_items or size + nbytes > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append((cin, cout))
        size += nbytes
    if chunk:
        yield chunk


def interleaved(run, n: int, passes: int, runs_per_pass: int, seed: int, progress=None, rewarm: int = 2,
                clock=time.perf_counter_ns, sync=None, probe=None, anchors: dict | None = None,
                min_quiet_runs: int | None = None) -> list[Measurement]:
    """Time ``run(i)`` for i < n: ``passes`` passes, each visiting every i once in a fresh random order.

    A visit re-warms (``rewarm`` untimed runs: the previous network evicted this
    one's weights from cache) and times ``runs_per_pass`` runs, so slow drift hits all
    networks alike. With a ``probe`` (one run of a fixed reference kernel, in ms),
    every timed run is bracketed by probe runs: it is *quiet* when both are within
    QUIET_TOLERANCE of the quietest probe ever seen (``anchors["probe_ms"]``, kept
    across sessions by the kernel store), i.e. no other job slowed the machine
    around it. Networks with fewer than ``min_quiet_runs`` quiet runs (default: one
    pass worth) are visited again, up to ``passes`` more passes. A network's
    statistics use its quiet runs only, or, if it never got enough, all its runs
    (noted "unverified"; scaling by the probe would be worse, see :func:`quiet_runs`).
    """
    rng = np.random.default_rng(seed)
    anchors = anchors if anchors is not None else {}
    need = runs_per_pass if min_quiet_runs is None else min_quiet_runs
    runs: list[list[tuple[float, float]]] = [[] for _ in range(n)]  # (bracketing probe ms, run ms)
    seen: list[float] = []  # probe times of this call

    def visit(i: int) -> None:
        for _ in range(rewarm):
            run(i)
        before = probe() if probe else 1.0
        for _ in range(runs_per_pass):
            if sync:
                sync()
            t = clock()
            run(i)
            if sync:
                sync()
            ms = (clock() - t) / 1e6  # ns -> ms
            after = probe() if probe else 1.0
            runs[i].append((max(before, after), ms))
            seen.append(after)
            before = after
        if probe:
            anchors["probe_ms"] = min(anchors.get("probe_ms", before), min(seen[-runs_per_pass:]))

    def quiet(i: int) -> list[float]:
        limit = (1 + QUIET_TOLERANCE) * anchors.get("probe_ms", 1.0)
        return [ms for state, ms in runs[i] if not probe or state <= limit]

    for _ in range(passes):
        for i in rng.permutation(n):
            visit(int(i))
            if progress:
                progress(0.5 / passes)
    for _ in range(passes if probe else 0):  # re-measure what drift or another job disturbed
        again = [i for i in range(n) if len(quiet(i)) < need]
        if not again:
            break
        for i in rng.permutation(again):
            visit(int(i))
    if seen:  # how fast the machine got during this call: compared with the anchor, the drift since profiling
        anchors["session_probe_ms"] = float(np.percentile(seen, 10))
    out = []
    for i in range(n):
        good = quiet(i)
        if len(good) >= max(1, need // 2):
            out.append(replace(summarize(good), note=f"{len(good)}/{len(runs[i])} quiet runs"))
        else:  # hardly ever quiet: the best this session could do
            m = summarize([ms for _, ms in runs[i]])
            out.append(replace(m, note=f"unverified ({len(good)}/{len(runs[i])} quiet runs)"))
    return out
