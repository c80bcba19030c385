"""Channels moved to the last dimension and back, as torchvision writes ConvNeXt: a permute, a LayerNorm and two
Linear layers over the channels at every position, a permute back, a (C, 1, 1) layer scale."""
import pytest
import torch
import torch.nn as nn

import hwprune as hp

from conftest import check_parity, trained_like


class Permute(nn.Module):
    """torchvision.ops.misc.Permute."""

    def __init__(self, dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return torch.permute(x, self.dims)


class CNBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.layer_scale = nn.Parameter(torch.rand(dim, 1, 1) + 0.5)
        self.block = nn.Sequential(nn.Conv2d(dim, dim, 7, padding=3, groups=dim), Permute([0, 2, 3, 1]),
                                   nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, 4 * dim), nn.GELU(),
                                   nn.Linear(4 * dim, dim), Permute([0, 3, 1, 2]))

    def forward(self, x):
        return x + self.layer_scale * self.block(x)


class ConvNeXtLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 2, stride=2)
        self.blocks = nn.Sequential(CNBlock(16), CNBlock(16))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def test_layers_over_channels_last_are_pruned_with_them():
    model = trained_like(ConvNeXtLike())
    space = hp.SearchSpace.from_model(model, (1, 3, 8, 8))
    kinds = {layer.name: layer.kind for layer in space.layers}
    assert kinds["blocks.0.block.2"] == "norm" and kinds["blocks.0.block.3"] == "linear"
    layers = {layer.name: layer for layer in space.layers}
    assert layers["blocks.0.block.3"].out_spatial == 16  # at each of the 4 x 4 positions
    group = {m: g for g in space.all_groups for m in g.members}
    assert group["stem:out"] is group["blocks.0.block.2"] is group["blocks.1.block.5:out"] is group["blocks.0.layer_scale"]
    assert group["blocks.0.block.3:out"].fixed_reason is None and len(space) == 3  # the stream, two hidden widths
    check_parity(model, space, torch.randn(2, 3, 8, 8), samples=6)
    assert space.flops(space.uniform(0.5)) <= 0.45 * space.flops(space.full())


def test_a_linear_over_channels_last_is_profiled_as_the_1x1_conv_it_is():
    from hwprune.latency.kernels import kernel_slots

    space = hp.SearchSpace.from_model(ConvNeXtLike().eval(), (1, 3, 8, 8))
    slots = {s.name: s for s in kernel_slots(space)[0]}
    spec = slots["blocks.0.block.3"].spec
    assert (spec.op, spec.kernel, spec.height, spec.width) == ("conv2d", (1, 1), 4, 4)
    assert slots["head"].spec.op == "linear"


class PoolLast(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.pool = nn.AvgPool2d(1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        y = self.pool(self.conv(x).permute(0, 2, 3, 1))  # a pool over (W, C), whatever its window
        return self.head(y.permute(0, 3, 1, 2))


def test_anything_else_on_channels_last_is_refused_by_name():
    with pytest.raises(hp.UnsupportedModelError, match=r"module 'pool' on channels in dim 3 is not supported"):
        hp.SearchSpace.from_model(PoolLast(), (1, 3, 4, 4))
