"""What a latency table records of the space it was profiled for, and how another space differs from it."""
from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from .kernels import Slot
from .layouts import layout_edges

if TYPE_CHECKING:
    from ..core.space import SearchSpace

__all__ = ["space_key", "saved_key", "space_difference", "space_meta"]


def space_key(space: "SearchSpace", batch: int) -> str:
    """Structure, width choices and batch: what a table's rows and kernels depend on."""
    return _key(space.fingerprint, [g.choices for g in space.groups], batch)


def saved_key(saved: dict, batch: int) -> str:
    """:func:`space_key` of the space a table's metadata records (computed again: tables that recorded width 0 in
    the key match too)."""
    return _key(saved["fingerprint"], saved["choices"], batch)


def _key(fingerprint: str, choices, batch: int) -> str:
    # width 0 (a dropped residual block, hwprune.core.branches) has no kernel to measure: a table serves a space
    # whether or not its blocks may drop, bound to that space's choices (LatencyTable.for_space)
    blob = json.dumps([fingerprint, [[int(c) for c in cs if c] for cs in choices], batch])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def space_difference(saved: dict, space: "SearchSpace") -> str:
    """What differs between a table's recorded space and ``space``, named for the user to fix."""
    mine_model, theirs_model = type(space.model).__name__, saved.get("model")
    if mine_model != theirs_model:
        return f"model {theirs_model} in the table, {mine_model} here"
    mine_in, theirs_in = list(space.input_shapes[0]), list(saved.get("input_shape") or [])
    if mine_in[1:] != theirs_in[1:]:
        what = "input channels" if mine_in[1:2] != theirs_in[1:2] else "input size"
        return f"{what}: input shape {theirs_in} in the table, {mine_in} here (--input-shape)"
    names = [g.name for g in space.groups]
    if names != saved.get("group_names"):
        return (f"channel groups: {len(saved.get('group_names') or [])} prunable groups in the table, {len(names)} "
                f"here (another model structure or ignored layers)")
    for g, theirs in zip(space.groups, saved.get("choices") or []):
        mine, theirs = list(g.choices), list(theirs)
        if mine == theirs:
            continue
        return (f"width choices of group {g.name!r}: {_short(theirs)} in the table, {_short(mine)} here "
                f"(--round-to or ratios)")
    if space.fingerprint != saved.get("fingerprint"):
        return "layer shapes (same groups and widths, other kernels, strides or layers)"
    return "batch size (--batch-size)"


def _short(values) -> str:
    v = list(values)
    return str(v) if len(v) <= 6 else f"[{', '.join(map(str, v[:3]))}, ..., {v[-1]}] ({len(v)} widths)"


def space_meta(space: "SearchSpace", batch: int, slots: list[Slot], unmodelled: list[str],
               edges: list | None = None) -> dict:
    return {"model": type(space.model).__name__, "fingerprint": space.fingerprint, "key": space_key(space, batch),
            "input_shape": list(space.input_shapes[0]), "group_names": [g.name for g in space.groups],
            "base_widths": [g.width for g in space.all_groups], "prunable": list(space.prunable_index),
            "choices": [list(g.choices) for g in space.groups],
            "slots": [[s.name, s.spec.key(), [list(t) for t in s.cin], [list(t) for t in s.cout]] for s in slots],
            "unmodelled": unmodelled, "layout_edges": layout_edges(space, batch) if edges is None else edges}
