"""Layers and ops of the model zoos people prune, built here the way those packages build them: subclasses of
torch.nn layers with a forward of their own (timm's BatchNormAct2d, Conv2dSame, Linear), torchvision's stochastic
depth, upsampling, the raw layer functions on a model's own tensors; and one error that names every op a model
needs."""
import math

import numpy as np
import pytest
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

import hwprune as hp
from hwprune.core.importance import order_channels
from hwprune.supernet.pruningnet import PruningNet

from conftest import check_parity, trained_like
from test_materialize import hook_macs


# ---- the patterns, as the packages write them -------------------------------------------------
class BatchNormAct2d(nn.BatchNorm2d):
    """timm's norm-and-activation layer: a BatchNorm2d subclass whose forward adds the activation, with a
    constructor of its own."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, *,
                 act_layer=nn.SiLU):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.act = act_layer()

    def forward(self, x):
        avg = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        x = F.batch_norm(x, self.running_mean if not self.training or self.track_running_stats else None,
                         self.running_var if not self.training or self.track_running_stats else None,
                         self.weight, self.bias, self.training, avg, self.eps)
        return self.act(x)


class Conv2dSame(nn.Conv2d):
    """timm's TensorFlow-style 'same' convolution: pads by the input size, then convolves."""

    def forward(self, x):
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        ph = max((math.ceil(ih / self.stride[0]) - 1) * self.stride[0] + (kh - 1) * self.dilation[0] + 1 - ih, 0)
        pw = max((math.ceil(iw / self.stride[1]) - 1) * self.stride[1] + (kw - 1) * self.dilation[1] + 1 - iw, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, (0, 0), self.dilation, self.groups)


class TimmLinear(nn.Linear):
    """timm's classifier Linear: the raw F.linear call on its own tensors."""

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


def stochastic_depth(x, p: float, mode: str, training: bool = True):
    """As torchvision defines it: drops whole samples in training, the identity at inference."""
    if not training or p == 0.0:
        return x
    keep = torch.empty([x.shape[0]] + [1] * (x.dim() - 1), dtype=x.dtype).bernoulli_(1 - p)
    return x * keep / (1 - p)


stochastic_depth.__module__ = "torchvision.ops.stochastic_depth"  # the name hwprune knows it by, without torchvision
torch.fx.wrap("stochastic_depth")  # torchvision wraps it too: torch.fx records one call


class Block(nn.Module):
    def __init__(self, c, e):
        super().__init__()
        self.expand = nn.Conv2d(c, e, 1, bias=False)
        self.bn1 = BatchNormAct2d(e)
        self.dw = Conv2dSame(e, e, 3, stride=1, groups=e, bias=False)
        self.bn2 = BatchNormAct2d(e, act_layer=nn.ReLU)
        self.project = nn.Conv2d(e, c, 1, bias=False)
        self.bn3 = BatchNormAct2d(c, act_layer=nn.Identity)

    def forward(self, x):
        y = self.bn3(self.project(self.bn2(self.dw(self.bn1(self.expand(x))))))
        return x + stochastic_depth(y, 0.2, "row", self.training)


class ZooNet(nn.Module):
    """A small efficientnet-like net of timm's layers, with an upsampled side path (as in HRNet and FPNs)."""

    def __init__(self):
        super().__init__()
        self.stem = Conv2dSame(3, 16, 3, stride=2, bias=False)
        self.stem_bn = BatchNormAct2d(16)
        self.block = Block(16, 32)
        self.down = nn.Conv2d(16, 24, 3, stride=2, padding=1)
        self.side = nn.Conv2d(24, 16, 1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.head_bn = BatchNormAct2d(16)
        self.fc = TimmLinear(16, 10)

    def forward(self, x):
        x = self.block(self.stem_bn(self.stem(x)))
        side = self.up(self.side(self.down(x)))  # back to x's resolution: channels tie to x's by the add
        x = self.head_bn(x + F.interpolate(side, scale_factor=1.0))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@pytest.fixture
def zoo():
    torch.manual_seed(0)
    return trained_like(ZooNet())


SHAPE = (1, 3, 16, 16)


# ---- tracing ----------------------------------------------------------------------------------
def test_subclasses_are_one_layer_each_and_tie_the_right_groups(zoo):
    space = hp.SearchSpace.from_model(zoo, SHAPE)
    kinds = {layer.name: layer.kind for layer in space.layers}
    assert kinds["stem_bn"] == kinds["block.bn1"] == "bn" and kinds["block.dw"] == kinds["stem"] == "conv"
    assert kinds["fc"] == "linear"
    depthwise = {layer.name for layer in space.layers if layer.depthwise}
    assert depthwise == {"block.dw"}
    group = {m: g for g in space.all_groups for m in g.members}
    assert group["block.bn1"] is group["block.bn2"] is group["block.expand:out"]  # the expansion
    # the stream: stem, the residual add (through stochastic depth), and the upsampled side path's output
    assert group["stem:out"] is group["block.bn3"] is group["side:out"] is group["head_bn"]
    assert len(space) == 3  # stream, expansion, down: all prunable


def test_full_network_is_the_model_and_costs_are_the_real_macs(zoo):
    space = hp.SearchSpace.from_model(zoo, SHAPE)
    x = torch.randn(4, *SHAPE[1:])
    full = space.materialize(space.full(), source=zoo).eval()
    assert type(full.block.bn1) is BatchNormAct2d and isinstance(full.block.bn2.act, nn.ReLU)  # kept its class
    assert (full(x) - zoo(x)).abs().max().item() <= 1e-5
    rng = np.random.default_rng(0)
    for enc in [space.uniform(0.5), space.narrowest(), *(space.sample(rng) for _ in range(8))]:
        pruned = space.materialize(enc, source=zoo).eval()
        assert pruned(x).shape == (4, 10)
        assert hook_macs(pruned, x[:1]) == space.flops(enc)
        assert sum(p.numel() for p in pruned.parameters()) == space.params(enc)
        assert type(pruned.block.dw) is Conv2dSame and pruned.block.dw.groups == pruned.block.dw.out_channels
    assert space.flops(space.uniform(0.5)) <= 0.45 * space.flops(space.full())


def test_pruningnet_runs_each_subclass_through_its_own_forward(zoo):
    space = hp.SearchSpace.from_model(zoo, SHAPE)
    ordered = order_channels(space, zoo)
    pnet = PruningNet(space, source=ordered).eval()
    assert set(pnet.shells) == {"stem", "stem_bn", "block__bn1", "block__dw", "block__bn2", "block__bn3", "head_bn",
                                "fc"}
    x = torch.randn(2, *SHAPE[1:])
    with torch.no_grad():
        assert (pnet(x, space.full()) - zoo(x)).abs().max().item() <= 1e-4  # the activations inside the BNs run
    pnet.train()
    rng = np.random.default_rng(1)
    enc = space.sample(rng)
    loss = pnet(torch.randn(8, *SHAPE[1:]), enc).square().mean()
    loss.backward()  # gradients reach the generators through the subclasses' forwards
    assert all(p.grad is not None for p in pnet.generators["block__dw"].parameters())
    assert pnet.shells["block__dw"].weight is None  # no generated tensor kept between calls
    pnet.eval()
    with torch.no_grad():
        want = pnet(x, enc)
        got = pnet.materialize(enc).eval()(x)
    assert (got - want).abs().max().item() <= 1e-5


class LastDimLinear(nn.Module):
    """A linear over the last dimension of a 4-d tensor (token mixers, channels-last MLPs): it runs once per
    position of the other dimensions, dim 1 included."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.mix = nn.Linear(6, 5)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(self.mix(self.conv(x)))


def test_a_linear_on_a_4d_tensor_costs_what_it_runs():
    from hwprune.core.macs import count_macs

    model = LastDimLinear().eval()
    space = hp.SearchSpace.from_model(model, (1, 3, 6, 6))
    x = torch.randn(1, 3, 6, 6)
    assert space.flops(space.full()) == count_macs(model, [x]) == 6 * 6 * 3 * 9 * 8 + 8 * 6 * 6 * 5 + 6 * 5 * 8 * 4
    assert len(space) == 0  # its cost grows with the channels of dim 1: they are kept
    assert ("conv", 8, "linear 'mix' on a 4-d tensor") in space.fixed_groups()
    assert sum(p.numel() for p in model.parameters()) == space.params(space.full())


class GroupedNet(nn.Module):
    """ResNeXt and RegNet blocks: grouped 3x3 convs (4 and 8 groups, one widening), a tensor read by convs of 2 and
    4 groups, BN after each, residual adds."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(16)
        self.reduce = nn.Conv2d(16, 32, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.g4 = nn.Conv2d(32, 32, 3, padding=1, groups=4, bias=False)
        self.g2 = nn.Conv2d(32, 32, 3, padding=1, groups=2, bias=False)  # the same input, in 2 groups
        self.bn2 = nn.BatchNorm2d(32)
        self.widen = nn.Conv2d(32, 64, 3, padding=1, groups=8)
        self.bn3 = nn.BatchNorm2d(64)
        self.expand = nn.Conv2d(64, 16, 1, bias=False)
        self.bn4 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        s = F.relu(self.bn0(self.stem(x)))
        y = F.relu(self.bn1(self.reduce(s)))
        y = F.relu(self.bn2(self.g4(y) + self.g2(y)))
        y = F.relu(self.bn3(self.widen(y)))
        y = F.relu(self.bn4(self.expand(y)) + s)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


def test_grouped_convs_are_pruned_evenly_in_every_group():
    model = trained_like(GroupedNet())
    space = hp.SearchSpace.from_model(model, (1, 3, 8, 8))
    blocks = {g.name: (g.blocks, g.width) for g in space.all_groups if g.fixed_reason is None}
    assert blocks["reduce"] == (4, 8)  # read by convs of 4 and 2 groups: 4 blocks of 8
    assert blocks["g4"] == (8, 4)  # the sum of the 4- and 2-group convs, read by the 8-group one
    assert blocks["widen"] == (8, 8)
    x = torch.randn(2, 3, 8, 8)
    full = space.materialize(space.full(), source=model).eval()
    assert (full(x) - model(x)).abs().max().item() <= 1e-5
    rng = np.random.default_rng(0)
    for enc in [space.uniform(0.5), space.narrowest(), *(space.sample(rng) for _ in range(8))]:
        pruned = space.materialize(enc, source=model).eval()
        assert (pruned.g4.groups, pruned.g2.groups, pruned.widen.groups) == (4, 2, 8)
        assert pruned(x).shape == (2, 10)
        assert hook_macs(pruned, x[:1]) == space.flops(enc)
        assert sum(p.numel() for p in pruned.parameters()) == space.params(enc)
    assert space.flops(space.uniform(0.5)) <= 0.45 * space.flops(space.full())
    # importance order permutes every block alike: the network computes what it did, and a crop keeps the best
    ordered = order_channels(space, model)
    assert (ordered(x) - model(x)).abs().max().item() <= 1e-4
    # the PruningNet generates a grouped conv's weights and crops each group's inputs the same way
    pnet = PruningNet(space, source=ordered).eval()
    with torch.no_grad():
        assert (pnet(x, space.full()) - model(x)).abs().max().item() <= 1e-4
        enc = space.sample(rng)
        assert (pnet.materialize(enc).eval()(x) - pnet(x, enc)).abs().max().item() <= 1e-5


def test_a_crop_of_a_grouped_conv_keeps_each_groups_leading_channels():
    conv = nn.Conv2d(8, 8, 1, groups=2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(4).repeat(2, 1)[:, :, None, None])  # output i copies input i
    model = nn.Sequential(nn.Conv2d(3, 8, 1), conv, nn.Conv2d(8, 2, 1))
    space = hp.SearchSpace.from_model(model, (1, 3, 2, 2))
    pruned = space.materialize(space.uniform(0.5), source=model)
    x = torch.randn(1, 3, 2, 2)
    kept = [0, 1, 4, 5]  # the first two channels of each of the two blocks
    a = model[0](x)[:, kept]
    assert torch.equal(pruned[1](pruned[0](x)), F.conv2d(a, model[1].weight[kept][:, :2], groups=2))
    assert torch.allclose(pruned[1](pruned[0](x)), a)


# ---- refusals -----------------------------------------------------------------------------------
class Doubling(nn.Conv2d):
    def forward(self, x):
        y = super().forward(x)
        return torch.cat([y, y], 1)  # not the channels of a Conv2d


class Reverse(nn.Module):
    def forward(self, x):
        return x.flip(1)  # the channels in reverse order


class Odd(nn.Module):
    def forward(self, x):
        return torch.roll(x, 1, dims=1)


class TwoProblems(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.reverse = Reverse()
        self.mid = nn.Conv2d(8, 8, 1)
        self.odd = Odd()
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(self.odd(self.mid(self.reverse(self.conv(x)))))


def test_one_error_names_every_unsupported_op():
    with pytest.raises(hp.UnsupportedModelError) as err:
        hp.SearchSpace.from_model(TwoProblems(), (1, 3, 4, 4))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("2 ops of TwoProblems are not supported: (1) ")
    assert "'reverse'" in msg.split("(2)")[0] and "roll" in msg.split("(2)")[1] and "'odd'" in msg


def test_a_subclass_that_changes_its_channels_is_refused():
    model = nn.Sequential(Doubling(3, 4, 1), nn.Conv2d(8, 2, 1))
    with pytest.raises(hp.UnsupportedModelError, match=r"Doubling, a subclass of Conv2d with a forward of its own"):
        hp.SearchSpace.from_model(model, (1, 3, 4, 4))


def test_an_unsupported_subclass_names_its_torch_base():
    class ScaledNorm(nn.LocalResponseNorm):
        def forward(self, x):
            return 2 * super().forward(x)

    model = nn.Sequential(nn.Conv2d(3, 8, 1), ScaledNorm(2), nn.Conv2d(8, 2, 1))
    with pytest.raises(hp.UnsupportedModelError, match=r"'1' \(ScaledNorm, a subclass of LocalResponseNorm\) is"):
        hp.SearchSpace.from_model(model, (1, 3, 4, 4))


def test_latency_kernels_of_grouped_convs_and_stochastic_depth(zoo):
    from hwprune.latency.kernels import kernel_slots, slot_pairs

    space = hp.SearchSpace.from_model(GroupedNet().eval(), (1, 3, 8, 8))
    grouped = {s.name: s for s in kernel_slots(space)[0] if s.spec.op == "conv2d" and s.spec.groups.isdigit()
               and s.spec.groups != "1"}
    assert set(grouped) == {"g4", "g2", "widen"}
    for name, slot in grouped.items():  # every width the profiler is asked for splits into the conv's groups
        g = int(slot.spec.groups)
        pairs = slot_pairs(space, slot)
        assert len(pairs) > 1 and all(cin % g == 0 and cout % g == 0 for cin, cout in pairs), name
    unmodelled = kernel_slots(hp.SearchSpace.from_model(zoo, SHAPE))[1]
    assert not any("stochastic_depth" in u for u in unmodelled)  # the identity at inference: no kernel


class ChannelsLast(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(8)
        self.mlp = nn.Linear(8, 8)

    def forward(self, x):
        return self.mlp(self.norm(x.permute(0, 2, 3, 1)))  # ConvNeXt's block: channels last, permuted back outside


class ConvNeXtLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.inner = ChannelsLast()
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.inner(self.conv(x)).permute(0, 3, 1, 2).mean((2, 3)))


def test_a_module_kept_whole_that_returns_channels_last_is_refused_not_counted_wrong():
    with pytest.raises(hp.UnsupportedModelError, match=r"ignored layer 'inner' returns its channels last"):
        hp.SearchSpace.from_model(ConvNeXtLike(), (1, 3, 5, 6), ignored_layers=["inner"])


class TensorSplit(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.branch = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        a, b = torch.tensor_split(self.conv(x), 2, dim=1)  # a split hwprune does not know
        return torch.cat([a, self.branch(b)], 1).view(1, 2, 4, 4, 4)


def test_ops_after_a_refused_tuple_are_checked_too():
    with pytest.raises(hp.UnsupportedModelError) as err:
        hp.SearchSpace.from_model(TensorSplit(), (1, 3, 4, 4))
    msg = str(err.value)  # the split and the view, each once; the conv on a piece is not an error
    assert msg.startswith("2 ops of TensorSplit are not supported") and "'tensor_split'" in msg and "'view'" in msg


class LayerNorm2d(nn.LayerNorm):
    """timm's and torchvision's channels-first LayerNorm: normalizes each position over its channels."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class NormNet(nn.Module):
    """ConvNeXt's stem and block with conv MLP (timm's convnext_nano), a GroupNorm, and a LayerNorm of features."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 2, stride=2)
        self.stem_norm = LayerNorm2d(16, eps=1e-6)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.norm = LayerNorm2d(16, eps=1e-6)
        self.fc1 = nn.Conv2d(16, 32, 1)
        self.gn = nn.GroupNorm(4, 32)
        self.fc2 = nn.Conv2d(32, 16, 1)
        self.head_norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem_norm(self.stem(x))
        x = x + self.fc2(F.gelu(self.gn(self.fc1(self.norm(self.dw(x))))))
        return self.head(self.head_norm(x.mean((2, 3))))


def test_layer_and_group_norms_over_the_channels_are_pruned_with_them():
    model = trained_like(NormNet())
    space = hp.SearchSpace.from_model(model, (1, 3, 8, 8))
    kinds = {layer.name: layer.kind for layer in space.layers}
    assert kinds["stem_norm"] == kinds["norm"] == kinds["gn"] == kinds["head_norm"] == "norm"
    group = {m: g for g in space.all_groups for m in g.members}
    assert group["stem_norm"] is group["fc2:out"] is group["head_norm"] and group["gn"] is group["fc1:out"]
    assert group["gn"].blocks == 4 and len(space) == 2  # the hidden channels, pruned evenly in the 4 GN groups
    x = torch.randn(2, 3, 8, 8)
    full = space.materialize(space.full(), source=model).eval()
    assert type(full.norm) is LayerNorm2d
    for enc in [space.uniform(0.5), space.narrowest()]:
        pruned = space.materialize(enc, source=model)
        assert pruned.gn.num_groups == 4 and pruned.norm.normalized_shape == (pruned.dw.out_channels,)
    _, pnet = check_parity(model, space, x, samples=6)
    rng = np.random.default_rng(1)
    pnet.train()
    pnet(x, space.sample(rng)).square().mean().backward()  # the norms' scale and shift are trained with it
    assert pnet.bns["gn"].weight.grad is not None and pnet.bns["norm"].weight.grad is not None


def test_a_layernorm_over_anything_but_the_channels_is_refused():
    class OverWidth(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 1)
            self.norm = nn.LayerNorm(5)

        def forward(self, x):
            return self.norm(self.conv(x))

    with pytest.raises(hp.UnsupportedModelError, match=r"module 'norm' \(LayerNorm over \(5,\) of a \(1, 8, 5, 5\)"):
        hp.SearchSpace.from_model(OverWidth(), (1, 3, 5, 5))


class ScaledBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.branch = nn.Conv2d(c, c, 3, padding=1)
        self.gamma = nn.Parameter(torch.rand(c) + 0.5)

    def forward(self, x):
        return x + self.branch(x).mul(self.gamma.reshape(1, -1, 1, 1))


class LayerScaleNet(nn.Module):
    """ConvNeXt's layer scale, as timm writes it (a vector reshaped in the forward) and as torchvision does (a
    (C, 1, 1) parameter times the branch); and a constant whose shape names the width, which keeps it."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 1)
        self.block = ScaledBlock(16)
        self.side = nn.Conv2d(16, 8, 1)
        self.layer_scale = nn.Parameter(torch.rand(8, 1, 1) + 0.5)
        self.fixed = nn.Conv2d(8, 12, 1)
        self.bias12 = nn.Parameter(torch.rand(12))
        self.head = nn.Linear(12, 10)

    def forward(self, x):
        x = self.stem(x)
        x = self.block(x)
        x = self.layer_scale * self.side(x)
        x = self.fixed(x) + self.bias12.view(1, 12, 1, 1)  # the code names 12: the pruned model could not run it
        return self.head(x.mean((2, 3)))


def test_a_layer_scale_is_pruned_with_its_channels():
    torch.manual_seed(0)
    model = LayerScaleNet().eval()
    space = hp.SearchSpace.from_model(model, (1, 3, 6, 6))
    kinds = {layer.name: layer.kind for layer in space.layers}
    assert kinds["block.gamma"] == kinds["layer_scale"] == "param" and "bias12" not in kinds
    group = {m: g for g in space.all_groups for m in g.members}
    assert group["block.gamma"] is group["stem:out"] and group["layer_scale"] is group["side:out"]
    assert "constant per-channel tensor" in group["fixed:out"].fixed_reason
    x = torch.randn(2, 3, 6, 6)
    for enc in [space.uniform(0.5), space.narrowest()]:
        pruned = space.materialize(enc, source=model)
        assert pruned.block.gamma.shape == (pruned.stem.out_channels,) and pruned.layer_scale.shape[1:] == (1, 1)
    _, pnet = check_parity(model, space, x, samples=6)  # the scales cut and permuted with their channels
    rng = np.random.default_rng(1)
    pnet.train()
    pnet(x, space.sample(rng)).square().mean().backward()
    assert pnet.scales["block__gamma"].grad is not None and pnet.scales["layer_scale"].grad is not None


# ---- functional forms -------------------------------------------------------------------------------
class FConv(nn.Module):
    """A user's own conv: its weight and bias, run with F.conv2d and the stride, padding and groups it keeps."""

    def __init__(self, cin, cout, k, stride=1, groups=1, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin // groups, k, k) / math.sqrt(cin // groups * k * k))
        self.bias = nn.Parameter(torch.randn(cout) * 0.1) if bias else None
        self.stride, self.padding, self.groups = stride, k // 2, groups

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, 1, self.groups)


class FunctionalNet(nn.Module):
    """Every layer a raw function on the model's own tensors: convs in a module of the user's (strided, depthwise),
    a batch norm whose tensors sit on the model under names of its own, a group norm, a layer norm of features and
    the classifier run with F.linear on an nn.Linear's tensors."""

    def __init__(self):
        super().__init__()
        self.stem = FConv(3, 16, 3, stride=2, bias=False)
        self.w, self.b = nn.Parameter(torch.rand(16) + 0.5), nn.Parameter(torch.randn(16) * 0.5)
        self.register_buffer("rm", torch.randn(16) * 0.5)
        self.register_buffer("rv", torch.rand(16) + 0.5)
        self.dw = FConv(16, 16, 3, groups=16, bias=False)
        self.gn_w, self.gn_b = nn.Parameter(torch.rand(16) + 0.5), nn.Parameter(torch.randn(16) * 0.5)
        self.expand = FConv(16, 32, 1)
        self.ln_w, self.ln_b = nn.Parameter(torch.rand(32) + 0.5), nn.Parameter(torch.randn(32) * 0.5)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(F.batch_norm(self.stem(x), self.rm, self.rv, self.w, self.b, self.training, 0.1, 1e-5))
        x = x + F.group_norm(self.dw(x), 4, self.gn_w, self.gn_b)
        x = F.gelu(self.expand(x)).mean((2, 3))
        x = F.layer_norm(x, (32,), self.ln_w, self.ln_b)
        return F.linear(x, self.fc.weight, self.fc.bias)


class ModuleNet(nn.Module):
    """FunctionalNet written with the torch.nn layers."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.gn = nn.GroupNorm(4, 16)
        self.expand = nn.Conv2d(16, 32, 1)
        self.ln = nn.LayerNorm(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = x + self.gn(self.dw(x))
        x = F.gelu(self.expand(x)).mean((2, 3))
        return self.fc(self.ln(x))


FUNCTIONAL_LAYERS = {"stem.conv2d": "stem", "batch_norm": "bn", "dw.conv2d": "dw", "group_norm": "gn",
                     "expand.conv2d": "expand", "layer_norm": "ln", "linear": "fc"}  # layer -> its module form


@pytest.fixture
def functional():
    torch.manual_seed(0)
    return FunctionalNet().eval()


def test_functional_layers_are_the_layers_of_their_module_form(functional):
    space = hp.SearchSpace.from_model(functional, (1, 3, 8, 8))
    twin = hp.SearchSpace.from_model(ModuleNet().eval(), (1, 3, 8, 8))
    assert {layer.name: FUNCTIONAL_LAYERS[layer.name] for layer in space.layers} == FUNCTIONAL_LAYERS
    assert space.traced.functional["batch_norm"] == {"weight": "w", "bias": "b", "running_mean": "rm",
                                                     "running_var": "rv"}
    assert space.traced.functional["linear"] == {"weight": "fc.weight", "bias": "fc.bias"}

    def shape(layer):
        return (layer.kind, layer.in_layout, layer.out_layout, layer.depthwise, layer.groups, layer.kernel,
                layer.out_spatial, layer.bias, layer.affine, layer.signature)

    assert [shape(layer) for layer in space.layers] == [shape(layer) for layer in twin.layers]  # the same channels
    assert [(g.width, g.blocks, g.fixed_reason) for g in space.all_groups] == \
        [(g.width, g.blocks, g.fixed_reason) for g in twin.all_groups]
    assert len(space) == 2  # the stream (stem, bn, dw, gn) and the expansion (expand, layer norm, fc's input)
    rng = np.random.default_rng(0)
    for enc in [space.full(), space.uniform(0.5), space.narrowest(), *(space.sample(rng) for _ in range(4))]:
        assert space.flops(enc) == twin.flops(enc) and space.params(enc) == twin.params(enc)


def test_functional_layers_materialize_as_their_modules_with_the_models_weights(functional):
    space = hp.SearchSpace.from_model(functional, (1, 3, 8, 8))
    x = torch.randn(4, 3, 8, 8)
    full = space.materialize(space.full(), source=functional).eval()
    assert (full(x) - functional(x)).abs().max().item() <= 1e-5
    assert isinstance(full.get_submodule("batch_norm"), nn.BatchNorm2d) and isinstance(full.linear, nn.Linear)
    rng = np.random.default_rng(0)
    for enc in [space.uniform(0.5), space.narrowest(), *(space.sample(rng) for _ in range(6))]:
        pruned = space.materialize(enc, source=functional).eval()
        assert pruned(x).shape == (4, 10)
        assert hook_macs(pruned, x[:1]) == space.flops(enc)
        assert sum(p.numel() for p in pruned.parameters()) == space.params(enc)
        dw, per_block = pruned.get_submodule("dw.conv2d"), space.channels(enc)["stem.conv2d"]
        assert dw.groups == dw.out_channels == pruned.batch_norm.num_features == 4 * per_block  # 4 GroupNorm groups
        kept = torch.tensor([4 * g + i for g in range(4) for i in range(per_block)])  # each group's leading ones
        assert torch.equal(pruned.batch_norm.running_var, functional.rv[kept])
    assert space.flops(space.uniform(0.5)) <= 0.45 * space.flops(space.full())


def test_functional_layers_are_ordered_in_the_models_own_tensors(functional):
    space = hp.SearchSpace.from_model(functional, (1, 3, 8, 8))
    x = torch.randn(2, 3, 8, 8)
    ordered = order_channels(space, functional)
    assert type(ordered) is FunctionalNet and (ordered(x) - functional(x)).abs().max().item() <= 1e-4
    assert not torch.equal(ordered.rm, functional.rm) and torch.equal(ordered.rm.sort()[0], functional.rm.sort()[0])
    pruned = space.materialize(space.uniform(0.5), source=ordered)  # the ordered model is a source like any other
    assert torch.equal(pruned.batch_norm.running_mean, ordered.rm[[0, 1, 4, 5, 8, 9, 12, 13]])


def test_functional_layers_run_in_the_pruningnet(functional):
    """The PruningNet generates the functional layers' weights like the modules': the model at full width, its own
    materialized network elsewhere (and its generator size is counted without building it)."""
    from hwprune.supernet.pruningnet import generator_params

    space = hp.SearchSpace.from_model(functional, (1, 3, 8, 8))
    _, pnet = check_parity(functional, space, torch.randn(2, 3, 8, 8))
    assert generator_params(space, rank=pnet.rank) == sum(p.numel() for p in pnet.generators.parameters())


def test_tracing_a_functional_batch_norm_in_training_mode_keeps_its_statistics(functional):
    functional.train()  # F.batch_norm(..., self.training) then updates rm and rv on every run
    rm, rv = functional.rm.clone(), functional.rv.clone()
    space = hp.SearchSpace.from_model(functional, (2, 3, 8, 8))
    assert torch.equal(functional.rm, rm) and torch.equal(functional.rv, rv)
    assert space.materialize(space.full(), source=functional).batch_norm.training  # the module form's mode


class StandardizedConv(nn.Module):
    """A weight-standardized conv: F.conv2d on a weight computed in the forward."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 8, 3, 3))

    def forward(self, x):
        w = self.weight - self.weight.mean((1, 2, 3), keepdim=True)
        return F.conv2d(x, w, None, 1, 1)


class ComputedWeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.ws = StandardizedConv()
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(self.ws(self.conv(x)))


def test_a_functional_conv_on_a_computed_weight_is_refused_in_one_line():
    with pytest.raises(hp.UnsupportedModelError) as err:
        hp.SearchSpace.from_model(ComputedWeight(), (1, 3, 4, 4))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("function 'conv2d' (node 'conv2d' in module 'ws'): its weight is "
                                              "computed in the forward, not a parameter or buffer of the model")
    assert msg.endswith("call it inside a module passed in ignored_layers to keep it whole")
    space = hp.SearchSpace.from_model(ComputedWeight(), (1, 3, 4, 4), ignored_layers=["ws"])  # as it says
    assert [layer.name for layer in space.layers] == ["conv", "head"] and len(space) == 0


class SharedWeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.weight = nn.Parameter(torch.randn(8, 8, 1, 1))
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):  # a penalty on the weight reads it too: a pruned network would read the whole of it
        return self.head(F.conv2d(self.conv(x), self.weight)) + self.weight.sum()


class FunctionalAndFlip(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.weight = nn.Parameter(torch.randn(8, 8, 3, 3))
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        return self.head(y.flip(1) + F.conv2d(y, 2 * self.weight, None, 1, 1))


def test_a_functional_layer_sharing_its_weight_is_refused_and_listed_with_the_rest():
    with pytest.raises(hp.UnsupportedModelError, match=r"^function 'conv2d' \(node 'conv2d' in the model's forward\): "
                                                       r"its weight 'weight' is also used by method 'sum'"):
        hp.SearchSpace.from_model(SharedWeight(), (1, 3, 4, 4))
    with pytest.raises(hp.UnsupportedModelError) as err:
        hp.SearchSpace.from_model(FunctionalAndFlip(), (1, 3, 4, 4))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("2 ops of FunctionalAndFlip are not supported: (1) ")
    assert "'flip'" in msg.split("(2)")[0] and "function 'conv2d'" in msg.split("(2)")[1]
    assert "its weight is computed in the forward" in msg.split("(2)")[1]
