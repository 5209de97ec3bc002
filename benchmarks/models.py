"""Benchmark models, random weights, in Flax (cocoa-jax side) and PyTorch (reference side).

The Flax encoders are the library's ports (`cocoa_jax.models.resnet`, `cocoa_jax.models.clip`).
The PyTorch encoders below are written for this suite with the same architectures (layer
shapes, FLOPs): CIFAR ResNet-18 (3x3 stem, no max-pool), torchvision-layout ResNet-50 and
the CLIP ViT-B/32 image tower. Weights are random on both sides; only speed is compared.
BatchNorm runs in inference mode everywhere.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    image_size: int
    rep_dim: int
    flax_module: Callable  # () -> flax module with __call__(x NHWC) -> (N, D)
    torch_module: Callable  # () -> torch.nn.Module (NCHW) -> (N, D)
    has_layout_choice: bool  # channels-last matters (convnets)


def _flax_resnet18():
    from cocoa_jax.models.resnet import ResNet
    return ResNet(block="basic", stage_sizes=(2, 2, 2, 2), stem="cifar")


def _flax_resnet50():
    from cocoa_jax.models.resnet import ResNet
    return ResNet(block="bottleneck", stage_sizes=(3, 4, 6, 3), stem="imagenet")


def _flax_vit_b32():
    from cocoa_jax.models.clip import ClipConfig, VisionTransformer
    return VisionTransformer(ClipConfig())


def init_flax(spec: ModelSpec, seed: int = 0, dtype=jnp.float32):
    """(module, variables) with random weights; BatchNorm statistics randomised too."""
    module = spec.flax_module()
    x = jnp.zeros((1, spec.image_size, spec.image_size, 3), jnp.float32)
    variables = jax.jit(module.init)(jax.random.key(seed), x)
    if "batch_stats" in variables:  # realistic running statistics (mean ~ 0, var ~ 1)
        rng = np.random.default_rng(seed)

        def stat(path, leaf):
            is_var = "var" in jax.tree_util.keystr(path)
            values = rng.uniform(1.0, 1.2, leaf.shape) if is_var else rng.normal(0.0, 0.1, leaf.shape)
            return jnp.asarray(values, leaf.dtype)

        variables = dict(variables, batch_stats=jax.tree_util.tree_map_with_path(stat, variables["batch_stats"]))
    return module, jax.tree_util.tree_map(lambda a: a.astype(dtype), variables)


# ----------------------------------------------------------------------------- torch


def _torch():
    import torch  # imported lazily: `import cocoa_jax` must never import torch
    return torch


def _torch_resnet(kind: str):
    torch = _torch()
    nn = torch.nn

    class Basic(nn.Module):
        expansion = 1

        def __init__(self, cin, width, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.down = None
            if stride != 1 or cin != width:
                self.down = nn.Sequential(nn.Conv2d(cin, width, 1, stride, bias=False), nn.BatchNorm2d(width))

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    class Bottle(nn.Module):
        expansion = 4

        def __init__(self, cin, width, stride):
            super().__init__()
            out = width * 4
            self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, out, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(out)
            self.down = None
            if stride != 1 or cin != out:
                self.down = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = torch.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            block, sizes = (Basic, (2, 2, 2, 2)) if kind == "resnet18_cifar" else (Bottle, (3, 4, 6, 3))
            if kind == "resnet18_cifar":
                self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
            else:
                self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                          nn.MaxPool2d(3, 2, 1))
            layers, cin = [], 64
            for i, n in enumerate(sizes):
                for b in range(n):
                    layers.append(block(cin, 64 * 2 ** i, 2 if (i > 0 and b == 0) else 1))
                    cin = 64 * 2 ** i * block.expansion
            self.layers = nn.Sequential(*layers)

        def forward(self, x):
            return torch.mean(self.layers(self.stem(x)), dim=(2, 3))

    return Net()


def _torch_vit_b32():
    torch = _torch()
    nn = torch.nn
    width, layers, heads, patch, res, embed = 768, 12, 12, 32, 224, 512

    class QuickGELU(nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(1.702 * x)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(width)
            self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
            self.ln_2 = nn.LayerNorm(width)
            self.mlp = nn.Sequential(nn.Linear(width, 4 * width), QuickGELU(), nn.Linear(4 * width, width))

        def forward(self, x):
            y = self.ln_1(x)
            x = x + self.attn(y, y, y, need_weights=False)[0]
            return x + self.mlp(self.ln_2(x))

    class ViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, width, patch, patch, bias=False)
            self.cls = nn.Parameter(torch.randn(width) * 0.02)
            self.pos = nn.Parameter(torch.randn((res // patch) ** 2 + 1, width) * 0.01)
            self.ln_pre = nn.LayerNorm(width)
            self.blocks = nn.Sequential(*[Block() for _ in range(layers)])
            self.ln_post = nn.LayerNorm(width)
            self.proj = nn.Parameter(torch.randn(width, embed) * 0.02)

        def forward(self, x):
            x = self.conv1(x).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls.expand(x.shape[0], 1, -1), x], dim=1) + self.pos
            x = self.blocks(self.ln_pre(x))
            return self.ln_post(x[:, 0]) @ self.proj

    return ViT()


def init_torch(spec: ModelSpec, seed: int = 0, channels_last: bool = False):
    torch = _torch()
    torch.manual_seed(seed)
    model = spec.torch_module().eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(1.0, 1.2)
    for p in model.parameters():
        p.requires_grad_(False)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


SPECS = {
    "resnet18_cifar": ModelSpec("resnet18_cifar", 32, 512, _flax_resnet18,
                                lambda: _torch_resnet("resnet18_cifar"), True),
    "resnet50": ModelSpec("resnet50", 224, 2048, _flax_resnet50, lambda: _torch_resnet("resnet50"), True),
    "clip_vit_b32": ModelSpec("clip_vit_b32", 224, 512, _flax_vit_b32, _torch_vit_b32, False),
}


def tiny_spec() -> ModelSpec:
    """A very small CIFAR-style ResNet for the smoke test (`--quick`)."""
    def flax_tiny():
        from cocoa_jax.models.resnet import ResNet
        return ResNet(block="basic", stage_sizes=(1, 1), stem="cifar", base_width=8)

    def torch_tiny():
        torch = _torch()
        nn = torch.nn
        return nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.Conv2d(8, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten())

    return ModelSpec("tiny_resnet", 16, 16, flax_tiny, torch_tiny, True)
