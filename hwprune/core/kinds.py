"""Layer kinds: everything hwprune does with a conv, a linear or a norm layer, in one place per kind.

A traced :class:`~hwprune.core.traced.LayerInfo` names its kind (``"conv"``,
``"linear"``, ``"bn"``, ``"norm"`` or ``"param"``, kept as a string in fingerprints and
files; a ``"param"`` layer is a parameter, not a module, and a functional layer a module made over
the model's tensors: :func:`layer_objects` finds them all);
:func:`kind_of` gives the :class:`LayerKind` that holds the kind's behaviour:

- ``costs``: the coefficients of its FLOPs and parameters in its channel counts;
- ``resize``: the same layer at new channel counts, weights copied (materialize);
- ``permute``: its channels reordered in place (importance order);
- ``full_shape`` / ``crops_input`` / ``run``: the generated weight's shape, how it is
  cropped, and the layer run functionally on it (the PruningNet);
- ``kernel_attrs``: the op and attributes of the kernel a runtime runs for it
  (the latency tables).
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import SpaceMismatchError, UnsupportedModelError
from .functional import functional_layers
from .layout import layout_size
from .ops import torch_base

if TYPE_CHECKING:
    from .traced import LayerInfo, TracedModel

__all__ = ["LayerKind", "kind_of", "KINDS", "shell", "run_own", "group_inputs", "layer_objects"]


class LayerKind:
    """The behaviour of one kind of layer; see the module docstring."""

    name = ""
    module_type: type = nn.Module
    size_attrs: tuple[str, ...] = ()  # the module's (input, output) channel attributes
    weighted = True  # a conv or linear: its weights follow (cin, cout) and a generator makes them
    tensors: tuple[str, ...] = ("weight", "bias")  # the module's tensors whose sizes follow its channels

    def costs(self, layer: "LayerInfo") -> tuple[bool, float, float, float]:
        """(one input channel per output channel, MACs per cin*cout, weights per cin*cout, params per cout)."""
        raise NotImplementedError

    def check_source(self, layer: "LayerInfo", module: nn.Module) -> None:
        """Refuse a source module whose type or size differs from the traced one."""
        sizes = [layout_size(layer.in_layout), layout_size(layer.out_layout)]
        for attr, expected in zip(self.size_attrs, sizes):
            if not isinstance(module, self.module_type) or getattr(module, attr) != expected:
                raise SpaceMismatchError(
                    f"module {layer.name!r} of the source model is {type(module).__name__} with "
                    f"{attr}={getattr(module, attr, '?')}, but the space expects {self.module_type.__name__} with "
                    f"{expected}; the source is not the model this space was built from")

    def resize(self, layer: "LayerInfo", old: nn.Module, cin: int, cout: int, idx: tuple | None) -> nn.Module:
        """A new module at ``cin``/``cout`` channels; with ``idx`` = (in_src, in_dst, out_src, out_dst),
        the channels both keep are copied from ``old``."""
        raise NotImplementedError

    def full_shape(self, layer: "LayerInfo", module: nn.Module, cin: int, cout: int) -> tuple[tuple[int, ...], int]:
        """(weight shape, bias length) of the layer at ``cin``/``cout`` channels."""
        raise NotImplementedError

    def permute(self, layer: "LayerInfo", module: nn.Module, in_idx: torch.Tensor, out_idx: torch.Tensor) -> None:
        """Reorder the module's channels in place: output ``i`` becomes old output ``out_idx[i]``, input alike."""
        w = module.weight.data[out_idx]
        if self.crops_input(layer):
            w = w[:, in_idx]
        module.weight.data.copy_(w)
        if getattr(module, "bias", None) is not None:
            module.bias.data.copy_(module.bias.data[out_idx])

    def crops_input(self, layer: "LayerInfo") -> bool:
        """Whether a generated weight's dim 1 follows the input channels (it does not for grouped convs)."""
        return True

    def run(self, layer: "LayerInfo", module: nn.Module, x: torch.Tensor, w: torch.Tensor,
            b: torch.Tensor | None) -> torch.Tensor:
        """The layer on ``x`` with weight ``w`` and bias ``b`` (``module`` gives the other attributes)."""
        raise NotImplementedError

    def kernel_attrs(self, layer: "LayerInfo", module: nn.Module, in_shape: tuple[int, ...]) -> dict:
        """The op and attributes of the kernel a runtime runs for this layer (a KernelSpec's fields)."""
        raise NotImplementedError

    def sizes(self, layer: "LayerInfo", x: torch.Tensor, w: torch.Tensor | None) -> dict[str, int]:
        """The module's size attributes when it runs on ``x`` with weight ``w`` (see :func:`run_own`)."""
        raise NotImplementedError


class Conv(LayerKind):
    name = "conv"
    module_type = nn.modules.conv._ConvNd
    size_attrs = ("in_channels", "out_channels")

    def costs(self, layer):
        return layer.depthwise, layer.kernel * layer.out_spatial / layer.groups, layer.kernel / layer.groups, \
            int(layer.bias)

    def resize(self, layer, old, cin, cout, idx):
        dev, dt = _device_dtype(old)
        groups = cout if layer.depthwise else old.groups
        new = torch_base(type(old))(cin, cout, old.kernel_size, old.stride, old.padding, old.dilation, groups,
                                    old.bias is not None, old.padding_mode, device=dev, dtype=dt)
        if idx is not None:
            in_src, in_dst, out_src, out_dst = idx
            if layer.depthwise:  # one input channel per filter
                new.weight[out_dst] = old.weight[out_src]
            else:  # dim 1 holds one conv group's inputs: the positions the kept channels take in the first block
                in_src, in_dst = group_inputs(in_src, old.in_channels, groups), group_inputs(in_dst, cin, groups)
                new.weight[out_dst[:, None], in_dst[None, :]] = old.weight[out_src[:, None], in_src[None, :]]
            if old.bias is not None:
                new.bias[out_dst] = old.bias[out_src]
        return _as_class_of(old, new)

    def full_shape(self, layer, module, cin, cout):
        per_group = 1 if layer.depthwise else cin // layer.groups
        return (cout, per_group, *module.kernel_size), cout if module.bias is not None else 0

    def crops_input(self, layer):
        return not layer.depthwise and layer.groups == 1

    def permute(self, layer, module, in_idx, out_idx):
        w = module.weight.data[out_idx]
        if not layer.depthwise:  # a grouped conv's channels are permuted alike in every block: dim 1 follows the first
            w = w[:, in_idx[: w.shape[1]]]
        module.weight.data.copy_(w)
        if module.bias is not None:
            module.bias.data.copy_(module.bias.data[out_idx])

    def run(self, layer, module, x, w, b):
        groups = w.shape[0] if layer.depthwise else layer.groups
        conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(module.kernel_size)]
        if module.padding_mode != "zeros":
            x = F.pad(x, module._reversed_padding_repeated_twice, mode=module.padding_mode)
            return conv(x, w, b, module.stride, 0, module.dilation, groups)
        return conv(x, w, b, module.stride, module.padding, module.dilation, groups)

    def sizes(self, layer, x, w):
        return {"in_channels": x.shape[1], "out_channels": w.shape[0],
                "groups": w.shape[0] if layer.depthwise else layer.groups}

    def kernel_attrs(self, layer, module, in_shape):
        if len(in_shape) != 4 or isinstance(module.padding, str) and module.padding != "valid":
            raise UnsupportedModelError(f"layer {layer.name!r}: only 2-d convs with numeric padding can be profiled")
        padding = (0, 0) if module.padding == "valid" else _pair(module.padding)
        return dict(op="conv2d", kernel=_pair(module.kernel_size), stride=_pair(module.stride), padding=padding,
                    dilation=_pair(module.dilation), groups="depthwise" if layer.depthwise else str(module.groups),
                    height=in_shape[2], width=in_shape[3])


class Linear(LayerKind):
    name = "linear"
    module_type = nn.Linear
    size_attrs = ("in_features", "out_features")

    def costs(self, layer):
        return False, float(layer.out_spatial), 1.0, int(layer.bias)  # out_spatial: positions it runs at

    def resize(self, layer, old, cin, cout, idx):
        dev, dt = _device_dtype(old)
        new = nn.Linear(cin, cout, bias=old.bias is not None, device=dev, dtype=dt)
        if idx is not None:
            in_src, in_dst, out_src, out_dst = idx
            new.weight[out_dst[:, None], in_dst[None, :]] = old.weight[out_src[:, None], in_src[None, :]]
            if old.bias is not None:
                new.bias[out_dst] = old.bias[out_src]
        return _as_class_of(old, new)

    def full_shape(self, layer, module, cin, cout):
        return (cout, cin), cout if module.bias is not None else 0

    def run(self, layer, module, x, w, b):
        return F.linear(x, w, b)

    def sizes(self, layer, x, w):
        return {"in_features": w.shape[1], "out_features": w.shape[0]}

    def kernel_attrs(self, layer, module, in_shape):
        if len(in_shape) == 4:  # over the channels of an (N, H, W, C) tensor: a 1x1 conv's work at H x W
            return dict(op="conv2d", kernel=(1, 1), stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups="1",
                        height=in_shape[1], width=in_shape[2])
        return dict(op="linear")


class BatchNorm(LayerKind):
    name = "bn"
    module_type = nn.modules.batchnorm._BatchNorm
    size_attrs = ("num_features",)
    weighted = False  # per-channel statistics and affine terms, not a generated weight
    tensors = ("weight", "bias", "running_mean", "running_var")

    def costs(self, layer):
        return True, 0.0, 0.0, 2 if layer.affine else 0

    def resize(self, layer, old, cin, cout, idx):
        dev, dt = _device_dtype(old)
        new = torch_base(type(old))(cout, old.eps, old.momentum, old.affine, old.track_running_stats, device=dev,
                                    dtype=dt)
        if idx is not None:
            out_src, out_dst = idx[2], idx[3]
            for name in ("weight", "bias", "running_mean", "running_var"):
                src, dst = getattr(old, name, None), getattr(new, name, None)
                if src is not None and dst is not None:
                    dst[out_dst] = src[out_src]
            if old.num_batches_tracked is not None:
                new.num_batches_tracked.copy_(old.num_batches_tracked)
        return _as_class_of(old, new)

    def sizes(self, layer, x, w):
        return {"num_features": x.shape[1]}

    def permute(self, layer, module, in_idx, out_idx):
        for name in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(module, name, None)
            if t is not None:
                t.data.copy_(t.data[out_idx])


class Norm(LayerKind):
    """A LayerNorm over the channels (timm's and torchvision's LayerNorm2d, a LayerNorm of an (N, C) tensor) or a
    GroupNorm (its channels pruned evenly in each of its groups): per-channel scale and shift, no statistics kept."""

    name = "norm"
    module_type = (nn.LayerNorm, nn.GroupNorm)
    weighted = False

    def costs(self, layer):
        return True, 0.0, 0.0, (1 + int(layer.bias)) if layer.affine else 0

    def check_source(self, layer, module):
        expected = layout_size(layer.in_layout)
        if not isinstance(module, self.module_type) or _norm_channels(module) != expected:
            raise SpaceMismatchError(f"module {layer.name!r} of the source model is {type(module).__name__}, not a "
                                     f"LayerNorm or GroupNorm of {expected} channels; the source is not the model "
                                     f"this space was built from")

    def resize(self, layer, old, cin, cout, idx):
        dev, dt = _device_dtype(old)
        if isinstance(old, nn.GroupNorm):
            new = nn.GroupNorm(old.num_groups, cout, old.eps, old.affine, device=dev, dtype=dt)
        else:
            new = nn.LayerNorm((cout,), old.eps, old.elementwise_affine, old.bias is not None, device=dev, dtype=dt)
        if idx is not None:
            for name in self.tensors:
                src, dst = getattr(old, name, None), getattr(new, name, None)
                if src is not None and dst is not None:
                    dst[idx[3]] = src[idx[2]]
        return _as_class_of(old, new)

    def permute(self, layer, module, in_idx, out_idx):
        for name in self.tensors:
            t = getattr(module, name, None)
            if t is not None:
                t.data.copy_(t.data[out_idx])

    def run(self, layer, module, x, w, b):
        if isinstance(module, nn.GroupNorm):
            return F.group_norm(x, module.num_groups, w, b, module.eps)
        return F.layer_norm(x, (x.shape[-1],), w, b, module.eps)  # an (N, C) tensor; LayerNorm2d runs its own

    def sizes(self, layer, x, w):
        return {"num_channels": x.shape[1]} if layer.signature.get("op") == "groupnorm" else \
            {"normalized_shape": (x.shape[1],)}


def _norm_channels(module: nn.Module) -> int | None:
    if isinstance(module, nn.GroupNorm):
        return module.num_channels
    shape = tuple(module.normalized_shape)
    return shape[0] if len(shape) == 1 else None


class Scale(LayerKind):
    """A per-channel parameter the model's forward multiplies or adds (ConvNeXt's layer scale; see
    :mod:`hwprune.core.scales`): one value per channel, pruned with them."""

    name = "param"
    weighted = False

    def costs(self, layer):
        return True, 0.0, 0.0, 1

    def check_source(self, layer, module):
        expected = layout_size(layer.in_layout)
        if not isinstance(module, torch.Tensor) or module.numel() != expected:
            raise SpaceMismatchError(f"parameter {layer.name!r} of the source model is not a tensor of {expected} "
                                     f"values; the source is not the model this space was built from")

    def resize(self, layer, old, cin, cout, idx):
        values = old.detach().flatten()
        new = values.new_full((cout,), float(values.mean()))  # widths above the original: the mean scale
        if idx is not None:
            new[idx[3]] = values[idx[2]]
        new = new.view([cout if s > 1 else 1 for s in old.shape])
        return nn.Parameter(new, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else new

    def permute(self, layer, module, in_idx, out_idx):
        module.data.copy_(module.data.flatten()[out_idx].view_as(module))


def layer_objects(model: nn.Module, traced: "TracedModel | None" = None) -> dict[str, nn.Module | torch.Tensor]:
    """The model's modules and parameters by qualified name: what a traced layer's name refers to; with ``traced``,
    also its functional layers, as modules over ``model``'s own tensors (:mod:`hwprune.core.functional`)."""
    out = {**dict(model.named_parameters()), **dict(model.named_modules())}
    if traced is not None:
        out.update(functional_layers(traced, model))
    return out


KINDS: dict[str, LayerKind] = {k.name: k for k in (Conv(), Linear(), BatchNorm(), Norm(), Scale())}


def kind_of(layer: "LayerInfo") -> LayerKind:
    return KINDS[layer.kind]


def group_inputs(positions: torch.Tensor, channels: int, groups: int) -> torch.Tensor:
    """Of the kept input ``positions`` of a conv with ``channels`` inputs in ``groups`` groups, those in the first
    group: the indices into its weight's dim 1 (every group keeps the same ones; all of them when groups is 1)."""
    return positions[positions < channels // groups]


_SIZE_ATTRS = ("in_channels", "out_channels", "groups", "in_features", "out_features", "num_features", "num_channels",
               "normalized_shape")


def _as_class_of(old: nn.Module, new: nn.Module) -> nn.Module:
    """``new`` (a torch.nn layer) as an instance of ``old``'s own class: a copy of ``old`` with ``new``'s tensors
    and sizes, so that a subclass keeps what its forward adds (timm's BatchNormAct2d its activation)."""
    if type(old) is type(new):
        return new
    memo = {id(t): getattr(new, name) for name, t in list(old._parameters.items()) + list(old._buffers.items())
            if t is not None and hasattr(new, name)}
    out = copy.deepcopy(old, memo)
    for attr in _SIZE_ATTRS:
        if hasattr(new, attr):
            setattr(out, attr, getattr(new, attr))
    return out


def shell(layer: "LayerInfo", module: nn.Module) -> nn.Module:
    """A copy of a layer whose class has a forward of its own, without the tensors that follow its channels:
    :func:`run_own` runs it on generated ones (the PruningNet)."""
    memo = {id(getattr(module, n)): None for n in kind_of(layer).tensors if getattr(module, n, None) is not None}
    return copy.deepcopy(module, memo)


def run_own(layer: "LayerInfo", shell_module: nn.Module, x: torch.Tensor, tensors: dict) -> torch.Tensor:
    """The layer's own forward on ``x`` with ``tensors`` (weight, bias, running statistics) in its place."""
    for attr, v in kind_of(layer).sizes(layer, x, tensors.get("weight")).items():
        setattr(shell_module, attr, v)
    for name, t in tensors.items():
        (shell_module._parameters if name in shell_module._parameters else shell_module._buffers)[name] = t
    try:
        return shell_module(x)
    finally:  # hold no generated tensor (or its graph) between calls
        for name in tensors:
            (shell_module._parameters if name in shell_module._parameters else shell_module._buffers)[name] = None


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[-1]))


def _device_dtype(m: nn.Module) -> tuple[torch.device, torch.dtype]:
    for t in list(m.parameters()) + list(m.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.float32


