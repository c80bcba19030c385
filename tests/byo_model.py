"""A user's own CNN, outside the zoo, for the bring-your-own-model tests (imported by path, not as a package)."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class UserNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(16)
        self.c2 = nn.Conv2d(16, 24, 3, stride=2, padding=1, bias=False)
        self.b2 = nn.BatchNorm2d(24)
        self.c3 = nn.Conv2d(24, 24, 3, padding=1, bias=False)
        self.b3 = nn.BatchNorm2d(24)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        x = F.relu(self.b1(self.c1(x)))
        y = F.relu(self.b2(self.c2(x)))
        y = F.relu(self.b3(self.c3(y)) + y)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


def build():
    return UserNet()


def not_a_model():
    return "a string"


def broken():
    raise RuntimeError("no GPU here")
