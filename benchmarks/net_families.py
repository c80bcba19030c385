"""Networks the latency predictor was never tuned on, generated from a seed (``latency_fidelity.py --families``).

Three families, each drawn with its own depth, kernel sizes, strides, widths and input resolution:

* ``plain``: a VGG-style stack of conv-BN-ReLU layers;
* ``residual``: basic residual blocks (two 3x3 convs and an identity or 1x1 projection shortcut);
* ``dwse``: depthwise-separable blocks with squeeze-excitation, a residual add where the shape allows, and a
  two-branch block whose outputs are concatenated.

``make(family, seed)`` returns ``(model, input_shape, description)``; the same seed gives the same network.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

FAMILIES = ("plain", "residual", "dwse")


def _cbr(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class _Head(nn.Module):
    def __init__(self, c: int, classes: int = 10):
        super().__init__()
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(c, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(x), 1))


class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = _cbr(cin, cout, 3, stride)
        self.c2 = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                      if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        return torch.relu(self.c2(self.c1(x)) + self.short(x))


class _SE(nn.Module):
    def __init__(self, c: int, r: int = 4):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, max(8, c // r), 1), nn.Conv2d(max(8, c // r), c, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))


class _DwSE(nn.Module):
    """1x1 expand, kxk depthwise, squeeze-excitation, 1x1 project; residual where the shape allows."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.body = nn.Sequential(_cbr(cin, mid, 1), _cbr(mid, mid, k, stride, groups=mid), _SE(mid),
                                  nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class _TwoBranch(nn.Module):
    """A 1x1 branch and a 3x3 branch, concatenated."""

    def __init__(self, cin: int, c1: int, c2: int):
        super().__init__()
        self.a, self.b = _cbr(cin, c1, 1), _cbr(cin, c2, 3)

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], 1)


def make(family: str, seed: int) -> tuple[nn.Module, tuple[int, int, int, int], str]:
    """The network of ``family`` drawn from ``seed``, its input shape (batch 1, 3 channels) and a one-line
    description."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    rng = np.random.default_rng((FAMILIES.index(family), seed))
    res = int(rng.choice([24, 32, 48, 64]))
    pick = lambda xs: int(rng.choice(xs))  # noqa: E731
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    if family == "plain":
        depth, c, cin, spatial = pick([4, 5, 6, 7, 8]), pick([16, 24, 32]), 3, res
        parts = []
        for i in range(depth):
            stride = 2 if i and spatial > 8 and rng.random() < 0.35 else 1
            k = pick([1, 3, 3, 5]) if i else 3
            cout = min(160, c * (2 if stride == 2 else 1))
            layers.append(_cbr(cin, cout, k, stride))
            parts.append(f"{k}x{k}/{stride} {cout}")
            cin, c, spatial = cout, cout, spatial // stride
        desc = " > ".join(parts)
    elif family == "residual":
        c, stages = pick([16, 24, 32]), pick([2, 3])
        layers.append(_cbr(3, c))
        cin, parts = c, []
        for s in range(stages):
            cout = c * 2 ** s
            for b in range(pick([1, 2, 3])):
                stride = 2 if s and not b else 1
                layers.append(_Basic(cin, cout, stride))
                cin = cout
            parts.append(f"{cout}x{b + 1}")
        desc = "stem " + str(c) + ", blocks " + " ".join(parts)
    else:
        c = pick([16, 24, 32])
        layers.append(_cbr(3, c, 3, 2 if res >= 48 else 1))
        cin, parts = c, []
        for i in range(pick([3, 4, 5])):
            stride = 2 if i and rng.random() < 0.4 else 1
            cout = cin + (pick([8, 16]) if stride == 2 or rng.random() < 0.3 else 0)
            k, e = pick([3, 5]), pick([2, 3, 4])
            layers.append(_DwSE(cin, cout, k, stride, e))
            parts.append(f"dw{k}/{stride} e{e} {cout}")
            cin = cout
        c1, c2 = pick([16, 24, 32]), pick([16, 24, 32])
        layers.append(_TwoBranch(cin, c1, c2))
        cin = c1 + c2
        parts.append(f"cat {c1}+{c2}")
        desc = " > ".join(parts)
    model = nn.Sequential(*layers, _Head(cin)).eval()
    return model, (1, 3, res, res), f"{family} {res}x{res}: {desc}"
