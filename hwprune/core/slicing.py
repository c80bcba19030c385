"""Channels taken by position: ``split`` / ``chunk`` of the channel dimension and slices ``x[:, a:b]``.

CSP stages split a conv's output into halves, MixNet splits a tensor among convs of
different kernels, GhostNet keeps the first channels of a concat and ReXNet adds its
shortcut to the first channels of a wider tensor. Such an op addresses channels by
offset, so the analysis *cuts* the groups at those offsets (:meth:`ChannelUnion.cut`):
every piece becomes a group of its own, pruned on its own. The op is recorded as a
:class:`Slicing` (its input's channels in consecutive parts), and the pruned network,
materialized or run by the PruningNet, calls the same op with the sizes of the pruned
parts (:func:`pruned_call`), since the model's own code holds the original sizes.
"""
from __future__ import annotations

import operator

import numpy as np
import torch
import torch.fx as fx

from .layout import Layout, Segment, layout_size
from .nodes import node_shape, permute_dims
from .traced import ChannelUnion, Slicing

__all__ = ["is_split", "split_dim", "piece_sizes", "cut_parts", "align", "shuffle_chain", "channel_slice",
           "pruned_call"]

_SPLIT_METHODS = ("split", "chunk")
_SPLIT_FUNCTIONS = (torch.split, torch.chunk)


def is_split(node: fx.Node) -> bool:
    return (node.op == "call_method" and node.target in _SPLIT_METHODS
            or node.op == "call_function" and node.target in _SPLIT_FUNCTIONS)


def split_dim(node: fx.Node, ndim: int) -> int:
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
    return dim % ndim


def piece_sizes(node: fx.Node, dim: int) -> list[int] | None:
    """The size along ``dim`` of every tensor a split returned when traced."""
    meta = node.meta.get("tensor_meta")
    if not isinstance(meta, (tuple, list)) or not all(hasattr(m, "shape") for m in meta):
        return None
    return [int(m.shape[dim]) for m in meta]


def cut_parts(g: ChannelUnion, layout: Layout, sizes: list[int], what: str) -> list[Layout]:
    """``layout`` in consecutive parts of ``sizes`` channels, cutting its groups where a part ends inside one."""
    offsets = list(np.cumsum(sizes)[:-1])
    lay = g.resolve(layout)
    while True:  # one cut at a time: a group may sit in the layout twice (a ghost module's concat)
        pos, changed = 0, False
        for i, seg in enumerate(lay):
            end = pos + seg.size * seg.mult
            inside = [o for o in offsets if pos < o < end]
            if inside:
                at = int(inside[0] - pos)
                if at % seg.mult:  # inside a channel of several features: all kept, and here channels of their own
                    why = f"{what} takes part of a channel's {seg.mult} features"
                    g.fix((seg,), why)
                    gid = g.new(seg.size * seg.mult, f"{g.producer.get(g.find(seg.group), 'channels')} (kept):")
                    g.fixed[gid] = why
                    lay = lay[:i] + (Segment(gid, seg.size * seg.mult),) + lay[i + 1:]
                else:
                    g.cut(seg.group, at // seg.mult)
                lay, changed = g.resolve(lay), True
                break
            pos = end
        if not changed:
            break
    parts, i, pos = [], 0, 0
    for bound in np.cumsum(sizes):
        part = []
        while pos < bound:
            part.append(lay[i])
            pos += lay[i].size * lay[i].mult
            i += 1
        parts.append(tuple(part))
    return parts


def align(g: ChannelUnion, a: Layout, b: Layout, what: str) -> tuple[Layout, Layout]:
    """Two layouts of the same channels (an add's operands, the halves a shuffle interleaves), cut where the other
    has a seam and regrouped where the other counts channels of more features, so that they match segment for
    segment: a tensor made of pieces meets one made at once, or a shuffled one (channels of 2 features) a plain one."""
    a, b = g.resolve(a), g.resolve(b)
    if [(s.size, s.mult) for s in a] == [(s.size, s.mult) for s in b] or layout_size(a) != layout_size(b):
        return a, b
    seams = sorted({0, *np.cumsum([s.size * s.mult for s in a]).tolist(),
                    *np.cumsum([s.size * s.mult for s in b]).tolist()})
    sizes = [e - s for s, e in zip(seams, seams[1:])]
    cut_parts(g, a, sizes, what)
    cut_parts(g, b, sizes, what)
    while True:  # the same features: the finer one's channels pruned in units of the coarser one's
        a, b = g.resolve(a), g.resolve(b)
        pair = next(((sa, sb) for sa, sb in zip(a, b) if sa.mult != sb.mult), None) if len(a) == len(b) else None
        if pair is None:
            return a, b
        fine, coarse = sorted(pair, key=lambda seg: seg.mult)
        if coarse.mult % fine.mult or fine.size % (coarse.mult // fine.mult):
            return a, b
        g.regroup(fine.group, coarse.mult // fine.mult)


def shuffle_chain(node: fx.Node, src: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, list[fx.Node]] | None:
    """(groups, the ops after ``node`` up to the reshape back) when ``node`` views (N, C, *S) as (N, g, C/g, *S) and
    its one path is a transpose of dims 1 and 2 and a reshape back to (N, C, *S): ShuffleNet's channel shuffle."""
    if len(shape) != len(src) + 1 or shape[0] != src[0] or shape[1] * shape[2] != src[1] or shape[3:] != src[2:]:
        return None
    chain, cur = [], node
    while len(cur.users) == 1:
        cur = next(iter(cur.users))
        chain.append(cur)
        if len(chain) == 1 and not _swaps_1_2(cur):
            return None
        if len(chain) > 1 and node_shape(cur) == src:
            return shape[1], chain
        if len(chain) > 1 and not (cur.op == "call_method" and cur.target == "contiguous"):
            return None
    return None


def _swaps_1_2(node: fx.Node) -> bool:
    if node.op == "call_method" and node.target == "transpose" or node.op == "call_function" and \
            node.target is torch.transpose:
        return sorted(int(d) % 5 for d in node.args[1:3]) == [1, 2] if len(node.args) >= 3 else False
    dims = permute_dims(node)
    return dims is not None and dims == [0, 2, 1, *range(3, len(dims))]


def channel_slice(node: fx.Node, channels: int) -> tuple[int, int] | None:
    """(start, stop) when ``node`` is ``x[:, a:b]`` (any further index taking everything), else None."""
    if node.op != "call_function" or node.target is not operator.getitem or not isinstance(node.args[1], tuple):
        return None
    idx = node.args[1]
    whole = slice(None, None, None)
    if len(idx) < 2 or idx[0] != whole or not isinstance(idx[1], slice) \
            or any(i != whole and i is not Ellipsis for i in idx[2:]):
        return None
    start, stop, step = idx[1].indices(channels)
    return (start, stop) if step == 1 and stop > start else None


def pruned_call(node: fx.Node, slicing: Slicing, widths) -> tuple[object, tuple, dict]:
    """The (target, args, kwargs) ``node`` runs with in the network of group ``widths``."""
    sizes = [layout_size(p, widths) for p in slicing.parts]
    if slicing.kind == "split":
        target = "split" if node.op == "call_method" else torch.split
        return target, (node.args[0], sizes), {"dim": 1}
    idx = node.args[1]
    return node.target, (node.args[0], (idx[0], slice(sizes[0], sizes[0] + sizes[1]), *idx[2:])), {}
