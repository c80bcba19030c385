"""ResNet for 32x32 inputs (He et al., CVPR 2016, section 4.2): 6n+2 layers, widths 16/32/64.

Shortcuts that change shape use a 1x1 conv + BN projection (the paper's option B),
as pruning work on CIFAR ResNets usually does; the zero-padding option A has no
weights to prune and ties nothing.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ._layers import init_weights
from .registry import register_model
from .resnet import BasicBlock

__all__ = ["CifarResNet", "resnet20", "resnet56"]


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        widths = [max(1, int(round(w * width_mult))) for w in (16, 32, 64)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        cin = widths[0]
        stages = []
        for i, width in enumerate(widths):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(cin, width, 2 if (j == 0 and i > 0) else 1))
                cin = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (B, 16, 32, 32)
        x = self.layer3(self.layer2(self.layer1(x)))  # (B, 64, 8, 8)
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_model(input_shape=(3, 32, 32))
def resnet20(**kw) -> CifarResNet:
    return CifarResNet(20, **kw)


@register_model(input_shape=(3, 32, 32))
def resnet56(**kw) -> CifarResNet:
    return CifarResNet(56, **kw)
