"""Which kernels a network of a search space runs, and which widths each can take.

A *slot* is one kernel of the network: a conv or linear layer with what inference
runtimes fuse into it (the BatchNorm after it, the activation, a residual add that
directly follows and the activation after that add), or a pooling, a standalone
BatchNorm, add or activation, a per-channel scale (squeeze-excitation's multiply) or a
channel concat. Its :class:`~hwprune.profilers.base.KernelSpec` says
what it computes; its ``cin``/``cout`` say how its channel counts follow from the
group widths: ``channels = sum(widths[group] * mult)``.

Slots are found by walking the space's ``torch.fx`` graph. A fusion is taken only
where the runtime can take it: the intermediate tensor has a single user. When both
operands of an add come from fusable conv chains, the first operand's conv takes the
add, as onnxruntime's and TensorRT's fusions do. Ops that cost nothing (reshapes,
dropout at inference) are skipped; ops of other kinds are listed as *unmodelled*:
their time lands in the calibrated overhead, so it must not depend on the widths.
"""
from __future__ import annotations

import itertools
import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ..core.kinds import kind_of
from ..core.nodes import node_shape
from ..core.ops import (FREE_FUNCTION_NAMES, FREE_FUNCTIONS, FREE_METHODS, FREE_MODULES, activation_of, is_add,
                        qualified_name)
from ..errors import UnsupportedModelError
from ..profilers.spec import KernelSpec

if TYPE_CHECKING:
    from ..core.space import SearchSpace

__all__ = ["Slot", "kernel_slots", "slot_pairs", "MAX_COMBINATIONS"]

MAX_COMBINATIONS = 1_000_000  # width combinations one slot may take (its share of the table)

Terms = tuple[tuple[int, int], ...]  # ((group index in space.all_groups, channels per unit of width), ...)


@dataclass(frozen=True)
class Slot:
    name: str  # the module or node it comes from, e.g. "layer1.0.conv2"
    spec: KernelSpec
    cin: Terms
    cout: Terms

    def groups(self) -> tuple[int, ...]:
        return tuple(sorted({g for g, _ in self.cin + self.cout}))


def _single_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[-1]))


class _Walker:
    def __init__(self, space: "SearchSpace", batch: int, dtype: str):
        self.space = space
        self.gm = space.traced.graph_module
        self.modules = dict(self.gm.named_modules())
        self.layers = {l.name: l for l in space.layers}
        self.batch, self.dtype = batch, dtype
        self.terms: dict[fx.Node, Terms] = {}
        self.outputs: dict[str, fx.Node] = {}  # slot name -> the node holding its output
        self.inputs: dict[str, list[tuple[fx.Node, str]]] = {}  # slot name -> (node it reads, "in" | "res")

    # ---- what a node is -------------------------------------------------------------------
    def act(self, node: fx.Node) -> str | None:
        return activation_of(node, self.modules)

    def is_add(self, node: fx.Node) -> bool:
        if not is_add(node):
            return False
        ops = [a for a in node.args[:2] if isinstance(a, fx.Node)]
        return len(ops) == 2 and node_shape(ops[0]) == node_shape(ops[1]) == node_shape(node)

    def layer(self, node: fx.Node, weighted: bool | None = None):
        """The traced layer ``node`` runs (a weighted conv/linear, a norm, or either when None), else None."""
        if node.op != "call_module" or node.target not in self.layers:
            return None
        layer = self.layers[node.target]
        return layer if weighted is None or kind_of(layer).weighted == weighted else None

    # ---- channel terms of any tensor ------------------------------------------------------
    def propagate(self) -> None:
        inputs = {m.split(":", 1)[1]: i for i, g in enumerate(self.space.all_groups)
                  for m in g.members if m.startswith("input:")}
        slicings = self.space.traced.slicings
        for node in self.gm.graph.nodes:
            layer = self.layer(node)
            shape = node_shape(node)
            src = node.args[0] if node.args else None
            if node.op == "placeholder" and node.name in inputs:
                self.terms[node] = ((inputs[node.name], 1),)
            elif node.name in slicings and slicings[node.name].kind == "slice":  # x[:, a:b]
                self.terms[node] = tuple((s.group, s.mult) for s in slicings[node.name].parts[1])
            elif node.target is operator.getitem and getattr(src, "name", None) in slicings:  # a split's piece
                self.terms[node] = tuple((s.group, s.mult) for s in slicings[src.name].parts[node.args[1]])
            elif layer is not None:
                self.terms[node] = tuple((s.group, s.mult) for s in layer.out_layout)
            elif node.op == "call_function" and node.target in (torch.cat, torch.concat) and shape:
                parts = [self.terms.get(a) for a in node.args[0]]
                if all(parts) and (node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)) % len(shape) == 1:
                    self.terms[node] = tuple(t for p in parts for t in p)
            else:
                src = next((a for a in node.all_input_nodes if a in self.terms), None)
                if src is not None and shape is not None and len(shape) >= 2:
                    before = node_shape(src)
                    if before[1] == shape[1]:
                        self.terms[node] = self.terms[src]
                    elif len(shape) == 2 and len(before) > 2 and shape[1] % before[1] == 0:
                        mult = shape[1] // before[1]  # a flatten: each channel becomes mult features
                        self.terms[node] = tuple((g, m * mult) for g, m in self.terms[src])

    # ---- slots ----------------------------------------------------------------------------
    def run(self) -> tuple[list[Slot], list[str]]:
        self.propagate()
        nodes = list(self.gm.graph.nodes)
        chains: dict[fx.Node, dict] = {}  # conv/linear node -> its fused chain so far
        tails: dict[fx.Node, fx.Node] = {}  # last node of a chain -> the conv/linear node
        used: set[fx.Node] = set()
        for node in nodes:
            if self.layer(node, weighted=True) is not None:
                chain, cur = {"bn": False, "act": "none", "res": False, "ract": "none"}, node
                nxt = _single_user(cur)
                if nxt is not None and getattr(self.layer(nxt, weighted=False), "kind", None) == "bn":
                    chain["bn"], cur = True, nxt
                    used.add(nxt)
                    nxt = _single_user(cur)
                if nxt is not None and self.act(nxt):
                    chain["act"], cur = self.act(nxt), nxt
                    used.add(nxt)
                chain["out"] = cur
                chains[node], tails[cur] = chain, node
        for node in nodes:  # residual adds go to the first operand's chain that can take them
            if not self.is_add(node):
                continue
            for operand in node.args[:2]:
                owner = tails.get(operand)
                if owner is not None and _single_user(operand) is node:
                    chains[owner]["res"] = True
                    chains[owner]["res_in"] = next(a for a in node.args[:2] if a is not operand)
                    chains[owner]["out"] = node
                    used.add(node)
                    nxt = _single_user(node)
                    if nxt is not None and self.act(nxt):
                        chains[owner]["ract"] = self.act(nxt)
                        chains[owner]["out"] = nxt
                        used.add(nxt)
                    break
        slots, unmodelled = [], []
        for node in nodes:
            if node in chains:
                slots.append(self.layer_slot(node, chains[node]))
                self.outputs[slots[-1].name] = chains[node]["out"]
                self.inputs[slots[-1].name] = [(node.args[0], "in")] + (
                    [(chains[node]["res_in"], "res")] if chains[node]["res"] else [])
            elif node in used or node.op in ("placeholder", "output", "get_attr"):
                continue
            else:
                slot = self.other_slot(node, used)
                if slot is not None:
                    slots.append(slot)
                elif not self.free(node):
                    unmodelled.append(f"{node.op} {getattr(node.target, '__name__', node.target)} ({node.name})")
        return slots, unmodelled

    def layer_slot(self, node: fx.Node, chain: dict) -> Slot:
        layer = self.layer(node)
        m = self.modules[node.target]
        x = node.args[0]
        shape = node_shape(x)
        common = dict(bias=m.bias is not None, batchnorm=chain["bn"], activation=chain["act"],
                      residual=chain["res"], residual_activation=chain["ract"], batch=self.batch, dtype=self.dtype)
        cin = tuple((s.group, s.mult) for s in layer.in_layout)
        cout = tuple((s.group, s.mult) for s in layer.out_layout)
        spec = KernelSpec(**kind_of(layer).kernel_attrs(layer, m, shape), **common)
        return Slot(node.target, spec, cin, cout)

    def other_slot(self, node: fx.Node, used: set) -> Slot | None:
        slot = self._other_slot(node, used)
        if slot is not None:  # what it reads and where its output is, for the layout edges
            op = slot.spec.op
            args = node.args[0] if op == "concat" else node.args[:2] if op == "add" else node.args[:1]
            if op == "scale":  # the scaled tensor, not the (N, C, 1, 1) factors
                args = [a for a in node.args[:2] if isinstance(a, fx.Node) and tuple(node_shape(a)[2:]) != (1, 1)]
            self.inputs[slot.name] = [(a, "in") for a in args if isinstance(a, fx.Node)]
            nxt = _single_user(node)
            self.outputs[slot.name] = nxt if nxt is not None and nxt in used and self.act(nxt) else node
        return slot

    def _other_slot(self, node: fx.Node, used: set) -> Slot | None:
        special = self.scale_or_concat(node)
        if special is not None:
            return special
        x = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        shape = node_shape(x) if x is not None else None
        terms = self.terms.get(x) if x is not None else None
        if shape is None or terms is None or len(shape) != 4:
            return None
        base = dict(height=shape[2], width=shape[3], batch=self.batch, dtype=self.dtype)
        spec = None
        m = self.modules.get(node.target) if node.op == "call_module" else None
        if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) and not m.ceil_mode:
            op = "maxpool2d" if isinstance(m, nn.MaxPool2d) else "avgpool2d"
            dil = _pair(m.dilation) if isinstance(m, nn.MaxPool2d) else (1, 1)
            spec = KernelSpec(op, _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding), dil,
                              **base)
        elif isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) or node.target in (
                F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
            is_max = isinstance(m, nn.AdaptiveMaxPool2d) or node.target is F.adaptive_max_pool2d
            out = _pair(m.output_size if m is not None else node.args[1])
            if out == (1, 1):
                spec = KernelSpec("global_maxpool2d" if is_max else "global_avgpool2d", **base)
            elif shape[2] % out[0] == 0 and shape[3] % out[1] == 0:  # exported as a plain pool
                k = (shape[2] // out[0], shape[3] // out[1])
                spec = KernelSpec("maxpool2d" if is_max else "avgpool2d", k, k, **base)
        elif node.op == "call_method" and node.target == "mean" and node_shape(node) is not None and \
                tuple(sorted(d % 4 for d in (node.args[1] if len(node.args) > 1 else node.kwargs["dim"]))) == (2, 3):
            spec = KernelSpec("global_avgpool2d", **base)
        elif getattr(self.layer(node, weighted=False), "kind", None) == "bn":
            nxt = _single_user(node)
            act = self.act(nxt) if nxt is not None else None
            if act:
                used.add(nxt)
            spec = KernelSpec("batchnorm2d", activation=act or "none", **base)
        elif self.is_add(node):
            nxt = _single_user(node)
            act = self.act(nxt) if nxt is not None else None
            if act:
                used.add(nxt)
            spec = KernelSpec("add", activation=act or "none", **base)
        elif self.act(node):
            spec = KernelSpec("activation", activation=self.act(node), **base)
        if spec is None:
            return None
        return Slot(str(node.target) if node.op == "call_module" else node.name, spec, terms, terms)

    def scale_or_concat(self, node: fx.Node) -> Slot | None:
        """A tensor times one value per channel (squeeze-excitation), or a concat on the channels: both cost time
        in proportion to the widths, so they are kernels of their own."""
        shape = node_shape(node)
        if shape is None or len(shape) != 4 or node not in self.terms:
            return None
        base = dict(height=shape[2], width=shape[3], batch=self.batch, dtype=self.dtype)
        if node.op == "call_function" and node.target in (torch.cat, torch.concat):
            return Slot(node.name, KernelSpec("concat", **base), self.terms[node], self.terms[node])
        is_mul = (node.op == "call_function" and node.target in (operator.mul, torch.mul)
                  or node.op == "call_method" and node.target in ("mul", "mul_"))
        ops = [a for a in node.args[:2] if isinstance(a, fx.Node)]
        if not is_mul or len(ops) != 2:
            return None
        shapes = [node_shape(a) for a in ops]
        if any(s is None or len(s) != 4 for s in shapes):
            return None
        small = [tuple(s[2:]) == (1, 1) and s[1] == shape[1] for s in shapes]
        if sorted(small) != [False, True] or tuple(shapes[small.index(False)]) != tuple(shape):
            return None
        return Slot(node.name, KernelSpec("scale", **base), self.terms[node], self.terms[node])

    def free(self, node: fx.Node) -> bool:
        if node.op == "call_module":
            return isinstance(self.modules[node.target], FREE_MODULES)
        if node.op == "call_function":
            return node.target in FREE_FUNCTIONS or qualified_name(node.target) in FREE_FUNCTION_NAMES
        return node.op == "call_method" and node.target in FREE_METHODS


def kernel_slots(space: "SearchSpace", batch: int = 1, dtype: str = "float32") -> tuple[list[Slot], list[str]]:
    """The kernels a network of ``space`` runs, and the ops left unmodelled (see the module docstring)."""
    return _Walker(space, batch, dtype).run()


def _choices(space: "SearchSpace") -> dict[int, tuple[int, ...]]:
    """Width choices of every traced group: prunable ones from the space, fixed ones their width."""
    out = {i: (g.width,) for i, g in enumerate(space.all_groups)}
    for pos, gi in enumerate(space.prunable_index):
        out[gi] = space.groups[pos].choices
    return out


def width_combinations(space: "SearchSpace", groups) -> int:
    """How many width combinations the traced ``groups`` take over the encodings of ``space``."""
    choices, n = _choices(space), 1
    for g in groups:
        n *= len(choices[g])
    return n


def width_assignments(space: "SearchSpace", groups):
    """Every combination of the traced ``groups``' widths, as {group: channels}."""
    choices = _choices(space)
    for combo in itertools.product(*(choices[g] for g in groups)):
        yield dict(zip(groups, combo))


def slot_pairs(space: "SearchSpace", slot: Slot) -> set[tuple[int, int]]:
    """Every (cin, cout) the slot takes over all encodings of ``space``."""
    groups = slot.groups()
    n = width_combinations(space, groups)
    if n > MAX_COMBINATIONS:
        raise UnsupportedModelError(f"kernel {slot.name!r} depends on {len(groups)} channel groups "
                                    f"({n:,} width combinations); profile a space with fewer choices "
                                    f"(ratios=... or round_to=...)")
    pairs = {(sum(w[g] * m for g, m in slot.cin), sum(w[g] * m for g, m in slot.cout))
             for w in width_assignments(space, groups)}
    return {(a, b) for a, b in pairs if a and b}  # no channels in or out: a dropped branch's kernel, never run
