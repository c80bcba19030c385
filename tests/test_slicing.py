"""Channels taken by position, written the way the zoos write them: a CSP stage's split into halves, MixNet's
unequal split among kernels, a chunk, ReXNet's shortcut added to the first channels of a wider tensor, GhostNet's
concat cut to an odd width, and an add of two tensors concatenated from different pieces."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import hwprune as hp

from conftest import check_parity, trained_like


def cbr(cin, cout, k=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())


class SlicedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 16, 3)
        self.exp = cbr(16, 24)  # CSP: split in halves, one half through a block, concatenated back
        self.csp = cbr(12, 12, 3)
        self.trans = cbr(24, 16)
        self.mix3 = nn.Conv2d(10, 10, 3, padding=1, groups=10)  # MixNet: 16 channels as 10 + 6, two kernels
        self.mix5 = nn.Conv2d(6, 6, 5, padding=2, groups=6)
        self.wide = cbr(16, 20)  # ReXNet: the shortcut goes into the first 16 of 20 channels
        self.primary = cbr(20, 5)  # GhostNet: primary and cheap channels concatenated, the first 7 kept
        self.cheap = cbr(5, 5, 3, groups=5)
        self.left = cbr(7, 4)  # two ways of cutting 8 channels, added together
        self.right = cbr(7, 4)
        self.a = cbr(7, 2)
        self.b = cbr(7, 6)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.stem(x)
        y = self.exp(x)
        p, q = y.split(12, dim=1)
        x = self.trans(torch.cat([p, self.csp(q) + q], dim=1))
        u, v = torch.split(x, [10, 6], 1)
        x = x + torch.cat([self.mix3(u), self.mix5(v)], 1)
        h, k = x.chunk(2, dim=1)
        x = torch.cat([k, h], dim=1)  # the halves swapped
        y = self.wide(x)
        x = torch.cat([y[:, :16] + x, y[:, 16:]], dim=1)
        g = self.primary(x)
        x = torch.cat([g, self.cheap(g)], dim=1)[:, :7]
        z = torch.cat([self.left(x), self.right(x)], 1) + torch.cat([self.a(x), self.b(x)], 1)
        return self.fc(F.adaptive_avg_pool2d(z, 1).flatten(1))


SHAPE = (1, 3, 8, 8)


@pytest.fixture
def net():
    torch.manual_seed(0)
    return trained_like(SlicedNet())


def test_groups_are_cut_where_channels_are_taken_by_position(net):
    space = hp.SearchSpace.from_model(net, SHAPE)
    assert [g[0] for g in space.fixed_groups()] == ["input", "fc"]  # the rest is prunable
    names = [g.name for g in space.groups]
    assert "exp.0[0:12]" in names and "exp.0[12:24]" in names  # the CSP halves prune on their own
    assert "wide.0[16:20]" in names  # ReXNet: the channels past the shortcut
    assert "primary.0[0:2]" in names and "primary.0[2:5]" in names  # the ghost concat cut at 7 = 5 + 2
    layers = {layer.name: layer for layer in space.layers}
    # the stream, cut by the mixed kernels (10 + 6) and the chunk (8 + 8)
    assert [s.size for s in layers["trans.0"].out_layout] == [8, 2, 6]
    assert len(layers["a.0"].out_layout) == 1 and len(layers["left.0"].out_layout) == 2  # 2 + 6 against 4 + 4
    assert {s.kind for s in space.traced.slicings.values()} == {"split", "slice"}


def test_pruned_networks_run_with_their_pruned_pieces_and_cost_their_macs(net):
    space = hp.SearchSpace.from_model(net, SHAPE)
    full = space.materialize(space.full(), source=net)
    assert isinstance(full, torch.fx.GraphModule) and type(full).__name__ == "SlicedNet"
    check_parity(net, space, torch.randn(4, *SHAPE[1:]), samples=10)  # every piece follows its channels everywhere
    assert space.flops(space.uniform(0.5)) <= 0.45 * space.flops(space.full())


def test_a_pruned_network_with_pieces_exports_to_onnx(net, tmp_path):
    pytest.importorskip("onnxruntime")
    from hwprune.deploy.export import export_onnx

    space = hp.SearchSpace.from_model(net, SHAPE)
    pruned = space.materialize(space.uniform(0.5), source=net).eval()
    x = torch.randn(*SHAPE)
    report = export_onnx(pruned, tmp_path / "sliced.onnx", x)  # proves onnxruntime computes what torch does
    assert (tmp_path / "sliced.onnx").exists() and report is not None


def test_latency_kernels_see_the_pieces(net):
    from hwprune.latency.kernels import kernel_slots, slot_pairs

    space = hp.SearchSpace.from_model(net, SHAPE)
    slots = {s.name: s for s in kernel_slots(space)[0]}
    # the mixed kernels read the two pieces of the stream, the head pool the 8 channels cut two ways
    assert slot_pairs(space, slots["mix5"]) == {(c, c) for c in space.groups[_group(space, "trans.0[10:16]")].choices}
    pool = [s for s in slots.values() if s.spec.op == "global_avgpool2d"]
    assert len(pool) == 1 and len(pool[0].groups()) == 3


def _group(space, name):
    return [g.name for g in space.groups].index(name)


def channel_shuffle(x, groups: int):
    """As torchvision's ShuffleNetV2 writes it."""
    n, c, h, w = x.size()
    x = x.view(n, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(n, -1, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        half = cout // 2
        self.stride = stride
        if stride > 1:
            self.branch1 = nn.Sequential(cbr(cin, cin, 3, groups=cin), cbr(cin, half))
        self.branch2 = nn.Sequential(cbr(cin if stride > 1 else half, half), cbr(half, half, 3, groups=half),
                                     cbr(half, half))

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 8, 3)
        self.units = nn.Sequential(ShuffleUnit(8, 32, 2), ShuffleUnit(32, 32, 1), ShuffleUnit(32, 32, 1))
        self.conv5 = cbr(32, 24)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        return self.fc(self.conv5(self.units(self.stem(x))).mean((2, 3)))


def test_a_channel_shuffle_interleaves_groups_tied_to_the_same_width():
    torch.manual_seed(0)
    net = trained_like(ShuffleNet())
    space = hp.SearchSpace.from_model(net, SHAPE)
    group = {m: g for g in space.all_groups for m in g.members}
    # the two branches of the first unit are interleaved channel by channel: tied to one width
    assert group["units.0.branch1.1.0:out"] is group["units.0.branch2.2.0:out"]
    assert group["units.0.branch2.2.0:out"].fixed_reason is None
    layers = {layer.name: layer for layer in space.layers}
    assert {s.mult for s in layers["units.1.branch2.0.0"].in_layout} == {2}  # half of a shuffled tensor
    check_parity(net, space, torch.randn(2, *SHAPE[1:]))
    assert space.flops(space.uniform(0.5)) <= 0.45 * space.flops(space.full())
