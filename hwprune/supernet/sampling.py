"""Which encodings a PruningNet trains at each step.

``single`` is MetaPruning's scheme: one encoding per step, uniform per group.
``sandwich`` (AutoSlim, BigNAS) trains the widest and the narrowest network and
``random_samples`` others every step, so the ends of the space, which uniform
sampling almost never draws, are trained as often as the middle.

The random encodings come from the space (uniform per group) or, given a
:class:`LatencyWindow`, from the latency range the search will explore: a target
latency is drawn uniformly in the window and the candidate closest to it among a
batch of draws is trained, so every part of the window is seen as often (uniform
per-group draws pile up in the middle of the range).

Every draw is seeded by ``(seed, step)``: all data-parallel ranks train the same
networks, and a resumed run draws what the uninterrupted one would.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.space import SearchSpace
from ..errors import HwpruneError
from ..training.config import SAMPLING

__all__ = ["LatencyWindow", "step_encodings"]


@dataclass
class LatencyWindow:
    """Random encodings are drawn with predicted latency in ``[lo_ms, hi_ms]`` of ``table``."""

    table: object  # a LatencyTable of the space
    lo_ms: float
    hi_ms: float
    draws: int = 64  # candidates per draw, of which the one nearest the target latency is kept

    def __post_init__(self):
        if not 0 <= self.lo_ms < self.hi_ms:
            raise HwpruneError(f"the sampling window must satisfy 0 <= low < high, got {self.lo_ms:g} to "
                               f"{self.hi_ms:g} ms")

    @classmethod
    def from_fraction(cls, table, space: SearchSpace, fraction: float) -> "LatencyWindow":
        """From ``fraction`` of the dense network's predicted latency up to the dense network."""
        if not 0 < fraction < 1:
            raise HwpruneError(f"the sampling window's low end is a fraction of the dense latency in (0, 1), got "
                               f"{fraction:g}")
        table = table.for_space(space)
        top = float(table.predict(space.full()))
        return cls(table, max(fraction * top, float(table.predict(space.narrowest()))), top)

    def sample(self, space: SearchSpace, rng: np.random.Generator) -> tuple[int, ...]:
        target = rng.uniform(self.lo_ms, self.hi_ms)
        pool = np.stack([_scaled_draw(space, rng) for _ in range(self.draws)])
        ms = np.asarray(self.table.predict_batch(pool))
        return tuple(int(v) for v in pool[int(np.argmin(np.abs(ms - target)))])


def _scaled_draw(space: SearchSpace, rng: np.random.Generator) -> np.ndarray:
    """A random encoding around a random overall width (uniform per group alone rarely reaches the ends)."""
    centre = rng.uniform(0, 1)
    k = np.asarray(space.num_choices)
    return np.clip(np.rint((centre + rng.normal(0, 0.2, len(k))) * (k - 1)), 0, k - 1).astype(int)


def step_encodings(space: SearchSpace, seed: int, step: int, sampling: str = "sandwich", random_samples: int = 2,
                   window: LatencyWindow | None = None) -> list[tuple[int, ...]]:
    """The encodings trained at ``step``: ``[widest, narrowest, random...]`` (sandwich) or ``[random]`` (single)."""
    if sampling not in SAMPLING:
        raise HwpruneError(f"sampling must be one of {', '.join(SAMPLING)}, got {sampling!r}")
    rng = np.random.default_rng((seed, step))
    draw = (lambda: window.sample(space, rng)) if window is not None else (lambda: space.sample(rng))
    if sampling == "single":
        return [draw()]
    return [space.full(), space.narrowest(), *(draw() for _ in range(random_samples))]
