"""Materialized networks: real channel counts, exact params and FLOPs, and the original's outputs."""
import numpy as np
import pytest
import torch
import torch.nn as nn

import hwprune as hp

from conftest import hook_macs, small_input


@pytest.mark.parametrize("name", hp.list_models())
def test_random_encodings_match_costs(name):
    model = hp.create_model(name).eval()
    space = hp.SearchSpace.from_model(model, small_input(name))
    x = torch.randn(small_input(name))
    rng = np.random.default_rng(1)
    for _ in range(20):
        enc = space.sample(rng)
        pruned = space.materialize(enc, source=model).eval()
        assert pruned(x).shape == (1, 1000 if "cifar" not in name and name not in ("resnet20", "resnet56") else 10)
        assert sum(p.numel() for p in pruned.parameters()) == space.params(enc)
        assert hook_macs(pruned, x) == space.flops(enc)
        for layer, (cin, cout) in space.layer_channels(enc).items():
            m = pruned.get_submodule(layer)
            assert (getattr(m, "in_channels", getattr(m, "in_features", None)),
                    getattr(m, "out_channels", getattr(m, "out_features", None))) == (cin, cout)


@pytest.mark.parametrize("name", hp.list_models())
def test_full_encoding_reproduces_original(name):
    torch.manual_seed(0)
    model = hp.create_model(name).eval()
    # non-trivial BN statistics so that copying them is tested too
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    space = hp.SearchSpace.from_model(model, small_input(name))
    x = torch.randn(2, *small_input(name)[1:])
    pruned = space.materialize(space.full(), source=model)
    assert (pruned(x) - model(x)).abs().max().item() <= 1e-5
    assert type(pruned) is type(model) and pruned is not model


def test_toy_model_concat_slices_and_outputs(toy):
    space = hp.SearchSpace.from_model(toy, (1, 3, 8, 8))
    x = torch.randn(2, 3, 8, 8)
    assert (space.materialize(space.full(), source=toy)(x) - toy(x)).abs().max() == 0
    rng = np.random.default_rng(0)
    for _ in range(20):
        enc = space.sample(rng)
        pruned = space.materialize(enc, source=toy).eval()
        ch = space.channels(enc)
        assert pruned.dw.in_channels == pruned.dw.groups == ch["branch_a"] + ch["branch_b"]
        assert pruned.fc.in_features == ch["stem"] * 16
        assert sum(p.numel() for p in pruned.parameters()) == space.params(enc)
        assert hook_macs(pruned, x[:1]) == space.flops(enc)
    # the kept channels are the leading ones of each concatenated branch
    enc = list(space.full())
    names = [g.name for g in space.groups]
    enc[names.index("branch_a")] = space.groups[names.index("branch_a")].choices.index(4)
    pruned = space.materialize(enc, source=toy)
    keep = list(range(4)) + list(range(8, 20))
    assert torch.equal(pruned.dw.weight, toy.dw.weight[keep])
    assert torch.equal(pruned.cat_bn.running_var, toy.cat_bn.running_var[keep])


def test_materialize_without_source_is_fresh_and_independent():
    model = hp.create_model("resnet20")
    space = hp.SearchSpace.from_model(model, (1, 3, 32, 32))
    a = space.materialize(space.uniform(0.5))
    assert a.conv1.out_channels == 8
    assert not torch.equal(a.conv1.weight, model.conv1.weight[:8])  # re-initialised, not copied
    a.conv1.weight.data.zero_()
    assert model.conv1.weight.abs().sum() > 0  # the template is never modified


def test_wider_than_original_keeps_source_channels():
    model = hp.create_model("resnet20").eval()
    space = hp.SearchSpace.from_model(model, (1, 3, 32, 32), ratios=[0.5, 1.0, 1.5])
    wide = space.materialize([2] * len(space), source=model)
    assert wide.conv1.out_channels == 24
    assert torch.equal(wide.conv1.weight[:16], model.conv1.weight)
    assert wide(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_source_of_another_model_is_refused():
    space = hp.SearchSpace.from_model(hp.create_model("resnet20"), (1, 3, 32, 32))
    with pytest.raises(hp.SpaceMismatchError, match="module 'conv1' of the source model is Conv2d"):
        space.materialize(space.full(), source=hp.create_model("resnet20", width_mult=0.5))
