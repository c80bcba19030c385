"""Per-channel tensors of the model itself: a parameter its forward multiplies or adds channel by channel.

ConvNeXt scales each block's output by a learned vector (``x.mul(self.gamma.reshape(1, -1, 1, 1))``
in timm, ``self.layer_scale * x`` with a (C, 1, 1) parameter in torchvision). Such a tensor
is pruned with the channels it meets, as a layer of kind ``"param"``: materialize cuts the
parameter, the importance order permutes it and the PruningNet trains it at every width.
It qualifies only while nothing in the model's code names its width: reached from the
parameter through reshapes whose sizes are -1 or 1, so the pruned network runs the same
code on the smaller tensor.
"""
from __future__ import annotations

import torch
import torch.fx as fx

from .nodes import flat

__all__ = ["per_channel_parameter"]

_RESHAPE_METHODS = ("reshape", "view", "unsqueeze", "to", "type_as", "contiguous")
_RESHAPE_FUNCTIONS = (torch.reshape, torch.unsqueeze)


def per_channel_parameter(gm: fx.GraphModule, node: fx.Node, channels: int) -> str | None:
    """The qualified name of the parameter ``node`` is (through reshapes) when it holds one value per channel of
    a ``channels``-wide tensor, else None."""
    while node.op == "call_method" and node.target in _RESHAPE_METHODS or \
            node.op == "call_function" and node.target in _RESHAPE_FUNCTIONS:
        if any(isinstance(v, int) and v == channels for v in flat((node.args[1:], node.kwargs))):
            return None  # the code names the width: a pruned network could not run it
        node = node.args[0]
        if not isinstance(node, fx.Node):
            return None
    if node.op != "get_attr" or channels < 2:
        return None
    try:
        t = gm.get_parameter(node.target)
    except AttributeError:
        return None
    if t.numel() != channels or channels not in t.shape:
        return None
    return node.target
