"""TensorRT 10 on a CUDA GPU: engines built from ONNX, timed with ``execute_async_v3``.

Buffers are torch CUDA tensors (``set_tensor_address(name, t.data_ptr())``) and the
stream is a torch CUDA stream, so pycuda is not needed. Kernels: one engine per
chunk of variants, built from the same ONNX kernel graphs as onnxruntime but with
one input per variant (TensorRT would otherwise merge parallel layers reading one
tensor) and a reference branch (see :func:`.protocol.quiet_runs`); an ``IProfiler``
collects per-layer times (engine built with detailed profiling verbosity so layers
keep their ONNX names), and a fused layer whose name
contains ``v{i}_`` counts for variant ``i``. Reformatting layers between a graph
input and the first kernel are left out, as the runtime mostly avoids them inside a
network. Networks: one engine each, timed with CUDA events, interleaved.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import ClassVar, Sequence

import numpy as np

from .base import Profiler
from .machine import version_of
from .protocol import REFERENCE, interleaved, quiet_runs
from .spec import KernelSpec, Measurement, summarize
from .onnx_graphs import export_network, kernel_model

__all__ = ["TensorRTProfiler"]

_VARIANT = re.compile(r"(?<![A-Za-z0-9])v(\d+)_")


@dataclass
class TensorRTProfiler(Profiler):
    """Options: ``workspace_mb`` (builder workspace, default 1024)."""

    name: ClassVar[str] = "tensorrt"

    @classmethod
    def unavailable_reason(cls, device: str) -> str | None:
        if not device.startswith("cuda"):
            return "TensorRT runs on CUDA GPUs only (use device 'cuda')"
        version = version_of("tensorrt") or version_of("tensorrt-cu12") or version_of("tensorrt_cu12")
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            return "the tensorrt package is not installed (pip install 'hwprune[tensorrt]' on a CUDA machine)"
        version = version or getattr(tensorrt, "__version__", "0")
        if int(version.split(".")[0]) < 10:
            return f"TensorRT {version} is installed; this backend uses the TensorRT 10 API"
        import torch

        if not torch.cuda.is_available():
            return f"torch {torch.__version__} sees no CUDA GPU (TensorRT buffers are torch CUDA tensors)"
        return None

    def __post_init__(self):
        import tensorrt as trt

        from ..errors import HwpruneError

        if self.dtype not in ("float32", "float16"):
            raise HwpruneError(f"the TensorRT backend builds float32 or float16 engines, not {self.dtype}")
        self.options = {"workspace_mb": 1024, **self.options}
        self.trt = trt
        self.logger = trt.Logger(trt.Logger.ERROR)

    def fingerprint(self) -> dict:
        import torch

        index = torch.device(self.device).index or 0
        return {"backend": self.name, "device": self.device, "device_name": torch.cuda.get_device_name(index),
                "threads": self.threads, "batch": self.batch_size, "dtype": self.dtype,
                "workspace_mb": self.options["workspace_mb"],
                "versions": {"tensorrt": self.trt.__version__, "torch": version_of("torch"),
                             "cuda": torch.version.cuda}}

    def chunk_limits(self) -> tuple[int, int]:
        return 64, 256 << 20  # engine builds grow fast with layer count

    # ---- engines ------------------------------------------------------------------------
    def _engine(self, onnx_bytes: bytes):
        """(engine, context, {tensor name: torch CUDA tensor}, runtime) for an ONNX model.

        The runtime is returned so the caller keeps it alive as long as its engine.
        """
        import torch

        from .runtimes import serialize_engine

        trt = self.trt
        serialized = serialize_engine(onnx_bytes, fp16=self.dtype == "float16",
                                      workspace_mb=int(self.options["workspace_mb"]), logger=self.logger,
                                      detailed_profiling=True)  # layer names in the profiler
        runtime = trt.Runtime(self.logger)
        engine = runtime.deserialize_cuda_engine(serialized)
        context = engine.create_execution_context()
        buffers = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape = tuple(engine.get_tensor_shape(name))
            dtype = torch.from_numpy(np.empty(0, dtype=trt.nptype(engine.get_tensor_dtype(name)))).dtype
            t = torch.randn(shape, device=self.device).to(dtype) if dtype.is_floating_point else \
                torch.zeros(shape, dtype=dtype, device=self.device)
            context.set_tensor_address(name, t.data_ptr())
            buffers[name] = t
        return engine, context, buffers, runtime

    # ---- kernels ------------------------------------------------------------------------
    def measure_kernels(self, spec: KernelSpec, pairs: Sequence[tuple[int, int]]) -> list[Measurement]:
        import torch

        trt = self.trt
        # the graph is float32; for float16 the builder's FP16 flag lowers the precision
        graph_spec = replace(spec, dtype="float32")
        model, _, _ = kernel_model(graph_spec, pairs, share_inputs=False, residual_from_conv=False,
                                   reference=REFERENCE)
        engine, context, buffers, runtime = self._engine(model.SerializeToString())

        class LayerTimes(trt.IProfiler):
            def __init__(self):
                trt.IProfiler.__init__(self)
                self.times = defaultdict(list)

            def report_layer_time(self, layer_name, ms):
                self.times[layer_name].append(ms)

        stream = torch.cuda.Stream()
        for _ in range(self.warmup):
            context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        prof = LayerTimes()
        context.profiler = prof
        for _ in range(self.repeats):
            context.execute_async_v3(stream.cuda_stream)
            stream.synchronize()
        per_variant = [np.zeros(self.repeats) for _ in range(len(pairs) + 1)]  # the last one: the reference
        names = [[] for _ in range(len(pairs) + 1)]
        for layer, times in prof.times.items():
            if layer.startswith("Reformatting"):
                continue
            hits = {int(i) for i in _VARIANT.findall(layer)} | ({len(pairs)} if "ref_" in layer else set())
            t = np.asarray(times[-self.repeats:])  # ms per run
            for i in hits:  # a layer fused across variants (should not happen) is shared equally
                per_variant[i][-len(t):] += t / len(hits)
                names[i].append(layer)
        del context, engine, buffers, runtime
        times = np.stack(per_variant, axis=1)  # (runs, variants + 1) ms
        kept, how, state = quiet_runs(times[:, :-1], times[:, -1], self.anchors, max(5, self.repeats // 3))
        return [replace(summarize(kept[:, j]), note=f"{len(names[j])} layers ({how})", reference_ms=state)
                for j in range(len(pairs))]

    # ---- networks -----------------------------------------------------------------------
    def measure_networks(self, models: Sequence, input_shape: tuple[int, ...], passes: int = 5,
                         runs_per_pass: int = 10, seed: int = 0, progress=None) -> list[Measurement]:
        import torch

        shape = (self.batch_size,) + tuple(input_shape[1:])
        built = []
        for m in models:
            built.append(self._engine(export_network(m.float(), shape)))
            if progress:
                progress(0.5)
        stream = torch.cuda.Stream()

        def run(i):
            built[i][1].execute_async_v3(stream.cuda_stream)

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        state = {}

        def clock():  # CUDA events on the engine's stream, read in ns like perf_counter_ns
            if "t" not in state:
                start.record(stream)
                state["t"] = 0
                return 0
            end.record(stream)
            end.synchronize()
            del state["t"]
            return int(start.elapsed_time(end) * 1e6)

        return interleaved(run, len(built), passes, runs_per_pass, seed, progress, clock=clock)
