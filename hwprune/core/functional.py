"""Functional layers: ``F.conv1d/2d/3d``, ``F.linear``, ``F.batch_norm``, ``F.layer_norm`` and ``F.group_norm``
called in a forward on the model's own parameters and buffers, seen as the torch.nn layers they compute.

Research code calls the raw functions (``F.batch_norm(x, self.running_mean, self.running_var, self.weight,
self.bias, self.training)``, ``F.linear(x, self.fc.weight, self.fc.bias)``). After the shape run,
:func:`modularize` replaces each such call in the traced graph by a call of the module that computes the same (an
``nn.Conv2d``, ``nn.Linear``, ``nn.BatchNorm2d``, ... whose tensors *are* the model's own), registered in the graph
module under the module whose forward made the call (``block.conv2d``). Every later stage then sees the module
form: the channel rules, FLOPs and params, materialize (whose network is the traced graph with the resized
modules), the importance order and the latency kernels. :func:`functional_layers` builds the same modules over the
tensors of any model of that structure (a source with trained or ordered weights). A batch norm's ``training``
argument is taken to be the module's mode, as models pass ``self.training``.

A call on tensors that are not plain parameters and buffers (a standardized or generated weight), or whose tensors
another op also uses, stays a function; the analysis refuses it with the reason recorded here.
"""
from __future__ import annotations

import copy
import itertools
import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .nodes import FUNCTION, describe, flat, node_shape

if TYPE_CHECKING:
    from .traced import TracedModel

__all__ = ["REFUSAL", "modularize", "functional_layers", "tensor_name"]

REFUSAL = "hwprune_refusal"  # node.meta key: why a functional layer stayed a function (the analysis raises it)

_CONV = ("weight", "bias", "stride", "padding", "dilation", "groups")
_CONV_DEFAULTS = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}
# each function's arguments after the input, in order, and their defaults (builtins have no signature to read)
_ARGS: dict[Callable, tuple[tuple[str, ...], dict]] = {
    F.conv1d: (_CONV, _CONV_DEFAULTS),
    F.conv2d: (_CONV, _CONV_DEFAULTS),
    F.conv3d: (_CONV, _CONV_DEFAULTS),
    F.linear: (("weight", "bias"), {"bias": None}),
    F.batch_norm: (("running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"),
                   {"weight": None, "bias": None, "training": False, "momentum": 0.1, "eps": 1e-5}),
    F.layer_norm: (("normalized_shape", "weight", "bias", "eps"), {"weight": None, "bias": None, "eps": 1e-5}),
    F.group_norm: (("num_groups", "weight", "bias", "eps"), {"weight": None, "bias": None, "eps": 1e-5}),
}
_MODULES = {F.conv1d: "Conv1d", F.conv2d: "Conv2d", F.conv3d: "Conv3d", F.linear: "Linear", F.batch_norm: "BatchNorm",
            F.layer_norm: "LayerNorm", F.group_norm: "GroupNorm"}  # the torch.nn layer each function is
_BATCH_NORMS = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}  # by input dims
_TENSORS = ("weight", "bias", "running_mean", "running_var")
_BUFFERS = ("running_mean", "running_var")  # buffers of the module form; its weight and bias are parameters


@dataclass(frozen=True)
class _Call:
    """One call of a layer function on the model's tensors: what its module form is built from."""

    fn: Callable
    args: tuple[tuple[str, object], ...]  # the other arguments, by name
    tensors: tuple[tuple[str, str], ...]  # (role, the model's tensor name) of each tensor given


def modularize(gm: fx.GraphModule, model: nn.Module) -> dict[str, dict[str, str]]:
    """Replace every layer function called on the model's own tensors in ``gm`` (shapes propagated) by a call of
    its module form, in place; mark the others with why not (``node.meta[REFUSAL]``). Returns, per module made, its
    tensors' names in ``model`` by role (``{"weight": "fc.weight", "bias": "fc.bias"}``)."""
    calls: dict[fx.Node, _Call] = {}
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in _ARGS:
            call = _read(model, node)
            if isinstance(call, str):
                _refuse(node, call)
            else:
                calls[node] = call
    _drop_shared(gm, calls)
    made: dict[_Call, str] = {}  # a call repeated on the same tensors is one module called twice
    sources: dict[str, dict[str, str]] = {}
    for node, call in calls.items():
        x = node.args[0] if node.args else node.kwargs["input"]
        if call not in made:
            scope = _scope(node)
            made[call] = name = _free_name(model, gm, scope, call.fn.__name__)
            gm.add_submodule(name, _module_form(gm, call, node_shape(x)).train(model.get_submodule(scope).training))
            sources[name] = dict(call.tensors)
        with gm.graph.inserting_before(node):
            new = gm.graph.call_module(made[call], (x,))
        new.meta = {**node.meta, FUNCTION: call.fn.__name__}
        node.replace_all_uses_with(new)
        unused = node.all_input_nodes
        gm.graph.erase_node(node)
        _erase_unused(gm, unused)
    if made:
        gm.delete_all_unused_submodules()
        gm.recompile()
    return sources


def _drop_shared(gm: fx.GraphModule, calls: dict[fx.Node, _Call]) -> None:
    """Refuse the calls whose tensors another op also reads (pruned, it would read the old tensor): a tensor is a
    layer's own when only calls on the same tensors read it, or read its sizes for them."""
    if not calls:
        return
    in_modules = {id(t): n.target for n in gm.graph.nodes if n.op == "call_module"
                  for t in itertools.chain(gm.get_submodule(n.target).parameters(),
                                           gm.get_submodule(n.target).buffers())}

    def own(user: fx.Node, call: _Call, size: bool = False) -> bool:
        if calls.get(user) == call:
            return True
        if _reads_size(user) or size and user.target is operator.getitem:
            return all(own(u, call, size=True) for u in user.users)
        return False

    for node, call in list(calls.items()):
        for role, name in call.tensors:
            readers = [u for n in gm.graph.nodes if n.op == "get_attr" and n.target == name for u in n.users]
            other = next((u for u in readers if not own(u, call)), None)
            module = in_modules.get(id(_tensor(gm, name)))
            if other is not None or module is not None:
                _refuse(node, f"its {role} {name!r} is also used by "
                              f"{describe(other) if other is not None else f'module {module!r}'}")
                del calls[node]
                break


def _reads_size(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target is getattr and node.args[1] == "shape" or \
        node.op == "call_method" and node.target in ("size", "dim")


def _erase_unused(gm: fx.GraphModule, nodes: list[fx.Node]) -> None:
    """Erase what only fed a replaced call: the tensors (now the module's: not twice in the graph module) and the
    reads of their sizes."""
    todo, erased = list(nodes), set()
    while todo:
        n = todo.pop()
        if n in erased or n.users or not (n.op == "get_attr" or _reads_size(n) or n.target is operator.getitem):
            continue
        todo += n.all_input_nodes
        erased.add(n)
        gm.graph.erase_node(n)
        if n.op == "get_attr" and not any(m.op == "get_attr" and m.target == n.target for m in gm.graph.nodes):
            prefix, _, field = n.target.rpartition(".")
            delattr(gm.get_submodule(prefix), field)


def functional_layers(traced: "TracedModel", model: nn.Module) -> dict[str, nn.Module]:
    """The module form of each functional layer of ``traced`` over ``model``'s own tensors (shared, not copied: a
    change to one is a change to the other), by layer name; a layer whose tensors ``model`` lacks is left out."""
    out = {}
    for name, tensors in traced.functional.items():
        form = traced.graph_module.get_submodule(name)
        memo = {id(getattr(form, role)): _tensor(model, source) for role, source in tensors.items()}
        if any(t is None for t in memo.values()):
            continue
        scope = model.get_submodule(name.rpartition(".")[0])  # the module whose forward made the call
        out[name] = copy.deepcopy(form, memo).train(scope.training)
    return out


def tensor_name(traced: "TracedModel", layer: str, role: str) -> str:
    """The model's name of a layer's tensor: ``conv.weight``, or the tensor a functional layer was called on."""
    return traced.functional.get(layer, {}).get(role, f"{layer}.{role}")


# ---- reading a call ---------------------------------------------------------------------------------------
def _read(model: nn.Module, node: fx.Node) -> _Call | str:
    """What the call's module form is built from, or why it has none."""
    names, defaults = _ARGS[node.target]
    unknown = sorted(set(node.kwargs) - set(names) - {"input"})
    if unknown or len(node.args) > len(names) + 1:
        return f"it is called with arguments hwprune does not know ({', '.join(unknown) or 'too many'})"
    bound = {**defaults, **dict(zip(names, node.args[1:])), **{k: v for k, v in node.kwargs.items() if k != "input"}}
    cls = _MODULES[node.target]
    tensors = {}
    for role in _TENSORS:
        arg = bound.pop(role, None)
        if arg is None:
            continue
        t = _tensor(model, arg.target) if isinstance(arg, fx.Node) and arg.op == "get_attr" else None
        if t is None:
            return f"its {role} is computed in the forward, not a parameter or buffer of the model"
        want = "buffer" if role in _BUFFERS else "parameter"
        if isinstance(t, nn.Parameter) != (want == "parameter"):
            return f"its {role} {arg.target!r} is a {'parameter' if want == 'buffer' else 'buffer'}, where {cls} " \
                   f"holds a {want}"
        tensors[role] = arg.target
    for a, b in (("running_mean", "running_var"), ("weight", "bias")):
        if (a in tensors) != (b in tensors):
            lone, missing = (a, b) if a in tensors else (b, a)
            if lone == "weight" and node.target not in (F.batch_norm, F.group_norm):
                continue  # a conv, linear or layer norm without a bias
            return f"it has a {lone} but no {missing}, which no {cls} has"
    if node.target is F.layer_norm and isinstance(bound["normalized_shape"], fx.Node) and "weight" in tensors:
        bound["normalized_shape"] = tuple(_tensor(model, tensors["weight"]).shape)  # x.shape[-1:]: the weight's
    computed = [k for k, v in bound.items() if any(isinstance(a, fx.Node) for a in flat(v))]
    if computed:
        return f"its {computed[0]} is computed in the forward"
    if node.target in (F.batch_norm, F.group_norm):
        x = node.args[0] if node.args else node.kwargs.get("input")
        shape = node_shape(x)
        if shape is None or len(shape) not in _BATCH_NORMS:
            return "its input is not a tensor of 2 to 5 dims"
    args = tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in bound.items()))
    return _Call(node.target, args, tuple(sorted(tensors.items())))


def _refuse(node: fx.Node, why: str) -> None:
    node.meta[REFUSAL] = (f"{describe(node)}: {why}, so hwprune cannot prune it as a "
                          f"{_MODULES[node.target]}; call it inside a module passed in ignored_layers to keep it whole")


def _module_form(gm: fx.GraphModule, call: _Call, in_shape: tuple[int, ...]) -> nn.Module:
    """The torch.nn layer that computes ``call``, holding the model's tensors."""
    a, t = dict(call.args), {role: _tensor(gm, name) for role, name in call.tensors}
    fn, meta = call.fn, torch.device("meta")  # built without memory: its tensors are the model's
    if fn is F.linear:
        m = nn.Linear(t["weight"].shape[1], t["weight"].shape[0], "bias" in t, device=meta)
    elif fn is F.batch_norm:
        m = _BATCH_NORMS[len(in_shape)](in_shape[1], a["eps"], a["momentum"], "weight" in t, "running_mean" in t,
                                        device=meta)
    elif fn is F.layer_norm:
        m = nn.LayerNorm(a["normalized_shape"], a["eps"], "weight" in t, "bias" in t, device=meta)
    elif fn is F.group_norm:
        m = nn.GroupNorm(a["num_groups"], in_shape[1], a["eps"], "weight" in t, device=meta)
    else:
        w = t["weight"]
        m = getattr(nn, _MODULES[fn])(w.shape[1] * a["groups"], w.shape[0], tuple(w.shape[2:]), a["stride"], a["padding"],
                             a["dilation"], a["groups"], "bias" in t, device=meta)
    for role, tensor in t.items():
        (m._buffers if role in _BUFFERS else m._parameters)[role] = tensor
    for name, b in m._buffers.items():  # what the function has not (a batch norm's count of batches)
        if b is not None and b.is_meta:
            m._buffers[name] = torch.zeros(b.shape, dtype=b.dtype, device=t["running_mean"].device)
    return m


def _tensor(model: nn.Module, name: str) -> torch.Tensor | None:
    """The parameter or buffer ``name`` of ``model`` (None when it is neither)."""
    prefix, _, field = name.rpartition(".")
    try:
        owner = model.get_submodule(prefix)
    except AttributeError:
        return None
    if field in owner._parameters:
        return owner._parameters[field]
    return owner._buffers.get(field)


def _scope(node: fx.Node) -> str:
    """The module whose forward made the call ("" for the model's own)."""
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def _free_name(model: nn.Module, gm: fx.GraphModule, scope: str, base: str) -> str:
    """``scope.base``, numbered past any name the module already has (in the model or the graph module)."""
    owners = [model.get_submodule(scope)]
    try:
        owners.append(gm.get_submodule(scope))
    except AttributeError:
        pass
    for i in itertools.count():
        name = base if i == 0 else f"{base}_{i}"
        if not any(hasattr(o, name) for o in owners):
            return f"{scope}.{name}" if scope else name
    raise AssertionError  # unreachable
