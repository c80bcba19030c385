"""Trace a CNN with torch.fx into the graph whose channel groups :mod:`.channels` finds.

Known layers are leaves by type, whatever package defines them (a subclass of a
torch.nn conv, linear, BatchNorm, activation, pooling or upsampling layer is one
layer, never traced into), and so are the modules the user keeps whole
(``ignored_layers``). The graph is run once on the example inputs for its shapes
(the model's buffers are restored after it); what cannot be traced or run is refused
with the module and the reason. Layer functions called on the model's own tensors
(``F.conv2d(x, self.weight, ...)``) then become calls of their modules
(:mod:`hwprune.core.functional`).
"""
from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import UnsupportedModelError
from .channels import analyse
from .functional import modularize
from .ops import LAYER_MODULES, torch_base
from .traced import TracedModel

__all__ = ["trace_model"]


_CONTAINERS = (nn.Module, nn.Sequential, nn.ModuleList, nn.ModuleDict)


class _Tracer(fx.Tracer):
    """torch.fx tracer that treats ignored modules and every known layer (by type, whatever package defines it:
    see :data:`~hwprune.core.ops.LAYER_MODULES`) as leaves, and remembers where it is."""

    def __init__(self, leaves: set[str]):
        super().__init__()
        self.leaves = leaves
        self.failed_in: str | None = None  # innermost module whose forward failed to trace

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname in self.leaves or isinstance(m, LAYER_MODULES) or super().is_leaf_module(m, qualname) or \
            torch_base(type(m)) not in _CONTAINERS  # any other torch.nn layer's subclass: refused by its name

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
    buffers = [(b, b.clone()) for b in gm.buffers()]  # F.batch_norm traced in training mode updates statistics
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
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
    functional = modularize(gm, model)
    traced = analyse(gm, leaves, [tuple(x.shape) for x in example_inputs], type(model).__name__)
    traced.functional = functional
    return traced
