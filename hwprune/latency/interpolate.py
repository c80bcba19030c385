"""Estimates for kernel widths that were not measured (off unless a table asks for it).

Bilinear in (cin, cout) between the four nearest measured widths of the same
kernel when they form a rectangle; otherwise (outside the measured range, or on a
ragged set) the nearest measured width scaled by the ratio of MACs. Off by default:
CPU kernels change speed at multiples of the vector width (onnxruntime's NCHWc
path needs cin % 4 == 0 on AVX2, for instance), which interpolation smooths over,
so a table measured at every width a space allows is always preferred.
"""
from __future__ import annotations

import bisect

import numpy as np

from ..profilers.spec import KernelSpec

__all__ = ["Interpolator"]


class Interpolator:
    """Measured points of one kernel spec: ``estimate(cin, cout)`` in ms."""

    def __init__(self, spec: KernelSpec, points: dict[tuple[int, int], float]):
        self.spec = spec
        self.points = points
        self.cins = sorted({c for c, _ in points})
        self.couts = sorted({c for _, c in points})

    def estimate(self, cin: int, cout: int) -> float:
        if (cin, cout) in self.points:
            return self.points[(cin, cout)]
        if not self.points:
            return float("nan")
        c0, c1 = _bracket(self.cins, cin)
        o0, o1 = _bracket(self.couts, cout)
        corners = [(c0, o0), (c0, o1), (c1, o0), (c1, o1)]
        if None not in (c0, c1, o0, o1) and all(p in self.points for p in corners):
            tc = 0.0 if c1 == c0 else (cin - c0) / (c1 - c0)
            to = 0.0 if o1 == o0 else (cout - o0) / (o1 - o0)
            v00, v01, v10, v11 = (self.points[p] for p in corners)
            return float((1 - tc) * ((1 - to) * v00 + to * v01) + tc * ((1 - to) * v10 + to * v11))
        return self._scaled_nearest(cin, cout)

    def _scaled_nearest(self, cin: int, cout: int) -> float:
        keys = list(self.points)
        arr = np.asarray(keys, dtype=np.float64)
        d = np.abs(np.log(arr[:, 0] / cin)) + np.abs(np.log(arr[:, 1] / cout))
        ci, co = keys[int(np.argmin(d))]
        scale = self.spec.macs(cin, cout) / max(1, self.spec.macs(ci, co))
        return float(self.points[(ci, co)] * scale)


def _bracket(values: list[int], x: int) -> tuple[int | None, int | None]:
    """The measured values just below and above ``x`` (equal to x when measured; None outside)."""
    i = bisect.bisect_left(values, x)
    if i < len(values) and values[i] == x:
        return x, x
    if i == 0 or i == len(values):
        return None, None
    return values[i - 1], values[i]
