"""A small ResNet-style encoder for 32x32 single-channel images (the embedded default).

Architecture (NHWC input, values in [0, 1]):
  stem    3x3 conv, 32 ch, BatchNorm, ReLU, 2x2 average pool   32x32 -> 16x16
  stage 1 BasicBlock x blocks[0], 32 ch, stride 1             16x16
  stage 2 BasicBlock x blocks[1], 64 ch, stride 2             8x8
  stage 3 BasicBlock x blocks[2], 128 ch, stride 2            4x4
  global average pool -> representation (N, 128)

Every BasicBlock ends with a ReLU, so, as in the paper's ResNets, the representation is
non-negative (this is what makes `targets.foil_size(..., nonnegative=True)` apply).
Why the stem pools: the digits are 8x8 scans upsampled to 32x32, so a full-resolution stage
adds no information, and on XLA CPU its conv gradients made training about 5x slower. Average
pooling (here and in the stride-2 shortcuts, as in ResNet-D) instead of strided 1x1 convs
keeps gradient attributions free of the every-other-pixel grid a strided 1x1 conv leaves.
`SimCLRNet` adds the SimCLR projection MLP used only during self-supervised training.

`cocoa_jax.models.load("digits")` restores the encoder trained by `cocoa-jax train-digits`,
shipped inside the package as an orbax checkpoint in `cocoa_jax/weights/digits_simclr/`
(`WEIGHTS_DIR`). This module only defines the networks; it does not import the registry.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

INPUT_SHAPE = (32, 32, 1)
DEFAULT_WIDTHS = (32, 64, 128)
DEFAULT_BLOCKS = (1, 1, 1)
DEFAULT_STRIDES = (1, 2, 2)
STEM_WIDTH = 32
PROJECTION_DIMS = (128, 64)  # SimCLR head: hidden width, output width

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "weights", "digits_simclr")


def _norm(train: bool, **kw) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, **kw)


class BasicBlock(nn.Module):
    """Two 3x3 convs with BatchNorm and an identity (or 1x1 projection) shortcut; ReLU out."""

    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = functools.partial(nn.Conv, use_bias=False, padding="SAME")
        y = conv(self.features, (3, 3), strides=self.strides)(x)
        y = nn.relu(_norm(train)(y))
        y = conv(self.features, (3, 3))(y)
        # Zero-init the last BN scale: each block starts as the identity (stabler early training).
        y = _norm(train, scale_init=nn.initializers.zeros)(y)
        shortcut = x
        if self.strides != 1:  # ResNet-D: pool, then 1x1 conv (no pixels skipped)
            shortcut = nn.avg_pool(shortcut, (self.strides, self.strides), (self.strides, self.strides),
                                   padding="SAME")
        if shortcut.shape[-1] != self.features or self.strides != 1:
            shortcut = conv(self.features, (1, 1))(shortcut)
            shortcut = _norm(train)(shortcut)
        return nn.relu(y + shortcut)


class SmallResNet(nn.Module):
    """Encoder: (N, 32, 32, 1) images -> (N, widths[-1]) non-negative representations."""

    widths: Sequence[int] = DEFAULT_WIDTHS
    blocks: Sequence[int] = DEFAULT_BLOCKS
    strides: Sequence[int] = DEFAULT_STRIDES
    stem_width: int = STEM_WIDTH
    stem_pool: int = 2  # average-pool window/stride after the stem (1: none)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = nn.Conv(self.stem_width, (3, 3), padding="SAME", use_bias=False)(x)
        x = nn.relu(_norm(train)(x))
        if self.stem_pool > 1:
            x = nn.avg_pool(x, (self.stem_pool, self.stem_pool), (self.stem_pool, self.stem_pool))
        for width, n_blocks, stride in zip(self.widths, self.blocks, self.strides):
            for b in range(n_blocks):
                x = BasicBlock(width, stride if b == 0 else 1)(x, train)
        return jnp.mean(x, axis=(1, 2))  # GAP of ReLU outputs: >= 0

    @property
    def representation_dim(self) -> int:
        return int(self.widths[-1])


def projection_mlp(h: jax.Array, dims: Sequence[int]) -> jax.Array:
    """SimCLR's projection head, (N, D) -> (N, dims[-1]): Dense layers with ReLU between them. Call
    it inside a compact method: its layers are that module's (named Dense_0, Dense_1, ...)."""
    z = h
    for i, d in enumerate(dims):
        z = nn.Dense(d)(z)
        if i < len(dims) - 1:
            z = nn.relu(z)
    return z


class SimCLRNet(nn.Module):
    """Encoder + projection MLP. Returns (representation (N, D), projection (N, P))."""

    encoder: SmallResNet = dataclasses.field(default_factory=SmallResNet)
    projection_dims: Sequence[int] = PROJECTION_DIMS

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        h = self.encoder(x, train)
        return h, projection_mlp(h, self.projection_dims)


def encode_fn_for(module: nn.Module) -> Callable[[Any, jax.Array], jax.Array]:
    """Pure eval-mode encoder `encode_fn(variables, x) -> (N, D)` for x of shape (N, H, W, C).

    `variables` is `{"params": ..., "batch_stats": ...}`; passing it as an argument (not
    closing over it) lets callers `jax.jit(encode_fn)` without baking weights in as constants.
    """

    def encode_fn(variables, x):
        return module.apply(variables, x, train=False)

    return encode_fn


def init_variables(module: nn.Module, key: jax.Array, input_shape=INPUT_SHAPE):
    """Fresh variables of `module` for inputs of shape (N, *input_shape)."""
    return module.init(key, jnp.zeros((1, *input_shape), jnp.float32), train=False)


def save_encoder(variables, directory: str) -> str:
    """Write encoder variables (`params`, `batch_stats`) as an orbax checkpoint; returns its path.

    An existing checkpoint at `directory` is replaced (callers decide whether that is allowed).
    The checkpoint is written to a temporary sibling and moved into place, so an interrupted
    save leaves the previous checkpoint intact.
    """
    import orbax.checkpoint as ocp

    from cocoa_jax.files import atomic_directory

    directory = os.path.abspath(directory)
    os.makedirs(os.path.dirname(directory), exist_ok=True)
    tree = jax.tree_util.tree_map(jnp.asarray, {"params": variables["params"],
                                                "batch_stats": variables["batch_stats"]})
    with atomic_directory(directory) as tmp, ocp.StandardCheckpointer() as ckptr:
        ckptr.save(tmp, tree)
        ckptr.wait_until_finished()
    return directory
