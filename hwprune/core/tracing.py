"""Discover the coupled channel groups of a CNN by tracing it with torch.fx.

Every tensor in the traced graph gets a *channel layout*: the list of groups its
channel dimension (dim 1) is made of, in order. A conv or linear layer starts a new
group for its outputs; elementwise ops (residual adds, SE multiplies) merge the
groups of their operands; a depthwise conv passes its input's layout through; a
channel concatenation joins its inputs' layouts, each keeping its own group; a
flatten multiplies the features per channel. Groups that touch the network's
inputs or outputs, an ignored layer, or an op whose channels cannot be cropped are
fixed. What is not understood is refused with an error naming the op, never guessed.

The result, a :class:`TracedModel`, records per layer the layouts and shapes that
FLOPs, params, materialization and the PruningNet need, so nothing is traced twice.
"""
from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import UnsupportedModelError
from .layout import Layout, Segment
from .macs import count_node_macs
from .ops import (CAT, ELEMENTWISE, ELEMENTWISE_METHODS, NON_TENSOR_METHODS, PASS_FUNCTIONS, PASS_METHODS,
                  PASS_MODULES, REDUCE, RESHAPE, RESHAPE_METHODS)
from .traced import ChannelUnion, GroupInfo, LayerInfo, TracedModel

__all__ = ["trace_model"]


class _Tracer(fx.Tracer):
    """torch.fx tracer that treats ignored modules as leaves and remembers where it is."""

    def __init__(self, leaves: set[str]):
        super().__init__()
        self.leaves = leaves
        self.failed_in: str | None = None  # innermost module whose forward failed to trace

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname in self.leaves or super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = self.path_of_module(m)
            raise


def _module_names(model: nn.Module, ignored_layers) -> set[str]:
    names = {m: n for n, m in model.named_modules()}
    out = set()
    for item in ignored_layers or ():
        if isinstance(item, nn.Module):
            if item not in names:
                raise UnsupportedModelError("an ignored layer is not a submodule of the model")
            out.add(names[item])
        else:
            if item not in dict(model.named_modules()):
                raise UnsupportedModelError(f"ignored layer {item!r} is not a submodule name of the model")
            out.add(str(item))
    return out


def _shape(node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _describe(node: fx.Node) -> str:
    if node.op == "call_module":
        return f"module {node.target!r}"
    target = getattr(node.target, "__name__", str(node.target))
    stack = node.meta.get("nn_module_stack") or {}
    where = f"module {list(stack)[-1]!r}" if stack else "the model's forward"
    return f"{node.op.replace('call_', '')} {target!r} (node {node.name!r} in {where})"


def trace_model(model: nn.Module, example_inputs: tuple[torch.Tensor, ...], ignored_layers=None) -> TracedModel:
    """Trace ``model`` and return its layers and channel groups (see module docstring)."""
    leaves = _module_names(model, ignored_layers)
    tracer = _Tracer(leaves)
    try:
        graph = tracer.trace(model)
    except Exception as e:  # fx raises many types; all mean "not traceable"
        where = f"module {tracer.failed_in!r}" if tracer.failed_in else "the top-level forward"
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedModelError(
            f"cannot trace {type(model).__name__} with torch.fx in {where}: {msg}; make its control flow "
            f"independent of tensor values, or pass that module in ignored_layers to keep it whole") from None
    gm = fx.GraphModule(model, graph)
    was_training = model.training
    gm.eval()
    try:
        with torch.no_grad():
            try:
                gm(*example_inputs)  # a plain run first: ShapeProp prints a traceback when a node fails
            except Exception as e:
                cause = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise UnsupportedModelError(f"the model does not run on the example inputs "
                                            f"{[tuple(x.shape) for x in example_inputs]}: {cause}; check the "
                                            f"input shape (--input-shape N,C,H,W)") from None
            ShapeProp(gm).propagate(*example_inputs)
    except UnsupportedModelError:
        raise
    except Exception as e:
        msg = str(e).strip().splitlines()[0]
        raise UnsupportedModelError(f"the model does not run on the example inputs "
                                    f"{[tuple(x.shape) for x in example_inputs]}: {msg}") from None
    finally:
        gm.train(was_training)
    return _Analysis(gm, leaves).run([tuple(x.shape) for x in example_inputs])


class _Analysis:
    def __init__(self, gm: fx.GraphModule, leaves: set[str]):
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.leaves = leaves
        self.g = ChannelUnion()
        self.layout: dict[fx.Node, Layout | None] = {}
        self.layers: dict[str, LayerInfo] = {}
        self.const_flops = 0

    def run(self, input_shapes) -> TracedModel:
        for node in self.gm.graph.nodes:
            self.layout[node] = self._visit(node)
        return self._finish(input_shapes)

    # ---- per-node rules -------------------------------------------------------------------
    def _visit(self, node: fx.Node) -> Layout | None:
        shape = _shape(node)
        if node.op == "placeholder":
            if shape is None or len(shape) < 2:
                return None
            gid = self.g.new(shape[1], f"input:{node.name}")
            self.g.fixed[gid] = "network input"
            return (Segment(gid, shape[1]),)
        if node.op == "output":
            for arg in _flat(node.args):
                self.g.fix(self.layout.get(arg), "network output")
            return None
        if node.op == "get_attr":
            return None
        if node.op == "call_module":
            return self._module(node, self.modules[node.target], shape)
        ins = [a for a in _flat((node.args, node.kwargs)) if isinstance(a, fx.Node)]
        tensor_ins = [a for a in ins if self.layout.get(a)]
        if shape is None:  # sizes, tuples, python numbers
            if node.op == "call_method" and node.target in NON_TENSOR_METHODS or node.target is getattr:
                return None
            if node.target is operator.getitem and _shape(node.args[0]) is None:
                return None
            if not tensor_ins:
                return None
            raise UnsupportedModelError(f"{_describe(node)} returns several tensors from channel data; "
                                        f"hwprune cannot map its channels (pass the module in ignored_layers)")
        if len(shape) < 2:
            return None
        target = node.target
        if target in CAT or (node.op == "call_method" and target == "cat"):
            return self._cat(node, shape)
        if target in ELEMENTWISE or (node.op == "call_method" and target in ELEMENTWISE_METHODS):
            return self._elementwise(node, shape, ins)
        if target in PASS_FUNCTIONS or (node.op == "call_method" and target in PASS_METHODS):
            return self._passthrough(node, shape, ins)
        if target in RESHAPE or target in REDUCE or (node.op == "call_method" and target in RESHAPE_METHODS):
            return self._reshape(node, shape)
        if target is operator.getitem and _shape(node.args[0]) is not None:
            src = _shape(node.args[0])
            if len(src) >= 2 and shape[:2] == src[:2]:
                return self.layout.get(node.args[0])
        if not tensor_ins:
            return None  # a tensor made from constants only (e.g. torch.zeros)
        raise UnsupportedModelError(f"{_describe(node)} on channel data is not supported; hwprune cannot "
                                    f"tell how it maps channels (pass the module that calls it in ignored_layers)")

    def _module(self, node: fx.Node, m: nn.Module, shape) -> Layout | None:
        x = node.args[0] if node.args else None
        lin = self.layout.get(x) if isinstance(x, fx.Node) else None
        if node.target in self.leaves:
            return self._opaque(node, m, shape)
        if isinstance(m, nn.modules.conv._ConvNd):
            if isinstance(m, nn.modules.conv._ConvTransposeNd):
                raise UnsupportedModelError(f"module {node.target!r} ({type(m).__name__}) is not supported yet; "
                                            f"pass it in ignored_layers")
            return self._conv(node, m, lin, shape)
        if isinstance(m, nn.Linear):
            return self._linear(node, m, lin, shape)
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            self._record(node.target, LayerInfo(node.target, "bn", lin, lin, affine=m.affine,
                                                signature={"op": "bn"}))
            self.g.add_member(lin, node.target)
            return lin
        if isinstance(m, nn.PReLU) and m.num_parameters > 1:
            self.g.fix(lin, f"per-channel PReLU {node.target!r}")
            return lin
        if isinstance(m, PASS_MODULES):
            return lin
        if isinstance(m, nn.Flatten):
            return self._reshape(node, shape)
        if not any(True for _ in m.parameters(recurse=False)) and not list(m.children()) and shape is not None \
                and lin is not None and _shape(x) == shape and type(m).__module__.startswith("torch.nn"):
            return lin
        raise UnsupportedModelError(f"module {node.target!r} ({type(m).__name__}) is not supported; hwprune "
                                    f"cannot tell how it maps channels (pass it in ignored_layers)")

    def _conv(self, node, m: nn.modules.conv._ConvNd, lin: Layout, shape) -> Layout:
        name = node.target
        kernel = 1
        for k in m.kernel_size:
            kernel *= k
        spatial = 1
        for s in shape[2:]:
            spatial *= s
        sig = {"op": f"conv{len(m.kernel_size)}d", "kernel": list(m.kernel_size), "stride": list(m.stride),
               "padding": list(m.padding) if not isinstance(m.padding, str) else m.padding,
               "dilation": list(m.dilation), "in_spatial": list(_shape(node.args[0])[2:]),
               "out_spatial": list(shape[2:])}
        self.g.add_member(lin, f"{name}:in")
        if m.groups == 1:
            out = self._out_layout(name, m.out_channels)
            info = LayerInfo(name, "conv", lin, out, kernel=kernel, out_spatial=spatial, bias=m.bias is not None)
        elif m.groups == m.in_channels == m.out_channels:
            out = lin
            self.g.add_member(lin, f"{name}:out")
            info = LayerInfo(name, "conv", lin, lin, depthwise=True, kernel=kernel, out_spatial=spatial,
                             bias=m.bias is not None)
        else:
            self.g.fix(lin, f"grouped conv {name!r} (groups={m.groups})")
            out = self._out_layout(name, m.out_channels)
            self.g.fix(out, f"grouped conv {name!r} (groups={m.groups})")
            info = LayerInfo(name, "conv", lin, out, groups=m.groups, kernel=kernel, out_spatial=spatial,
                             bias=m.bias is not None)
        info.signature = sig
        self._record(name, info)
        return out

    def _linear(self, node, m: nn.Linear, lin: Layout, shape) -> Layout:
        name = node.target
        if len(shape) != 2:
            self.g.fix(lin, f"linear {name!r} on a {len(shape)}-d tensor")
            out = self._out_layout(name, m.out_features)
            self.g.fix(out, f"linear {name!r} on a {len(shape)}-d tensor")
            lin = lin or (Segment(self.g.new(m.in_features, f"{name}:in"), m.in_features),)
        else:
            self.g.add_member(lin, f"{name}:in")
            out = self._out_layout(name, m.out_features)
        self._record(name, LayerInfo(name, "linear", lin, out, bias=m.bias is not None,
                                     signature={"op": "linear"}))
        return out

    def _out_layout(self, name: str, channels: int) -> Layout:
        if name in self.layers:  # a module called twice produces the same group
            return self.layers[name].out_layout
        return (Segment(self.g.new(channels, f"{name}:out", producer=True), channels),)

    def _record(self, name: str, info: LayerInfo) -> None:
        old = self.layers.get(name)
        if old is not None:  # shared module: its inputs must agree channel for channel
            self._unify(old.in_layout, info.in_layout, f"module {name!r} called twice")
            return
        self.layers[name] = info

    def _opaque(self, node, m: nn.Module, shape) -> Layout | None:
        for a in _flat((node.args, node.kwargs)):
            if isinstance(a, fx.Node):
                self.g.fix(self.layout.get(a), f"ignored layer {node.target!r}")
        self.const_flops += count_node_macs(m, [a for a in node.args if isinstance(a, fx.Node)])
        if shape is None or len(shape) < 2:
            return None
        gid = self.g.new(shape[1], f"{node.target}:out")
        self.g.fixed[gid] = f"ignored layer {node.target!r}"
        return (Segment(gid, shape[1]),)

    def _passthrough(self, node, shape, ins) -> Layout | None:
        src = ins[0] if ins else None
        lin = self.layout.get(src)
        if lin is None or _shape(src)[1] != shape[1]:
            raise UnsupportedModelError(f"{_describe(node)} changes the channel count; not supported")
        return lin

    def _elementwise(self, node, shape, ins) -> Layout | None:
        carriers = []
        for a in ins:
            s = _shape(a)
            if s is None or len(s) != len(shape) or s[1] == 1:
                continue  # a scalar or a tensor broadcast over channels
            if self.layout.get(a) is None:  # constant channel data (a parameter, torch.ones(...))
                carriers.append(None)
            else:
                carriers.append(self.layout[a])
        real = [c for c in carriers if c is not None]
        if not real:
            return None
        if len(real) < len(carriers):
            self.g.fix(real[0], f"{_describe(node)} with a constant per-channel tensor")
        for other in real[1:]:
            self._unify(real[0], other, _describe(node))
        return real[0]

    def _unify(self, a: Layout, b: Layout, what: str) -> None:
        if [(s.size, s.mult) for s in a] == [(s.size, s.mult) for s in b]:
            for sa, sb in zip(a, b):
                self.g.union(sa.group, sb.group)
        else:  # same channels, different splits: only safe if nothing is pruned
            self.g.fix(a, f"{what} joins differently concatenated tensors")
            self.g.fix(b, f"{what} joins differently concatenated tensors")

    def _cat(self, node, shape) -> Layout:
        tensors = node.args[0] if node.args else node.kwargs["tensors"]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        dim = dim % len(shape)
        layouts = [self.layout.get(t) for t in tensors]
        if dim != 1:
            for other in layouts[1:]:
                self._unify(layouts[0], other, _describe(node))
            return layouts[0]
        out: list[Segment] = []
        for t, lay in zip(tensors, layouts):
            if lay is None:  # constant channels: its own fixed group
                c = _shape(t)[1]
                gid = self.g.new(c, f"{node.name}:constant")
                self.g.fixed[gid] = f"constant input to {_describe(node)}"
                lay = (Segment(gid, c),)
            out.extend(lay)
        return tuple(out)

    def _reshape(self, node, shape) -> Layout | None:
        src = node.args[0]
        s = _shape(src)
        lin = self.layout.get(src)
        if lin is None:
            return None
        if s[:2] == shape[:2]:  # channel dim untouched (spatial reduce, squeeze of 1s, no-op view)
            if len(shape) == 2 and len(s) > 2:
                rest = 1
                for v in s[2:]:
                    rest *= v
                if rest != 1 and node.target not in REDUCE and node.target not in ("mean", "sum", "amax"):
                    raise UnsupportedModelError(f"{_describe(node)} mixes channels and space")
            return lin
        if len(shape) == 2 and shape[0] == s[0]:  # flatten (B, C, *S) -> (B, C*prod(S))
            rest = 1
            for v in s[2:]:
                rest *= v
            if shape[1] == s[1] * rest:
                return tuple(Segment(seg.group, seg.size, seg.mult * rest) for seg in lin)
        raise UnsupportedModelError(f"{_describe(node)} reshapes the channel dimension "
                                    f"{tuple(s)} -> {tuple(shape)}; hwprune cannot map its channels "
                                    f"(pass the module that does it in ignored_layers)")

    # ---- result ---------------------------------------------------------------------------
    def _finish(self, input_shapes) -> TracedModel:
        g = self.g
        roots: dict[int, int] = {}
        order: list[int] = []
        for layer in self.layers.values():  # number groups in the order layers produce them
            for seg in layer.in_layout + layer.out_layout:
                r = g.find(seg.group)
                if r not in roots:
                    roots[r] = len(order)
                    order.append(r)
        groups = []
        for r in order:
            reason = g.fixed.get(r)
            if reason is None and r not in g.producer:
                reason = "no layer produces it"
            name = g.producer.get(r) or g.members[r][0].split(":")[0]
            groups.append(GroupInfo(name, g.size[r], list(dict.fromkeys(g.members[r])), reason))

        def remap(lay: Layout) -> Layout:
            return tuple(Segment(roots[g.find(s.group)], s.size, s.mult) for s in lay)

        layers = []
        for info in self.layers.values():
            info.in_layout, info.out_layout = remap(info.in_layout), remap(info.out_layout)
            layers.append(info)
        recorded = {n for n in self.layers}
        const_params = sum(p.numel() for n, p in self.gm.named_parameters()
                           if n.rsplit(".", 1)[0] not in recorded)
        return TracedModel(self.gm, layers, groups, list(input_shapes), const_params, self.const_flops)


def _flat(x):
    if isinstance(x, (list, tuple)):
        for v in x:
            yield from _flat(v)
    elif isinstance(x, dict):
        for v in x.values():
            yield from _flat(v)
    else:
        yield x


