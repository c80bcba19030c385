"""Importance order: permute each prunable group's channels, in every coupled layer at once, most important first.

A channel's importance is aggregated over every layer of its group: the L1 (or L2)
norm of the weights that produce it and of the weights that read it, and BatchNorm's
|gamma|, each layer's scores divided by their mean so that no layer dominates by its
scale (Torch-Pruning's group magnitude importance; ``metric="bn"`` is network
slimming's |gamma| alone; ``metric="taylor"`` is Molchanov et al.'s first-order Taylor
estimate of the loss change when a channel is removed, (sum of weight x gradient over
the channel's weights)^2 summed over a few batches, which needs ``data``). The
permutation is applied to every member of the group
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
from .functional import tensor_name
from .kinds import kind_of, layer_objects
from .layout import Layout

__all__ = ["METRICS", "channel_importance", "order_channels", "layout_permutation"]

METRICS = ("l1", "l2", "bn", "taylor")
TAYLOR_BATCHES = 8  # batches the Taylor estimate sums over


def _norm(w: torch.Tensor, dim: int, metric: str) -> np.ndarray:
    """Per-index norm of ``w`` along ``dim`` (every other dimension reduced)."""
    w = w.detach().double().transpose(0, dim).reshape(w.shape[dim], -1)  # float64: ties must not flip
    out = w.abs().sum(1) if metric == "l1" else w.pow(2).sum(1).sqrt()
    return out.cpu().numpy().astype(np.float64)


def _blocks(layout: Layout, per_position: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """``per_position`` (one value per feature of the layout) summed per channel: (group, values) per segment."""
    out, off = [], 0
    for seg in layout:
        out.append((seg.group, per_position[off: off + seg.size * seg.mult].reshape(seg.size, seg.mult).sum(1)))
        off += seg.size * seg.mult
    return out


def _add_scaled(blocks: list[tuple[int, np.ndarray]], scale: float, scores: dict[int, np.ndarray]) -> None:
    """Add one layer's per-channel scores, divided by ``scale`` (the layer's mean) so no layer dominates."""
    if not scale > 0:
        return
    for group, block in blocks:
        if group in scores:
            scores[group] += block / scale


def _spread(layout: Layout, per_position: np.ndarray, scores: dict[int, np.ndarray]) -> None:
    """Add ``per_position`` to each group's per-channel scores, the layer's contribution divided by its mean."""
    _add_scaled(_blocks(layout, per_position), per_position.mean() if per_position.size else 0.0, scores)


def _contributions(model: nn.Module, data, batches: int):
    """For each batch, ``w * dL/dw`` of every parameter (the model in eval mode: statistics untouched)."""
    import torch.nn.functional as F

    if data is None:
        raise HwpruneError("the taylor importance needs training batches (data=...): it weighs each channel by the "
                           "loss gradient")
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    try:
        for k, (x, y) in enumerate(data):
            if k >= batches:
                break
            model.zero_grad(set_to_none=True)
            with torch.enable_grad():
                F.cross_entropy(model(x.to(dev)), y.to(dev)).backward()
            yield {name: (p.detach() * p.grad).double() for name, p in model.named_parameters() if p.grad is not None}
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)


def _taylor(space, model: nn.Module, data, batches: int, scores: dict[int, np.ndarray],
            raw: dict[int, np.ndarray]) -> None:
    """Add each layer's first-order Taylor scores: per channel, (sum of w * g over all its weights)^2, summed over
    batches. A conv or linear channel counts its filter (and bias), or the weights that read it; a BatchNorm
    channel its scale and shift; a flattened channel all its positions. ``scores`` get each layer's divided by their
    mean (an order within each group); ``raw`` the estimates themselves (comparable across groups)."""
    sides: dict[tuple[str, str], list] = {}  # (layer, side) -> per segment: summed squares over batches

    def add(layer: str, side: str, layout: Layout, wg: torch.Tensor):
        blocks = [(g, b ** 2) for g, b in _blocks(layout, wg.cpu().numpy())]
        if (layer, side) in sides:
            blocks = [(g, acc + b) for (g, acc), (_, b) in zip(sides[(layer, side)], blocks)]
        sides[(layer, side)] = blocks

    for wg in _contributions(model, data, batches):
        for layer in space.layers:
            kind = kind_of(layer)
            w, b = (wg.get(tensor_name(space.traced, layer.name, role)) for role in ("weight", "bias"))
            if w is None:
                continue
            out = w.reshape(w.shape[0], -1).sum(1)
            add(layer.name, "out", layer.out_layout, out + b if b is not None else out)
            if kind.weighted and kind.crops_input(layer):
                add(layer.name, "in", layer.in_layout, w.transpose(0, 1).reshape(w.shape[1], -1).sum(1))
    for blocks in sides.values():
        values = np.concatenate([b for _, b in blocks]) if blocks else np.zeros(0)
        _add_scaled(blocks, values.mean() if values.size else 0.0, scores)
        _add_scaled(blocks, 1.0, raw)


def channel_importance(space, model: nn.Module, metric: str = "l1", data=None,
                       batches: int = TAYLOR_BATCHES, normalize: bool = True) -> dict[int, np.ndarray]:
    """Importance of every channel of every prunable group (keyed by index into ``space.all_groups``).

    ``data`` (batches of (input, label)) is needed by ``metric="taylor"`` only, which
    sums over its first ``batches``. ``normalize=False`` (Taylor only) gives the loss-change estimates
    themselves instead of each layer's divided by their mean: a scale shared by every group, so that channels
    of different groups can be weighed against each other (the search's saliency baseline).
    """
    if not normalize and metric != "taylor":
        raise HwpruneError(f"normalize=False needs metric='taylor' (a loss-change estimate); {metric!r} scores have "
                           f"no scale shared across layers")
    scores, raw = _importance(space, model, metric, data, batches)
    return scores if normalize else raw


def _importance(space, model: nn.Module, metric: str, data, batches: int) \
        -> tuple[dict[int, np.ndarray], dict[int, np.ndarray] | None]:
    """:func:`channel_importance`'s scores, and for Taylor its unnormalized estimates too (one pass for both)."""
    if metric not in METRICS:
        raise HwpruneError(f"importance metric must be one of {', '.join(METRICS)}, got {metric!r}")
    scores = {gi: np.zeros(space.all_groups[gi].width) for gi in space.prunable_index}
    if metric == "taylor":
        raw = {gi: np.zeros_like(v) for gi, v in scores.items()}
        _taylor(space, model, data, batches, scores, raw)
        return scores, raw
    modules = layer_objects(model, space.traced)
    for layer in space.layers:
        m = modules.get(layer.name)
        if m is None:
            raise HwpruneError(f"the model has no module or parameter {layer.name!r}; it is not the model this space "
                               f"was built from")
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
    return scores, None


def layout_permutation(layout: Layout, perms: dict[int, np.ndarray]) -> torch.Tensor:
    """Index of the permuted tensor's features in the original one (groups without a permutation stay)."""
    parts, off = [], 0
    for seg in layout:
        p = perms.get(seg.group, np.arange(seg.size))
        parts.append(off + (p[:, None] * seg.mult + np.arange(seg.mult)[None, :]).ravel())
        off += seg.size * seg.mult
    return torch.from_numpy(np.concatenate(parts) if parts else np.zeros(0, np.int64))


@torch.no_grad()
def order_channels(space, model: nn.Module, metric: str | None = None, data=None,
                   batches: int = TAYLOR_BATCHES) -> nn.Module:
    """A copy of ``model`` with each prunable group's channels in decreasing importance; outputs are unchanged.

    ``metric`` None is the best order the inputs allow: ``"taylor"`` given training
    batches (``data``), else ``"l1"`` (benchmarks/importance_metrics.py: Taylor-ordered
    resnet20s keep 0.78 val top-1 at uniform width 0.7 before fine-tuning, L1-ordered 0.63).
    Taylor sums over the first ``batches`` of ``data``.
    """
    metric = metric or ("taylor" if data is not None else "l1")
    scores, raw = _importance(space, model, metric, data, batches)
    perms = {gi: np.argsort(-s, kind="stable") for gi, s in scores.items()}
    ordered = copy.deepcopy(model)
    modules = layer_objects(ordered, space.traced)
    for layer in space.layers:
        kind_of(layer).permute(layer, modules[layer.name], layout_permutation(layer.in_layout, perms),
                               layout_permutation(layer.out_layout, perms))
    # each group's scores in the new order (descending), for whoever ranks channels by them next
    # and, for Taylor, the loss-change estimates themselves in that order (``saliency``: channel_importance's
    # normalize=False), which the search's saliency baseline weighs against latency across groups
    ordered.hwprune_importance = {"metric": metric, "scores": {gi: s[perms[gi]] for gi, s in scores.items()},
                                  **({"saliency": {gi: s[perms[gi]] for gi, s in raw.items()}} if raw else {})}
    if hasattr(model, "hwprune_spec"):
        ordered.hwprune_spec = model.hwprune_spec
    return ordered
