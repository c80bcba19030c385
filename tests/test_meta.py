"""PruningNet: generated weights, per-choice BN, and agreement with its materialized network."""
import numpy as np
import pytest
import torch

import hwprune as hp
from hwprune.supernet.pruningnet import PruningNet, generator_params

from conftest import ToyNet, small_input


@pytest.mark.parametrize("name", hp.list_models())
def test_generated_weights_have_the_materialized_shapes(name):
    space = hp.SearchSpace.from_model(hp.create_model(name), small_input(name))
    big = name in ("resnet18", "resnet34", "resnet50", "mobilenet_v1", "mobilenet_v2")
    pnet = PruningNet(space, hidden=4, rank=1) if big else PruningNet(space)  # shapes do not depend on rank
    enc = space.sample(np.random.default_rng(0))
    pruned = space.materialize(enc)
    weights = pnet.layer_weights(enc)
    assert set(weights) == {l.name for l in space.layers if l.kind != "bn"}
    for layer, (w, b) in weights.items():
        m = pruned.get_submodule(layer)
        assert w.shape == m.weight.shape, layer
        assert (b is None) == (m.bias is None) and (b is None or b.shape == m.bias.shape)
    assert pnet.generator_params() == generator_params(space, *((4, 1) if big else (32, None)))


@pytest.mark.parametrize("name,kw", [("resnet20", {}), ("mobilenet_v2_cifar", {}), ("resnet20", {"bn": "shared"}),
                                     ("resnet20", {"rank": 4}), ("toy", {}), ("wide", {})])
def test_materialize_matches_pnet(name, kw):
    torch.manual_seed(0)
    if name == "toy":
        space, shape = hp.SearchSpace.from_model(ToyNet(), (1, 3, 8, 8)), (3, 8, 8)
    elif name == "wide":  # widths above the original
        space = hp.SearchSpace.from_model(hp.create_model("resnet20"), (1, 3, 32, 32), ratios=[0.5, 1.0, 1.3])
        shape = (3, 32, 32)
    else:
        space, shape = hp.SearchSpace.from_model(hp.create_model(name), (1, 3, 32, 32)), (3, 32, 32)
    pnet = PruningNet(space, **kw)
    rng = np.random.default_rng(0)
    pnet.train()
    with torch.no_grad():
        for _ in range(3):  # non-trivial BN statistics
            pnet(torch.randn(8, *shape), space.sample(rng))
    pnet.eval()
    x = torch.randn(4, *shape)
    for _ in range(3):
        enc = space.sample(rng)
        with torch.no_grad():
            want = pnet(x, enc)
            got = pnet.materialize(enc).eval()(x)
        assert got.shape == want.shape
        assert (got - want).abs().max().item() <= 1e-5


def test_per_choice_bn_updates_only_the_chosen_rows():
    space = hp.SearchSpace.from_model(hp.create_model("resnet20"), (1, 3, 32, 32))
    pnet = PruningNet(space).train()
    before = {k: v.clone() for k, v in pnet.state_dict().items() if "running_mean" in k}
    enc = space.uniform(0.5)
    with torch.no_grad():
        pnet(torch.randn(8, 3, 32, 32), enc)
    stem = pnet.bns["bn1"].running_mean
    row = enc[0]
    width = space.groups[0].choices[row]
    assert stem.shape[0] == len(space.groups[0].choices)
    assert (stem[row, :width] != before["bns.bn1.running_mean"][row, :width]).all()
    changed = [r for r in range(stem.shape[0]) if not torch.equal(stem[r], before["bns.bn1.running_mean"][r])]
    assert changed == [row]
    shared = PruningNet(space, bn="shared")
    assert shared.bns["bn1"].running_mean.shape[0] == 1


def test_generator_output_depends_on_ratios():
    space = hp.SearchSpace.from_model(hp.create_model("resnet20"), (1, 3, 32, 32))
    pnet = PruningNet(space)
    full = pnet.layer_weights(space.full())["layer1.0.conv1"][0]
    half = pnet.layer_weights(space.uniform(0.5))["layer1.0.conv1"][0]
    assert half.shape[0] < full.shape[0]
    assert not torch.allclose(half, full[: half.shape[0], : half.shape[1]])  # not just a crop: generated per width


def test_low_rank_generator_is_smaller():
    space = hp.SearchSpace.from_model(hp.create_model("resnet50"), (1, 3, 64, 64))
    full, low = generator_params(space), generator_params(space, rank=4)
    assert full > 25 * 25_557_032 and low < full / 5


def test_the_default_generator_follows_the_start():
    space = hp.SearchSpace.from_model(ToyNet(), (1, 3, 8, 8))
    scratch, trained = PruningNet(space), PruningNet(space, source=ToyNet())
    assert scratch.rank is None and scratch.config["rank"] is None  # from scratch rank 4 learned far worse
    assert trained.rank == 4 and trained.config["rank"] == 4  # from trained weights it ranked as well or better
    assert all(g.rank == 4 and g.basis.shape[0] == 4 for g in trained.generators.values())
    assert PruningNet(space, rank=None, source=ToyNet()).rank is None
    assert trained.generator_params() == generator_params(space, rank=4) < scratch.generator_params()


def test_bad_options_are_refused():
    space = hp.SearchSpace.from_model(hp.create_model("resnet20"), (1, 3, 32, 32))
    with pytest.raises(hp.HwpruneError, match="bn must be one of"):
        PruningNet(space, bn="sometimes")
    with pytest.raises(hp.EncodingError, match="encoding has 2 entries"):
        PruningNet(space)(torch.randn(1, 3, 32, 32), (0, 0))


@pytest.mark.parametrize("name,shape,rank", [("resnet20", (1, 3, 32, 32), None), ("mobilenet_v2_cifar", (1, 3, 32, 32), 4)])
def test_a_pruningnet_from_the_ordered_trained_model_starts_as_that_model(name, shape, rank):
    from hwprune.core.importance import order_channels

    torch.manual_seed(0)
    model = hp.create_model(name)
    for m in model.modules():  # trained-like BN: statistics and affine terms away from their defaults
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.3)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.2)
    model.eval()
    space = hp.SearchSpace.from_model(model, shape)
    ordered = order_channels(space, model)
    pnet = PruningNet(space, source=ordered, rank=rank).eval()
    x = torch.randn(2, *shape[1:])
    with torch.no_grad():
        assert (pnet(x, space.full()) - model(x)).abs().max() <= 1e-4
        half = space.uniform(0.5)  # narrower networks differ from a crop (generated per width), but start near it
        crop = space.materialize(half, source=ordered).eval()(x)
        assert not torch.allclose(pnet(x, half), crop)
    bn = pnet.bns["bn1" if name == "resnet20" else "features__0__1"]
    assert bn.affine and bn.weight.shape == bn.running_mean.shape  # a scale and shift per width choice


def test_checkpoints_of_earlier_versions_keep_their_behaviour():
    from hwprune.supernet.train import pnet_payload, pruningnet_from_payload

    space = hp.SearchSpace.from_model(hp.create_model("resnet20"), (1, 3, 32, 32))
    old = PruningNet(space, anchored=False, bn_affine=False).eval()
    payload = pnet_payload(old)
    payload["pnet"] = {k: v for k, v in payload["pnet"].items() if k not in ("anchored", "bn_affine")}
    again = pruningnet_from_payload(payload).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x, space.uniform(0.5)), old(x, space.uniform(0.5)))
