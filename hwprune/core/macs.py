"""Multiply-accumulates of any module, counted by running it once with hooks."""
from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn

__all__ = ["count_macs", "count_node_macs"]


def count_node_macs(module: nn.Module, arg_nodes: list[fx.Node]) -> int:
    """MACs of the convs and linears inside an opaque module, by running it once."""
    args = [n.meta.get("tensor_meta") for n in arg_nodes]
    if any(a is None or not hasattr(a, "shape") for a in args):
        return 0
    return count_macs(module, [torch.zeros(a.shape, dtype=a.dtype) for a in args])


def count_macs(module: nn.Module, inputs) -> int:
    """Multiply-accumulates per example of the convs and linears in ``module`` (any module, pruned or
    not), counted with hooks on one eval-mode run on ``inputs``; the module's mode is restored."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, nn.modules.conv._ConvNd):
            total += out.numel() // out.shape[0] * (m.in_channels // m.groups) * int(m.weight[0, 0].numel())
        elif isinstance(m, nn.Linear):
            total += out.numel() // out.shape[-1] // out.shape[0] * m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(*inputs)
    finally:
        module.train(training)
        for h in handles:
            h.remove()
    return total
