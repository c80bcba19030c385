"""Build the pruned network of an encoding as a plain ``nn.Module`` with real channel counts.

The result is a copy of the original model (same class, same ``forward``) whose
conv, linear and batch-norm modules are replaced by smaller ones. A model that takes
channels by position (``split``, ``x[:, :c]``) holds the original sizes in its own
code, and one that calls layer functions (``F.conv2d(x, self.weight)``) runs no module
that could be replaced; the pruned network of either is its traced graph instead (an
``fx.GraphModule`` with the same modules, functional layers among them), with those
sizes made the pruned ones; so is one with residual branches dropped (a droppable group at zero
channels, :mod:`hwprune.core.branches`), without those branches. Each keeps the
leading channels of every group it touches; with a ``source`` model their weights
are copied from it, otherwise they keep PyTorch's default initialisation. Widths
above the original (ratios > 1) keep the source's channels and initialise the rest.
"""
from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from ..errors import SpaceMismatchError
from .branches import Branch, drop_branches
from .functional import functional_layers
from .kinds import kind_of, layer_objects
from .layout import Layout, channel_positions, layout_size
from .slicing import pruned_call
from .traced import LayerInfo, TracedModel

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


def materialize(layers: Sequence[LayerInfo], widths: np.ndarray, template: nn.Module,
                source: nn.Module | None = None, traced: TracedModel | None = None,
                dropped: Sequence[Branch] = ()) -> nn.Module:
    """A copy of ``source`` (or of ``template``, freshly initialised layers) with every traced layer resized to
    the group ``widths`` (one per traced group, as :meth:`SearchSpace.widths` gives them), without the
    ``dropped`` branches; ``traced`` (the template's) is needed for a model with channel slicings or functional
    layers, or branches to drop."""
    model = copy.deepcopy(source if source is not None else template)
    gone = {name for b in dropped for name in b.layers}
    if traced is not None and (traced.slicings or traced.functional or dropped):
        graph = traced.graph_module.graph
        graph = drop_branches(graph, dropped, dict(model.named_modules())) if dropped else copy.deepcopy(graph)
        for node in graph.nodes:
            if node.name in traced.slicings:
                node.target, node.args, node.kwargs = pruned_call(node, traced.slicings[node.name], widths)
        for name, module in functional_layers(traced, model).items():  # the copy's tensors, as the graph's modules
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module)
        model = fx.GraphModule(model, graph, class_name=type(model).__name__)
    originals = layer_objects(source if source is not None else template, traced)
    for layer in layers:
        if layer.name in gone:
            continue
        old = originals.get(layer.name)
        if old is None:
            raise SpaceMismatchError(f"source model has no module or parameter {layer.name!r}; it is not the "
                                     f"model this space was built from")
        new = _resize(layer, old, widths, copy_weights=source is not None)
        parent, _, child = layer.name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
    return model


@torch.no_grad()
def _resize(layer: LayerInfo, old: nn.Module, widths: np.ndarray, copy_weights: bool) -> nn.Module:
    kind = kind_of(layer)
    kind.check_source(layer, old)
    in_src, in_dst, cin = layout_overlap(layer.in_layout, widths)
    out_src, out_dst, cout = layout_overlap(layer.out_layout, widths)
    new = kind.resize(layer, old, cin, cout, (in_src, in_dst, out_src, out_dst) if copy_weights else None)
    if isinstance(new, nn.Module):
        new.train(old.training)
    return new
