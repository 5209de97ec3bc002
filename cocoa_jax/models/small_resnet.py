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
`SimCLRNet` adds the SimCLR projection MLP used only during self-supervised training (it is not
in the encode path: the representation is the pooled 128-d feature, no dense layer).

LRP mode (`lrp=True`, the digits model's "relevance" mode, method `lrp`): the same forward, bit
for bit, with the backward of zennit's `EpsilonPlusFlat` composite (rules from
`attribution_methods.lrp_conv_rules`, shared with `resnet.ResNet`): flat rule on the stem conv;
z+ on every other conv with its BatchNorm folded in (block convs and the 1x1 shortcut convs);
the `Norm` rule (epsilon 1e-6) on the stem's average pool, the shortcut's average pool, each
residual sum and the global average pool; plain gradients (zennit's `Pass`) through ReLU. The
input gradient is then the relevance.

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

from cocoa_jax.attribution_methods import lrp_conv_rules as rules
from cocoa_jax.attribution_methods.lrp_rules import epsilon

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


def _check_mode(lrp: bool, train: bool) -> None:
    if lrp and train:
        raise ValueError("train must be False in LRP mode (lrp=True is for input relevance, not training)")


def _conv_bn(conv: nn.Conv, bn: nn.BatchNorm, x: jax.Array, lrp: bool, first: bool = False) -> jax.Array:
    """bn(conv(x)) (both unbound submodules of the caller); in LRP mode the same value with the
    backward of the z+ rule (BatchNorm folded into the conv), or of the flat rule for the `first`
    layer. x (N, H, W, Cin) -> (N, H', W', Cout)."""
    y = bn(conv(x))
    if not lrp:
        return y
    kernel = conv.variables["params"]["kernel"]
    # flax's "SAME" as explicit pads (stride 2 on an even size pads (0, 1), unlike torch).
    strides = (conv.strides,) * 2 if isinstance(conv.strides, int) else tuple(conv.strides or (1, 1))
    pads = jax.lax.padtype_to_pads(x.shape[1:3], kernel.shape[:2], strides, conv.padding)
    spec = rules.ConvSpec(strides, tuple(tuple(p) for p in pads))
    if first:
        return rules.flat(spec, rules.STABILIZER, y, x, kernel)
    stats, affine = bn.variables["batch_stats"], bn.variables["params"]
    folded = rules.fold_batch_norm(kernel, affine["scale"], affine["bias"], stats["mean"], stats["var"], bn.epsilon)
    return rules.zplus(spec, rules.STABILIZER, y, x, *folded)


def _norm_rule(y: jax.Array, lrp: bool) -> jax.Array:
    """y (a sum or an average pool's output); in LRP mode with zennit's `Norm` rule's backward."""
    return epsilon(y, rules.STABILIZER) if lrp else y


class BasicBlock(nn.Module):
    """Two 3x3 convs with BatchNorm and an identity (or 1x1 projection) shortcut; ReLU out."""

    features: int
    strides: int = 1
    lrp: bool = False  # LRP mode (module docstring): the same forward, the rules' backward

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        _check_mode(self.lrp, train)
        conv = functools.partial(nn.Conv, use_bias=False, padding="SAME")
        y = nn.relu(_conv_bn(conv(self.features, (3, 3), strides=self.strides), _norm(train), x, self.lrp))
        # Zero-init the last BN scale: each block starts as the identity (stabler early training).
        y = _conv_bn(conv(self.features, (3, 3)), _norm(train, scale_init=nn.initializers.zeros), y, self.lrp)
        shortcut = x
        if self.strides != 1:  # ResNet-D: pool, then 1x1 conv (no pixels skipped)
            shortcut = _norm_rule(nn.avg_pool(shortcut, (self.strides, self.strides), (self.strides, self.strides),
                                              padding="SAME"), self.lrp)
        if shortcut.shape[-1] != self.features or self.strides != 1:
            shortcut = _conv_bn(conv(self.features, (1, 1)), _norm(train), shortcut, self.lrp)
        return nn.relu(_norm_rule(y + shortcut, self.lrp))


class SmallResNet(nn.Module):
    """Encoder: (N, 32, 32, 1) images -> (N, widths[-1]) non-negative representations."""

    widths: Sequence[int] = DEFAULT_WIDTHS
    blocks: Sequence[int] = DEFAULT_BLOCKS
    strides: Sequence[int] = DEFAULT_STRIDES
    stem_width: int = STEM_WIDTH
    stem_pool: int = 2  # average-pool window/stride after the stem (1: none)
    lrp: bool = False  # LRP mode (module docstring): the same forward, the rules' backward

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        _check_mode(self.lrp, train)
        stem = nn.Conv(self.stem_width, (3, 3), padding="SAME", use_bias=False)
        x = nn.relu(_conv_bn(stem, _norm(train), x, self.lrp, first=True))
        if self.stem_pool > 1:
            x = _norm_rule(nn.avg_pool(x, (self.stem_pool, self.stem_pool), (self.stem_pool, self.stem_pool)),
                           self.lrp)
        for width, n_blocks, stride in zip(self.widths, self.blocks, self.strides):
            for b in range(n_blocks):
                x = BasicBlock(width, stride if b == 0 else 1, lrp=self.lrp)(x, train)
        return _norm_rule(jnp.mean(x, axis=(1, 2)), self.lrp)  # GAP of ReLU outputs: >= 0

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
