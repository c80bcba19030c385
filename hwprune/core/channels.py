"""The coupled channel groups of a traced CNN: a channel layout for every tensor of the graph.

Every tensor in the traced graph gets a *channel layout*: the list of groups its
channel dimension (dim 1) is made of, in order. A conv or linear layer starts a new
group for its outputs; elementwise ops (residual adds, SE multiplies) merge the
groups of their operands; a depthwise conv passes its input's layout through; a
grouped conv splits its input's and output's groups into equal blocks, one per conv
group, that keep the same width (a group then has one segment per block); a channel
concatenation joins its inputs' layouts, each keeping its own group; a flatten
multiplies the features per channel; a split or slice of the channels cuts groups
where it takes them by position (:mod:`hwprune.core.slicing`). Groups that touch the
network's inputs or outputs, an ignored layer, or an op whose channels cannot be
cropped are fixed. What is not understood is refused, never guessed: one error names
every such op.

The rules of modules (conv, linear, norms, subclasses, modules kept whole) are in
:mod:`hwprune.core.layer_rules`; those of functions and methods here. A layer function
called on the model's own tensors (``F.conv2d(x, self.weight)``) is already a module
call here (:mod:`hwprune.core.functional`).

The result, a :class:`TracedModel`, records per layer the layouts and shapes that
FLOPs, params, materialization and the PruningNet need, so nothing is traced twice.
"""
from __future__ import annotations

import operator

import torch.fx as fx

from ..errors import UnsupportedModelError
from .channels_last import ChannelsLast, is_permute
from .functional import REFUSAL
from .layer_rules import LayerRules
from .layout import Layout, Segment, layout_size
from .nodes import describe, flat, node_shape
from .ops import (CAT, ELEMENTWISE, ELEMENTWISE_METHODS, NON_TENSOR_METHODS, PASS_FUNCTION_NAMES, PASS_FUNCTIONS,
                  PASS_METHODS, REDUCE, RESHAPE, RESHAPE_METHODS, qualified_name)
from .scales import per_channel_parameter
from .slicing import align, channel_slice, cut_parts, is_split, piece_sizes, shuffle_chain, split_dim
from .traced import ChannelUnion, LayerInfo, Resolved, Slicing, TracedModel, traced_model

__all__ = ["analyse"]


def analyse(gm: fx.GraphModule, leaves: set[str], input_shapes, model_name: str) -> TracedModel:
    """The layers and channel groups of ``gm`` (traced, its shapes propagated); ``leaves`` are kept whole."""
    return _Analysis(gm, leaves).run(input_shapes, model_name)


class _Analysis(LayerRules, ChannelsLast):
    def __init__(self, gm: fx.GraphModule, leaves: set[str]):
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.leaves = leaves
        self.g = ChannelUnion()
        self.layout = Resolved(self.g)  # node -> layout of its output
        self.pieces: dict[fx.Node, list[Layout]] = {}  # a split -> the layouts of the tensors it returns
        self.slicings: dict[str, Slicing] = {}
        self.ahead: dict[fx.Node, Layout | None] = {}  # layouts decided by an earlier node (a shuffle's ops)
        self.cdim: dict[fx.Node, int] = {}  # where a tensor's channels are, when not in dim 1
        self.layers: dict[str, LayerInfo] = {}
        self.const_flops = 0

    def run(self, input_shapes, model_name: str) -> TracedModel:
        problems, failed = [], set()
        for node in self.gm.graph.nodes:
            ins = [a for a in flat((node.args, node.kwargs)) if isinstance(a, fx.Node)]
            carriers = [a for a in ins if self.layout.get(a) or a in failed]
            if node.op in ("call_function", "call_method") and carriers and all(a in failed for a in carriers):
                failed.add(node)  # the rest of a refused op (a shuffle's transpose after its view): named once
                self.layout[node] = self._unknown(node)
                continue
            try:
                self.layout[node] = self._visit(node)
            except UnsupportedModelError as e:  # go on, so that one error names every op the model needs
                problems.append(str(e))
                failed.add(node)
                self.layout[node] = self._unknown(node)
        if len(problems) == 1:
            raise UnsupportedModelError(problems[0])
        if problems:
            raise UnsupportedModelError(f"{len(problems)} ops of {model_name} are not supported: " + " | ".join(
                f"({i}) {p}" for i, p in enumerate(problems, 1)))
        return traced_model(self.g, self.gm, list(self.layers.values()), self.slicings, input_shapes,
                            self.const_flops)

    def _unknown(self, node: fx.Node) -> Layout | None:
        """A refused op's output: channels of their own, fixed, so that the ops after it are still checked."""
        shape = node_shape(node)
        if shape is None or len(shape) < 2:
            return None
        gid = self.g.new(shape[1], f"{node.name}:unsupported")
        self.g.fixed[gid] = f"unsupported op {node.name!r}"
        return (Segment(gid, shape[1]),)

    # ---- per-node rules -------------------------------------------------------------------
    def _visit(self, node: fx.Node) -> Layout | None:
        if node in self.ahead:
            return self.ahead.pop(node)
        shape = node_shape(node)
        if node.op == "placeholder":
            if shape is None or len(shape) < 2:
                return None
            gid = self.g.new(shape[1], f"input:{node.name}")
            self.g.fixed[gid] = "network input"
            return (Segment(gid, shape[1]),)
        if node.op == "output":
            for arg in flat(node.args):
                self.g.fix(self.layout.get(arg), "network output")
            return None
        if node.op == "get_attr":
            return None
        if any(a in self.cdim for a in node.all_input_nodes):
            return self._channels_last(node)
        if is_permute(node):
            return self._permute(node)
        if node.op == "call_module":
            return self._module(node, self.modules[node.target], shape)
        ins = [a for a in flat((node.args, node.kwargs)) if isinstance(a, fx.Node)]
        tensor_ins = [a for a in ins if self.layout.get(a)]
        if is_split(node) and self.layout.get(node.args[0]):
            return self._split(node)
        if node.target is operator.getitem and node.args[0] in self.pieces:
            return self.g.resolve(self.pieces[node.args[0]][node.args[1]])
        if shape is None:  # sizes, tuples, python numbers
            if node.op == "call_method" and node.target in NON_TENSOR_METHODS or node.target is getattr:
                return None
            if node.target is operator.getitem and node_shape(node.args[0]) is None:
                return None
            if not tensor_ins:
                return None
            raise UnsupportedModelError(f"{describe(node)} returns several tensors from channel data; "
                                        f"hwprune cannot map its channels (pass the module in ignored_layers)")
        if len(shape) < 2:
            return None
        target = node.target
        if target in CAT or (node.op == "call_method" and target == "cat"):
            return self._cat(node, shape)
        if target in ELEMENTWISE or (node.op == "call_method" and target in ELEMENTWISE_METHODS):
            return self._elementwise(node, shape, ins)
        if target in PASS_FUNCTIONS or (node.op == "call_method" and target in PASS_METHODS) or (
                node.op == "call_function" and qualified_name(target) in PASS_FUNCTION_NAMES):
            return self._passthrough(node, shape, ins)
        if target in RESHAPE or target in REDUCE or (node.op == "call_method" and target in RESHAPE_METHODS):
            return self._reshape(node, shape)
        if target is operator.getitem and node_shape(node.args[0]) is not None:
            src = node_shape(node.args[0])
            if len(src) >= 2 and shape[:2] == src[:2]:
                return self.layout.get(node.args[0])
            span = channel_slice(node, src[1]) if len(src) == len(shape) >= 2 else None
            if span is not None and self.layout.get(node.args[0]):
                parts = cut_parts(self.g, self.layout[node.args[0]], [span[0], span[1] - span[0], src[1] - span[1]],
                                  describe(node))
                self.slicings[node.name] = Slicing("slice", parts)
                return parts[1]
        if not tensor_ins:
            return None  # a tensor made from constants only (e.g. torch.zeros)
        raise UnsupportedModelError(node.meta.get(REFUSAL) or f"{describe(node)} on channel data is not supported; "
                                    f"hwprune cannot tell how it maps channels (pass the module that calls it in "
                                    f"ignored_layers)")

    def _passthrough(self, node, shape, ins) -> Layout | None:
        src = ins[0] if ins else None
        lin = self.layout.get(src)
        if lin is None or node_shape(src)[1] != shape[1]:
            raise UnsupportedModelError(f"{describe(node)} changes the channel count; not supported")
        return lin

    def _elementwise(self, node, shape, ins) -> Layout | None:
        real, consts = [], []
        for a in ins:
            s, lead = node_shape(a), len(shape) - len(node_shape(a) or ())  # broadcasting aligns trailing dims
            if s is None or lead > 1 or s[1 - lead] == 1:
                continue  # a scalar or a tensor broadcast over channels
            if self.layout.get(a) is None:  # constant channel data (a parameter, torch.ones(...))
                consts.append(a)
            else:
                real.append(self.layout[a])
        if not real:
            return None
        for a in consts:  # a layer scale is pruned with the channels; any other constant keeps them all
            name = per_channel_parameter(self.gm, a, layout_size(real[0]))
            if name is None or any(seg.mult != 1 for seg in real[0]):
                self.g.fix(real[0], f"{describe(node)} with a constant per-channel tensor")
            else:
                self._record(name, LayerInfo(name, "param", real[0], real[0], signature={"op": "param"}))
                self.g.add_member(real[0], name)
        for other in real[1:]:
            self._unify(real[0], other, describe(node))
        return real[0]

    def _unify(self, a: Layout, b: Layout, what: str) -> None:
        a, b = align(self.g, a, b, what)
        if [(s.size, s.mult) for s in a] == [(s.size, s.mult) for s in b]:
            for sa, sb in zip(a, b):
                self.g.union(sa.group, sb.group)
        else:  # the same channels, concatenated differently after flattening: only safe if nothing is pruned
            self.g.fix(a, f"{what} joins differently concatenated tensors")
            self.g.fix(b, f"{what} joins differently concatenated tensors")

    def _split(self, node: fx.Node) -> None:
        src = node.args[0]
        dim = split_dim(node, len(node_shape(src)))
        sizes = piece_sizes(node, dim)
        if sizes is None:
            raise UnsupportedModelError(f"{describe(node)}: its pieces have no recorded shapes")
        if dim != 1:  # pieces of the same channels
            self.pieces[node] = [self.layout[src]] * len(sizes)
            return None
        self.pieces[node] = cut_parts(self.g, self.layout[src], sizes, describe(node))
        self.slicings[node.name] = Slicing("split", self.pieces[node])
        return None

    def _shuffle(self, node, lin: Layout, channels: int, groups: int) -> Layout:
        """The channels of ``groups`` interleaved parts: their groups tied part to part (the same widths), each
        channel then ``groups`` features, one from each part (a shuffled half of a pruned network is its half)."""
        what = f"{describe(node)} (a channel shuffle)"
        parts = cut_parts(self.g, lin, [channels // groups] * groups, what)
        for p in parts[1:]:
            self._unify(parts[0], p, what)
        parts = [self.g.resolve(p) for p in parts]
        if any(p != parts[0] for p in parts[1:]):  # could not be tied: all kept, as channels of their own
            self.g.fix(lin, f"{what} of parts that cannot be pruned alike")
            gid = self.g.new(channels, f"{node.name}:shuffled")
            self.g.fixed[gid] = f"{what} of parts that cannot be pruned alike"
            return (Segment(gid, channels),)
        return tuple(Segment(seg.group, seg.size, seg.mult * groups) for seg in parts[0])

    def _cat(self, node, shape) -> Layout:
        tensors = node.args[0] if node.args else node.kwargs["tensors"]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        dim = dim % len(shape)
        layouts = [self.layout.get(t) for t in tensors]
        if dim != 1:
            for other in layouts[1:]:
                self._unify(layouts[0], other, describe(node))
            return layouts[0]
        out: list[Segment] = []
        for t, lay in zip(tensors, layouts):
            if lay is None:  # constant channels: its own fixed group
                c = node_shape(t)[1]
                gid = self.g.new(c, f"{node.name}:constant")
                self.g.fixed[gid] = f"constant input to {describe(node)}"
                lay = (Segment(gid, c),)
            out.extend(lay)
        return tuple(out)

    def _reshape(self, node, shape) -> Layout | None:
        src = node.args[0]
        s = node_shape(src)
        lin = self.layout.get(src)
        if lin is None:
            return None
        if s[:2] == shape[:2]:  # channel dim untouched (spatial reduce, squeeze of 1s, no-op view)
            if len(shape) == 2 and len(s) > 2:
                rest = 1
                for v in s[2:]:
                    rest *= v
                if rest != 1 and node.target not in REDUCE and node.target not in ("mean", "sum", "amax"):
                    raise UnsupportedModelError(f"{describe(node)} mixes channels and space")
            return lin
        if len(shape) == 2 and shape[0] == s[0]:  # flatten (B, C, *S) -> (B, C*prod(S))
            rest = 1
            for v in s[2:]:
                rest *= v
            if shape[1] == s[1] * rest:
                return tuple(Segment(seg.group, seg.size, seg.mult * rest) for seg in lin)
        shuffle = shuffle_chain(node, s, shape)
        if shuffle is not None:
            groups, chain = shuffle
            self.ahead.update({n: None for n in chain[:-1]})
            self.ahead[chain[-1]] = self._shuffle(node, lin, s[1], groups)
            return None
        raise UnsupportedModelError(f"{describe(node)} reshapes the channel dimension "
                                    f"{tuple(s)} -> {tuple(shape)}; hwprune cannot map its channels "
                                    f"(pass the module that does it in ignored_layers)")

