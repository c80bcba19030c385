"""What hwprune knows about ops in a traced graph: the one activation table and the channel-preserving ops.

:data:`ACTIVATIONS` names each activation once, with every form it takes in a model
(module type, function, tensor method) and the function that computes it; the
tracer (channel layouts), the latency kernel finder (what a runtime fuses into a
conv) and the torch profiler (what it runs) all read it. The other tables list ops
by how they treat the channel dimension, for the tracer.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["Activation", "ACTIVATIONS", "activation_of", "LAYER_MODULES", "torch_base", "own_forward", "PASS_MODULES",
           "PASS_FUNCTIONS", "PASS_FUNCTION_NAMES", "qualified_name", "PASS_METHODS", "SPATIAL_MODULES",
           "SPATIAL_FUNCTIONS", "ELEMENTWISE", "ELEMENTWISE_METHODS", "ADD", "is_add", "RESHAPE", "RESHAPE_METHODS",
           "REDUCE", "CAT",
           "NON_TENSOR_METHODS", "FREE_MODULES", "FREE_FUNCTIONS", "FREE_FUNCTION_NAMES", "FREE_METHODS"]


@dataclass(frozen=True)
class Activation:
    """One activation: the forms it takes in a model and the function that computes it."""

    modules: tuple[type, ...]
    functions: tuple[Callable, ...]
    methods: tuple[str, ...]
    fn: Callable[[torch.Tensor], torch.Tensor]


ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation((nn.ReLU,), (F.relu, torch.relu), ("relu", "relu_"), F.relu),
    "relu6": Activation((nn.ReLU6,), (F.relu6,), (), F.relu6),
    "hardswish": Activation((nn.Hardswish,), (F.hardswish,), (), F.hardswish),
    "hardsigmoid": Activation((nn.Hardsigmoid,), (F.hardsigmoid,), (), F.hardsigmoid),
    "sigmoid": Activation((nn.Sigmoid,), (torch.sigmoid, F.sigmoid), ("sigmoid", "sigmoid_"), F.sigmoid),
    "silu": Activation((nn.SiLU,), (F.silu,), (), F.silu),
    "tanh": Activation((nn.Tanh,), (torch.tanh, F.tanh), ("tanh",), F.tanh),
    "leaky_relu": Activation((nn.LeakyReLU,), (F.leaky_relu,), (), F.leaky_relu),
    "gelu": Activation((nn.GELU,), (F.gelu,), (), F.gelu),
}
_BY_MODULE = {m: name for name, a in ACTIVATIONS.items() for m in a.modules}
_BY_FUNCTION = {f: name for name, a in ACTIVATIONS.items() for f in a.functions}
_BY_METHOD = {m: name for name, a in ACTIVATIONS.items() for m in a.methods}


def activation_of(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """The :data:`ACTIVATIONS` name of what ``node`` computes, or None when it is not an activation."""
    if node.op == "call_module":
        m = modules[node.target]
        if isinstance(m, nn.Hardtanh) and (m.min_val, m.max_val) == (0.0, 6.0):
            return "relu6"  # nn.ReLU6 is a Hardtanh(0, 6); so is a user's own
        return _BY_MODULE.get(type(m))
    if node.op == "call_function":
        return _BY_FUNCTION.get(node.target)
    if node.op == "call_method":
        return _BY_METHOD.get(node.target)
    return None


_OTHER_ACTIVATIONS = (nn.ELU, nn.Mish, nn.Softplus, nn.Hardtanh)  # keep channels; no fused kernel modelled
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
          nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)

_UPSAMPLE = (nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)

# ops that keep every channel where it is (the tracer passes the input's layout through)
PASS_MODULES = tuple(_BY_MODULE) + _OTHER_ACTIVATIONS + _POOLS + _UPSAMPLE + (nn.Identity, nn.Dropout, nn.Dropout2d,
                                                                              nn.Dropout1d)
PASS_FUNCTIONS = set(_BY_FUNCTION) | {
    F.elu, F.mish, F.softplus, F.hardtanh, F.dropout, F.dropout2d, torch.clamp, torch.clip, F.max_pool2d,
    F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.max_pool1d, F.avg_pool1d, F.adaptive_avg_pool1d,
    F.interpolate, F.upsample, F.upsample_nearest, F.upsample_bilinear, torch.neg, torch.abs, torch.exp,
    torch.square, torch.sqrt}
# of those, the ones that work over the dims after the channels (wrong on a tensor whose channels are last)
SPATIAL_MODULES = _POOLS + _UPSAMPLE
SPATIAL_FUNCTIONS = {F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.max_pool1d,
                     F.avg_pool1d, F.adaptive_avg_pool1d, F.interpolate, F.upsample, F.upsample_nearest,
                     F.upsample_bilinear}
# functions of other packages, by qualified name so that hwprune need not import them: torchvision's stochastic
# depth (drops whole samples in training, the identity at inference) is wrapped as one call by torch.fx
FREE_FUNCTION_NAMES = {"torchvision.ops.stochastic_depth.stochastic_depth"}
PASS_FUNCTION_NAMES = set(FREE_FUNCTION_NAMES)
PASS_METHODS = set(_BY_METHOD) | {"clamp", "clamp_", "clip", "contiguous", "clone", "float", "half", "to", "type_as",
                                  "detach", "neg", "abs", "exp", "square", "sqrt", "hardtanh_", "expand_as"}

# modules that are one traced layer or one channel-keeping op whatever package defines them: a subclass (timm's
# BatchNormAct2d, Conv2dSame, Linear) is a leaf of the trace, never traced into, and its own forward runs it
LAYER_MODULES = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.LayerNorm,
                 nn.GroupNorm) + PASS_MODULES


def torch_base(cls: type) -> type:
    """The first class in ``cls``'s hierarchy that torch.nn defines (``cls`` itself for a torch.nn layer)."""
    for c in cls.__mro__:
        if c.__module__.startswith("torch.nn"):
            return c
    return nn.Module


def own_forward(m: nn.Module) -> bool:
    """Whether ``m`` subclasses a torch.nn layer and replaces its forward (timm's BatchNormAct2d applies its
    activation after the norm; Conv2dSame pads first)."""
    return type(m).forward is not torch_base(type(m)).forward


def qualified_name(fn) -> str:
    """``module.name`` of a function, to match functions of packages hwprune does not import."""
    return f"{getattr(fn, '__module__', '')}.{getattr(fn, '__name__', '')}"


# elementwise ops between tensors: their operands' channels must match one for one
ELEMENTWISE = {operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul,
               operator.truediv, operator.itruediv, torch.add, torch.sub, torch.mul, torch.div, torch.maximum,
               torch.minimum}
ELEMENTWISE_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}
ADD = {operator.add, operator.iadd, torch.add}  # a residual add, which runtimes fuse into the conv before it


def is_add(node: fx.Node) -> bool:
    """Whether ``node`` adds (``a + b``, ``torch.add``, ``a.add(b)``), whatever its operands."""
    return (node.op == "call_function" and node.target in ADD
            or node.op == "call_method" and node.target in ("add", "add_"))


RESHAPE = {torch.flatten, torch.reshape, torch.squeeze}
RESHAPE_METHODS = {"flatten", "view", "reshape", "squeeze", "mean", "sum", "amax"}
REDUCE = {torch.mean, torch.sum, torch.amax}
CAT = {torch.cat, torch.concat}
NON_TENSOR_METHODS = {"size", "dim"}

# ops that cost nothing at inference (reshapes, dropout): no kernel of their own
FREE_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Flatten)
FREE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, F.dropout, F.dropout2d, getattr, operator.getitem}
FREE_METHODS = {"flatten", "view", "reshape", "squeeze", "contiguous", "size", "dim", "float", "to", "detach"}
