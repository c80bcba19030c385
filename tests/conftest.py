import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import hwprune as hp
from hwprune.models import model_input_shape

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
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_(1, 0.5)
            m.bias.data.normal_(0, 0.5)
    return model.eval()
