"""Importance order: a function-preserving permutation that puts each group's best channels first."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import hwprune as hp
from hwprune.core.importance import channel_importance, order_channels

from conftest import ToyNet, small_input, trained_like


class SENet(nn.Module):
    """Squeeze-excitation: the gate's output channels multiply (and so join) the block's channels."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.squeeze = nn.Conv2d(16, 4, 1)
        self.excite = nn.Conv2d(4, 16, 1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        y = F.relu(self.bn(self.stem(x)))
        y = y * torch.sigmoid(self.excite(F.relu(self.squeeze(F.adaptive_avg_pool2d(y, 1)))))
        y = F.relu(self.dw(y)) + y
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


CASES = [(name, lambda name=name: hp.create_model(name), small_input(name)) for name in hp.list_models()] + [
    ("toy (concat, depthwise, residual, flatten)", ToyNet, (1, 3, 16, 16)), ("se", SENet, (1, 3, 16, 16))]


@pytest.mark.parametrize("name,build,shape", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("metric", ["l1", "bn"])
def test_ordering_preserves_the_function_and_sorts_every_group(name, build, shape, metric):
    torch.manual_seed(0)
    model = trained_like(build(), seed=1)
    space = hp.SearchSpace.from_model(model, shape)
    ordered = order_channels(space, model, metric).eval()
    x = torch.randn(2, *shape[1:])
    with torch.no_grad():
        assert (ordered(x) - model(x)).abs().max() <= 1e-5 * (1 + model(x).abs().max())
    after = channel_importance(space, ordered, metric)
    for gi, s in after.items():
        assert np.all(np.diff(s) <= 1e-9 * (1 + s.max())), (name, space.all_groups[gi].name)
    changed = sum(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), ordered.state_dict().values()))
    assert changed > 0  # it did permute something


def test_materialize_after_ordering_keeps_the_most_important_channels():
    torch.manual_seed(0)
    model = trained_like(ToyNet(), seed=1)
    space = hp.SearchSpace.from_model(model, (1, 3, 16, 16))
    before = channel_importance(space, model)
    ordered = order_channels(space, model)
    enc = space.uniform(0.5)
    gi = space.prunable_index[0]  # the stem's group: stem, its BN, the branches' inputs, pw's output
    k = space.channels(enc)[space.groups[0].name]
    pruned = space.materialize(enc, source=ordered)
    top = np.sort(np.argsort(-before[gi], kind="stable")[:k])
    kept = [int(torch.nonzero((model.stem.weight == w).flatten(1).all(1))[0]) for w in pruned.stem.weight]
    assert sorted(kept) == list(top)


def test_an_unknown_metric_is_one_line():
    model = ToyNet()
    space = hp.SearchSpace.from_model(model, (1, 3, 16, 16))
    with pytest.raises(hp.HwpruneError, match="importance metric must be one of l1, l2, bn"):
        order_channels(space, model, "taylor9")


def _batches(shape, n=3, classes=10):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(8, *shape[1:], generator=g), torch.randint(0, classes, (8,), generator=g)) for _ in range(n)]


@pytest.mark.parametrize("name,build,shape", [CASES[0], CASES[-2], CASES[-1]], ids=lambda c: str(c)[:30])
def test_taylor_order_preserves_the_function(name, build, shape):
    torch.manual_seed(0)
    model = trained_like(build(), seed=1)
    space = hp.SearchSpace.from_model(model, shape)
    classes = model(torch.zeros(shape)).shape[1]
    ordered = order_channels(space, model, "taylor", data=_batches(shape, classes=classes)).eval()
    x = torch.randn(2, *shape[1:])
    with torch.no_grad():
        assert (ordered(x) - model(x)).abs().max() <= 1e-5 * (1 + model(x).abs().max())
    assert all(p.grad is None for p in model.parameters()) and not model.training  # nothing left behind
    scores = ordered.hwprune_importance["scores"]
    assert all(np.all(np.diff(s) <= 0) for s in scores.values())  # stored in the new, descending order


def test_taylor_scores_a_channel_the_network_cannot_use_zero():
    """A channel whose BatchNorm scale and shift are 0 carries nothing: removing it changes no loss, and no gradient
    reaches the weights that make or read it."""
    torch.manual_seed(0)
    model = trained_like(hp.create_model("resnet20", in_channels=1))
    space = hp.SearchSpace.from_model(model, (1, 1, 32, 32))
    with torch.no_grad():
        model.layer1[0].bn1.weight[3] = 0
        model.layer1[0].bn1.bias[3] = 0
    gi = next(i for i in space.prunable_index if "layer1.0.bn1" in space.all_groups[i].members)
    s = channel_importance(space, model, "taylor", data=_batches((1, 1, 32, 32)))[gi]
    assert s[3] == 0 and (np.delete(s, 3) > 0).mean() > 0.8  # (a channel ReLU always zeroes scores 0 too)
    with pytest.raises(hp.HwpruneError, match="taylor importance needs training batches"):
        channel_importance(space, model, "taylor")


def test_taylor_sums_over_the_batches_it_is_given_and_no_more():
    """``batches``: the order of the first k batches of a longer stream is the order of those k alone; a stream
    summed further is another estimate."""
    torch.manual_seed(0)
    model = trained_like(hp.create_model("resnet20", in_channels=1))
    space = hp.SearchSpace.from_model(model, (1, 1, 32, 32))
    stream = _batches((1, 1, 32, 32), n=4)
    one = channel_importance(space, model, "taylor", data=stream, batches=2)
    alone = channel_importance(space, model, "taylor", data=stream[:2])
    more = channel_importance(space, model, "taylor", data=stream, batches=4)
    assert all(np.array_equal(one[gi], alone[gi]) for gi in one)
    assert any(not np.allclose(more[gi], one[gi]) for gi in one)
    ordered = order_channels(space, model, data=stream, batches=2)  # what order_channels passes on
    assert all(np.array_equal(ordered.hwprune_importance["scores"][gi], np.sort(one[gi])[::-1]) for gi in one)


def test_unnormalized_taylor_keeps_one_scale_for_every_group_and_travels_with_the_order():
    """``normalize=False``: the loss-change estimates themselves (each layer's not divided by its mean), so groups
    whose layers matter more score more; the ordered model keeps them in its channel order (``saliency``)."""
    torch.manual_seed(0)
    model = trained_like(hp.create_model("resnet20", in_channels=1))
    space = hp.SearchSpace.from_model(model, (1, 1, 32, 32))
    stream = _batches((1, 1, 32, 32), n=2)
    norm = channel_importance(space, model, "taylor", data=stream)
    raw = channel_importance(space, model, "taylor", data=stream, normalize=False)
    # per group, the normalization divides by a scale of its own: raw / normalized is not one constant
    ratios = [raw[gi].sum() / norm[gi].sum() for gi in norm]
    assert all(np.all(raw[gi] >= 0) for gi in raw) and max(ratios) > 2 * min(ratios)
    ordered = order_channels(space, model, data=stream)
    for gi in norm:
        perm = np.argsort(-norm[gi], kind="stable")
        assert np.allclose(ordered.hwprune_importance["saliency"][gi], raw[gi][perm])
    assert "saliency" not in order_channels(space, model, metric="l1").hwprune_importance  # no estimate to keep
    with pytest.raises(hp.HwpruneError, match="normalize=False needs metric='taylor'"):
        channel_importance(space, model, "l1", normalize=False)
