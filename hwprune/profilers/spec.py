"""What a latency table row measures (:class:`KernelSpec`) and what a measurement records."""
from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cached_property
from typing import Sequence

import numpy as np

from ..errors import HwpruneError

__all__ = ["KernelSpec", "Measurement", "summarize", "SPEC_COLUMNS", "STATISTICS"]

STATISTICS = ("p10", "median", "p90")  # what every measurement records, in ms


@dataclass(frozen=True)
class KernelSpec:
    """What one table row measures, apart from its channel widths (cin, cout).

    A conv or linear kernel carries what a deployed network runs with it: the
    BatchNorm folded in, the activation, and a residual add (plus the activation
    after it) when the add directly follows. Pooling, standalone BatchNorm and adds
    have their own ``op``, as do a per-channel ``scale`` (a tensor times one value per
    channel, squeeze-excitation's multiply) and a channel ``concat`` (its ``cin`` and
    ``cout`` are the concatenated width). ``height``/``width`` are the input's spatial size.
    """

    # conv2d | linear | maxpool2d | avgpool2d | global_(avg|max)pool2d | batchnorm2d | add | activation | scale | concat
    op: str
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
        if self.op in ("linear", "batchnorm2d", "add", "activation", "scale", "concat"):
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


def summarize(samples_ms: Sequence[float] | np.ndarray) -> Measurement:
    """p10 / median / p90 of timed runs (linear interpolation between order statistics)."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise HwpruneError("no timed runs to summarize; increase repeats")
    p10, p50, p90 = np.percentile(a, [10, 50, 90])
    return Measurement(float(p10), float(p50), float(p90), int(a.size))
