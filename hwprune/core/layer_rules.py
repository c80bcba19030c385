"""The channel rules of the layers of a traced CNN: conv, linear, norm layers, subclasses of them, and modules kept
whole. A mixin of the analysis in :mod:`hwprune.core.channels` (``self.g``, ``self.layout``, ``self.layers``)."""
from __future__ import annotations

import math

import torch.fx as fx
import torch.nn as nn

from ..errors import UnsupportedModelError
from .layout import Layout, Segment
from .macs import count_node_macs
from .nodes import FUNCTION, describe, flat, node_shape
from .ops import LAYER_MODULES, PASS_MODULES, own_forward, torch_base
from .traced import LayerInfo

__all__ = ["LayerRules"]


class LayerRules:
    """Per-module rules: what a layer does to the channel layout of its input, and the layer it records."""

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
            keep = "the module that calls it" if FUNCTION in node.meta else "it"
            raise UnsupportedModelError(f"{describe(node)} ({type(m).__name__} over {tuple(m.normalized_shape)} of "
                                        f"a {src} tensor) is not supported: hwprune prunes a LayerNorm over the "
                                        f"channels of dim 1 (LayerNorm2d); pass {keep} in ignored_layers")
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
