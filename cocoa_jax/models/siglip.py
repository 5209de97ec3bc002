"""Flax SigLIP (Hugging Face `SiglipModel` layout): ViT image tower with a multi-head attention
pooling head (MAP) and a bidirectional text tower pooled at the LAST position, any size (read off
the checkpoint's shapes).

Both towers: pre-LayerNorm blocks (separate q/k/v/out projections with biases; MLP fc1 -> GELU
(tanh approximation, `gelu_pytorch_tanh`) -> fc2), LayerNorm epsilon `layer_norm_eps` (1e-6).
  image: patch conv (with bias) + learned positions (no class token), blocks, post_layernorm,
         MAP head: a learned probe attends to every patch (torch.nn.MultiheadAttention, fused
         in_proj), then x + mlp(layernorm(x)); output the probe: (N, vision_width).
  text:  token + position embeddings, blocks (no causal mask), final_layer_norm, the state at
         the last position through `head` (Linear): (N, projection_size). SigLIP was trained on
         texts padded to `context_length` with the pad token, and it pools the last position
         whatever it holds, so texts are always padded to the full context (no attention mask).
The text tower in token-embedding space (what gradient methods attribute over):
  embed_tokens(ids) -> (N, L, E);  encode_embeddings(words, mask) -> (N, D), positions added
  inside; mask 0 hides a token as an attention key (the trained model uses all-ones: padding is
  seen), so dropping a token by the mask is an intervention, not the trained input.
Neither output is L2-normalised (the explanation target's choice, as for CLIP).

SigLIP 2 NaFlex (`naflex=True`, transformers' `Siglip2Model`): the same towers; the image tower
takes (N, H, W, 3) of any H, W multiples of the patch size (one size per call: it fixes the patch
grid), its stored M x M positions (M * patch = image_size) resized bilinearly (antialiased) to the
image's grid (`cocoa_jax.models.naflex`). Its Linear patch embedding on (row, column, channel)
patches is this stride-p convolution. `max_num_patches` is the processor's budget, not enforced here.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from cocoa_jax.models import naflex as naflex_geometry

from cocoa_jax.attribution_methods import lrp_rules


@dataclasses.dataclass(frozen=True)
class SiglipConfig:
    """Hyper-parameters of one SigLIP (SigLIP base patch16 224 by default)."""

    image_size: int = 224
    patch_size: int = 16
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    vision_mlp: int = 3072
    vocab_size: int = 32000
    context_length: int = 64
    text_width: int = 768
    text_layers: int = 12
    text_heads: int = 12
    text_mlp: int = 3072
    projection_size: int = 768
    layer_norm_eps: float = 1e-6
    pad_token_id: int = 1
    naflex: bool = False  # SigLIP 2 NaFlex image tower: any patch grid, positions resized
    max_num_patches: int = 256  # NaFlex: the preprocessing's patch budget (model.preprocess)
    text_tower: bool = True  # False: the image tower alone (no text or logit parameters)

    def __post_init__(self):
        for width, heads, what in ((self.vision_width, self.vision_heads, "vision"),
                                   (self.text_width, self.text_heads, "text")):
            if width % heads:
                raise ValueError(f"{what} width {width} is not a multiple of its {heads} heads")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")


def _gelu_tanh(x):
    return jax.nn.gelu(x, approximate=True)


def _layer_norm(eps, name, lrp: bool = False):
    # lrp=False: nn.LayerNorm(epsilon=eps, use_fast_variance=False), as before (lrp_rules.Ops).
    return lrp_rules.ops(lrp).layer_norm(eps, name)


def _attend(q, k, v, heads, keep=None, op: lrp_rules.Ops = lrp_rules.Ops()):
    """(N, Lq, W), (N, Lk, W) x2 -> (N, Lq, W) softmax(q k^T / sqrt(d)) v per head; `op`: the plain
    operations, or the AttnLRP rules (uniform rule on both products, the softmax rule)."""
    n, lq, width = q.shape
    lk, d = k.shape[1], width // heads
    q, k, v = q.reshape(n, lq, heads, d), k.reshape(n, lk, heads, d), v.reshape(n, lk, heads, d)
    logits = op.einsum("nqhd,nkhd->nhqk", q, k) / jnp.sqrt(jnp.asarray(d, q.dtype))
    if keep is not None:
        logits = jnp.where(keep[:, None, None, :], logits, jnp.finfo(logits.dtype).min)
    return op.einsum("nhqk,nkhd->nqhd", op.softmax(logits, axis=-1), v).reshape(n, lq, width)


class Block(nn.Module):
    """SiglipEncoderLayer: x + attn(ln1(x)); x + mlp(ln2(x))."""

    width: int
    heads: int
    mlp: int
    eps: float
    lrp: bool = False  # AttnLRP mode: the rules' backward, the same forward

    @nn.compact
    def __call__(self, x, keep=None):
        op = lrp_rules.ops(self.lrp)
        h = _layer_norm(self.eps, "layer_norm1", self.lrp)(x)
        q, k, v = (op.linear(nn.Dense(self.width, name=f"{p}_proj")(h)) for p in "qkv")
        x = x + op.linear(nn.Dense(self.width, name="out_proj")(_attend(q, k, v, self.heads, keep, op)))
        h = _layer_norm(self.eps, "layer_norm2", self.lrp)(x)
        h = op.activation(_gelu_tanh, op.linear(nn.Dense(self.mlp, name="fc1")(h)))
        return x + op.linear(nn.Dense(self.width, name="fc2")(h))


class MapHead(nn.Module):
    """SiglipMultiheadAttentionPoolingHead: a probe attends to the tokens (N, L, W) -> (N, W)."""

    width: int
    heads: int
    mlp: int
    eps: float
    lrp: bool = False

    @nn.compact
    def __call__(self, x):
        n = x.shape[0]
        op = lrp_rules.ops(self.lrp)
        probe = self.param("probe", nn.initializers.normal(0.02), (1, 1, self.width))
        in_w = self.param("in_proj_weight", nn.initializers.normal(0.02), (3 * self.width, self.width))
        in_b = self.param("in_proj_bias", nn.initializers.zeros, (3 * self.width,))
        wq, wk, wv = jnp.split(in_w, 3, axis=0)
        bq, bk, bv = jnp.split(in_b, 3)
        q = op.linear(jnp.broadcast_to(probe, (n, 1, self.width)) @ wq.T + bq)
        h = _attend(q, op.linear(x @ wk.T + bk), op.linear(x @ wv.T + bv), self.heads, op=op)
        h = op.linear(nn.Dense(self.width, name="out_proj")(h))
        y = _layer_norm(self.eps, "layernorm", self.lrp)(h)
        y = op.activation(_gelu_tanh, op.linear(nn.Dense(self.mlp, name="fc1")(y)))
        h = h + op.linear(nn.Dense(self.width, name="fc2")(y))
        return h[:, 0]


class SigLIP(nn.Module):
    """Both towers plus `logit_scale` and `logit_bias` (kept so the conversion loses nothing)."""

    config: SiglipConfig = SiglipConfig()
    lrp: bool = False  # AttnLRP mode of the image tower (`encode_fn.modes["lrp"]`): the same forward
    # The text tower reads texts padded to the full context with no mask (as trained) and pools the
    # last position: a token-level explainer keeps the padding visible (`cocoa_jax.text`).
    attends_padding: ClassVar[bool] = True

    def setup(self):
        c = self.config
        grid = c.image_size // c.patch_size
        self.patch_embedding = nn.Conv(c.vision_width, (c.patch_size, c.patch_size), strides=(c.patch_size,) * 2,
                                       padding="VALID", name="patch_embedding")
        self.vision_positions = nn.Embed(grid * grid, c.vision_width, name="vision_position_embedding")
        self.vision_layers = [Block(c.vision_width, c.vision_heads, c.vision_mlp, c.layer_norm_eps, self.lrp,
                                    name=f"vision_layers_{i}") for i in range(c.vision_layers)]
        self.post_layernorm = _layer_norm(c.layer_norm_eps, "post_layernorm", self.lrp)
        self.map_head = MapHead(c.vision_width, c.vision_heads, c.vision_mlp, c.layer_norm_eps, self.lrp,
                                name="map_head")
        if not c.text_tower:  # an image tower alone (transformers' Siglip2VisionModel)
            return
        self.token_embedding = nn.Embed(c.vocab_size, c.text_width, name="token_embedding")
        self.text_positions = nn.Embed(c.context_length, c.text_width, name="text_position_embedding")
        self.text_layers = [Block(c.text_width, c.text_heads, c.text_mlp, c.layer_norm_eps,
                                  name=f"text_layers_{i}") for i in range(c.text_layers)]
        self.final_layer_norm = _layer_norm(c.layer_norm_eps, "final_layer_norm")
        self.text_head = nn.Dense(c.projection_size, name="text_head")
        self.logit_scale = self.param("logit_scale", nn.initializers.zeros, (1,))
        self.logit_bias = self.param("logit_bias", nn.initializers.zeros, (1,))

    def encode_image(self, images: jax.Array) -> jax.Array:
        """(N, R, R, 3) images normalised with mean = std = 0.5 -> (N, vision_width); NaFlex: (N, H, W, 3)."""
        c = self.config
        if c.naflex and (images.shape[1] % c.patch_size or images.shape[2] % c.patch_size):
            raise ValueError(f"`images` must be (N, H, W, 3) with H and W multiples of the patch size "
                             f"{c.patch_size}, got {images.shape}")
        x = lrp_rules.ops(self.lrp).linear(self.patch_embedding(images))
        n, grid_h, grid_w, _ = x.shape
        positions = self.vision_positions.embedding
        if c.naflex:  # the stored grid resized to this image's grid (a constant linear map per shape)
            stored = c.image_size // c.patch_size
            rows, cols = naflex_geometry.position_matrices(grid_h, grid_w, stored)
            positions = jnp.einsum("ai,bj,ijd->abd", jnp.asarray(rows, jnp.float32), jnp.asarray(cols, jnp.float32),
                                   positions.reshape(stored, stored, -1), precision=jax.lax.Precision.HIGHEST)
        x = x.reshape(n, grid_h * grid_w, c.vision_width) + positions.reshape(grid_h * grid_w, -1)[None]
        for layer in self.vision_layers:
            x = layer(x)
        return self.map_head(self.post_layernorm(x))

    def embed_tokens(self, ids: jax.Array) -> jax.Array:
        return self.token_embedding(ids)

    def encode_embeddings(self, words: jax.Array, mask: jax.Array) -> jax.Array:
        """(N, L, E) token embeddings, (N, L) mask -> (N, projection_size), pooled at position L - 1."""
        x = words + self.text_positions.embedding[None, : words.shape[1]]
        keep = mask > 0
        for layer in self.text_layers:
            x = layer(x, keep)
        return self.text_head(self.final_layer_norm(x)[:, -1])

    def encode_text(self, ids: jax.Array) -> jax.Array:
        """(N, L) ids padded with the pad token (L = context_length, as trained) -> (N, projection_size)."""
        return self.encode_embeddings(self.embed_tokens(ids), jnp.ones(ids.shape, jnp.int32))

    def init_all(self, images, ids=None):
        if not self.config.text_tower:
            return self.encode_image(images)
        return self.encode_image(images), self.encode_text(ids), self.logit_scale, self.logit_bias
