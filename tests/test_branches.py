"""Dropping residual branches (``drop_blocks=True``): which groups may, what the pruned network computes, and
that every model of cost (FLOPs, parameters, latency tables) and the ONNX export agree on what is gone."""
import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

import hwprune as hp
from hwprune.errors import HwpruneError, SpaceMismatchError
from hwprune.latency.kernels import kernel_slots
from hwprune.profilers.onnx_graphs import export_network
from hwprune.search.baselines import magnitude_encodings

from conftest import hook_macs
from latency_fakes import OVERHEAD_MS, FakeProfiler, fake_ms

SHAPES = {"resnet20": (1, 3, 32, 32), "mobilenet_v2_cifar": (1, 3, 32, 32)}


def _model(name):
    torch.manual_seed(0)
    model = hp.create_model(name).eval()
    for m in model.modules():  # non-trivial statistics, so that a wrong copy shows in the outputs
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


def _blocks(name, model):
    """The blocks with an identity-or-projection shortcut, by module path, and the group each one drops with."""
    if name == "resnet20":
        return {f"layer{s}.{i}": f"layer{s}.{i}.conv1" for s in (1, 2, 3) for i in range(3)}
    return {n: f"{n}.conv.0.0" for n, m in model.named_modules() if getattr(m, "use_res", False)}


@pytest.mark.parametrize("name", list(SHAPES))
def test_every_block_with_a_shortcut_and_nothing_else_can_drop(name):
    model = _model(name)
    space = hp.SearchSpace.from_model(model, SHAPES[name], round_to=4, drop_blocks=True)
    droppable = {space.groups[p].name for p in space.branches}
    assert droppable == set(_blocks(name, model).values())
    assert all(g.droppable == (g.name in droppable) for g in space.groups)
    plain = hp.SearchSpace.from_model(model, SHAPES[name], round_to=4)
    assert not plain.branches and not any(g.droppable for g in plain.groups)
    # the other widths are unchanged: a droppable group gains 0 in front
    assert [g.choices[g.droppable:] for g in space.groups] == [g.choices for g in plain.groups]


def test_a_dropped_block_computes_what_the_network_without_it_computes():
    model = _model("resnet20")
    space = hp.SearchSpace.from_model(model, SHAPES["resnet20"], drop_blocks=True)
    names = [g.name for g in space.groups]
    enc = list(space.full())
    for block in ("layer1.1", "layer2.0", "layer3.2"):
        enc[names.index(f"{block}.conv1")] = 0
    pruned = space.materialize(enc, source=model).eval()
    reference = _model("resnet20")
    reference.layer1[1] = nn.Identity()  # a block's input is a ReLU's output: relu(0 + x) is x
    reference.layer3[2] = nn.Identity()
    block = reference.layer2[0]  # a projection shortcut's block without its branch: relu(downsample(x))
    reference.layer2[0] = nn.Sequential(block.downsample, nn.ReLU())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), reference(x))
    assert sum(p.numel() for p in pruned.parameters()) == space.params(enc) == \
        sum(p.numel() for p in reference.parameters())
    assert hook_macs(pruned, x[:1]) == space.flops(enc)
    assert not any(n.startswith(("layer1.1.", "layer2.0.conv", "layer3.2.")) for n, _ in pruned.named_modules())


@pytest.mark.parametrize("name", list(SHAPES))
def test_random_encodings_with_drops_match_their_costs_and_export(name):
    model = _model(name)
    space = hp.SearchSpace.from_model(model, SHAPES[name], round_to=4, drop_blocks=True)
    x = torch.randn(SHAPES[name])
    rng = np.random.default_rng(0)
    dropped_any = False
    for _ in range(6):
        enc = space.sample(rng)
        gone = sum(enc[p] == 0 for p in space.branches)
        dropped_any |= gone > 0
        pruned = space.materialize(enc, source=model).eval()
        assert pruned(x).shape == (1, 10)
        assert sum(p.numel() for p in pruned.parameters()) == space.params(enc)
        assert hook_macs(pruned, x) == space.flops(enc)
    assert dropped_any
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    per_block = 2 if name == "resnet20" else 3
    graph = onnx.load_from_string(export_network(pruned, SHAPES[name]))
    assert sum(n.op_type == "Conv" for n in graph.graph.node) == convs - per_block * gone


def test_uniform_and_magnitude_networks_never_drop_a_block():
    model = _model("resnet20")
    space = hp.SearchSpace.from_model(model, SHAPES["resnet20"], round_to=4, drop_blocks=True)
    for r in (0.01, 0.1, 0.5, 1.0):
        assert all(space.widths(space.uniform(r)) > 0)
    importance = {gi: np.r_[np.zeros(space.all_groups[gi].width - 1), 1.0] for gi in space.prunable_index}
    _, encs = magnitude_encodings(space, importance)
    assert (encs[:, sorted(space.branches)] >= 1).all()


def test_a_saved_space_keeps_its_drops_and_a_zero_width_elsewhere_is_refused():
    model = _model("resnet20")
    space = hp.SearchSpace.from_model(model, SHAPES["resnet20"], round_to=4, drop_blocks=True)
    again = hp.SearchSpace.from_json(space.to_json(), model)
    assert [g.choices for g in again.groups] == [g.choices for g in space.groups]
    assert again.branches.keys() == space.branches.keys()
    enc = space.sample(3)
    assert again.flops(enc) == space.flops(enc)
    saved = space.to_json().replace('"choices": [\n    4,', '"choices": [\n    0,\n    4,', 1)  # the stem's group
    with pytest.raises(SpaceMismatchError, match="'conv1' has width choice 0, but it is not on a residual branch"):
        hp.SearchSpace.from_json(saved, model)


def test_a_latency_table_counts_nothing_of_a_dropped_branch(tmp_path):
    model = _model("resnet20")
    space = hp.SearchSpace.from_model(model, SHAPES["resnet20"], round_to=8, drop_blocks=True)
    table = hp.profile(space, profiler=FakeProfiler(), cache_dir=tmp_path, calibrate=4, quiet=True)
    assert not (table.entries[["cin", "cout"]] == 0).any().any()  # nothing profiled at zero channels
    rng = np.random.default_rng(1)
    for _ in range(5):
        enc = space.sample(rng)
        pruned = space.materialize(enc, source=model).eval()
        real = hp.SearchSpace.from_model(pruned, SHAPES["resnet20"])  # the kernels the pruned network runs
        slots, _ = kernel_slots(real)
        w = real.widths(real.full())
        kernels = sum(fake_ms(s.spec, sum(int(w[g]) * k for g, k in s.cin), sum(int(w[g]) * k for g, k in s.cout))
                      for s in slots)
        # rows are stored rounded; any kernel counted or missed would cost at least 1e-3 ms (fake_ms)
        assert table.predict(enc) == pytest.approx(table.overhead_ms + table.scale * kernels, abs=2e-5)
        assert table.predict_batch([enc])[0] == pytest.approx(table.predict(enc), rel=1e-12)
    assert table.overhead_ms == pytest.approx(OVERHEAD_MS, abs=1e-5)  # its calibration networks drop blocks too


def test_a_pruningnet_refuses_a_space_that_drops_blocks():
    space = hp.SearchSpace.from_model(_model("resnet20"), SHAPES["resnet20"], round_to=8, drop_blocks=True)
    with pytest.raises(HwpruneError, match="cannot drop residual branches; build the space without drop_blocks"):
        hp.PruningNet(space)
