"""Channels in the last dimension: ConvNeXt's block as torchvision writes it.

``x.permute(0, 2, 3, 1)`` moves the channels last, a LayerNorm and two Linear layers run
over them (a 1x1 convolution at every position), and a second permute moves them back.
The analysis follows where a tensor's channels are (``self.cdim``, absent when in dim 1):
a permute moves them, activations, dropout and elementwise ops keep them, a LayerNorm
over them is a norm layer and a Linear over them a layer that runs at every position.
Anything else meeting channels that are not in dim 1 is refused by name, never counted
on the wrong dimension. A mixin of the analysis in :mod:`hwprune.core.channels`.
"""
from __future__ import annotations

import math

import torch.fx as fx
import torch.nn as nn

from ..errors import UnsupportedModelError
from .layout import Layout
from .nodes import describe, node_shape, permute_dims
from .ops import (ELEMENTWISE, ELEMENTWISE_METHODS, NON_TENSOR_METHODS, PASS_FUNCTION_NAMES, PASS_FUNCTIONS,
                  PASS_METHODS, PASS_MODULES, SPATIAL_FUNCTIONS, SPATIAL_MODULES, qualified_name)
from .traced import LayerInfo

__all__ = ["ChannelsLast", "is_permute"]


def is_permute(node: fx.Node) -> bool:
    return permute_dims(node) is not None


class ChannelsLast:
    """Rules for tensors whose channels are not in dim 1 (``self.cdim``)."""

    def _permute(self, node: fx.Node) -> Layout | None:
        src = node.args[0]
        lin = self.layout.get(src)
        if lin is None:
            return None
        at = permute_dims(node).index(self.cdim.get(src, 1))
        if at != 1:
            self.cdim[node] = at
        return lin

    def _channels_last(self, node: fx.Node) -> Layout | None:
        """``node`` reads a tensor whose channels are not in dim 1."""
        ins = [a for a in node.all_input_nodes if self.layout.get(a)]
        dims = {self.cdim.get(a, 1) for a in ins}
        if is_permute(node):
            return self._permute(node)
        shape, dim = node_shape(node), max(dims)
        if shape is None and (node.op == "call_method" and node.target in NON_TENSOR_METHODS
                              or node.target is getattr):
            return None  # its sizes
        m = self.modules.get(node.target) if node.op == "call_module" else None
        where = f"{describe(node)} on channels in dim {dim}"
        if len(dims) > 1 or shape is None or m is not None and node.target in self.leaves:
            raise UnsupportedModelError(f"{where} (or mixed with channels elsewhere) is not supported; keep "
                                        f"whole the module that also moves them back")
        out = self._last_rule(node, m, ins, shape, dim, where)
        if out is not None:
            self.cdim[node] = dim
        return out

    def _last_rule(self, node, m, ins, shape, dim, where) -> Layout | None:
        lin = self.layout.get(ins[0])
        last = dim == len(shape) - 1
        if isinstance(m, nn.Linear) and last and len(node_shape(ins[0])) == len(shape):  # a 1x1 conv per position
            name = node.target
            self.g.add_member(lin, f"{name}:in")
            out = self._out_layout(name, m.out_features)
            self._record(name, LayerInfo(name, "linear", lin, out, bias=m.bias is not None,
                                         out_spatial=math.prod(shape[1:-1]), signature={"op": "linear"}))
            return out
        if isinstance(m, nn.LayerNorm) and last and tuple(m.normalized_shape) == (shape[-1],):
            self._record(node.target, LayerInfo(node.target, "norm", lin, lin, affine=m.elementwise_affine,
                                                bias=m.bias is not None, signature={"op": "layernorm"}))
            self.g.add_member(lin, node.target)
            return lin
        if isinstance(m, SPATIAL_MODULES) or node.target in SPATIAL_FUNCTIONS:
            raise UnsupportedModelError(f"{where} is not supported: it works over the dims after dim 1 (keep whole "
                                        f"the module that moves the channels)")
        if isinstance(m, PASS_MODULES) or node.op == "call_function" and (
                node.target in PASS_FUNCTIONS or qualified_name(node.target) in PASS_FUNCTION_NAMES) or \
                node.op == "call_method" and node.target in PASS_METHODS:
            if node_shape(ins[0]) != shape:
                raise UnsupportedModelError(f"{where} changes its shape; not supported")
            return lin
        if node.target in ELEMENTWISE or node.op == "call_method" and node.target in ELEMENTWISE_METHODS:
            for a in node.all_input_nodes:
                s = node_shape(a)
                if a in ins or s is None or len(shape) - len(s) > dim or s[dim - (len(shape) - len(s))] == 1:
                    continue  # a carrier, a scalar, or broadcast over the channels
                self.g.fix(lin, f"{describe(node)} with a constant per-channel tensor")
            for other in ins[1:]:
                self._unify(lin, self.layout.get(other), describe(node))
            return lin
        raise UnsupportedModelError(f"{where} is not supported; hwprune cannot tell how it maps channels "
                                    f"(keep whole the module that moves them)")
