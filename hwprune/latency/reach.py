"""How far down a space reaches on a table's target: the dense network, channels alone, blocks dropped too.

Where a backend's cost is mostly per kernel rather than per channel, channels alone reach little of the way down: on
an H200 at batch 1, eager resnet18 at 224 with every layer at 32 channels ran in 93% of the dense time
(``benchmarks/results/gpu_pipeline/``), and only dropped blocks went lower. ``hwprune profile`` says so.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.space import SearchSpace
    from .table import LatencyTable

__all__ = ["reach", "describe_reach", "CHANNELS_LITTLE"]

CHANNELS_LITTLE = 0.8  # channels alone reaching no lower than this share of the dense latency is worth a word


def reach(table: "LatencyTable", space: "SearchSpace") -> dict:
    """The latencies ``space`` can reach on ``table`` (bound to it), as predicted: the dense network's (``dense_ms``),
    the narrowest that keeps every residual block's (``channels_ms``: channels alone, as narrow as a uniform or
    magnitude network can be) and, in a space that may drop blocks, the narrowest with them dropped (``blocks_ms``,
    else None); ``*_share``: of the dense latency."""
    dense = table.predict(space.full())
    channels = table.predict(space.narrowest(keep_blocks=True))
    blocks = table.predict(space.narrowest()) if space.drop_blocks else None
    return {"dense_ms": round(dense, 5), "channels_ms": round(channels, 5),
            "channels_share": round(channels / dense, 4), "blocks_ms": None if blocks is None else round(blocks, 5),
            "blocks_share": None if blocks is None else round(blocks / dense, 4)}


def describe_reach(r: dict) -> str:
    """:func:`reach` in a line, and a second with what to do where channels alone reach little."""
    line = (f"reach: dense {r['dense_ms']:.4g} ms; channels alone down to {r['channels_ms']:.4g} ms "
            f"({r['channels_share']:.0%} of it)")
    if r["blocks_ms"] is not None:
        line += f"; dropping blocks too, {r['blocks_ms']:.4g} ms ({r['blocks_share']:.0%})"
    if r["channels_share"] > CHANNELS_LITTLE:
        lower = "come from dropped blocks (the search's default)" if r["blocks_ms"] is not None else \
            "need dropped blocks (--drop-blocks)"
        line += (f"\nchannels alone take at most {1 - r['channels_share']:.0%} off the dense latency here: its cost "
                 f"is mostly per kernel, not per channel (at batch 1 a GPU waits on kernel launches more than it "
                 f"computes). Lower budgets {lower}; or profile at the batch you deploy (--batch-size)")
    return line
