"""Channel groups, width choices, encodings and the JSON form of a SearchSpace."""
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

import hwprune as hp

from conftest import small_input


def space_of(name, **kw):
    return hp.SearchSpace.from_model(hp.create_model(name).eval(), small_input(name), **kw)


def group_of(space, member):
    hits = [g for g in space.all_groups if member in g.members]
    assert len(hits) == 1, f"{member} is in {len(hits)} groups"
    return hits[0]


# ---- groups of the zoo models -----------------------------------------------------------------
def test_resnet50_stage_outputs_form_one_group_per_stage():
    space = space_of("resnet50")
    stages = ("layer1", "layer2", "layer3", "layer4")
    for s, (stage, blocks) in enumerate(zip(stages, (3, 4, 6, 3))):
        g = group_of(space, f"{stage}.0.downsample.0:out")
        for b in range(blocks):
            assert f"{stage}.{b}.conv3:out" in g.members  # every block's output is on the residual stream
            if b > 0:
                assert f"{stage}.{b}.conv1:in" in g.members  # and every later block reads it
            assert group_of(space, f"{stage}.{b}.conv1:out") is not g  # the bottleneck widths are free
        if s < 3:  # the next stage's first block reads it
            assert {f"{stages[s + 1]}.0.conv1:in", f"{stages[s + 1]}.0.downsample.0:in"} <= set(g.members)
        assert g.fixed_reason is None
    assert group_of(space, "conv1:out") is not group_of(space, "layer1.0.conv3:out")
    # stem + 4 stages + 2 inner widths per block
    assert len(space) == 1 + 4 + 2 * 16


def test_resnet18_stem_shares_layer1_stream():
    space = space_of("resnet18")
    g = group_of(space, "conv1:out")
    assert {"layer1.0.conv2:out", "layer1.1.conv2:out", "bn1", "layer2.0.downsample.0:in"} <= set(g.members)
    assert len(space) == 1 + 3 + 8


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v2_cifar"])
def test_mobilenet_v2_depthwise_ties_to_expansion_conv(name):
    space = space_of(name)
    model = space.model
    for i, block in enumerate(model.features[1:-1], start=1):
        dw = f"features.{i}.conv.{0 if len(block.conv) == 2 else 1}.0"
        layer = next(l for l in space.layers if l.name == dw)
        assert layer.depthwise
        if len(block.conv) == 3:  # expansion block: expansion output = depthwise in/out = projection input
            g = group_of(space, f"features.{i}.conv.0.0:out")
            assert {f"{dw}:in", f"{dw}:out", f"features.{i}.conv.2.0:in"} <= set(g.members)
        if block.use_res:  # residual blocks share their output group with their input
            assert group_of(space, f"features.{i}.conv.2.0:out") is group_of(space, f"features.{i}.conv.0.0:in")


def test_mobilenet_v1_depthwise_follows_previous_pointwise():
    space = space_of("mobilenet_v1")
    for i in range(1, 27, 2):
        prev = "features.0.0" if i == 1 else f"features.{i - 1}.0"
        assert f"features.{i}.0:out" in group_of(space, f"{prev}:out").members
    assert len(space) == 14  # stem + 13 pointwise widths


@pytest.mark.parametrize("name", hp.list_models())
def test_groups_agree_with_torch_pruning(name):
    """Our partition of conv/linear output channels equals Torch-Pruning's DependencyGraph."""
    tp = pytest.importorskip("torch_pruning")
    model = hp.create_model(name).eval()
    x = torch.randn(small_input(name))
    names = {m: n for n, m in model.named_modules()}
    theirs = set()
    for group in tp.DependencyGraph().build_dependency(model, example_inputs=x).get_all_groups(
            root_module_types=[nn.Conv2d, nn.Linear]):
        producers = {names[dep.target.module] for dep, _ in group
                     if dep.handler in (tp.prune_conv_out_channels, tp.prune_linear_out_channels)
                     and getattr(dep.target.module, "groups", 1) == 1}
        theirs.add(frozenset(producers))
    space = hp.SearchSpace.from_model(model, x)
    kinds = {l.name: l for l in space.layers}
    ours = set()
    for g in space.all_groups:
        producers = {m[:-4] for m in g.members
                     if m.endswith(":out") and kinds[m[:-4]].kind != "bn" and not kinds[m[:-4]].depthwise}
        if producers:
            ours.add(frozenset(producers))
    assert ours == theirs


def test_user_model_with_concat_depthwise_and_residual(toy):
    space = hp.SearchSpace.from_model(toy, (1, 3, 8, 8))
    stem = group_of(space, "stem:out")
    assert {"stem_bn", "pw:out", "pw_bn", "fc:in"} <= set(stem.members)  # residual add ties pw to stem
    a, b = group_of(space, "branch_a:out"), group_of(space, "branch_b:out")
    assert a is not b and a.width == 8 and b.width == 12
    dw = next(l for l in space.layers if l.name == "dw")
    # the depthwise conv and the BN after the concat see [branch_a | branch_b], each keeping its group
    assert [s.size for s in dw.in_layout] == [8, 12] and dw.out_layout == dw.in_layout
    fc = next(l for l in space.layers if l.name == "fc")
    assert [(s.size, s.mult) for s in fc.in_layout] == [(16, 16)]  # flatten of (16, 4, 4)
    assert sorted(g.name for g in space.groups) == ["branch_a", "branch_b", "stem"]


# ---- widths and encodings ---------------------------------------------------------------------
def test_default_ratios_are_the_papers_31():
    r = hp.default_ratios()
    assert len(r) == 31 and r[0] == 0.10 and r[1] == 0.13 and r[-1] == 1.0
    assert hp.default_ratios(max_ratio=1.3)[-1] == 1.3


def test_width_choices_round_and_cover_original():
    space = space_of("resnet50", round_to=8)
    for g in space.groups:
        assert g.width in g.choices and list(g.choices) == sorted(set(g.choices))
        assert all(c % 8 == 0 for c in g.choices)
        assert g.choices[0] >= 8
    space = space_of("resnet20", ratios=[0.5, 1.0, 1.5])
    assert space.groups[0].choices == (8, 16, 24)
    assert space.channels(space.full())["conv1"] == 16  # full = original widths even when wider ones exist


def test_full_uniform_sample(rng):
    space = space_of("resnet20")
    assert space.flops(space.full()) == 40_813_184
    half = space.channels(space.uniform(0.5))
    assert half["conv1"] == 8 and half["layer2.0.conv1"] == 16
    for _ in range(50):
        enc = space.sample(rng)
        assert all(0 <= v < n for v, n in zip(enc, space.num_choices))
    assert space.sample(3) == space.sample(3) != space.sample(4)
    assert space.flops(space.uniform(0.1)) < space.flops(space.uniform(0.5)) < space.flops(space.full())


def test_batch_costs_equal_single(rng):
    space = space_of("mobilenet_v2")
    encs = np.array([space.sample(rng) for _ in range(16)])
    assert list(space.flops_batch(encs)) == [space.flops(e) for e in encs]
    assert list(space.params_batch(encs)) == [space.params(e) for e in encs]


def test_bad_encodings_name_the_group():
    space = space_of("resnet20")
    with pytest.raises(hp.EncodingError, match="encoding has 3 entries but the space has 12 prunable groups"):
        space.flops((0, 0, 0))
    enc = list(space.full())
    enc[4] = 99
    with pytest.raises(hp.EncodingError, match=r"entry 4 \(group 'layer2.0.downsample.0'\) is 99; .* 0\.\.29"):
        space.materialize(enc)
    with pytest.raises(hp.EncodingError, match="group 'conv1'"):
        space.flops_batch(np.array([[-1] + [0] * 11]))


# ---- refusals ---------------------------------------------------------------------------------
class Gate(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x  # data-dependent control flow: not traceable


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.gate = Gate()
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(self.gate(self.conv(x)))


def test_untraceable_model_names_the_module():
    with pytest.raises(hp.UnsupportedModelError, match=r"cannot trace Gated .* in module 'gate':"):
        hp.SearchSpace.from_model(Gated(), (1, 3, 8, 8))
    space = hp.SearchSpace.from_model(Gated(), (1, 3, 8, 8), ignored_layers=["gate"])
    assert len(space) == 0  # conv feeds the ignored gate, so its channels are fixed
    assert ("conv", 8, "ignored layer 'gate'") in space.fixed_groups()


class HalvesSummed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        b, c, h, w = y.shape
        y = y.view(b, 2, c // 2, h, w).sum(1)  # the two halves of the channels added
        return self.head(y.repeat(1, 2, 1, 1))


def test_unmappable_op_is_refused_by_name():
    with pytest.raises(hp.UnsupportedModelError, match=r"method 'view' \(node 'view'.*reshapes the channel"):
        hp.SearchSpace.from_model(HalvesSummed(), (1, 3, 4, 4))


def test_ignored_layer_must_exist():
    with pytest.raises(hp.UnsupportedModelError, match="'nope' is not a submodule"):
        hp.SearchSpace.from_model(Gated(), (1, 3, 8, 8), ignored_layers=["nope"])


# ---- JSON -------------------------------------------------------------------------------------
def test_json_round_trip_keeps_choices():
    model = hp.create_model("resnet20")
    space = hp.SearchSpace.from_model(model, (1, 3, 32, 32), round_to=4)
    again = hp.SearchSpace.from_json(space.to_json(), hp.create_model("resnet20"))
    assert again.fingerprint == space.fingerprint
    assert [g.choices for g in again.groups] == [g.choices for g in space.groups]
    enc = space.uniform(0.4)
    assert again.flops(enc) == space.flops(enc)


def test_json_for_another_model_is_refused():
    text = space_of("resnet20").to_json()
    with pytest.raises(hp.SpaceMismatchError, match=r"another model \(CifarResNet\): group "
                                                    r"'layer2.0.downsample.0' \(width 32\) in the saved space, "
                                                    r"'layer1.3.conv1' \(width 16\) in this model"):
        hp.SearchSpace.from_json(text, hp.create_model("resnet56"))
    with pytest.raises(hp.SpaceMismatchError, match=r"group 'conv1' \(width 16\) in the saved space, 'conv1' "
                                                    r"\(width 8\)"):
        hp.SearchSpace.from_json(text, hp.create_model("resnet20", width_mult=0.5))
    with pytest.raises(hp.SpaceMismatchError, match="not a hwprune search space"):
        hp.SearchSpace.from_json(json.dumps({"groups": []}), hp.create_model("resnet20"))


def test_fingerprint_ignores_batch_size():
    assert space_of("resnet20").fingerprint == hp.SearchSpace.from_model(
        hp.create_model("resnet20"), (8, 3, 32, 32)).fingerprint


def test_ratios_where_indices_belong_and_nan_are_refused():
    space = hp.SearchSpace.from_model(hp.create_model("resnet20"), (1, 3, 32, 32))
    for call in (lambda: space.materialize([0.5] * len(space)), lambda: space.flops([0.5] * len(space))):
        with pytest.raises(hp.EncodingError, match="entry 0 is 0.5: an encoding holds choice indices"):
            call()
    assert space.flops([2.0] * len(space)) == space.flops([2] * len(space))  # integral floats are indices
    with pytest.raises(hp.HwpruneError, match="ratio must be a number above 0, got nan"):
        space.uniform(float("nan"))
    with pytest.raises(hp.HwpruneError, match="num_classes must be a positive integer, got 0"):
        hp.create_model("resnet20", num_classes=0)


def test_what_is_not_an_encoding_is_one_line():
    space = hp.SearchSpace.from_model(hp.create_model("resnet20"), (1, 3, 32, 32))
    for bad, text in ((None, "got NoneType None"), ("abc", "got str 'abc'"), (3, "got int 3"),
                      ([0] * 11, "11 entries but the space has 12"), ([0] * 11 + [99], "entry 11 \\(group")):
        with pytest.raises(hp.EncodingError, match=text):
            space.materialize(bad)
    with pytest.raises(hp.HwpruneError, match="ratio must be a number above 0, got 'x'"):
        space.uniform("x")
