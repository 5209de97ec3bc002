"""Flax ResNets laid out like their PyTorch originals (NHWC inputs, inference-mode BatchNorm).

Three configurations are used by cocoa-jax:
  * SimCLR v1 ResNet-50 (1x): torchvision layout (7x7/2 stem, 3x3/2 max-pool, Bottleneck blocks
    [3, 4, 6, 3], stride on the 3x3 conv), representation = global average pool, 2048-d.
  * SimSiam CIFAR-10 ResNet-18: 3x3/1 stem, no max-pool, BasicBlocks [2, 2, 2, 2], 512-d.
  * torchvision ResNet-18 classifier: torchvision stem, BasicBlocks [2, 2, 2, 2], 512-d.

Submodule names mirror the torch state-dict keys (`layer1_0/conv1` <-> `layer1.0.conv1`,
`downsample_conv`/`downsample_bn` <-> `downsample.0`/`downsample.1`), which keeps the weight
converters in `ports/` a mechanical renaming.

All modules run BatchNorm with running statistics only (these are ports for explanation, not
training), so `variables = {"params": ..., "batch_stats": ...}` is a plain pytree of weights.

LRP mode (`lrp=True`, the architecture's "relevance" mode): the same forward, bit for bit, with
the backward of zennit's `EpsilonPlusFlat` composite and its ResNet canonizer
(`attribution_methods.lrp_conv_rules`): flat rule on the stem conv, z+ on every other conv with
its BatchNorm folded in, the `Norm` rule (epsilon 1e-6) on each residual sum and on the global
average pool, plain gradients through ReLU and max-pool. The input gradient is then relevance.
"""
from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cocoa_jax.attribution_methods import lrp_conv_rules as rules
from cocoa_jax.attribution_methods.lrp_rules import epsilon

BN_EPSILON = 1e-5  # torch.nn.BatchNorm2d default


def _conv(features: int, kernel: int, stride: int, name: Optional[str] = None) -> nn.Conv:
    """Bias-free conv with torch's symmetric `padding = kernel // 2`."""
    pad = kernel // 2
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((pad, pad), (pad, pad)), use_bias=False, name=name)


def _bn(name: Optional[str] = None) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name=name)


def _spec(kernel: int, stride: int) -> rules.ConvSpec:
    """The `_conv` of this kernel size and stride as `lrp_conv_rules` runs it."""
    pad = kernel // 2
    return rules.ConvSpec((stride, stride), ((pad, pad), (pad, pad)))


def _folded(conv: nn.Module, bn: nn.Module):
    """(kernel, bias) of `conv` followed by `bn` as one conv (both already called)."""
    stats, affine = bn.variables["batch_stats"], bn.variables["params"]
    return rules.fold_batch_norm(conv.variables["params"]["kernel"], affine["scale"], affine["bias"],
                                 stats["mean"], stats["var"], BN_EPSILON)


def _conv_bn(x: jax.Array, features: int, kernel: int, stride: int, conv_name: str, bn_name: str,
             lrp: bool) -> jax.Array:
    """BN(conv(x)); in LRP mode the same value with the z+ rule's backward (BN folded into the
    conv). Call inside a compact block (the submodules attach to the caller)."""
    conv, bn = _conv(features, kernel, stride, conv_name), _bn(bn_name)
    y = bn(conv(x))
    if not lrp:
        return y
    return rules.zplus(_spec(kernel, stride), rules.STABILIZER, y, x, *_folded(conv, bn))


def _residual(y: jax.Array, shortcut: jax.Array, lrp: bool) -> jax.Array:
    """y + shortcut; in LRP mode with zennit's `Norm` rule on the sum (its canonizer's `Sum`)."""
    total = y + shortcut
    return epsilon(total, rules.STABILIZER) if lrp else total


class BasicBlock(nn.Module):
    """Two 3x3 convs + shortcut (1x1 conv + BN when the shape changes); (N,H,W,Cin) -> (N,H/s,W/s,F)."""

    features: int
    stride: int = 1
    expansion: int = 1
    lrp: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.relu(_conv_bn(x, self.features, 3, self.stride, "conv1", "bn1", self.lrp))
        y = _conv_bn(y, self.features, 3, 1, "conv2", "bn2", self.lrp)
        return nn.relu(_residual(y, _shortcut(x, self.features, self.stride, self.lrp), self.lrp))


class Bottleneck(nn.Module):
    """torchvision (v1.5) bottleneck: 1x1 -> 3x3 (strided) -> 1x1 (x4); (N,H,W,Cin) -> (N,H/s,W/s,4F)."""

    features: int
    stride: int = 1
    expansion: int = 4
    lrp: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        out_features = self.features * self.expansion
        y = nn.relu(_conv_bn(x, self.features, 1, 1, "conv1", "bn1", self.lrp))
        y = nn.relu(_conv_bn(y, self.features, 3, self.stride, "conv2", "bn2", self.lrp))
        y = _conv_bn(y, out_features, 1, 1, "conv3", "bn3", self.lrp)
        return nn.relu(_residual(y, _shortcut(x, out_features, self.stride, self.lrp), self.lrp))


def _shortcut(x: jax.Array, out_features: int, stride: int, lrp: bool = False) -> jax.Array:
    """Identity, or a projection when the block changes resolution or width.

    Must be called inside a compact block: the submodules attach to the calling module.
    """
    if stride == 1 and x.shape[-1] == out_features:
        return x
    return _conv_bn(x, out_features, 1, stride, "downsample_conv", "downsample_bn", lrp)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    """ResNet encoder with an optional linear head.

    Attributes:
      block: "basic" or "bottleneck".
      stage_sizes: blocks per stage, e.g. (2, 2, 2, 2).
      stem: "imagenet" (7x7/2 conv + 3x3/2 max-pool) or "cifar" (3x3/1 conv, no pool).
      num_classes: width of the linear head `fc`, or None for an encoder without head.
      lrp: LRP mode (the module docstring): same forward, the EpsilonPlusFlat rules' backward.

    `__call__(x)`: (N, H, W, 3) float32 -> representation (N, D) after global average pooling.
    `head(reps)`: (N, D) -> logits (N, num_classes).
    """

    block: str = "basic"
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    stem: str = "imagenet"
    num_classes: Optional[int] = None
    base_width: int = 64
    lrp: bool = False  # LRP mode: the rules' backward (module docstring), the same forward

    def setup(self):
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {self.block!r}")
        if self.stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {self.stem!r}")
        kernel, stride = (7, 2) if self.stem == "imagenet" else (3, 1)
        self.conv1 = _conv(self.base_width, kernel, stride)
        self.bn1 = _bn()
        block_cls = BLOCKS[self.block]
        block_names = []
        for i, n_blocks in enumerate(self.stage_sizes):
            width = self.base_width * 2**i
            for b in range(n_blocks):
                # Attribute names become variable names: `layer2_0` <-> torch `layer2.0`.
                name = f"layer{i + 1}_{b}"
                stride = 1 if (i == 0 or b > 0) else 2
                setattr(self, name, block_cls(width, stride, lrp=self.lrp))
                block_names.append(name)
        self._block_names = tuple(block_names)
        if self.num_classes is not None:
            self.fc = nn.Dense(self.num_classes)

    @property
    def representation_dim(self) -> int:
        expansion = BLOCKS[self.block].expansion
        return self.base_width * 2 ** (len(self.stage_sizes) - 1) * expansion

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.bn1(self.conv1(x))
        if self.lrp:
            kernel, stride = self.conv1.kernel_size[0], self.conv1.strides[0]
            y = rules.flat(_spec(kernel, stride), rules.STABILIZER, y, x, self.conv1.variables["params"]["kernel"])
        x = nn.relu(y)
        if self.stem == "imagenet":
            # torch MaxPool2d(3, 2, padding=1) pads with -inf, as does flax's max_pool.
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for name in self._block_names:
            x = getattr(self, name)(x)
        pooled = jnp.mean(x, axis=(1, 2))
        return epsilon(pooled, rules.STABILIZER) if self.lrp else pooled

    def head(self, reps: jax.Array) -> jax.Array:
        if self.num_classes is None:
            raise ValueError("this ResNet has no head (num_classes is None)")
        return self.fc(reps)

    def init_all(self, x: jax.Array) -> jax.Array:
        """Touch every submodule (encoder and head) so `init` creates all variables."""
        reps = self(x)
        return self.head(reps) if self.num_classes is not None else reps
