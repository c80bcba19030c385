import os

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import hwprune as hp
from hwprune.models import model_input_shape

# The suite's latency figures are not judged, only their shapes and invariants: measure at once instead of waiting up
# to 10 s for a quiet machine before each measurement (a busy CI box spent minutes so); the quiet-run filter still
# judges every run, and the tests of the waiting itself give their own waits
os.environ.setdefault("HWPRUNE_MAX_WAIT_S", "0.2")

# One intra-op thread: on a 2-core machine shared with other jobs, two OpenMP threads spin against
# them and a training step gets ~16x slower (7.7 s vs 0.47 s measured); results are the same.
torch.set_num_threads(1)

# ImageNet models are traced at 64x64 in tests: every rule under test is size-independent.
SMALL_INPUT = {name: (1, 3, 64, 64) if model_input_shape(name)[1] >= 224 else (1,) + model_input_shape(name)
               for name in hp.list_models()}


def small_input(name: str) -> tuple[int, ...]:
    return SMALL_INPUT[name]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


class ToyNet(nn.Module):
    """A user-defined CNN with a concat, a depthwise conv on the concat, a residual add and a flatten."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(16)
        self.branch_a = nn.Conv2d(16, 8, 1)
        self.branch_b = nn.Conv2d(16, 12, 3, padding=1)
        self.cat_bn = nn.BatchNorm2d(20)
        self.dw = nn.Conv2d(20, 20, 3, padding=1, groups=20, bias=False)
        self.pw = nn.Conv2d(20, 16, 1, bias=False)
        self.pw_bn = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16 * 4 * 4, num_classes)

    def forward(self, x):
        s = F.relu(self.stem_bn(self.stem(x)))  # (B, 16, H, W)
        c = torch.cat([self.branch_a(s), self.branch_b(s)], dim=1)  # (B, 20, H, W)
        y = self.pw_bn(self.pw(self.dw(F.relu(self.cat_bn(c)))))
        y = F.relu(y + s)  # residual: ties pw's output to the stem
        y = F.adaptive_avg_pool2d(y, 4)  # (B, 16, 4, 4)
        return self.fc(torch.flatten(y, 1))  # fc sees 16 channels x 16 positions


@pytest.fixture
def toy():
    torch.manual_seed(0)
    return ToyNet().eval()


def trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` in eval mode with random BN statistics and affine terms, as a trained network has (so that a
    permutation or a copy that misses BN shows)."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.LayerNorm, nn.GroupNorm)) and m.weight is not None:  # scale and shift, no statistics
            m.weight.data.normal_(1, 0.5)
            m.bias.data.normal_(0, 0.5)
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_(1, 0.5)
            m.bias.data.normal_(0, 0.5)
    return model.eval()


def hook_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Reference FLOPs: multiply-accumulates counted by forward hooks on the real modules."""
    total = 0

    def hook(m, inputs, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1]
            total += out[0].numel() * (m.in_channels // m.groups) * k
        elif isinstance(m, nn.Linear):  # at every position of an n-d input
            total += out[0].numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total


def check_parity(model: nn.Module, space, x: torch.Tensor, samples: int = 8, seed: int = 0):
    """What every channel rule must keep: the full network is the model (1e-5), every encoding's network runs and
    costs exactly the space's FLOPs (hook-counted MACs) and params, the importance order computes what the model
    does, and the PruningNet is the model at full width and its own materialized network elsewhere. Returns the
    ordered model and the PruningNet (eval mode) for further checks."""
    from hwprune.core.importance import order_channels
    from hwprune.supernet.pruningnet import PruningNet

    want = model(x)
    assert (space.materialize(space.full(), source=model).eval()(x) - want).abs().max().item() <= 1e-5
    rng = np.random.default_rng(seed)
    for enc in [space.uniform(0.5), space.narrowest(), *(space.sample(rng) for _ in range(samples))]:
        pruned = space.materialize(enc, source=model).eval()
        assert pruned(x).shape == want.shape
        assert hook_macs(pruned, x[:1]) == space.flops(enc)
        assert sum(p.numel() for p in pruned.parameters()) == space.params(enc)
    ordered = order_channels(space, model)
    assert (ordered(x) - want).abs().max().item() <= 1e-4
    pnet = PruningNet(space, source=ordered).eval()
    with torch.no_grad():
        assert (pnet(x, space.full()) - want).abs().max().item() <= 1e-4
        for enc in [space.narrowest(), space.sample(rng)]:
            assert (pnet.materialize(enc).eval()(x) - pnet(x, enc)).abs().max().item() <= 1e-5
    return ordered, pnet
