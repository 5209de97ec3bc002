"""Benchmark models, random weights, in Flax (cocoa-jax side) and PyTorch (reference side).

The Flax encoders are the library's ports (`cocoa_jax.models.resnet`, `cocoa_jax.models.clip`,
`cocoa_jax.models.vit`). Two kinds of pairs:

* written for this suite: CIFAR ResNet-18 (3x3 stem, no max-pool), torchvision-layout ResNet-50
  and the CLIP ViT-B/32 image tower in PyTorch below, with the architectures (layer shapes,
  FLOPs) of the Flax ports; each side has its own random weights (only speed is compared);
* converted (`ModelSpec.paired`): DINOv2 ViT-S/14 (facebookresearch's `dinov2` package,
  `vit_small`) and the CLIP ViT-B/16 image tower (openai/CLIP's `model.py` as shipped in
  clip-anytorch) built in PyTorch with random weights, then converted by the project's own
  converters (`cocoa_jax_ports.vit`, `cocoa_jax_ports.clip`): both sides run the SAME weights.

BatchNorm runs in inference mode everywhere.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import warnings
from typing import Any, Callable, Optional

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
    paired: Optional[Callable[[int], "Paired"]] = None  # seed -> both sides with the same weights


@dataclasses.dataclass(frozen=True)
class Paired:
    """One random-weight model on both sides: the PyTorch model and its conversion."""

    torch_model: Any  # torch.nn.Module, NCHW -> (N, D)
    flax_module: Any  # flax module, NHWC -> (N, D)
    variables: Any  # the converted Flax variables of `flax_module`


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
    """(module, variables) with random weights; BatchNorm statistics randomised too. A paired
    spec's variables are its PyTorch model's weights, converted."""
    if spec.paired is not None:
        pair = spec.paired(seed)
        return pair.flax_module, jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), pair.variables)
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
    model = (spec.paired(seed).torch_model if spec.paired is not None else spec.torch_module()).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(1.0, 1.2)
    for p in model.parameters():
        p.requires_grad_(False)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


# ----------------------------------------------------------------------------- converted pairs


def _clip_anytorch_model():
    """clip-anytorch's `model.py` (openai/CLIP's model code)."""
    from tests.reference.torch_models import clip_anytorch_file
    module = clip_anytorch_file("model")
    if module is None:
        raise ImportError("clip-anytorch is not installed (pip install --no-deps clip-anytorch)")
    return module


@functools.lru_cache(maxsize=None)
def _dinov2_vits14(seed: int) -> Paired:
    """DINOv2 ViT-S/14 at 224 px (16x16 patches, stored grid 16: no interpolation), LayerScale 1.0."""
    torch = _torch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "xFormers is not available"
        from dinov2.models.vision_transformer import vit_small
    from cocoa_jax.models.vit import ViT
    from cocoa_jax_ports import vit as port

    torch.manual_seed(seed)
    model = vit_small(patch_size=14, img_size=224, init_values=1.0, block_chunks=0).eval()
    canonical, stored_key, _ = port.canonical_state_dict(model.state_dict())
    config, variables = port.convert_state_dict("dinov2_vit", canonical, what="benchmark DINOv2 ViT-S/14",
                                                stored_key=stored_key)
    return Paired(model, ViT(config), variables)


@functools.lru_cache(maxsize=None)
def _clip_vit_b16(seed: int) -> Paired:
    """openai/CLIP ViT-B/16 (image tower: 224 px, width 768, 12 layers, 512-d); the converter reads
    the whole CLIP state dict, the benchmark keeps the image tower on both sides."""
    torch = _torch()
    from cocoa_jax.models.clip import ClipConfig, VisionTransformer
    from cocoa_jax_ports import clip as port

    torch.manual_seed(seed)
    full = _clip_anytorch_model().CLIP(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                                       vision_patch_size=16, context_length=77, vocab_size=49408,
                                       transformer_width=512, transformer_heads=8, transformer_layers=12)
    config, variables = port.convert_state_dict(full.state_dict(), what="benchmark CLIP ViT-B/16", arch="clip_vit")
    module = VisionTransformer(ClipConfig(**config))
    return Paired(full.visual.eval(), module, {"params": variables["params"]["visual"]})


def _paired_spec(name: str, rep_dim: int, build: Callable[[int], Paired]) -> ModelSpec:
    return ModelSpec(name, 224, rep_dim, lambda: build(0).flax_module, lambda: build(0).torch_model, False,
                     paired=build)


SPECS = {
    "resnet18_cifar": ModelSpec("resnet18_cifar", 32, 512, _flax_resnet18,
                                lambda: _torch_resnet("resnet18_cifar"), True),
    "resnet50": ModelSpec("resnet50", 224, 2048, _flax_resnet50, lambda: _torch_resnet("resnet50"), True),
    "clip_vit_b32": ModelSpec("clip_vit_b32", 224, 512, _flax_vit_b32, _torch_vit_b32, False),
    "dinov2_vits14": _paired_spec("dinov2_vits14", 384, _dinov2_vits14),
    "clip_vit_b16": _paired_spec("clip_vit_b16", 512, _clip_vit_b16),
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
