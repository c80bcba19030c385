"""Channel layouts: which groups a tensor's channel dimension is made of, and where a width's channels sit.

A tensor's channel dimension is a sequence of :class:`Segment` s, one run of channels
per group (a concat has several; a flatten gives each channel ``mult`` features).
:func:`channel_positions` is the one place that turns widths into channel indices:
materialize uses it to copy weights, the PruningNet to crop generated ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Segment", "Layout", "channel_positions", "layout_size"]


@dataclass(frozen=True)
class Segment:
    """A run of channels of one group inside a tensor's channel dimension."""

    group: int  # group index
    size: int  # original number of channels of the group
    mult: int = 1  # features per channel (a flatten of (C, H, W) gives H*W)


Layout = tuple[Segment, ...]


Layout = tuple[Segment, ...]


def layout_size(layout: Layout, widths=None) -> int:
    """Features along the channel dimension: each segment's width (default: its original size) times ``mult``."""
    return sum((seg.size if widths is None else int(widths[seg.group])) * seg.mult for seg in layout)


def channel_positions(layout: Layout, keep, capacity=None) -> np.ndarray:
    """Positions of the channels a width keeps, in a tensor laid out by ``layout``.

    The tensor's segment of group ``g`` holds ``capacity[g]`` channels (default: the
    segment's original size), each ``mult`` consecutive features; the segment keeps
    its leading ``min(keep[g], capacity)`` channels. ``keep`` and ``capacity`` are
    indexed by group (arrays or mappings).
    """
    parts, off = [], 0
    for seg in layout:
        cap = seg.size if capacity is None else int(capacity[seg.group])
        k = min(int(keep[seg.group]), cap)
        parts.append(off + (np.arange(k)[:, None] * seg.mult + np.arange(seg.mult)[None, :]).ravel())
        off += cap * seg.mult
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)
