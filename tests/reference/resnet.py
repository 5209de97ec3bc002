"""PyTorch reference ResNets with the state-dict key names of the real checkpoints.

* `TorchvisionResNet`: torchvision's layout (SimCLR resnet50-1x.pth, ResNet-18 classifier).
* `CifarResNet18`: the SimSiam CIFAR layout (3x3 stem, no max-pool, `shortcut` projections,
  `avg_pool2d(out, 4)`).
Both return the pooled representation; `.fc` is the head (or Identity).
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


def _conv(cin, cout, kernel, stride=1):
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)


class TvBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, width, stride):
        super().__init__()
        self.conv1, self.bn1 = _conv(cin, width, 3, stride), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = _conv(width, width, 3), nn.BatchNorm2d(width)
        self.downsample = None
        if stride != 1 or cin != width:
            self.downsample = nn.Sequential(_conv(cin, width, 1, stride), nn.BatchNorm2d(width))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class TvBottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, width, stride):
        super().__init__()
        cout = width * 4
        self.conv1, self.bn1 = _conv(cin, width, 1), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = _conv(width, width, 3, stride), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = _conv(width, cout, 1), nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(_conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class TorchvisionResNet(nn.Module):
    def __init__(self, block, stage_sizes, num_classes=None):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, n in enumerate(stage_sizes):
            blocks = []
            for b in range(n):
                blocks.append(block(cin, 64 * 2**i, 2 if (i > 0 and b == 0) else 1))
                cin = 64 * 2**i * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(cin, num_classes) if num_classes else nn.Identity()

    def forward(self, x, apply_head=False):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x) if apply_head else x


# The SimSiam CIFAR ResNet-18 and the randomiser live once (torch_models.py), also used by the
# protocol benchmark, which saves it as a checkpoint.
from tests.reference.torch_models import CifarBasicBlock, CifarResNet18, randomize_  # noqa: E402,F401


def resnet50(num_classes=1000):
    return TorchvisionResNet(TvBottleneck, (3, 4, 6, 3), num_classes)


def resnet18(num_classes=1000):
    return TorchvisionResNet(TvBasicBlock, (2, 2, 2, 2), num_classes)
