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

The result, a :class:`TracedModel`, records per layer the layouts and shapes that
FLOPs, params, materialization and the PruningNet need, so nothing is traced twice.
"""
from __future__ import annotations

import math
import operator

import torch.fx as fx
import torch.nn as nn

from ..errors import UnsupportedModelError
from .layout import Layout, Segment, layout_size
from .macs import count_node_macs
from .nodes import describe, flat, node_shape
from .scales import per_channel_parameter
from .ops import (CAT, ELEMENTWISE, ELEMENTWISE_METHODS, LAYER_MODULES, NON_TENSOR_METHODS, PASS_FUNCTION_NAMES,
                  PASS_FUNCTIONS, PASS_METHODS, PASS_MODULES, REDUCE, RESHAPE, RESHAPE_METHODS, own_forward,
                  qualified_name, torch_base)
from .slicing import align, channel_slice, cut_parts, is_split, piece_sizes, split_dim
from .traced import ChannelUnion, LayerInfo, Resolved, Slicing, TracedModel, traced_model

__all__ = ["analyse"]


def analyse(gm: fx.GraphModule, leaves: set[str], input_shapes, model_name: str) -> TracedModel:
    """The layers and channel groups of ``gm`` (traced, its shapes propagated); ``leaves`` are kept whole."""
    return _Analysis(gm, leaves).run(input_shapes, model_name)


class _Analysis:
    def __init__(self, gm: fx.GraphModule, leaves: set[str]):
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.leaves = leaves
        self.g = ChannelUnion()
        self.layout = Resolved(self.g)  # node -> layout of its output
        self.pieces: dict[fx.Node, list[Layout]] = {}  # a split -> the layouts of the tensors it returns
        self.slicings: dict[str, Slicing] = {}
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
        raise UnsupportedModelError(f"{describe(node)} on channel data is not supported; hwprune cannot "
                                    f"tell how it maps channels (pass the module that calls it in ignored_layers)")

    def _module(self, node: fx.Node, m: nn.Module, shape) -> Layout | None:
        x = node.args[0] if node.args else None
        lin = self.layout.get(x) if isinstance(x, fx.Node) else None
        if node.target in self.leaves:
            return self._opaque(node, m, shape)
        if isinstance(m, LAYER_MODULES) and own_forward(m):
            self._check_subclass(node, m, shape)
        if isinstance(m, nn.modules.conv._ConvNd):
            if isinstance(m, nn.modules.conv._ConvTransposeNd):
                raise UnsupportedModelError(f"module {node.target!r} ({type(m).__name__}) is not supported yet; "
                                            f"pass it in ignored_layers")
            return self._conv(node, m, lin, shape)
        if isinstance(m, nn.Linear):
            return self._linear(node, m, lin, shape)
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            self._record(node.target, LayerInfo(node.target, "bn", lin, lin, affine=m.affine,
                                                signature={"op": "bn"}))
            self.g.add_member(lin, node.target)
            return lin
        if isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
            return self._norm(node, m, lin, shape)
        if isinstance(m, nn.PReLU) and m.num_parameters > 1:
            self.g.fix(lin, f"per-channel PReLU {node.target!r}")
            return lin
        if isinstance(m, PASS_MODULES):
            return lin
        if isinstance(m, nn.Flatten):
            return self._reshape(node, shape)
        if not any(True for _ in m.parameters(recurse=False)) and not list(m.children()) and shape is not None \
                and lin is not None and node_shape(x) == shape and type(m).__module__.startswith("torch.nn"):
            return lin
        base = torch_base(type(m))
        kind = f"{type(m).__name__}, a subclass of {base.__name__}" if base not in (type(m), nn.Module) \
            else type(m).__name__
        raise UnsupportedModelError(f"module {node.target!r} ({kind}) is not supported; hwprune "
                                    f"cannot tell how it maps channels (pass it in ignored_layers)")

    def _check_subclass(self, node, m: nn.Module, shape) -> None:
        """A subclass with a forward of its own is one layer only while it keeps its base's channel counts."""
        src = node_shape(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
        expect_in = getattr(m, "in_channels", getattr(m, "in_features", getattr(m, "num_features", None)))
        expect_out = getattr(m, "out_channels", getattr(m, "out_features", getattr(m, "num_features", None)))
        dim = -1 if isinstance(m, nn.Linear) else 1
        if expect_in is None:  # an activation, pool or dropout: keeps the channels of its input
            expect_in = expect_out = src[1] if src is not None and len(src) > 1 else None
        if src is None or shape is None or len(src) < 2 or len(shape) < 2 or src[dim] != expect_in \
                or shape[dim] != expect_out:
            base = torch_base(type(m)).__name__
            raise UnsupportedModelError(
                f"module {node.target!r} ({type(m).__name__}, a subclass of {base} with a forward of its own) maps "
                f"{src} to {shape}, not the channels of a {base}; pass it in ignored_layers")

    def _norm(self, node, m: nn.Module, lin: Layout, shape) -> Layout:
        src, name = node_shape(node.args[0]), node.target
        if isinstance(m, nn.GroupNorm):  # statistics per group of channels: pruned evenly in every group
            if len(lin) == 1:
                self.g.split(lin[0].group, m.num_groups, f"GroupNorm {name!r} ({m.num_groups} groups)")
            elif m.num_groups > 1:
                self.g.fix(lin, f"GroupNorm {name!r} on concatenated channels")
            op, affine = "groupnorm", m.affine
        elif tuple(m.normalized_shape) == (src[1],) and shape == src and (len(src) == 2 or own_forward(m)):
            op, affine = "layernorm", m.elementwise_affine  # over the channels: LayerNorm2d, or (N, C)
        else:
            raise UnsupportedModelError(f"module {name!r} ({type(m).__name__} over {tuple(m.normalized_shape)} of "
                                        f"a {src} tensor) is not supported: hwprune prunes a LayerNorm over the "
                                        f"channels of dim 1 (LayerNorm2d); pass it in ignored_layers")
        self._record(name, LayerInfo(name, "norm", lin, lin, affine=affine, bias=getattr(m, "bias", None) is not None,
                                     signature={"op": op}))
        self.g.add_member(lin, name)
        return lin

    def _conv(self, node, m: nn.modules.conv._ConvNd, lin: Layout, shape) -> Layout:
        name = node.target
        kernel = 1
        for k in m.kernel_size:
            kernel *= k
        spatial = 1
        for s in shape[2:]:
            spatial *= s
        sig = {"op": f"conv{len(m.kernel_size)}d", "kernel": list(m.kernel_size), "stride": list(m.stride),
               "padding": list(m.padding) if not isinstance(m.padding, str) else m.padding,
               "dilation": list(m.dilation), "in_spatial": list(node_shape(node.args[0])[2:]),
               "out_spatial": list(shape[2:])}
        self.g.add_member(lin, f"{name}:in")
        if m.groups == 1:
            out = self._out_layout(name, m.out_channels)
            info = LayerInfo(name, "conv", lin, out, kernel=kernel, out_spatial=spatial, bias=m.bias is not None)
        elif m.groups == m.in_channels == m.out_channels:
            out = lin
            self.g.add_member(lin, f"{name}:out")
            info = LayerInfo(name, "conv", lin, lin, depthwise=True, kernel=kernel, out_spatial=spatial,
                             bias=m.bias is not None)
        else:  # grouped: filter block i reads input block i, so both are pruned evenly in every block
            why = f"grouped conv {name!r} (groups={m.groups})"
            if len(lin) == 1:
                self.g.split(lin[0].group, m.groups, why)
            else:
                self.g.fix(lin, f"{why} on concatenated channels")
            out = self._out_layout(name, m.out_channels)
            self.g.split(out[0].group, m.groups, why)
            info = LayerInfo(name, "conv", lin, out, groups=m.groups, kernel=kernel, out_spatial=spatial,
                             bias=m.bias is not None)
        info.signature = sig
        self._record(name, info)
        return out

    def _linear(self, node, m: nn.Linear, lin: Layout, shape) -> Layout:
        name = node.target
        if len(shape) != 2:  # over the last dimension, once per position of the others (its cost grows with dim
            why = f"linear {name!r} on a {len(shape)}-d tensor"  # 1): kept whole, with the channels of dim 1
            self.g.fix(lin, why)
            fin = self.layers[name].in_layout if name in self.layers else \
                (Segment(self.g.new(m.in_features, f"{name}:in"), m.in_features),)
            out = self._out_layout(name, m.out_features)
            self.g.fix(fin, why)
            self.g.fix(out, why)
            self._record(name, LayerInfo(name, "linear", fin, out, bias=m.bias is not None,
                                         out_spatial=math.prod(shape[1:-1]), signature={"op": "linear"}))
            return lin  # dim 1 is not the one it maps
        self.g.add_member(lin, f"{name}:in")
        out = self._out_layout(name, m.out_features)
        self._record(name, LayerInfo(name, "linear", lin, out, bias=m.bias is not None,
                                     signature={"op": "linear"}))
        return out

    def _out_layout(self, name: str, channels: int) -> Layout:
        if name in self.layers:  # a module called twice produces the same group
            return self.layers[name].out_layout
        return (Segment(self.g.new(channels, f"{name}:out", producer=True), channels),)

    def _record(self, name: str, info: LayerInfo) -> None:
        old = self.layers.get(name)
        if old is not None:  # shared module: its inputs must agree channel for channel
            self._unify(old.in_layout, info.in_layout, f"module {name!r} called twice")
            return
        self.layers[name] = info

    def _opaque(self, node, m: nn.Module, shape) -> Layout | None:
        for a in flat((node.args, node.kwargs)):
            if isinstance(a, fx.Node):
                self.g.fix(self.layout.get(a), f"ignored layer {node.target!r}")
        self.const_flops += count_node_macs(m, [a for a in node.args if isinstance(a, fx.Node)])
        if shape is None or len(shape) < 2:
            return None
        src = node_shape(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
        if src is not None and len(src) == len(shape) == 4 and shape[1:] == (*src[2:], src[1]) != src[1:]:
            raise UnsupportedModelError(f"ignored layer {node.target!r} returns its channels last {tuple(shape)} "
                                        f"from {tuple(src)}; hwprune counts channels in dim 1, so keep whole the "
                                        f"module that also permutes them back")
        gid = self.g.new(shape[1], f"{node.target}:out")
        self.g.fixed[gid] = f"ignored layer {node.target!r}"
        return (Segment(gid, shape[1]),)

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
        raise UnsupportedModelError(f"{describe(node)} reshapes the channel dimension "
                                    f"{tuple(s)} -> {tuple(shape)}; hwprune cannot map its channels "
                                    f"(pass the module that does it in ignored_layers)")

