"""What tracing finds: the layers whose weights follow channel groups, the groups, and the traced model.

:class:`ChannelUnion` is the union-find the tracer merges groups with; the rest are
plain records that the SearchSpace, materialize, the PruningNet and the latency
kernels read.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch.fx as fx

from .layout import Layout, Segment

__all__ = ["LayerInfo", "GroupInfo", "Slicing", "TracedModel", "ChannelUnion", "Resolved", "traced_model"]


@dataclass
class LayerInfo:
    """A conv, linear or batch-norm module whose weights follow channel groups."""

    name: str  # module path, e.g. "layer1.0.conv1"
    kind: str  # "conv" | "linear" | "bn" | "norm"
    in_layout: Layout  # input channels (for bn: its channels)
    out_layout: Layout  # output channels (for bn: same as in_layout)
    depthwise: bool = False  # conv with groups == in == out channels
    groups: int = 1  # the conv's groups (only for non-depthwise grouped convs)
    kernel: int = 1  # product of kernel sizes
    out_spatial: int = 1  # product of output spatial sizes (a linear on an n-d tensor: the positions it runs at)
    bias: bool = False
    affine: bool = True  # bn and norm only
    signature: dict = field(default_factory=dict)  # op attributes for profiling and fingerprints


@dataclass
class GroupInfo:
    name: str  # first module that produces it, e.g. "layer1.0.conv1"
    width: int  # original number of channels
    members: list[str]  # "conv1:out", "bn1", "layer1.0.conv1:in", ...
    fixed_reason: str | None  # None when prunable
    blocks: int = 1  # the channels are this many equal blocks that keep the same width (grouped convs)


@dataclass
class Slicing:
    """A node that addresses channels by position (``split``, ``chunk``, ``x[:, a:b]``): its input's channels
    in consecutive ``parts``. A split returns every part; a slice returns ``parts[1]`` of (before, it, after).
    The pruned network's node takes the positions of the pruned parts (:mod:`hwprune.core.slicing`)."""

    kind: str  # "split" | "slice"
    parts: list[Layout]


@dataclass
class TracedModel:
    graph_module: fx.GraphModule
    layers: list[LayerInfo]
    groups: list[GroupInfo]
    input_shapes: list[tuple[int, ...]]
    const_params: int  # parameters outside the recorded layers (never pruned)
    const_flops: int  # MACs inside ignored (opaque) modules
    slicings: dict[str, Slicing] = field(default_factory=dict)  # node name -> its channel parts
    # a layer function called on the model's tensors, made a module (hwprune.core.functional): its name -> the
    # model's tensors it holds, by role ({"weight": "fc.weight", ...})
    functional: dict[str, dict[str, str]] = field(default_factory=dict)


class ChannelUnion:
    """Union-find over channel groups, with sizes, fixed reasons and members.

    A group can be *cut* at a channel offset into two new groups (an op took some of its channels by position),
    or *regrouped*: counted in units of several channels, pruned together (a shuffle interleaves it). A layout
    read through :meth:`resolve` then names the new groups instead. Only roots neither cut nor regrouped are
    ever merged.
    """

    def __init__(self):
        self.parent: list[int] = []
        self.size: list[int] = []
        self.fixed: dict[int, str] = {}
        self.members: dict[int, list[str]] = {}
        self.producer: dict[int, str] = {}
        self.blocks: dict[int, int] = {}  # root -> equal blocks its channels are pruned in (grouped convs)
        self.cuts: dict[int, tuple[int, int]] = {}  # root -> the groups of its leading and trailing channels
        self.span: dict[int, tuple[int, int]] = {}  # a piece -> the channels it is of the group it was cut from
        self.units: dict[int, tuple[int, int]] = {}  # root -> (the group it is now, old channels per new): regroup

    def new(self, size: int, member: str, producer: bool = False) -> int:
        gid = len(self.parent)
        self.parent.append(gid)
        self.size.append(size)
        self.members[gid] = [member]
        if producer:
            self.producer[gid] = member.split(":")[0]
        return gid

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        if b < a:
            a, b = b, a
        self.parent[b] = a
        self.members[a] += self.members.pop(b)
        if b in self.fixed:
            self.fixed.setdefault(a, self.fixed.pop(b))
        if b in self.producer:
            self.producer.setdefault(a, self.producer.pop(b))
        if b in self.blocks:
            self.split(a, self.blocks.pop(b), "")

    def split(self, g: int, blocks: int, why: str) -> None:
        """Prune group ``g`` in ``blocks`` equal blocks (with any it is already split in); fixed if its size
        does not divide."""
        r = self.find(g)
        n = math.lcm(self.blocks.get(r, 1), blocks)
        if self.size[r] % n:
            self.fixed.setdefault(r, f"{why or 'its blocks'}: {self.size[r]} channels do not split into {n} equal "
                                     f"blocks")
        else:
            self.blocks[r] = n

    def cut(self, g: int, at: int) -> None:
        """Make the channels ``[0, at)`` and ``[at, size)`` of group ``g`` two groups of their own."""
        r = self.find(g)
        assert r not in self.cuts and 0 < at < self.size[r]
        pieces, lo = [], self.span.get(r, (0, 0))[0]
        for start, size in ((0, at), (at, self.size[r] - at)):
            p = self.new(size, "")
            self.span[p] = (lo + start, lo + start + size)
            self.members[p] = list(self.members[r])
            for table in (self.fixed, self.producer):
                if r in table:
                    table[p] = table[r]
            if self.blocks.get(r, 1) > 1:  # channels taken by position do not stay in equal blocks
                self.fixed.setdefault(p, f"{self.members[r][0]}: a grouped conv's channels are taken by position")
            pieces.append(p)
        self.cuts[r] = (pieces[0], pieces[1])

    def regroup(self, g: int, unit: int) -> None:
        """Count group ``g`` in units of ``unit`` consecutive channels, pruned together: one channel of ``unit``
        times the features each."""
        r = self.find(g)
        assert r not in self.cuts and r not in self.units and self.size[r] % unit == 0
        p = self.new(self.size[r] // unit, "")
        self.members[p] = list(self.members[r])
        for table in (self.fixed, self.producer, self.span):
            if r in table:
                table[p] = table[r]
        if self.blocks.get(r, 1) > 1:
            self.fixed.setdefault(p, f"{self.members[r][0]}: a grouped conv's channels are regrouped")
        self.units[r] = (p, unit)

    def resolve(self, layout: Layout | None) -> Layout | None:
        """``layout`` with every segment of a cut group replaced by its pieces (and groups by their roots)."""
        if layout is None:
            return None
        out, todo = [], list(reversed(layout))
        while todo:
            seg = todo.pop()
            r = self.find(seg.group)
            if r in self.cuts:
                a, b = self.cuts[r]
                todo += [Segment(b, self.size[b], seg.mult), Segment(a, self.size[a], seg.mult)]
            elif r in self.units:
                p, unit = self.units[r]
                todo.append(Segment(p, seg.size // unit, seg.mult * unit))
            else:
                out.append(seg if seg.group == r else Segment(r, seg.size, seg.mult))
        return tuple(out)

    def fix(self, layout: Layout | None, reason: str) -> None:
        for seg in self.resolve(layout) or ():
            self.fixed.setdefault(seg.group, reason)

    def add_member(self, layout: Layout, member: str) -> None:
        for seg in self.resolve(layout):
            self.members[seg.group].append(member)


class Resolved(dict):
    """Layouts by node, read through the union's cuts (a split later in the graph may cut a group)."""

    def __init__(self, g: ChannelUnion):
        super().__init__()
        self.g = g

    def get(self, node, default=None):
        return self.g.resolve(super().get(node, default))

    def __getitem__(self, node):
        return self.g.resolve(super().__getitem__(node))


def traced_model(g: ChannelUnion, gm: fx.GraphModule, layer_list: list[LayerInfo], slicings: dict[str, Slicing],
                 input_shapes, const_flops: int) -> TracedModel:
    """The :class:`TracedModel` of an analysed graph: groups numbered in the order layers produce them, each
    group's segments put in its own numbers (one per block of a blocked group), cut groups by their pieces."""
    for info in layer_list:
        info.in_layout, info.out_layout = g.resolve(info.in_layout), g.resolve(info.out_layout)
    for sl in slicings.values():
        sl.parts = [g.resolve(p) for p in sl.parts]
    roots: dict[int, int] = {}
    order: list[int] = []
    for lay in [lay for x in layer_list for lay in (x.in_layout, x.out_layout)] + \
            [p for sl in slicings.values() for p in sl.parts]:  # number groups as layers produce them
        for seg in lay:
            r = g.find(seg.group)
            if r not in roots:
                roots[r] = len(order)
                order.append(r)
    groups, blocks = [], {}
    for r in order:
        reason = g.fixed.get(r)
        if reason is None and r not in g.producer:
            reason = "no layer produces it"
        name = g.producer.get(r) or g.members[r][0].split(":")[0]
        if r in g.span:  # a piece of a group: "conv[0:32]"
            name += "[{}:{}]".format(*g.span[r])
        blocks[r] = g.blocks.get(r, 1) if reason is None else 1  # a fixed group keeps every channel anyway
        groups.append(GroupInfo(name, g.size[r] // blocks[r], list(dict.fromkeys(g.members[r])), reason,
                                blocks[r]))

    def remap(lay: Layout) -> Layout:  # a group in blocks: one segment per block, each of the group's width
        out = []
        for s in lay:
            r = g.find(s.group)
            out += [Segment(roots[r], s.size // blocks[r], s.mult)] * blocks[r]
        return tuple(out)

    layers = []
    for info in layer_list:
        info.in_layout, info.out_layout = remap(info.in_layout), remap(info.out_layout)
        layers.append(info)
    for sl in slicings.values():
        sl.parts = [remap(p) for p in sl.parts]
    recorded = {x.name for x in layer_list}
    const_params = sum(p.numel() for n, p in gm.named_parameters()
                       if n not in recorded and n.rsplit(".", 1)[0] not in recorded)
    return TracedModel(gm, layers, groups, list(input_shapes), const_params, const_flops,
                       slicings)
