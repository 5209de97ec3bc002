"""Flax Vision Transformer in the facebookresearch DINO / DINOv2 layout (NHWC inputs).

One module covers both families; the differences are config fields read off the checkpoint:

  * patch embedding: a p x p / p conv with bias (`patch_embed.proj`), patches in row-major order;
  * tokens: [class, registers (DINOv2 "with registers" only), patches]; the learned positional
    embedding (`pos_embed`, class + a square M x M grid) is added BEFORE the registers are
    inserted, so registers carry no position;
  * pre-LayerNorm blocks (eps 1e-6): x + ls1(attn(norm1(x))), x + ls2(ffn(norm2(x))), where
    `ls1`/`ls2` are DINOv2's per-channel LayerScale (absent in DINO: identity), attention has one
    fused `qkv` projection (q, k, v blocks of `embed_dim` each, heads split inside each block),
    and the FFN is fc1 -> exact (erf) GELU -> fc2, or DINOv2-g's SwiGLU (`w12` -> silu(a) * b -> `w3`);
  * representation: the class token after the final `norm` (`x_norm_clstoken` in DINOv2, what
    `forward` returns in both repositories), `embed_dim`-d.

Positional embedding at other input sizes (`interpolate_pos_encoding` of both repositories):
when the patch grid is not the stored M x M, or the input is not square, the M x M grid is
resampled with torch's bicubic `interpolate` (a = -0.75, align_corners=False, border taps
clamped, no antialias) to (H // p, W // p). With `interpolate_offset` > 0 (0.1: DINO and every
DINOv2 hub model) torch is given `scale_factor = (H // p + offset) / M` instead of the output
size, so source coordinates are `(i + 0.5) * M / (H // p + offset) - 0.5`, not
`(i + 0.5) * M / (H // p) - 0.5`; both are reproduced. The resampling is a fixed linear map per
(input size, grid), built here in numpy at trace time and applied in float32.

`interpolate_antialias=True` is torch's antialiased bicubic (`interpolate(..., antialias=True)`,
PIL's filter: a = -0.5, support widened by the scale when shrinking, taps cut at the border and
the weights renormalised). With offset 0 (the output size given), it is what the DINOv2 hub's
register models (`dinov2_vit*14_reg`: `interpolate_antialias=True, interpolate_offset=0.0`) and
timm's `resample_abs_pos_embed` (`dynamic_img_size=True`, or `img_size=...` at creation) do; the
converter records it for register checkpoints and timm's layout (cocoa_jax_ports.vit).

A config without these two fields (model directories written before they were recorded) resamples
with `LEGACY_RESAMPLING`: offset 0.1, no antialias, what those directories always did.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax.attribution_methods import lrp_rules

LN_EPSILON = 1e-6
BICUBIC_A = -0.75  # torch's bicubic coefficient

DEFAULT_CONFIG = {"embed_dim": 384, "depth": 12, "num_heads": 6, "patch_size": 14, "pos_grid": 37,
                  "num_register_tokens": 0, "layer_scale": True, "ffn": "mlp", "ffn_hidden": 1536,
                  "qkv_bias": True, "image_size": 224, "interpolate_offset": 0.1,
                  "interpolate_antialias": False}
LEGACY_RESAMPLING = {"interpolate_offset": 0.1, "interpolate_antialias": False}


def _cubic_weights(t: float):
    """torch's get_cubic_upsample_coefficients(t) for taps at floor-1 .. floor+2."""
    a = BICUBIC_A

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return far(t + 1), near(t), near(1 - t), far(2 - t)


def bicubic_matrix(out_size: int, in_size: int, scale: float) -> np.ndarray:
    """(out_size, in_size) matrix of torch's 1-D bicubic resampling, align_corners=False.

    scale: input units per output unit (torch's `1 / scale_factor`, or in/out when a size is given).
    """
    matrix = np.zeros((out_size, in_size), np.float64)
    for i in range(out_size):
        src = scale * (i + 0.5) - 0.5  # not clamped at 0 for cubic (as torch)
        base = math.floor(src)
        for k, w in enumerate(_cubic_weights(src - base)):
            matrix[i, min(max(base - 1 + k, 0), in_size - 1)] += w
    return matrix


def _aa_cubic(x: float) -> float:
    """torch's antialias bicubic filter (PIL's, a = -0.5) at distance x."""
    a, x = -0.5, abs(x)
    if x < 1.0:
        return ((a + 2) * x - (a + 3)) * x * x + 1
    if x < 2.0:
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return 0.0


def antialias_bicubic_matrix(out_size: int, in_size: int, scale: float) -> np.ndarray:
    """(out_size, in_size) matrix of torch's 1-D bicubic resampling with antialias=True,
    align_corners=False (`_compute_index_ranges_weights` of torch's CPU upsample kernel).

    scale: input units per output unit, as in `bicubic_matrix`. An axis whose size does not
    change is copied (torch skips it, whatever the scale factor).
    """
    if out_size == in_size:
        return np.eye(out_size)
    support = 2.0 * scale if scale >= 1.0 else 2.0  # interp_size 4 / 2, widened when shrinking
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    matrix = np.zeros((out_size, in_size), np.float64)
    for i in range(out_size):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)  # int(): truncation, as the C++ cast
        hi = min(int(center + support + 0.5), in_size)
        weights = np.array([_aa_cubic((j - center + 0.5) * invscale) for j in range(lo, hi)])
        total = weights.sum()
        matrix[i, lo:hi] = weights / total if total != 0.0 else weights
    return matrix


def interpolation_matrices(grid_h: int, grid_w: int, stored: int, offset: float, antialias: bool = False):
    """(rows (grid_h, M), cols (grid_w, M)) resampling the stored M x M grid to grid_h x grid_w."""
    if offset:
        scales = (stored / (grid_h + offset), stored / (grid_w + offset))
    else:
        scales = (stored / grid_h, stored / grid_w)
    build = antialias_bicubic_matrix if antialias else bicubic_matrix
    return (build(grid_h, stored, scales[0]), build(grid_w, stored, scales[1]))


def gather_patches(tokens: jax.Array, keep: jax.Array) -> jax.Array:
    """(N, P, D) patch tokens, (N, n_keep) int indices -> (N, n_keep, D): the kept tokens (token drop)."""
    return jnp.take_along_axis(tokens, keep[:, :, None].astype(jnp.int32), axis=1)


class Attention(nn.Module):
    dim: int
    heads: int
    qkv_bias: bool = True
    lrp: bool = False  # LRP mode: the rules' backward (lrp_rules.Ops), the same forward

    @nn.compact
    def __call__(self, x: jax.Array, valid: jax.Array | None = None) -> jax.Array:
        """valid: optional (N, L) bool keys; a False key gets exactly zero weight from every query."""
        n, length, _ = x.shape
        head_dim = self.dim // self.heads
        op = lrp_rules.ops(self.lrp)
        q, k, v = jnp.split(op.linear(nn.Dense(3 * self.dim, use_bias=self.qkv_bias, name="qkv")(x)), 3, axis=-1)
        split = lambda t: t.reshape(n, length, self.heads, head_dim)
        logits = op.einsum("nqhd,nkhd->nhqk", split(q) * head_dim**-0.5, split(k))
        if valid is not None:  # exp underflows to exactly 0 (the class token is always valid: no empty row)
            logits = jnp.where(valid[:, None, None, :], logits, jnp.finfo(logits.dtype).min)
        weights = op.softmax(logits, axis=-1)
        self.sow("intermediates", "attention", weights)  # (N, heads, L, L); read by rollout, else a no-op
        out = op.einsum("nhqk,nkhd->nqhd", weights, split(v))
        return op.linear(nn.Dense(self.dim, name="proj")(out.reshape(n, length, self.dim)))


class LayerScale(nn.Module):
    dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return x * self.param("gamma", nn.initializers.constant(1e-5), (self.dim,))


class FFN(nn.Module):
    dim: int
    hidden: int
    kind: str = "mlp"
    lrp: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        op = lrp_rules.ops(self.lrp)
        if self.kind == "mlp":
            h = op.activation(_exact_gelu, op.linear(nn.Dense(self.hidden, name="fc1")(x)))
            return op.linear(nn.Dense(self.dim, name="fc2")(h))
        if self.kind == "swiglu":
            a, b = jnp.split(op.linear(nn.Dense(2 * self.hidden, name="w12")(x)), 2, axis=-1)
            return op.linear(nn.Dense(self.dim, name="w3")(op.multiply(op.activation(jax.nn.silu, a), b)))
        raise ValueError(f"ffn must be 'mlp' or 'swiglu', got {self.kind!r}")


def _exact_gelu(h):
    return nn.gelu(h, approximate=False)


def _layer_norm(name: str, lrp: bool = False) -> nn.Module:
    return lrp_rules.ops(lrp).layer_norm(LN_EPSILON, name)


class Block(nn.Module):
    dim: int
    heads: int
    ffn_hidden: int
    ffn: str = "mlp"
    layer_scale: bool = False
    qkv_bias: bool = True
    lrp: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, valid: jax.Array | None = None) -> jax.Array:
        y = Attention(self.dim, self.heads, self.qkv_bias, self.lrp, name="attn")(_layer_norm("norm1", self.lrp)(x), valid)
        x = x + (LayerScale(self.dim, name="ls1")(y) if self.layer_scale else y)
        y = FFN(self.dim, self.ffn_hidden, self.ffn, self.lrp, name="mlp")(_layer_norm("norm2", self.lrp)(x))
        return x + (LayerScale(self.dim, name="ls2")(y) if self.layer_scale else y)


class ViT(nn.Module):
    """(N, H, W, 3) -> (N, embed_dim) class token after the final norm. See the module docstring."""

    config: Mapping[str, Any]
    lrp: bool = False  # LRP mode (AttnLRP): every operation's backward is its rule, the forward unchanged

    @property
    def representation_dim(self) -> int:
        return int(self.config["embed_dim"])

    @nn.compact
    def __call__(self, images: jax.Array, keep: jax.Array | None = None, valid: jax.Array | None = None) -> jax.Array:
        """keep: optional (N, n_keep) int patch indices (row-major): only those patch tokens enter
        the blocks, gathered after the position embedding (class and register tokens always kept).
        valid: optional (N, n_keep) bool with `keep`: False slots are padding, keys no token attends
        to (so the class token, the readout, equals the pass keeping only the valid slots, up to
        float rounding): one program serves several kept counts (`token_drop.padded_kept`)."""
        c = self.config
        dim, p, grid = int(c["embed_dim"]), int(c["patch_size"]), int(c["pos_grid"])
        x = lrp_rules.ops(self.lrp).linear(
            nn.Conv(dim, (p, p), strides=(p, p), padding="VALID", name="patch_embed_proj")(images))
        n, gh, gw, _ = x.shape
        x = x.reshape(n, gh * gw, dim)
        cls_token = self.param("cls_token", nn.initializers.normal(1e-6), (1, 1, dim))
        pos_embed = self.param("pos_embed", nn.initializers.normal(0.02), (1, grid * grid + 1, dim))
        height, width = images.shape[1], images.shape[2]
        if gh * gw == grid * grid and height == width:  # the reference's condition, verbatim
            pos = pos_embed
        else:
            settings = {**LEGACY_RESAMPLING, **{k: c[k] for k in LEGACY_RESAMPLING if k in c}}
            rows, cols = interpolation_matrices(gh, gw, grid, float(settings["interpolate_offset"]),
                                                bool(settings["interpolate_antialias"]))
            patch_pos = pos_embed[0, 1:].reshape(grid, grid, dim)
            patch_pos = jnp.einsum("ai,bj,ijd->abd", jnp.asarray(rows, jnp.float32),
                                   jnp.asarray(cols, jnp.float32), patch_pos,
                                   precision=jax.lax.Precision.HIGHEST)
            pos = jnp.concatenate([pos_embed[:, :1], patch_pos.reshape(1, gh * gw, dim)], axis=1)
        x = jnp.concatenate([jnp.broadcast_to(cls_token, (n, 1, dim)), x], axis=1) + pos
        if keep is not None:
            x = jnp.concatenate([x[:, :1], gather_patches(x[:, 1:], keep)], axis=1)
        registers = int(c.get("num_register_tokens", 0))
        key_mask = None
        if valid is not None:
            if keep is None or valid.shape != keep.shape:
                raise ValueError(f"`valid` must have the shape of `keep` {None if keep is None else keep.shape}, "
                                 f"got {valid.shape}")
            key_mask = jnp.concatenate([jnp.ones((n, 1 + registers), bool), valid.astype(bool)], axis=1)
        if registers:
            reg = self.param("register_tokens", nn.initializers.normal(1e-6), (1, registers, dim))
            x = jnp.concatenate([x[:, :1], jnp.broadcast_to(reg, (n, registers, dim)), x[:, 1:]], axis=1)
        for i in range(int(c["depth"])):
            x = Block(dim, int(c["num_heads"]), int(c["ffn_hidden"]), c.get("ffn", "mlp"),
                      bool(c.get("layer_scale", False)), bool(c.get("qkv_bias", True)), self.lrp,
                      name=f"blocks_{i}")(x, key_mask)
        return _layer_norm("norm", self.lrp)(x[:, 0])

    def init_all(self, images: jax.Array) -> jax.Array:
        return self(images)
