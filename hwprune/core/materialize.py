"""Build the pruned network of an encoding as a plain ``nn.Module`` with real channel counts.

The result is a copy of the original model (same class, same ``forward``) whose
conv, linear and batch-norm modules are replaced by smaller ones. Each keeps the
leading channels of every group it touches; with a ``source`` model their weights
are copied from it, otherwise they keep PyTorch's default initialisation. Widths
above the original (ratios > 1) keep the source's channels and initialise the rest.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..errors import SpaceMismatchError
from .layout import Layout, channel_positions, layout_size
from .traced import LayerInfo

if TYPE_CHECKING:
    from .space import SearchSpace

__all__ = ["materialize", "layout_overlap"]


def layout_overlap(layout: Layout, widths: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Indices (in the original tensor, in the new one) of the channels both keep, and the new size.

    A segment of group ``g`` keeps its first ``min(original, widths[g])`` channels;
    a segment with ``mult`` features per channel (after a flatten) keeps each kept
    channel's ``mult`` consecutive features.
    """
    kept = {seg.group: min(seg.size, int(widths[seg.group])) for seg in layout}
    src = channel_positions(layout, kept)
    dst = channel_positions(layout, kept, capacity=widths)
    return torch.from_numpy(src), torch.from_numpy(dst), layout_size(layout, widths)


def materialize(space: "SearchSpace", enc: Sequence[int], source: nn.Module | None = None) -> nn.Module:
    widths = space.widths(enc)
    model = copy.deepcopy(source if source is not None else space.model)
    originals = dict((source if source is not None else space.model).named_modules())
    for layer in space.layers:
        old = originals.get(layer.name)
        if old is None:
            raise SpaceMismatchError(f"source model has no module {layer.name!r}; it is not the model "
                                     f"this space was built from")
        new = _resize(layer, old, widths, copy_weights=source is not None)
        parent, _, child = layer.name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
    return model


@torch.no_grad()
def _resize(layer: LayerInfo, old: nn.Module, widths: np.ndarray, copy_weights: bool) -> nn.Module:
    in_src, in_dst, cin = layout_overlap(layer.in_layout, widths)
    out_src, out_dst, cout = layout_overlap(layer.out_layout, widths)
    dev, dt = _device_dtype(old)
    if layer.kind == "bn":
        _expect(layer, old, nn.modules.batchnorm._BatchNorm, ("num_features",))
        new = type(old)(cout, old.eps, old.momentum, old.affine, old.track_running_stats, device=dev, dtype=dt)
        if copy_weights:
            for name in ("weight", "bias", "running_mean", "running_var"):
                src, dst = getattr(old, name, None), getattr(new, name, None)
                if src is not None and dst is not None:
                    dst[out_dst] = src[out_src]
            if old.num_batches_tracked is not None:
                new.num_batches_tracked.copy_(old.num_batches_tracked)
    elif layer.kind == "linear":
        _expect(layer, old, nn.Linear, ("in_features", "out_features"))
        new = nn.Linear(cin, cout, bias=old.bias is not None, device=dev, dtype=dt)
        if copy_weights:
            new.weight[out_dst[:, None], in_dst[None, :]] = old.weight[out_src[:, None], in_src[None, :]]
            if old.bias is not None:
                new.bias[out_dst] = old.bias[out_src]
    else:
        _expect(layer, old, nn.modules.conv._ConvNd, ("in_channels", "out_channels"))
        groups = cout if layer.depthwise else old.groups
        new = type(old)(cin, cout, old.kernel_size, old.stride, old.padding, old.dilation, groups,
                        old.bias is not None, old.padding_mode, device=dev, dtype=dt)
        if copy_weights:
            if layer.depthwise or old.groups > 1:  # one input channel per filter, or a fixed grouped conv
                new.weight[out_dst] = old.weight[out_src]
            else:
                new.weight[out_dst[:, None], in_dst[None, :]] = old.weight[out_src[:, None], in_src[None, :]]
            if old.bias is not None:
                new.bias[out_dst] = old.bias[out_src]
    new.train(old.training)
    return new


def _expect(layer: LayerInfo, old: nn.Module, kind: type, attrs: tuple[str, ...]) -> None:
    """Refuse a source module whose type or size differs from the traced one."""
    sizes = [layout_size(layer.in_layout), layout_size(layer.out_layout)]
    for attr, expected in zip(attrs, sizes):
        if not isinstance(old, kind) or getattr(old, attr) != expected:
            raise SpaceMismatchError(f"module {layer.name!r} of the source model is {type(old).__name__} with "
                                     f"{attr}={getattr(old, attr, '?')}, but the space expects {kind.__name__} "
                                     f"with {expected}; the source is not the model this space was built from")


def _device_dtype(m: nn.Module) -> tuple[torch.device, torch.dtype]:
    for t in list(m.parameters()) + list(m.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.float32
