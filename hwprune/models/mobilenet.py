"""MobileNet V1 (Howard et al., arXiv 1704.04861) and V2 (Sandler et al., CVPR 2018, arXiv 1801.04381).

``mobilenet_v2_cifar`` is V2 for 32x32 inputs: stride 1 in the stem and in the
second stage, so the final feature map is 4x4 as in common CIFAR ports.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ._layers import ConvBNAct, init_weights, make_divisible
from .registry import register_model

__all__ = ["MobileNetV1", "MobileNetV2", "InvertedResidual", "mobilenet_v1", "mobilenet_v2",
           "mobilenet_v2_cifar"]

# (output channels, stride) of each depthwise-separable block
_V1_CFG = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
           (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]
# (expansion t, output channels c, repeats n, first stride s), the paper's table 2
_V2_CFG = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
           (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class MobileNetV1(nn.Module):
    def __init__(self, num_classes: int = 1000, in_channels: int = 3, width_mult: float = 1.0):
        super().__init__()
        c = max(1, int(32 * width_mult))
        layers: list[nn.Module] = [ConvBNAct(in_channels, c, 3, 2)]
        for cout, stride in _V1_CFG:
            cout = max(1, int(cout * width_mult))
            layers += [ConvBNAct(c, c, 3, stride, groups=c), ConvBNAct(c, cout, 1)]
            c = cout
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNAct(cin, hidden, 1, act=nn.ReLU6))
        layers += [ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                   ConvBNAct(hidden, cout, 1, act=None)]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, in_channels: int = 3, width_mult: float = 1.0,
                 stem_stride: int = 2, strides: list[int] | None = None, dropout: float = 0.2):
        super().__init__()
        c = make_divisible(32 * width_mult)
        last = make_divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [ConvBNAct(in_channels, c, 3, stem_stride, act=nn.ReLU6)]
        for i, (t, cout, n, s) in enumerate(_V2_CFG):
            cout = make_divisible(cout * width_mult)
            s = strides[i] if strides is not None else s
            for j in range(n):
                layers.append(InvertedResidual(c, cout, s if j == 0 else 1, t))
                c = cout
        layers.append(ConvBNAct(c, last, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@register_model(input_shape=(3, 224, 224))
def mobilenet_v1(**kw) -> MobileNetV1:
    return MobileNetV1(**kw)


@register_model(input_shape=(3, 224, 224))
def mobilenet_v2(**kw) -> MobileNetV2:
    return MobileNetV2(**kw)


@register_model(input_shape=(3, 32, 32))
def mobilenet_v2_cifar(**kw) -> MobileNetV2:
    kw.setdefault("num_classes", 10)
    return MobileNetV2(stem_stride=1, strides=[1, 1, 2, 2, 1, 2, 1], **kw)
