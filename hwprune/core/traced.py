"""What tracing finds: the layers whose weights follow channel groups, the groups, and the traced model.

:class:`ChannelUnion` is the union-find the tracer merges groups with; the rest are
plain records that the SearchSpace, materialize, the PruningNet and the latency
kernels read.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch.fx as fx

from .layout import Layout

__all__ = ["LayerInfo", "GroupInfo", "TracedModel", "ChannelUnion"]


@dataclass
class LayerInfo:
    """A conv, linear or batch-norm module whose weights follow channel groups."""

    name: str  # module path, e.g. "layer1.0.conv1"
    kind: str  # "conv" | "linear" | "bn"
    in_layout: Layout  # input channels (for bn: its channels)
    out_layout: Layout  # output channels (for bn: same as in_layout)
    depthwise: bool = False  # conv with groups == in == out channels
    groups: int = 1  # the conv's groups (only for non-depthwise grouped convs)
    kernel: int = 1  # product of kernel sizes
    out_spatial: int = 1  # product of output spatial sizes (a linear on an n-d tensor: the positions it runs at)
    bias: bool = False
    affine: bool = True  # bn only
    signature: dict = field(default_factory=dict)  # op attributes for profiling and fingerprints


@dataclass
class GroupInfo:
    name: str  # first module that produces it, e.g. "layer1.0.conv1"
    width: int  # original number of channels
    members: list[str]  # "conv1:out", "bn1", "layer1.0.conv1:in", ...
    fixed_reason: str | None  # None when prunable
    blocks: int = 1  # the channels are this many equal blocks that keep the same width (grouped convs)


@dataclass
class TracedModel:
    graph_module: fx.GraphModule
    layers: list[LayerInfo]
    groups: list[GroupInfo]
    input_shapes: list[tuple[int, ...]]
    const_params: int  # parameters outside the recorded layers (never pruned)
    const_flops: int  # MACs inside ignored (opaque) modules


class ChannelUnion:
    """Union-find over channel groups, with sizes, fixed reasons and members."""

    def __init__(self):
        self.parent: list[int] = []
        self.size: list[int] = []
        self.fixed: dict[int, str] = {}
        self.members: dict[int, list[str]] = {}
        self.producer: dict[int, str] = {}
        self.blocks: dict[int, int] = {}  # root -> equal blocks its channels are pruned in (grouped convs)

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

    def fix(self, layout: Layout | None, reason: str) -> None:
        for seg in layout or ():
            self.fixed.setdefault(self.find(seg.group), reason)

    def add_member(self, layout: Layout, member: str) -> None:
        for seg in layout:
            self.members[self.find(seg.group)].append(member)
