"""A deterministic stand-in backend: kernel latency is a known function of the kernel, so the
table, calibration and predictor can be checked exactly, without timing noise."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from hwprune.latency.kernels import kernel_slots
from hwprune.profilers.base import Profiler
from hwprune.profilers.spec import KernelSpec, Measurement

OVERHEAD_MS = 0.0425  # what every fake network costs beyond its kernels


def fake_ms(spec: KernelSpec, cin: int, cout: int) -> float:
    return 1e-3 + spec.macs(cin, cout) * 2e-8 + 1e-4 * spec.residual  # ms


@dataclass
class FakeProfiler(Profiler):
    fail_after: int | None = None  # raise KeyboardInterrupt after this many chunks (an interruption)
    network_scale: float = 1.0  # a network costs OVERHEAD_MS + network_scale * its kernels
    per_kernel_ms: float = 0.0  # ... + this per kernel it runs (what a dropped block saves beyond its kernels)
    chunks: int = 0
    measured: int = 0

    def fingerprint(self) -> dict:
        return {"backend": "fake", "device": "cpu", "device_name": "fake cpu", "threads": self.threads,
                "batch": self.batch_size, "dtype": self.dtype, "versions": {}}

    def chunk_limits(self):
        return 50, 1 << 30

    def measure_kernels(self, spec, pairs):
        if self.fail_after is not None and self.chunks >= self.fail_after:
            raise KeyboardInterrupt
        self.chunks += 1
        self.measured += len(pairs)
        out = []
        for cin, cout in pairs:
            v = fake_ms(spec, cin, cout)
            out.append(Measurement(v, 1.1 * v, 1.3 * v, 25, "fake"))
        return out

    def measure_networks(self, models, input_shape, passes=5, runs_per_pass=10, seed=0, progress=None):
        import hwprune as hp

        out = []
        for m in models:  # the network's kernels at its real widths, plus a fixed overhead
            space = hp.SearchSpace.from_model(m, (self.batch_size,) + tuple(input_shape[1:]))
            slots, _ = kernel_slots(space, self.batch_size, self.dtype)
            w = space.widths(space.full())
            kernels = sum(fake_ms(s.spec, sum(int(w[g]) * k for g, k in s.cin), sum(int(w[g]) * k for g, k in s.cout))
                          for s in slots)
            ms = OVERHEAD_MS + self.network_scale * kernels + self.per_kernel_ms * len(slots)
            out.append(Measurement(ms, 1.1 * ms, 1.3 * ms, passes * runs_per_pass, "fake"))
            if progress:
                progress(1)
        return out


class DisturbedProfiler(FakeProfiler):
    """A busy machine now and then: each ``measure_networks`` call scales every network by the next of ``factors``
    (in turn), as one timing call on an H200 read every network 1.6x."""

    def __init__(self, factors):
        super().__init__()
        self.factors, self.calls, self.seeds = list(factors), 0, []

    def measure_networks(self, models, input_shape, **kw):
        f = self.factors[self.calls % len(self.factors)]
        self.calls += 1
        self.seeds.append(kw.get("seed"))
        return [replace(m, p10_ms=f * m.p10_ms, median_ms=f * m.median_ms, p90_ms=f * m.p90_ms)
                for m in super().measure_networks(models, input_shape, **kw)]


def direct_sum(table, space, enc) -> float:
    """The prediction computed by hand from the table's rows: overhead + scale * sum of kernel rows."""
    if getattr(table, "_test_rows", None) is None:
        table._test_rows = _rows(table), kernel_slots(space)[0]
    rows, slots = table._test_rows
    w = space.widths(enc)
    total = 0.0
    for s in slots:
        sp = s.spec
        cin = sum(int(w[g]) * k for g, k in s.cin)
        cout = sum(int(w[g]) * k for g, k in s.cout)
        key = (sp.op, "x".join(map(str, sp.kernel)), "x".join(map(str, sp.stride)), sp.groups, sp.height, sp.width,
               sp.activation, sp.residual, sp.residual_activation, cin, cout)
        total += rows[key]
    return float(table.overhead_ms + table.scale * total)


def _rows(table) -> dict:
    return {(r["op"], r["kernel"], r["stride"], r["groups"], r["height"], r["width"], r["activation"], r["residual"],
             r["residual_activation"], r["cin"], r["cout"]): r[f"{table.statistic}_ms"]
            for r in table.entries.to_dict("records")}


def encodings(space, n, seed=0):
    rng = np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(n)]
