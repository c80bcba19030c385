"""Where a runtime changes a tensor's memory layout between kernels, and what that costs.

On x86 CPUs onnxruntime runs convolutions in a *blocked* layout (NCHWc: channels in
blocks of B, 8 with AVX2, 16 with AVX-512). Its rules depend on the widths: a conv reads
the plain (NCHW) tensor directly when it has fewer than B input channels, reads blocked
input when they are a multiple of the runtime's alignment A (4 in onnxruntime 1.32 with
B = 16), and is not blocked at all otherwise (depthwise: blocked when the channels are a
multiple of their own alignment); a blocked conv writes a blocked output, its channels
padded to a multiple of B. The profiler reads B and A from the graph the runtime
optimizes (``OnnxruntimeProfiler.layout``). Pools, activations, adds and standalone
BatchNorms keep the layout they are given when the channels are a multiple of B, and
need the plain layout otherwise; a linear layer, a per-channel scale, a concat and the
network's output need the plain layout. Where a tensor's layout differs from what a
consumer reads, the runtime inserts a reorder (``ReorderOutput`` to plain,
``ReorderInput`` to blocked), once per tensor and layout.

A lone kernel measured for the table has none of these copies, and which ones a network
needs depends on its widths: a narrow 12-channel layer at 64x64 costs a 30 us reorder
that the 16-channel one does not (``benchmarks/results/latency_fidelity_families*``).
So the table models them: every tensor a kernel writes is a :data:`LayoutEdge` (its
channels, spatial size, producer and consumers), the reorders are kernels of their own
(``reorder_output`` / ``reorder_input``, measured like any other), and an edge's time for
a given set of widths is the reorders its layouts call for. Backends without blocked
layouts (an empty ``layout``: torch, TensorRT, onnxruntime off x86) add nothing.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import torch.fx as fx

from ..core.nodes import flat, node_shape
from ..profilers.spec import KernelSpec
from .kernels import MAX_COMBINATIONS, width_assignments, width_combinations

if TYPE_CHECKING:
    from ..core.space import SearchSpace

__all__ = ["FOLLOW_OPS", "conv_blocked", "layout_edges", "edge_groups", "edge_reorders", "edge_time",
           "reorder_specs", "tensor_widths"]

FOLLOW_OPS = ("maxpool2d", "avgpool2d", "global_avgpool2d", "global_maxpool2d", "batchnorm2d", "add", "activation")
BLOCKED, PLAIN = "blocked", "plain"

# An edge, as stored in a table's metadata (JSON):
# {"name": producer, "terms": [[group, mult], ...], "height": H, "width": W,
#  "source": {"kind": "conv" | "input" | "plain", "cin": terms, "cout": terms, "groups": "1", "follow": bool},
#  "consumers": [{"kind": "conv", "cout": terms, "groups": g} | {"kind": "result", "cin", "cout", "groups"}
#                | {"kind": "follow"} | {"kind": "plain"}]}
LayoutEdge = dict


def conv_blocked(cin: int, cout: int, groups: str, layout: dict) -> bool:
    """Whether onnxruntime runs this conv in the blocked ``layout`` (``OnnxruntimeProfiler.layout``)."""
    if groups == "1":
        return cin < layout["block"] or cin % layout["align"] == 0
    if groups == "depthwise":
        return bool(layout.get("depthwise_align")) and cout % layout["depthwise_align"] == 0
    g = int(groups)
    return (cin // g) % layout["align"] == 0 and (cout // g) % layout["align"] == 0


def _channels(terms, widths) -> int:
    return sum(widths[g] * m for g, m in terms)


def edge_reorders(edge: LayoutEdge, widths: Sequence[int], layout: dict) -> list[str]:
    """The reorders (``"reorder_output"``, ``"reorder_input"``) the edge's tensor goes through at ``widths``
    (channel count of every traced group) under the runtime's ``layout``."""
    if not layout:
        return []
    block = layout["block"]
    c = _channels(edge["terms"], widths)
    if c == 0:  # a dropped branch's tensor (hwprune.core.branches): not in the network
        return []
    src = edge["source"]
    have = PLAIN  # the graph input, and whatever an op outside the model of layouts writes
    if src["kind"] == "conv" and conv_blocked(_channels(src["cin"], widths), _channels(src["cout"], widths),
                                              src["groups"], layout):
        have = PLAIN if src.get("follow") and c % block else BLOCKED  # a pool between that needed plain input
    needed = set()
    for con in edge["consumers"]:
        kind = con["kind"]
        if any(_channels(con.get(k, []), widths) == 0 for k in ("cin", "cout") if con.get(k)):
            continue  # a conv of a dropped branch, or the add that ended it
        if kind == "conv":
            cout = _channels(con["cout"], widths)
            reads_blocked = conv_blocked(c, cout, con["groups"], layout) and not (con["groups"] == "1" and c < block)
            needed.add(BLOCKED if reads_blocked else PLAIN)
        elif kind == "result":  # a residual summed into a conv's output: in that output's layout
            blocked = conv_blocked(_channels(con["cin"], widths), _channels(con["cout"], widths), con["groups"],
                                   layout)
            needed.add(BLOCKED if blocked else PLAIN)
        elif kind == "follow":
            if c % block:
                needed.add(PLAIN)
        else:
            needed.add(PLAIN)
    needed.discard(have)
    return sorted("reorder_output" if n == PLAIN else "reorder_input" for n in needed)


def reorder_specs(edge: LayoutEdge, batch: int, dtype: str) -> dict[str, KernelSpec]:
    """The two reorder kernels of the edge's tensor, by op."""
    return {op: KernelSpec(op, height=edge["height"], width=edge["width"], batch=batch, dtype=dtype)
            for op in ("reorder_output", "reorder_input")}


def edge_groups(edge: LayoutEdge) -> tuple[int, ...]:
    """Every traced group whose width the edge's time depends on."""
    terms = list(edge["terms"]) + list(edge["source"].get("cin", [])) + list(edge["source"].get("cout", []))
    for con in edge["consumers"]:
        terms += list(con.get("cin", [])) + list(con.get("cout", []))
    return tuple(sorted({int(g) for g, _ in terms}))


def edge_time(edge: LayoutEdge, widths: Sequence[int], layout: dict, batch: int, dtype: str,
              lookup: Callable[[KernelSpec, int, int], float]) -> float:
    """Time (ms) of the edge's reorders at ``widths``, from the measured reorder kernels (``lookup``)."""
    c = _channels(edge["terms"], widths)
    specs = reorder_specs(edge, batch, dtype)
    return sum(lookup(specs[op], c, c) for op in edge_reorders(edge, widths, layout))


def _terms(terms) -> list:
    return [[int(g), int(m)] for g, m in terms]


def layout_edges(space: "SearchSpace", batch: int = 1, dtype: str = "float32") -> list[LayoutEdge]:
    """Every tensor a kernel of ``space``'s networks writes (or the network's input), with what reads it."""
    from .kernels import _Walker

    walker = _Walker(space, batch, dtype)
    slots = {s.name: s for s in walker.run()[0]}
    owner = {node: name for name, node in walker.outputs.items()}

    def producer(node) -> str | None:  # the slot whose output ``node`` is, through reshapes and the like
        for _ in range(64):
            if not isinstance(node, fx.Node):
                return None
            if node in owner:
                return owner[node]
            if node.op == "placeholder":
                return "input:" + node.name
            if not walker.free(node) or not node.all_input_nodes:
                return None
            node = node.all_input_nodes[0]
        return None

    readers: dict[str, list[dict]] = {}
    for name, reads in walker.inputs.items():
        spec = slots[name].spec
        for node, role in reads:
            src = producer(node)
            if src is None:
                continue
            if spec.op == "conv2d":
                con = ({"kind": "result", "cin": _terms(slots[name].cin)} if role == "res" else {"kind": "conv"})
                # a plain conv's reading layout follows from the channels it reads alone: its own output width is
                # not a dimension of the edge (a tensor read by many convs would multiply their widths)
                cout = [] if role == "in" and spec.groups == "1" else _terms(slots[name].cout)
                con.update(cout=cout, groups=spec.groups)
            else:
                con = {"kind": "follow" if spec.op in FOLLOW_OPS else "plain"}
            readers.setdefault(src, []).append(con)
    for out in (n for n in walker.gm.graph.nodes if n.op == "output"):  # the network's result: plain
        for node in (a for a in flat(out.args) if isinstance(a, fx.Node)):
            src = producer(node)
            if src is not None:
                readers.setdefault(src, []).append({"kind": "plain"})

    def source(name: str) -> dict:
        follow = False
        for _ in range(64):
            if name is None or name.startswith("input:"):  # the input is plain; so is an unknown op's output
                return {"kind": "input" if name else "plain", "follow": follow}
            spec = slots[name].spec
            if spec.op == "conv2d":
                return {"kind": "conv", "cin": _terms(slots[name].cin), "cout": _terms(slots[name].cout),
                        "groups": spec.groups, "follow": follow}
            if spec.op not in FOLLOW_OPS or not walker.inputs.get(name):
                return {"kind": "plain", "follow": follow}
            follow, name = True, producer(walker.inputs[name][0][0])
        return {"kind": "plain", "follow": follow}

    edges = []
    for src, cons in readers.items():
        if src.startswith("input:"):
            node = next(n for n in walker.gm.graph.nodes if n.op == "placeholder" and n.name == src[6:])
            terms = walker.terms.get(node)
        else:
            node, terms = walker.outputs[src], slots[src].cout
        shape = node_shape(node)
        if not terms or shape is None or len(shape) != 4:
            continue  # a flat tensor (a linear layer's): no blocked layout
        edge = {"name": src, "terms": _terms(terms), "height": int(shape[2]), "width": int(shape[3]),
                "source": source(src), "consumers": cons}
        if width_combinations(space, edge_groups(edge)) <= MAX_COMBINATIONS:  # else left to the overhead
            edges.append(edge)
    return edges


def tensor_widths(space: "SearchSpace", terms) -> set[int]:
    """Every channel count a tensor of ``terms`` takes over the encodings of ``space``."""
    groups = sorted({int(g) for g, _ in terms})
    return {_channels(terms, w) for w in width_assignments(space, groups)} - {0}  # 0: a dropped branch's
