"""Which kernels a space's networks run: fusions, channel terms, width combinations, spec rows."""
import pytest
import torch

import hwprune as hp
from hwprune.latency.kernels import kernel_slots, slot_pairs
from hwprune.profilers.spec import KernelSpec

from conftest import ToyNet


def slots_of(model, shape, **kw):
    space = hp.SearchSpace.from_model(model.eval(), shape, **kw)
    slots, unmodelled = kernel_slots(space)
    return space, {s.name: s for s in slots}, unmodelled


def test_resnet20_kernels_fuse_bn_activation_and_residual_add():
    space, slots, unmodelled = slots_of(hp.create_model("resnet20"), (1, 3, 32, 32))
    assert unmodelled == [] and len(slots) == 23  # stem + 18 block convs + 2 shortcut convs + pool + fc
    c1, c2, ds = slots["layer1.0.conv1"].spec, slots["layer1.0.conv2"].spec, slots["layer2.0.downsample.0"].spec
    assert (c1.batchnorm, c1.activation, c1.residual) == (True, "relu", False)
    assert (c2.activation, c2.residual, c2.residual_activation) == ("none", True, "relu")  # bn2 -> +x -> relu
    assert (ds.kernel, ds.stride, ds.activation, ds.residual) == ((1, 1), (2, 2), "none", False)
    assert slots["layer2.0.conv2"].spec.residual  # the add goes to conv2 (its first operand), not the shortcut
    assert (slots["layer3.0.conv1"].spec.height, slots["layer3.0.conv2"].spec.height) == (16, 8)
    assert slots["avgpool"].spec.op == "global_avgpool2d" and slots["fc"].spec.op == "linear"
    # stem reads the fixed 3-channel input; its output is the first stage's stream
    assert slot_pairs(space, slots["conv1"]) == {(3, w) for w in space.groups[0].choices}
    assert len(slot_pairs(space, slots["layer3.1.conv1"])) == 31 * 31


def test_mobilenet_v2_projection_takes_the_add_without_activation():
    space, slots, unmodelled = slots_of(hp.create_model("mobilenet_v2_cifar"), (1, 3, 32, 32))
    assert unmodelled == []
    dw, proj = slots["features.3.conv.1.0"].spec, slots["features.3.conv.2.0"].spec
    assert (dw.groups, dw.activation) == ("depthwise", "relu6")
    assert (proj.activation, proj.residual, proj.residual_activation) == ("none", True, "none")
    assert not slots["features.2.conv.2.0"].spec.residual  # block 2 changes width: no shortcut
    pairs = slot_pairs(space, slots["features.3.conv.1.0"])
    assert all(cin == cout for cin, cout in pairs) and len(pairs) == len(space.groups[4].choices)


def test_user_model_concat_standalone_bn_and_adaptive_pool(toy):
    space, slots, unmodelled = slots_of(toy, (1, 3, 32, 32))
    assert unmodelled == []
    cat = slots["cat"]
    assert cat.spec.op == "concat" and cat.spec.height == 32 and cat.cin == cat.cout == slots["dw"].cin
    bn = slots["cat_bn"].spec
    assert (bn.op, bn.activation) == ("batchnorm2d", "relu")  # a BN after a concat cannot be folded
    dw = slots["dw"]
    assert dw.spec.groups == "depthwise" and len(dw.cin) == 2  # its channels are two groups side by side
    pw = slots["pw"].spec
    assert pw.residual and pw.residual_activation == "relu"
    pool = slots["adaptive_avg_pool2d"].spec
    assert (pool.op, pool.kernel, pool.stride) == ("avgpool2d", (8, 8), (8, 8))
    assert slots["fc"].cin == ((slots["pw"].cout[0][0], 16),)  # 16 features per channel after the flatten
    widths = {(a, b) for a, b in slot_pairs(space, dw)}
    ga, gb = (space.groups[space.prunable_index.index(g)] for g, _ in dw.cin)
    assert widths == {(a + b, a + b) for a in ga.choices for b in gb.choices}


def test_resnet18_maxpool_after_stem_is_a_kernel():
    _, slots, _ = slots_of(hp.create_model("resnet18"), (1, 3, 64, 64))
    mp = slots["maxpool"].spec
    assert (mp.op, mp.kernel, mp.stride, mp.padding, mp.height) == ("maxpool2d", (3, 3), (2, 2), (1, 1), 32)


def test_spec_rows_round_trip_and_shapes():
    spec = KernelSpec("conv2d", (3, 3), (2, 2), (1, 1), (1, 1), "depthwise", 17, 15, False, True, "relu6", True,
                      "none", 4, "float32")
    assert KernelSpec.from_row(spec.to_row()) == spec and spec.key() == KernelSpec.from_row(spec.to_row()).key()
    assert spec.out_size == (9, 8)
    assert spec.macs(24, 24) == 4 * 24 * 9 * 8 * 9  # one input channel per filter
    dense = KernelSpec("conv2d", (3, 3), (1, 1), (1, 1), height=8, width=8)
    assert dense.macs(16, 32) == 32 * 64 * 16 * 9


def test_a_kernel_over_a_million_width_combinations_is_refused():
    from hwprune.latency import kernels

    space = hp.SearchSpace.from_model(ToyNet().eval(), (1, 3, 32, 32))
    slots = {s.name: s for s in kernel_slots(space)[0]}
    old = kernels.MAX_COMBINATIONS
    kernels.MAX_COMBINATIONS = 100
    try:
        with pytest.raises(hp.UnsupportedModelError, match="width combinations"):
            slot_pairs(space, slots["pw"])
    finally:
        kernels.MAX_COMBINATIONS = old


class _SENet(torch.nn.Module):
    """A conv, squeeze-excitation (mean, two 1x1 convs, sigmoid, multiply), and a concat of two branches."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 32, 3, padding=1)
        self.fc1, self.fc2 = torch.nn.Conv2d(32, 8, 1), torch.nn.Conv2d(8, 32, 1)
        self.a, self.b = torch.nn.Conv2d(32, 16, 1), torch.nn.Conv2d(32, 8, 3, padding=1)
        self.head = torch.nn.Conv2d(24, 10, 1)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        x = x * torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return self.head(torch.cat([self.a(x), self.b(x)], 1))


def test_squeeze_excitation_multiply_and_concat_are_kernels_that_follow_the_widths():
    # both cost time in proportion to the channels, so leaving them to the fixed overhead mispredicts networks
    # that prune them (measured: benchmarks/results/latency_fidelity_families*.csv)
    space, slots, unmodelled = slots_of(_SENet(), (1, 3, 16, 16))
    assert unmodelled == []
    scale, cat = slots["mul"], slots["cat"]
    assert (scale.spec.op, scale.spec.height, scale.spec.width) == ("scale", 16, 16)
    assert scale.cin == scale.cout == slots["conv"].cout  # the tensor scaled, not the (N, C, 1, 1) factors
    assert cat.spec.op == "concat" and cat.cin == slots["a"].cout + slots["b"].cout
    ga, gb = (space.groups[space.prunable_index.index(g)] for g, _ in cat.cin)
    assert slot_pairs(space, cat) == {(a + b, a + b) for a in ga.choices for b in gb.choices}
    # a multiply of two full tensors is not a per-channel scale: it stays unmodelled, named
    class Gate(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Conv2d(3, 8, 1), torch.nn.Conv2d(3, 8, 1)

        def forward(self, x):
            return self.a(x) * self.b(x)
    assert [u.split()[1] for u in slots_of(Gate(), (1, 3, 8, 8))[2]] == ["mul"]
