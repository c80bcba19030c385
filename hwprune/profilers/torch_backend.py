"""torch eager on the CPU (fixed intra-op threads) or on a CUDA GPU (CUDA events).

Eager torch runs a layer as separate kernels (conv, BatchNorm, activation, add), each
with its Python dispatch, and that is what a deployed eager model pays; so a kernel
variant is those modules run in sequence exactly as the materialized network runs
them. Variants of a chunk are interleaved: each round runs every variant once, and
a reference kernel timed in every round tells which rounds the machine was
quiet in (see :func:`.protocol.quiet_runs`). On CUDA each variant is timed with a pair of CUDA events per round, after
warm-up runs that let cuDNN's autotuner settle; ``torch.backends.cudnn.benchmark``
is set to a fixed value (option ``cudnn_benchmark``, default True) and recorded.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import ClassVar, Sequence

import numpy as np

from .base import Profiler
from .machine import cpu_count, cpu_name, version_of
from .protocol import REFERENCE, interleaved, quiet_runs, wait_for_quiet
from .spec import KernelSpec, Measurement, summarize

__all__ = ["TorchProfiler"]

MAX_ATTEMPTS = 3  # measurements of a chunk that another job disturbed throughout
_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


@dataclass
class TorchProfiler(Profiler):
    """Options: ``cudnn_benchmark`` (CUDA; default True)."""

    name: ClassVar[str] = "torch"

    @classmethod
    def unavailable_reason(cls, device: str) -> str | None:
        import torch

        if device == "cpu":
            return None
        if not device.startswith("cuda"):
            return "devices are 'cpu' and 'cuda[:N]'"
        if not torch.cuda.is_available():
            return (f"torch {torch.__version__} sees no CUDA GPU "
                    f"({'CPU-only build' if torch.version.cuda is None else 'no device or driver'})")
        return None

    def __post_init__(self):
        import torch

        from ..errors import HwpruneError

        if self.dtype not in _DTYPES:
            raise HwpruneError(f"dtype must be one of {', '.join(_DTYPES)}, got {self.dtype!r}")
        if self.device == "cpu" and self.dtype == "float16":
            raise HwpruneError("float16 convolutions are a GPU format; use float32 or bfloat16 on the CPU")
        self.torch_dtype = getattr(torch, _DTYPES[self.dtype])
        self.cuda = self.device.startswith("cuda")
        self._threads_before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        if self.cuda:
            self.options = {"cudnn_benchmark": True, **self.options}
            torch.backends.cudnn.benchmark = bool(self.options["cudnn_benchmark"])

    def close(self) -> None:
        import torch

        torch.set_num_threads(self._threads_before)

    def fingerprint(self) -> dict:
        import torch

        fp = {"backend": self.name, "device": self.device, "threads": self.threads, "batch": self.batch_size,
              "dtype": self.dtype, "versions": {"torch": version_of("torch")}}
        if self.cuda:
            index = torch.device(self.device).index or 0
            fp["device_name"] = torch.cuda.get_device_name(index)
            fp["cudnn_benchmark"] = self.options["cudnn_benchmark"]
            fp["versions"].update(cuda=torch.version.cuda, cudnn=str(torch.backends.cudnn.version()))
        else:
            fp.update(device_name=cpu_name(), cpu_count=cpu_count())
        return fp

    # ---- kernels ------------------------------------------------------------------------
    def _variant(self, spec: KernelSpec, cin: int, cout: int):
        """(callable, its input tensors): the variant as the eager network runs it."""
        import torch
        import torch.nn as nn

        kw = dict(device=self.device, dtype=self.torch_dtype)
        b = spec.batch
        oh, ow = spec.out_size
        x = torch.randn((b, cin) if spec.op == "linear" else (b, cin, spec.height, spec.width), **kw)
        mods = []
        if spec.op == "conv2d":
            mods.append(nn.Conv2d(cin, cout, spec.kernel, spec.stride, spec.padding, spec.dilation,
                                  spec.groups_for(cin), bias=spec.bias, **kw))
        elif spec.op == "linear":
            mods.append(nn.Linear(cin, cout, bias=spec.bias, **kw))
        elif spec.op in ("maxpool2d", "avgpool2d"):
            cls = nn.MaxPool2d if spec.op == "maxpool2d" else nn.AvgPool2d
            mods.append(cls(spec.kernel, spec.stride, spec.padding))
        elif spec.op in ("global_avgpool2d", "global_maxpool2d"):
            mods.append(nn.AdaptiveAvgPool2d(1) if spec.op == "global_avgpool2d" else nn.AdaptiveMaxPool2d(1))
        if spec.batchnorm or spec.op == "batchnorm2d":
            mods.append((nn.BatchNorm1d if spec.op == "linear" else nn.BatchNorm2d)(cout, **kw))
        res = torch.randn((b, cout) if spec.op == "linear" else (b, cout, oh, ow), **kw) \
            if spec.residual or spec.op == "add" else None
        act, ract = _act(spec.activation), _act(spec.residual_activation)
        mods = [m.eval() for m in mods]
        if spec.op == "scale":
            res = torch.randn((b, cin, 1, 1), **kw)  # one value per channel
        elif spec.op == "concat":  # two pieces, concatenated into cin channels
            x, res = x[:, : max(1, cin // 2)].contiguous(), x[:, max(1, cin // 2):].contiguous()

        def run():
            y = x
            for m in mods:
                y = m(y)
            if spec.op == "add":
                y = y + res
            elif spec.op == "scale":
                y = y * res
            elif spec.op == "concat":
                y = torch.cat([y, res], 1)
            y = act(y)
            if spec.residual:
                y = ract(y + res)
            return y

        return run

    def measure_kernels(self, spec: KernelSpec, pairs: Sequence[tuple[int, int]]) -> list[Measurement]:
        import torch

        with torch.inference_mode():
            runs = [self._variant(spec, cin, cout) for cin, cout in pairs]
            ref = self._variant(REFERENCE, REFERENCE.height, REFERENCE.height)
            best = None
            for attempt in range(MAX_ATTEMPTS):
                wait_for_quiet(self.probe(), self.anchors, self.max_wait_s)
                times = self._rounds(runs + [ref])  # (rounds, variants + 1) ms
                result = quiet_runs(times[:, :-1], times[:, -1], self.anchors, max(5, self.repeats // 3))
                if best is None or result[2] < best[2]:
                    best = result
                if not result[1].startswith("unverified"):
                    break
            kept, how, state = best
        kind = "cuda" if self.cuda else "eager"
        return [replace(summarize(kept[:, j]), note=f"{kind} ({how})", reference_ms=state) for j in range(len(pairs))]

    def _rounds(self, runs) -> np.ndarray:
        """(rounds x variants) times in ms; each round runs every variant once."""
        import torch

        for _ in range(self.warmup):
            for r in runs:
                r()
        out = np.zeros((self.repeats, len(runs)))
        if self.cuda:
            starts = [torch.cuda.Event(enable_timing=True) for _ in runs]
            ends = [torch.cuda.Event(enable_timing=True) for _ in runs]
            torch.cuda.synchronize()
            for k in range(self.repeats):
                for i, r in enumerate(runs):
                    starts[i].record()
                    r()
                    ends[i].record()
                torch.cuda.synchronize()
                out[k] = [s.elapsed_time(e) for s, e in zip(starts, ends)]  # ms
        else:
            clock = time.perf_counter_ns
            for k in range(self.repeats):
                for i, r in enumerate(runs):
                    t = clock()
                    r()
                    out[k, i] = (clock() - t) / 1e6  # ns -> ms
        return out

    def probe(self):
        import torch

        if getattr(self, "_probe", None) is None:
            ref = self._variant(REFERENCE, REFERENCE.height, REFERENCE.height)

            def probe() -> float:
                with torch.inference_mode():
                    if self.cuda:
                        torch.cuda.synchronize()
                    t = time.perf_counter_ns()
                    ref()
                    if self.cuda:
                        torch.cuda.synchronize()
                    return (time.perf_counter_ns() - t) / 1e6

            self._probe = probe
        return self._probe

    # ---- networks -----------------------------------------------------------------------
    def measure_networks(self, models: Sequence, input_shape: tuple[int, ...], passes: int = 5,
                         runs_per_pass: int = 10, seed: int = 0, progress=None) -> list[Measurement]:
        import torch

        x = torch.randn((self.batch_size,) + tuple(input_shape[1:]), device=self.device, dtype=self.torch_dtype)
        nets = [m.to(device=self.device, dtype=self.torch_dtype).eval() for m in models]
        if progress:
            progress(0.5 * len(nets))
        sync = torch.cuda.synchronize if self.cuda else None
        with torch.inference_mode():
            return interleaved(lambda i: nets[i](x), len(nets), passes, runs_per_pass, seed, progress, sync=sync,
                               probe=self.probe(), anchors=self.anchors, max_wait_s=self.max_wait_s)


def _act(name: str):
    from ..core.ops import ACTIVATIONS

    return (lambda y: y) if name == "none" else ACTIVATIONS[name].fn
