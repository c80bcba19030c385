"""Importance order: permute each prunable group's channels, in every coupled layer at once, most important first.

A channel's importance is aggregated over every layer of its group: the L1 (or L2)
norm of the weights that produce it and of the weights that read it, and BatchNorm's
|gamma|, each layer's scores divided by their mean so that no layer dominates by its
scale (Torch-Pruning's group magnitude importance; ``metric="bn"`` is network
slimming's |gamma| alone). The permutation is applied to every member of the group
(conv and linear outputs and inputs, depthwise convs, BatchNorm, concatenated and
flattened layouts), so the network computes exactly what it did; afterwards "keep the
leading k channels", which materialize and the PruningNet do, keeps the k best.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn

from ..errors import HwpruneError
from .kinds import kind_of
from .layout import Layout

__all__ = ["METRICS", "channel_importance", "order_channels", "layout_permutation"]

METRICS = ("l1", "l2", "bn")


def _norm(w: torch.Tensor, dim: int, metric: str) -> np.ndarray:
    """Per-index norm of ``w`` along ``dim`` (every other dimension reduced)."""
    w = w.detach().double().transpose(0, dim).reshape(w.shape[dim], -1)  # float64: ties must not flip
    out = w.abs().sum(1) if metric == "l1" else w.pow(2).sum(1).sqrt()
    return out.cpu().numpy().astype(np.float64)


def _spread(layout: Layout, per_position: np.ndarray, scores: dict[int, np.ndarray]) -> None:
    """Add ``per_position`` (one value per feature of the layout) to each group's per-channel scores, each layer's
    contribution divided by its mean."""
    mean = per_position.mean() if per_position.size else 0.0
    if not mean > 0:
        return
    off = 0
    for seg in layout:
        block = per_position[off: off + seg.size * seg.mult].reshape(seg.size, seg.mult).sum(1)  # (size,)
        off += seg.size * seg.mult
        if seg.group in scores:
            scores[seg.group] += block / mean


def channel_importance(space, model: nn.Module, metric: str = "l1") -> dict[int, np.ndarray]:
    """Importance of every channel of every prunable group (keyed by index into ``space.all_groups``)."""
    if metric not in METRICS:
        raise HwpruneError(f"importance metric must be one of {', '.join(METRICS)}, got {metric!r}")
    scores = {gi: np.zeros(space.all_groups[gi].width) for gi in space.prunable_index}
    modules = dict(model.named_modules())
    for layer in space.layers:
        m = modules.get(layer.name)
        if m is None:
            raise HwpruneError(f"the model has no module {layer.name!r}; it is not the model this space was built from")
        kind = kind_of(layer)
        if not kind.weighted:
            if getattr(m, "affine", False) and metric in ("l1", "l2", "bn"):
                _spread(layer.out_layout, m.weight.detach().double().abs().cpu().numpy(), scores)
            continue
        if metric == "bn":
            continue
        _spread(layer.out_layout, _norm(m.weight, 0, metric), scores)
        if kind.crops_input(layer):
            _spread(layer.in_layout, _norm(m.weight, 1, metric), scores)
    return scores


def layout_permutation(layout: Layout, perms: dict[int, np.ndarray]) -> torch.Tensor:
    """Index of the permuted tensor's features in the original one (groups without a permutation stay)."""
    parts, off = [], 0
    for seg in layout:
        p = perms.get(seg.group, np.arange(seg.size))
        parts.append(off + (p[:, None] * seg.mult + np.arange(seg.mult)[None, :]).ravel())
        off += seg.size * seg.mult
    return torch.from_numpy(np.concatenate(parts) if parts else np.zeros(0, np.int64))


@torch.no_grad()
def order_channels(space, model: nn.Module, metric: str = "l1") -> nn.Module:
    """A copy of ``model`` with each prunable group's channels in decreasing importance; outputs are unchanged."""
    scores = channel_importance(space, model, metric)
    perms = {gi: np.argsort(-s, kind="stable") for gi, s in scores.items()}
    ordered = copy.deepcopy(model)
    modules = dict(ordered.named_modules())
    for layer in space.layers:
        kind_of(layer).permute(layer, modules[layer.name], layout_permutation(layer.in_layout, perms),
                               layout_permutation(layer.out_layout, perms))
    ordered.hwprune_importance = {"metric": metric}
    if hasattr(model, "hwprune_spec"):
        ordered.hwprune_spec = model.hwprune_spec
    return ordered
