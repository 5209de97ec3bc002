"""The SimSiam CIFAR ResNet-18 in PyTorch, with the state-dict key names of the real checkpoints.

The layout `cocoa-jax convert simsiam_cifar_resnet18` reads (3x3 stem, no max-pool, `shortcut`
projections, `avg_pool2d(out, 4)`, head `fc`): `benchmarks.suites.protocol` saves a random one in the
official linear-eval checkpoint format and runs the official pipeline on it; the ResNet tests
compare the Flax port with it. (`benchmarks.harness.models` has torch ResNets with other key
names, for timing only.) Imports torch: import this module lazily.
"""
from __future__ import annotations

import importlib.util
import os

import torch
from torch import nn
import torch.nn.functional as F


def _conv(cin, cout, kernel, stride=1):
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)



class CifarBasicBlock(nn.Module):
    def __init__(self, cin, width, stride):
        super().__init__()
        self.conv1, self.bn1 = _conv(cin, width, 3, stride), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = _conv(width, width, 3), nn.BatchNorm2d(width)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != width:
            self.shortcut = nn.Sequential(_conv(cin, width, 1, stride), nn.BatchNorm2d(width))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet18(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1, self.bn1 = _conv(3, 64, 3), nn.BatchNorm2d(64)
        cin = 64
        for i in range(4):
            width = 64 * 2**i
            self.add_module(f"layer{i + 1}", nn.Sequential(
                CifarBasicBlock(cin, width, 1 if i == 0 else 2), CifarBasicBlock(width, width, 1)))
            cin = width
        self.fc = nn.Linear(512, num_classes) if num_classes else nn.Identity()

    def forward(self, x, apply_head=False):
        out = F.relu(self.bn1(self.conv1(x)))
        for i in range(1, 5):
            out = getattr(self, f"layer{i}")(out)
        out = F.avg_pool2d(out, 4).flatten(1)
        return self.fc(out) if apply_head else out


def randomize_(model: nn.Module, seed: int) -> nn.Module:
    """Non-default random BatchNorm affine params AND running stats (so a converter that drops
    or swaps them fails), random Linear biases; eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(0.5 + torch.rand(n, generator=gen))
                module.bias.copy_(0.1 * torch.randn(n, generator=gen))
                module.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                module.num_batches_tracked.fill_(1234)
            elif isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
    return model.eval()


def clip_anytorch_file(name: str):
    """Module `name` ("model", "simple_tokenizer") of clip-anytorch (openai/CLIP's code), loaded by
    path: the package's `__init__` imports torchvision and pkg_resources, which these files do not
    need. None when clip-anytorch is not installed."""
    spec = importlib.util.find_spec("clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], f"{name}.py")
    if not os.path.isfile(path):
        return None
    module_spec = importlib.util.spec_from_file_location(f"_clip_anytorch_{name}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module
