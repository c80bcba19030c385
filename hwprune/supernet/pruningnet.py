"""PruningNet: the MetaPruning meta network, built for any SearchSpace.

For every conv and linear layer a small generator MLP maps the layer's width ratios
``(cin / cin_orig, cout / cout_orig)`` to the full-size weight (and bias); the
candidate's weight is its leading channels per group (index maps for concatenated
layouts). Built from a trained, importance-ordered model (``source=``), generators
start at its weights and BatchNorm keeps its scale, shift and statistics, so before
any training the full-width PruningNet computes what the model computes. BatchNorm
keeps a row of statistics (and affine terms) per width choice of its group, or one
shared set (``bn="shared"``) that search recalibrates per candidate. The generators'
output mixes ``rank`` full-size bases; ``rank=None`` is the paper's output layer, one
full-size tensor per hidden unit (8x the parameters at 32 hidden units). By default
(``"auto"``) a PruningNet built from trained weights gets rank 4, which ranked networks
as well or better on Fashion-MNIST, and one trained from scratch the full layer, which
learned far better there (README, Training). ``pnet(x, enc)`` runs the traced graph of the original
model with these weights; ``pnet.materialize(enc)`` returns the plain pruned
network carrying them.
"""
from __future__ import annotations

import copy
import functools
import math
from typing import Sequence

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ..errors import HwpruneError
from ..core.space import SearchSpace
from ..core.kinds import group_inputs, kind_of, layer_objects, run_own, shell
from ..core.materialize import layout_overlap
from ..core.ops import own_forward
from ..core.slicing import pruned_call
from ..core.layout import Layout, channel_positions, layout_size
from ..core.traced import LayerInfo

__all__ = ["PruningNet", "generator_params", "default_rank"]

BN_MODES = ("per_choice", "shared")


def _key(name: str) -> str:
    return name.replace(".", "__")


def generator_params(space: SearchSpace, hidden: int = 32, rank: int | None = None) -> int:
    """Parameter count of a PruningNet's generators, without building them (e.g. for resnet50)."""
    maxw = _max_widths(space)
    total = 0
    modules = layer_objects(space.model, space.traced)
    for layer in space.layers:
        if not kind_of(layer).weighted:
            continue
        shape, bias = _full_shape(layer, maxw, modules[layer.name])
        numel = math.prod(shape) + bias
        total += 2 * hidden + hidden  # first layer: 2 ratios -> hidden
        total += (hidden + 1) * numel if rank is None else hidden * rank + rank + (rank + 1) * numel
    return total


def default_rank(from_weights: bool) -> int | None:
    """The generator rank ``"auto"`` stands for: 4 bases from trained weights, the paper's full output from
    scratch (README, Training, has the measurements)."""
    return 4 if from_weights else None


def _max_widths(space: SearchSpace) -> np.ndarray:
    w = space._base.copy()
    for g, i in zip(space.groups, space.prunable_index):
        w[i] = max(g.choices)
    return w


def _full_shape(layer: LayerInfo, maxw: np.ndarray, module: nn.Module) -> tuple[tuple[int, ...], int]:
    """(weight shape, bias length) of ``layer`` with every group at its widest choice."""
    return kind_of(layer).full_shape(layer, module, layout_size(layer.in_layout, maxw),
                                     layout_size(layer.out_layout, maxw))


def _indices(layout: Layout, widths: np.ndarray, maxw: np.ndarray) -> torch.Tensor | int:
    """Positions in the full-size (max width) tensor of the channels ``widths`` keeps.

    Returns an int when they are simply the leading ones (a cheap narrow), else an index tensor.
    """
    if len(layout) == 1:
        return int(widths[layout[0].group]) * layout[0].mult
    return torch.from_numpy(channel_positions(layout, widths, capacity=maxw))


def _overlap(layer: LayerInfo, maxw: np.ndarray) -> tuple:
    """(in_src, in_dst, out_src, out_dst) of a layer grown from its original widths to ``maxw``."""
    in_src, in_dst, _ = layout_overlap(layer.in_layout, maxw)
    out_src, out_dst, _ = layout_overlap(layer.out_layout, maxw)
    return in_src, in_dst, out_src, out_dst


def _take(t: torch.Tensor, dim: int, idx: torch.Tensor | int) -> torch.Tensor:
    return t.narrow(dim, 0, idx) if isinstance(idx, int) else t.index_select(dim, idx.to(t.device))


class _Generator(nn.Module):
    """ratios (2,) -> Linear -> ReLU -> Linear -> flat weight (+ bias) of the full-size layer.

    ``rank=None`` is the paper's output layer (one weight tensor per hidden unit); a
    rank ``r`` mixes only ``r`` full-size bases, ``hidden / r`` times fewer parameters.
    ``anchored``: the hidden code is taken relative to the full width's, so the full-width
    network's weights are exactly the base (``init`` at the start: the dense model's), and
    every narrower network starts near a crop of them. Without it (checkpoints of earlier
    versions) the output only starts near ``init``.
    """

    def __init__(self, init: torch.Tensor, hidden: int, rank: int | None, anchored: bool = True):
        super().__init__()
        numel = init.numel()
        self.fc1 = nn.Linear(2, hidden)
        scale = float(init.std()) if numel > 1 else 0.01
        scale = scale if scale > 0 else 0.01
        if rank is None:
            self.fc2 = nn.Linear(hidden, numel)
            nn.init.normal_(self.fc2.weight, 0, 0.5 * scale / math.sqrt(hidden))
            with torch.no_grad():
                self.fc2.bias.copy_(init)
        else:
            self.coef = nn.Linear(hidden, rank)
            self.basis = nn.Parameter(torch.randn(rank, numel) * (0.5 * scale / math.sqrt(rank)))
            self.base = nn.Parameter(init.clone())
        self.rank, self.anchored = rank, anchored
        self.register_buffer("full_ratios", torch.ones(2), persistent=False)

    def forward(self, ratios: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc1(ratios))  # (hidden,)
        if self.anchored:
            h = h - F.relu(self.fc1(self.full_ratios))  # zero at full width: the output is the base there
        if self.rank is None:
            return self.fc2(h)  # (numel,): bias + W h
        if self.anchored:
            return self.base + (self.coef(h) - self.coef.bias) @ self.basis  # (numel,)
        return self.base + self.coef(h) @ self.basis  # (numel,)


class _ChoiceBN(nn.Module):
    """One BatchNorm's running statistics and (``affine``) scale and shift, a row per width choice (or one
    shared row), every row starting from the template BatchNorm's (a LayerNorm or GroupNorm: its scale and shift,
    with statistics that are never used)."""

    def __init__(self, rows: int, size: int, template: nn.Module, affine: bool):
        super().__init__()
        mean, var = torch.zeros(size), torch.ones(size)
        if getattr(template, "running_mean", None) is not None:
            n = min(size, template.running_mean.numel())
            mean[:n], var[:n] = template.running_mean.detach()[:n], template.running_var.detach()[:n]
        self.register_buffer("running_mean", mean.repeat(rows, 1))
        self.register_buffer("running_var", var.repeat(rows, 1))
        momentum = getattr(template, "momentum", None)
        self.eps, self.momentum = template.eps, 0.1 if momentum is None else momentum
        self.affine = affine
        if affine:
            gamma, beta = torch.ones(size), torch.zeros(size)
            for t, row in ((template.weight, gamma), (template.bias, beta)):
                if t is not None:
                    n = min(size, t.numel())
                    row[:n] = t.detach()[:n]
            self.weight = nn.Parameter(gamma.repeat(rows, 1))
            self.bias = nn.Parameter(beta.repeat(rows, 1))


class PruningNet(nn.Module):
    """Weight-generating meta network for ``space``; see the module docstring."""

    def __init__(self, space: SearchSpace, hidden: int = 32, bn: str = "per_choice", rank: int | str | None = "auto",
                 source: nn.Module | None = None, anchored: bool = True, bn_affine: bool = True):
        super().__init__()
        rank = default_rank(source is not None) if rank == "auto" else rank
        if bn not in BN_MODES:
            raise HwpruneError(f"bn must be one of {BN_MODES}, got {bn!r}")
        if space.drop_blocks:
            raise HwpruneError("a PruningNet generates every layer's weights and cannot drop residual branches; build "
                               "the space without drop_blocks, or search it with the inherit evaluator")
        if hidden < 1 or (rank is not None and rank < 1):
            raise HwpruneError(f"hidden and rank must be positive, got hidden={hidden}, rank={rank}")
        self.space, self.hidden, self.bn_mode, self.rank = space, hidden, bn, rank
        self.config = {"hidden": hidden, "bn": bn, "rank": rank, "anchored": anchored, "bn_affine": bn_affine}
        self._maxw = _max_widths(space)
        self._layers = {layer.name: layer for layer in space.layers}
        self._group_pos = {gi: p for p, gi in enumerate(space.prunable_index)}
        self.generators = nn.ModuleDict()
        self.bns = nn.ModuleDict()
        self._bn_momentum: float | None = None  # set by recalibration
        # the weights it starts from: ``source`` (the trained, importance-ordered model) or the space's template
        modules = layer_objects(source if source is not None else space.model, space.traced)
        missing = [layer.name for layer in space.layers if layer.name not in modules]
        if missing:
            raise HwpruneError(f"the source model has no module or parameter {missing[0]!r}; it is not the model of "
                               f"this space")
        self._template = {layer.name: modules[layer.name] for layer in space.layers}  # never registered
        self._full = {}  # layer -> (full-size weight shape, bias length)
        self.scales = nn.ParameterDict()  # per-channel parameters of the model (layer scales), at the widest
        for layer in space.layers:
            m = modules[layer.name]
            if layer.kind == "param":
                self.scales[_key(layer.name)] = nn.Parameter(kind_of(layer).resize(
                    layer, m.detach().flatten(), 0, layout_size(layer.in_layout, self._maxw), _overlap(layer, self._maxw)))
                continue
            if not kind_of(layer).weighted:
                size = layout_size(layer.in_layout, self._maxw)
                rows = self._bn_rows(layer)
                affine = bn_affine if layer.kind == "bn" else layer.affine  # a norm keeps its own scale and shift
                self.bns[_key(layer.name)] = _ChoiceBN(rows, size, m, affine)
                continue
            shape, nbias = self._full[layer.name] = _full_shape(layer, self._maxw, m)
            init = torch.zeros(math.prod(shape) + nbias)
            w = _pad_to(m.weight.detach(), shape)
            init[: w.numel()] = w.flatten()
            if nbias:
                init[w.numel():] = _pad_to(m.bias.detach(), (shape[0],))
            self.generators[_key(layer.name)] = _Generator(init, hidden, rank, anchored)
        # The rest of the graph (activations, pooling, dropout, ...) as this module's own copies,
        # so that mode switches and .to() reach them.
        self.rest = nn.ModuleDict()
        # layers whose class has a forward of its own (a subclass: timm's BatchNormAct2d) run it, on generated tensors
        self.shells = nn.ModuleDict({_key(layer.name): shell(layer, modules[layer.name]) for layer in space.layers
                                     if isinstance(modules[layer.name], nn.Module) and own_forward(modules[layer.name])})
        self._graph = space.traced.graph_module.graph
        for node in self._graph.nodes:
            if node.op == "call_module" and node.target not in self._layers:
                self.rest[_key(node.target)] = copy.deepcopy(modules[node.target])
        self._consts = {n.target: functools.reduce(getattr, n.target.split("."), space.traced.graph_module)
                        for n in self._graph.nodes if n.op == "get_attr"}
        base_cin, base_cout = space._cin @ space._base, space._cout @ space._base
        self._orig_io = {l.name: (int(a), int(b)) for l, a, b in zip(space.layers, base_cin, base_cout)}

    def _bn_rows(self, layer: LayerInfo) -> int:
        lay = layer.in_layout
        if self.bn_mode == "per_choice" and layer.kind == "bn" and len(lay) == 1 and lay[0].group in self._group_pos:
            return len(self.space.groups[self._group_pos[lay[0].group]].choices)
        return 1

    def _bn_row(self, layer: LayerInfo, enc: Sequence[int]) -> int:
        if self._bn_rows(layer) == 1:
            return 0
        return int(enc[self._group_pos[layer.in_layout[0].group]])

    # ---- weights of a candidate -----------------------------------------------------------
    def layer_weights(self, enc: Sequence[int]) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
        """Cropped (weight, bias) of every conv and linear layer for encoding ``enc``."""
        widths = self.space.widths(enc)
        cin_all, cout_all = self.space._cin @ widths, self.space._cout @ widths
        dev = next(self.parameters()).device
        out = {}
        for i, layer in enumerate(self.space.layers):
            if not kind_of(layer).weighted:
                continue
            oin, oout = self._orig_io[layer.name]
            ratios = torch.tensor([cin_all[i] / oin, cout_all[i] / oout], dtype=torch.float32, device=dev)
            flat = self.generators[_key(layer.name)](ratios)
            shape, nbias = self._full[layer.name]
            n = math.prod(shape)
            w = flat[:n].view(shape)
            o_idx = _indices(layer.out_layout, widths, self._maxw)
            w = _take(w, 0, o_idx)
            if kind_of(layer).crops_input(layer):
                w = _take(w, 1, _indices(layer.in_layout, widths, self._maxw))
            elif layer.groups > 1:  # a grouped conv: dim 1 holds the inputs of one group, the same in each
                idx = _indices(layer.in_layout, widths, self._maxw)
                idx = torch.arange(idx) if isinstance(idx, int) else idx
                w = _take(w, 1, group_inputs(idx, layout_size(layer.in_layout, self._maxw), layer.groups))
            b = _take(flat[n:], 0, o_idx) if nbias else None
            out[layer.name] = (w, b)
        return out

    # ---- forward ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, enc: Sequence[int]) -> torch.Tensor:
        enc = self.space.check(enc)
        widths = self.space.widths(enc)
        weights = self.layer_weights(enc)
        env: dict[fx.Node, object] = {}
        slicings = self.space.traced.slicings
        inputs = iter([x])
        load = lambda a: fx.node.map_arg(a, lambda n: env[n])  # noqa: E731
        for node in self._graph.nodes:
            if node.op == "placeholder":
                env[node] = next(inputs)
            elif node.op == "get_attr":
                layer = self._layers.get(node.target)  # a layer scale: its values for the candidate's channels
                env[node] = self._consts[node.target] if layer is None else self._scale(layer, widths)
            elif node.op in ("call_function", "call_method"):
                target, args, kwargs = node.target, node.args, node.kwargs
                if node.name in slicings:  # channels by position: where the pruned parts sit
                    target, args, kwargs = pruned_call(node, slicings[node.name], widths)
                args, kwargs = load(args), load(kwargs)
                env[node] = target(*args, **kwargs) if node.op == "call_function" else \
                    getattr(args[0], target)(*args[1:], **kwargs)
            elif node.op == "call_module":
                args = load(node.args)
                layer = self._layers.get(node.target)
                if layer is None:
                    env[node] = self.rest[_key(node.target)](*args, **load(node.kwargs))
                elif not kind_of(layer).weighted:
                    env[node] = self._bn(layer, args[0], enc, widths)
                else:
                    env[node] = self._run_layer(layer, args[0], *weights[layer.name])
            elif node.op == "output":
                return load(node.args[0])
        raise HwpruneError("the traced graph has no output")

    def _scale(self, layer: LayerInfo, widths) -> torch.Tensor:
        values = _take(self.scales[_key(layer.name)], 0, _indices(layer.in_layout, widths, self._maxw))
        return values.view([values.numel() if s > 1 else 1 for s in self._template[layer.name].shape])

    def _run_layer(self, layer: LayerInfo, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        own = self.shells[_key(layer.name)] if _key(layer.name) in self.shells else None
        if own is not None:
            return run_own(layer, own, x, {"weight": w, "bias": b})
        return kind_of(layer).run(layer, self._template[layer.name], x, w, b)

    def _batch_norm(self, layer: LayerInfo, x, rm, rv, w, b, momentum: float, eps: float) -> torch.Tensor:
        own = self.shells[_key(layer.name)] if _key(layer.name) in self.shells else None
        if own is None:
            return F.batch_norm(x, rm, rv, w, b, self.training, momentum, eps)
        own.momentum, own.eps = momentum, eps
        return run_own(layer, own, x, {"weight": w, "bias": b, "running_mean": rm, "running_var": rv})

    def _bn(self, layer: LayerInfo, x: torch.Tensor, enc, widths) -> torch.Tensor:
        st = self.bns[_key(layer.name)]
        row = self._bn_row(layer, enc)
        idx = _indices(layer.in_layout, widths, self._maxw)
        momentum = self._bn_momentum if self._bn_momentum is not None else st.momentum
        if layer.kind != "bn":  # a LayerNorm or GroupNorm: statistics of the input itself
            w, b = (_take(st.weight[row], 0, idx), _take(st.bias[row], 0, idx)) if st.affine else (None, None)
            own = self.shells[_key(layer.name)] if _key(layer.name) in self.shells else None
            if own is not None:
                return run_own(layer, own, x, {"weight": w, "bias": b})
            return kind_of(layer).run(layer, self._template[layer.name], x, w, b)
        if isinstance(idx, int):  # views: batch_norm updates the stored rows in place
            rm, rv = st.running_mean[row, :idx], st.running_var[row, :idx]
            w, b = (st.weight[row, :idx], st.bias[row, :idx]) if st.affine else (None, None)
            return self._batch_norm(layer, x, rm, rv, w, b, momentum, st.eps)
        idx = idx.to(x.device)
        rm, rv = st.running_mean[row, idx], st.running_var[row, idx]  # copies
        w, b = (st.weight[row, idx], st.bias[row, idx]) if st.affine else (None, None)
        y = self._batch_norm(layer, x, rm, rv, w, b, momentum, st.eps)
        if self.training:
            st.running_mean[row, idx], st.running_var[row, idx] = rm, rv
        return y

    # ---- output -------------------------------------------------------------------------------
    @torch.no_grad()
    def materialize(self, enc: Sequence[int]) -> nn.Module:
        """The plain pruned network of ``enc`` with the generated weights and that choice's BN statistics."""
        enc = self.space.check(enc)
        model = self.space.materialize(enc)
        widths = self.space.widths(enc)
        for name, (w, b) in self.layer_weights(enc).items():
            m = model.get_submodule(name)
            m.weight.copy_(w)
            if b is not None:
                m.bias.copy_(b)
        objects = layer_objects(model)
        for layer in self.space.layers:
            if layer.kind == "param":
                objects[layer.name].copy_(self._scale(layer, widths))
            if kind_of(layer).weighted or layer.kind == "param":
                continue
            m = model.get_submodule(layer.name)
            st = self.bns[_key(layer.name)]
            idx = _indices(layer.in_layout, widths, self._maxw)
            row = self._bn_row(layer, enc)
            if layer.kind == "bn":
                m.running_mean.copy_(_take(st.running_mean[row], 0, idx))
                m.running_var.copy_(_take(st.running_var[row], 0, idx))
                m.eps = st.eps
            if m.weight is not None and st.affine:
                m.weight.copy_(_take(st.weight[row], 0, idx))
                if m.bias is not None:
                    m.bias.copy_(_take(st.bias[row], 0, idx))
            elif m.weight is not None:  # an affine-free PruningNet BN: identity scale and shift
                m.weight.fill_(1.0)
                m.bias.zero_()
        return model.to(next(self.parameters()).device).train(self.training)

    def generator_params(self) -> int:
        return sum(p.numel() for p in self.generators.parameters())


def _pad_to(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``t`` zero-padded (or cropped) to ``shape``: the generator's starting point when widths exceed the original."""
    out = torch.zeros(shape, dtype=t.dtype)
    sl = tuple(slice(0, min(a, b)) for a, b in zip(t.shape, shape))
    out[sl] = t[sl]
    return out
