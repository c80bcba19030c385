"""Model registry: ``@register_model`` on small variant functions, one factory.

Registered variants take keyword arguments only; ``create_model`` drops the ones
given as ``None`` so each variant's defaults survive.
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from ..errors import HwpruneError

__all__ = ["register_model", "create_model", "list_models", "model_input_shape"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_INPUT_SHAPES: dict[str, tuple[int, int, int]] = {}  # default (C, H, W) per model


def register_model(input_shape: tuple[int, int, int]):
    """Register a variant under its function name with its default input (C, H, W)."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _MODELS[fn.__name__] = fn
        _INPUT_SHAPES[fn.__name__] = tuple(input_shape)
        return fn

    return wrap


def list_models() -> list[str]:
    return sorted(_MODELS)


def model_input_shape(name: str, in_channels: int | None = None) -> tuple[int, int, int]:
    """Default (C, H, W) input of a registered model."""
    _check(name)
    c, h, w = _INPUT_SHAPES[name]
    return (in_channels or c, h, w)


def create_model(name: str, *, num_classes: int | None = None, in_channels: int | None = None,
                 width_mult: float | None = None, **kwargs) -> nn.Module:
    """Build a zoo model by name, e.g. ``create_model("resnet20", num_classes=10)``."""
    _check(name)
    for what, v in (("num_classes", num_classes), ("in_channels", in_channels)):
        if v is not None and (isinstance(v, bool) or int(v) != v or v < 1):
            raise HwpruneError(f"{what} must be a positive integer, got {v!r}")
    if width_mult is not None and not width_mult > 0:
        raise HwpruneError(f"width_mult must be positive, got {width_mult!r}")
    kw = dict(num_classes=num_classes, in_channels=in_channels, width_mult=width_mult, **kwargs)
    kw = {k: v for k, v in kw.items() if v is not None}
    model = _MODELS[name](**kw)
    model.hwprune_spec = {"name": name, "kwargs": kw}  # lets checkpoints rebuild the model by name
    return model


def _check(name: str) -> None:
    if name not in _MODELS:
        raise HwpruneError(f"unknown model {name!r}; available: {', '.join(list_models())}")
