"""Residual branches a channel group can drop: pruning a group to zero channels removes a whole block.

At batch 1 on a CPU, a narrow layer costs about as much as a wide one (the runtime's per-kernel cost and its
blocked layout dominate), so a tight latency budget leaves a channel-only search a deep network of very narrow
layers; removing whole residual blocks frees that time for width where it counts (resnet20 on 28x28 at 30% of
its dense latency: each stage-1 block costs 14% of the budget at its narrowest).

A group is *droppable* when every layer it reaches lies on one residual branch: the nodes computed from its
producing layer alone, all of whose results end in a single ``add`` whose other operand is computed elsewhere
(the block's shortcut). With the group at zero channels the branch computes nothing the network needs, so the
pruned network is the traced graph with that ``add`` replaced by its shortcut and the branch removed (a block
``relu(f(x) + x)`` becomes ``relu(x)``, and an activation applied twice in a row, once). Only branches whose every
conv and linear layer reads or writes the group are droppable, so that the group's zero width already zeroes
their cost in every model of cost (FLOPs, parameters, latency tables): a basic residual block or an inverted
residual (mobilenet_v2) has one such group, a bottleneck block none.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch.fx as fx
import torch.nn as nn

from .kinds import kind_of
from .nodes import flat, node_shape
from .ops import is_add
from .traced import TracedModel

__all__ = ["Branch", "droppable_branches", "drop_branches"]

_IDEMPOTENT = (nn.ReLU, nn.ReLU6)


@dataclass(frozen=True)
class Branch:
    """What dropping one group removes: the ``add`` node that ends its branch, the operand kept in its place,
    and the traced layers (module names) the branch held."""

    group: int  # index into traced.groups
    merge: str  # the add node's name
    shortcut: str  # the name of the add's other operand: what the add becomes
    layers: tuple[str, ...]  # every traced layer (conv, linear, norm) the branch removes


def _inputs(node: fx.Node) -> list[fx.Node]:
    return [a for a in flat((node.args, node.kwargs)) if isinstance(a, fx.Node)]


def _branch(graph: fx.Graph, start: fx.Node) -> tuple[fx.Node, fx.Node, set[fx.Node]] | None:
    """(add, shortcut, branch nodes) of the residual branch ``start`` opens, or None if it opens none."""
    region = {start}
    for node in graph.nodes:  # topological order: a node joins when everything it reads is in the branch
        if node is start or node.op in ("placeholder", "output"):
            continue
        ins = [a for a in _inputs(node) if a.op != "get_attr"]
        if ins and all(a in region for a in ins):
            region.add(node)
    exits = {u for n in region for u in n.users if u not in region}
    if len(exits) != 1:
        return None
    merge = exits.pop()
    ops = [a for a in merge.args[:2] if isinstance(a, fx.Node)]
    if not is_add(merge) or len(merge.args) != 2 or merge.kwargs or len(ops) != 2:
        return None
    inside = [a for a in ops if a in region]
    if len(inside) != 1 or node_shape(ops[0]) is None or node_shape(ops[0]) != node_shape(ops[1]):
        return None
    shortcut = ops[1] if inside[0] is ops[0] else ops[0]
    return merge, shortcut, _removed(graph, merge, shortcut)


def _removed(graph: fx.Graph, merge: fx.Node, shortcut: fx.Node) -> set[fx.Node]:
    """The nodes that computed nothing else once ``merge`` reads ``shortcut`` alone (the dead branch)."""
    dead, frontier = {merge}, [a for a in _inputs(merge) if a is not shortcut]
    while frontier:
        node = frontier.pop()
        if (node in dead or node is shortcut or node.op in ("placeholder", "output")
                or any(u not in dead for u in node.users)):
            continue
        dead.add(node)
        frontier += _inputs(node)
    dead.discard(merge)
    return dead


def droppable_branches(traced: TracedModel) -> dict[int, Branch]:
    """Every prunable group of ``traced`` that can drop its residual branch, by index into ``traced.groups``."""
    graph = traced.graph_module.graph
    by_target = {n.target: n for n in graph.nodes if n.op == "call_module"}
    order = {n: i for i, n in enumerate(graph.nodes)}
    layers = {l.name: l for l in traced.layers}
    out: dict[int, Branch] = {}
    for gi, group in enumerate(traced.groups):
        if group.fixed_reason is not None or group.blocks != 1:
            continue
        names = [m.split(":")[0] for m in group.members]
        if not any(m.endswith(":out") for m in group.members) or any(n not in by_target for n in names):
            continue
        found = _branch(graph, min((by_target[n] for n in names), key=order.__getitem__))  # the first producer
        if found is None:
            continue
        merge, shortcut, removed = found
        held = [n.target for n in removed if n.op == "call_module" and n.target in layers]
        if not set(names) <= set(held) or any(n.op == "call_module" and n.target in traced.functional
                                              for n in removed):
            continue
        weighted = [layers[n] for n in held if kind_of(layers[n]).weighted]
        if not all(any(s.group == gi for s in (*l.in_layout, *l.out_layout)) for l in weighted):
            continue  # a conv of the branch that the group does not reach: its cost would stay in every model
        out[gi] = Branch(gi, merge.name, shortcut.name, tuple(sorted(held)))
    return out


def drop_branches(graph: fx.Graph, branches, modules: dict[str, nn.Module]) -> fx.Graph:
    """A copy of ``graph`` without ``branches``: each add reads its shortcut alone, the branch is gone, and an
    activation that follows the same activation is removed (``modules``: the graph's modules by name)."""
    graph = copy.deepcopy(graph)
    nodes, done = {n.name: n for n in graph.nodes}, set()
    for b in branches:
        if b.merge in done:  # the same add, dropped through another group of its branch
            continue
        done.add(b.merge)
        merge = nodes[b.merge]
        shortcut = nodes[b.shortcut]  # an add dropped before stands for its own shortcut
        merge.replace_all_uses_with(shortcut)
        dead = _removed(graph, merge, shortcut) | {merge}
        for node in reversed(list(graph.nodes)):
            if node in dead:
                graph.erase_node(node)
                nodes.pop(node.name, None)
        nodes[b.merge] = shortcut
    for node in list(graph.nodes):  # relu(relu(x)) is relu(x)
        src = node.args[0] if node.op == "call_module" and node.args else None
        if (isinstance(src, fx.Node) and src.op == "call_module"
                and isinstance(modules.get(node.target), _IDEMPOTENT)
                and type(modules.get(src.target)) is type(modules.get(node.target))):
            node.replace_all_uses_with(src)
            graph.erase_node(node)
    graph.lint()
    return graph
