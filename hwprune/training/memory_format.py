"""Convolutions in channels-last memory on the CPU, for training and scoring.

PyTorch's CPU convolutions (oneDNN) run faster when the weights are stored channels last
(NHWC) than in the default NCHW, most of all the depthwise ones: on a 2-core AMD EPYC with
torch 2.13, at Fashion-MNIST's 28x28, batch 64, 1-2 threads, a training step of
mobilenet_v2_cifar ran 1.43-1.61x faster, resnet20's 1.13-1.40x, and forward passes
1.0-2.1x faster (``python benchmarks/memory_format.py``, ``benchmarks/results/memory_format.csv``).
Converting the weights is enough: a convolution whose weight is channels last returns
channels-last outputs, so every layer after the first runs that way with the inputs as
they come. The outputs agree with NCHW's to float rounding, not to the bit.

:func:`channels_last` converts modules for the duration of a block and gives them back as
they came, so slicing and export see the usual format (a checkpoint saved meanwhile holds
channels-last tensors, which load into a module of either format). It does nothing on
other devices (cuDNN chooses its own layouts in float32), on modules without a 4-D weight,
or where ``HWPRUNE_CHANNELS_LAST=0``.
"""
from __future__ import annotations

import os
import weakref
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn

__all__ = ["channels_last", "wants_channels_last", "CHANNELS_LAST_ENV"]

CHANNELS_LAST_ENV = "HWPRUNE_CHANNELS_LAST"  # "0": keep every module in its own memory format


def wants_channels_last(module: nn.Module | None, enabled: bool | None = None) -> bool:
    """Whether :func:`channels_last` converts ``module``: ``enabled`` if given, else when it runs on the CPU, has a
    4-D weight (a 2-D convolution's) and ``HWPRUNE_CHANNELS_LAST`` is not ``0``."""
    if module is None or enabled is False:
        return False
    params = [p for p in module.parameters() if p.dim() == 4]
    if not params:
        return False
    if enabled:
        return True
    return params[0].device.type == "cpu" and os.environ.get(CHANNELS_LAST_ENV, "1").strip() != "0"


# the modules (and their submodules) a channels_last block converted and has not given back yet. Their weights cannot
# tell: a 1x1 convolution's and a depthwise one's are contiguous in both formats (mobilenet_v2 has no other kind), so a
# block inside another would take them for NCHW and give them back as such
_CONVERTED: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()


def _channels_last_already(module: nn.Module) -> bool:
    return any(m in _CONVERTED for m in module.modules()) or any(
        t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)
        for t in (*module.parameters(), *module.buffers()))


@contextmanager
def channels_last(*modules: nn.Module | None, enabled: bool | None = None) -> Iterator[None]:
    """Run ``modules`` (None entries skipped) channels last inside the block, and give each back in NCHW. Parameters
    stay the same objects (an optimizer made before keeps working); a module already channels last (converted by an
    enclosing block, or by its owner), or one :func:`wants_channels_last` declines, is left alone."""
    converted = []
    for m in modules:
        if m is not None and wants_channels_last(m, enabled) and not _channels_last_already(m):
            m.to(memory_format=torch.channels_last)
            _CONVERTED.update(m.modules())
            converted.append(m)
    try:
        yield
    finally:
        for m in converted:
            m.to(memory_format=torch.contiguous_format)
            for sub in m.modules():
                _CONVERTED.discard(sub)
