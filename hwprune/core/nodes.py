"""Reading a node of a traced graph: its recorded shape, its tensor arguments, and how errors name it."""
from __future__ import annotations

import torch
import torch.fx as fx

__all__ = ["FUNCTION", "node_shape", "describe", "flat", "permute_dims"]

FUNCTION = "hwprune_function"  # node.meta key: the function a module call stands for (hwprune.core.functional)


def node_shape(node) -> tuple[int, ...] | None:
    """The shape the node's output had when traced (None for tuples, sizes and non-nodes)."""
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def describe(node: fx.Node) -> str:
    """"function 'chunk' (node 'chunk_1' in module 'stages.0')": how an error names an op."""
    function = node.meta.get(FUNCTION)
    if node.op == "call_module" and function is None:
        return f"module {node.target!r}"
    target = function or getattr(node.target, "__name__", str(node.target))
    stack = node.meta.get("nn_module_stack") or {}
    where = f"module {list(stack)[-1]!r}" if stack else "the model's forward"
    return f"{'function' if function else node.op.replace('call_', '')} {target!r} (node {node.name!r} in {where})"


def permute_dims(node: fx.Node) -> list[int] | None:
    """The dims of a ``permute`` (method or ``torch.permute``), as non-negative ints; None for any other node."""
    if not (node.op == "call_method" and node.target == "permute" or
            node.op == "call_function" and node.target is torch.permute):
        return None
    dims = node.args[1] if len(node.args) == 2 and isinstance(node.args[1], (list, tuple)) else node.args[1:]
    dims = list(dims or node.kwargs.get("dims", ()))
    return [int(d) % len(dims) for d in dims]


def flat(x):
    """Every leaf of nested args (lists, tuples, dicts)."""
    if isinstance(x, (list, tuple)):
        for v in x:
            yield from flat(v)
    elif isinstance(x, dict):
        for v in x.values():
            yield from flat(v)
    else:
        yield x
