"""Flax CLIP (openai/CLIP layout, which open_clip's standard ViT CLIPs share): ViT image encoder
and causal text transformer, any size (the config is read off the checkpoint's shapes).

Both towers use pre-LayerNorm residual blocks (LayerNorm eps 1e-5, QuickGELU MLP of width 4x;
exact GELU for open_clip models trained with it, `activation="gelu"`)
with one fused `in_proj` for q, k, v as in `torch.nn.MultiheadAttention`, and end in a linear
projection applied as `x @ proj` (the checkpoint stores it as (width, embed_dim), NOT transposed
like a Linear weight).

  encode_image: (N, R, R, 3) preprocessed NHWC images -> (N, embed_dim)
  encode_text:  (N, context_length) int token ids -> (N, embed_dim), pooled at the EOT token
                (the largest id in each row, as in CLIP).

Neither output is L2-normalised: that is the explanation target's choice (cosine vs dot).
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from cocoa_jax.attribution_methods import lrp_rules

LN_EPSILON = 1e-5
HEAD_WIDTH = 64  # CLIP uses width // 64 attention heads in both towers (open_clip: text always)
ACTIVATIONS = {
    "quick_gelu": lambda h: h * jax.nn.sigmoid(1.702 * h),  # what OpenAI's CLIP was trained with
    "gelu": lambda h: jax.nn.gelu(h, approximate=False),    # torch.nn.GELU (open_clip's default)
}


@dataclasses.dataclass(frozen=True)
class ClipConfig:
    """Hyper-parameters of one CLIP model (ViT-B/32 by default)."""

    embed_dim: int = 512
    image_resolution: int = 224
    vision_layers: int = 12
    vision_width: int = 768
    vision_patch_size: int = 32
    context_length: int = 77
    vocab_size: int = 49408
    transformer_width: int = 512
    transformer_layers: int = 12
    # Not readable from the weights: OpenAI's models use QuickGELU, open_clip's (unless named
    # "-quickgelu") exact GELU; open_clip's ViT-H/g/bigG image towers use 80/88/104-wide heads.
    activation: str = "quick_gelu"
    vision_head_width: int = HEAD_WIDTH

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")

    @property
    def vision_heads(self) -> int:
        return max(self.vision_width // self.vision_head_width, 1)

    @property
    def transformer_heads(self) -> int:
        return max(self.transformer_width // HEAD_WIDTH, 1)


def _layer_norm(name: str | None = None, lrp: bool = False) -> nn.Module:
    # use_fast_variance=False: E[(x-mu)^2], as torch computes it (E[x^2]-mu^2 loses digits).
    return lrp_rules.ops(lrp).layer_norm(LN_EPSILON, name)


class MultiHeadAttention(nn.Module):
    """torch.nn.MultiheadAttention (batch-first here): (N, L, W) -> (N, L, W)."""

    width: int
    heads: int
    lrp: bool = False  # LRP mode: the rules' backward (lrp_rules.Ops), the same forward

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        n, length, _ = x.shape
        head_dim = self.width // self.heads
        op = lrp_rules.ops(self.lrp)
        qkv = op.linear(nn.Dense(3 * self.width, name="in_proj")(x))
        q, k, v = jnp.split(qkv, 3, axis=-1)
        split = lambda t: t.reshape(n, length, self.heads, head_dim)
        q, k, v = split(q), split(k), split(v)
        logits = op.einsum("nqhd,nkhd->nhqk", q / jnp.sqrt(jnp.float32(head_dim)), k)
        if mask is not None:
            logits = jnp.where(mask, logits, -jnp.inf)
        weights = op.softmax(logits, axis=-1)
        self.sow("intermediates", "attention", weights)  # (N, heads, L, L); read by rollout, else a no-op
        out = op.einsum("nhqk,nkhd->nqhd", weights, v).reshape(n, length, self.width)
        return op.linear(nn.Dense(self.width, name="out_proj")(out))


class MLP(nn.Module):
    width: int
    activation: str = "quick_gelu"
    lrp: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        op = lrp_rules.ops(self.lrp)
        h = op.linear(nn.Dense(4 * self.width, name="c_fc")(x))
        return op.linear(nn.Dense(self.width, name="c_proj")(op.activation(ACTIVATIONS[self.activation], h)))


class ResidualAttentionBlock(nn.Module):
    width: int
    heads: int
    activation: str = "quick_gelu"
    lrp: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        x = x + MultiHeadAttention(self.width, self.heads, self.lrp, name="attn")(_layer_norm("ln_1", self.lrp)(x), mask)
        return x + MLP(self.width, self.activation, self.lrp, name="mlp")(_layer_norm("ln_2", self.lrp)(x))


class Transformer(nn.Module):
    """Stack of `layers` blocks named `resblocks_{i}` (torch: `resblocks.{i}`)."""

    width: int
    layers: int
    heads: int
    activation: str = "quick_gelu"
    lrp: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        for i in range(self.layers):
            x = ResidualAttentionBlock(self.width, self.heads, self.activation, self.lrp,
                                       name=f"resblocks_{i}")(x, mask)
        return x


class VisionTransformer(nn.Module):
    """(N, R, R, 3) -> (N, embed_dim): patch conv, class token, ln_pre, blocks, ln_post, proj."""

    config: ClipConfig
    lrp: bool = False  # LRP mode (AttnLRP): every operation's backward is its rule, the forward unchanged

    @nn.compact
    def __call__(self, images: jax.Array, keep: jax.Array | None = None, valid: jax.Array | None = None) -> jax.Array:
        """keep: optional (N, n_keep) int patch indices (row-major): only those patch tokens enter
        ln_pre and the blocks, gathered after the position embedding (the class token always kept).
        valid: optional (N, n_keep) bool with `keep`: False slots are padding, keys no token attends
        to (the class token then equals the pass keeping only the valid slots, up to rounding)."""
        c = self.config
        p = c.vision_patch_size
        op = lrp_rules.ops(self.lrp)
        x = op.linear(nn.Conv(c.vision_width, (p, p), strides=(p, p), padding="VALID", use_bias=False,
                              name="conv1")(images))
        n = x.shape[0]
        x = x.reshape(n, -1, c.vision_width)  # row-major patches, as torch's flatten(2)
        grid = c.image_resolution // p
        class_embedding = self.param("class_embedding", nn.initializers.normal(0.02), (c.vision_width,))
        positional = self.param("positional_embedding", nn.initializers.normal(0.02),
                                (grid * grid + 1, c.vision_width))
        cls = jnp.broadcast_to(class_embedding.astype(x.dtype), (n, 1, c.vision_width))
        x = jnp.concatenate([cls, x], axis=1) + positional
        if keep is not None:
            x = jnp.concatenate([x[:, :1], jnp.take_along_axis(x[:, 1:], keep[:, :, None].astype(jnp.int32), axis=1)],
                                axis=1)
        mask = None
        if valid is not None:
            if keep is None or valid.shape != keep.shape:
                raise ValueError(f"`valid` must have the shape of `keep` {None if keep is None else keep.shape}, "
                                 f"got {valid.shape}")
            mask = jnp.concatenate([jnp.ones((n, 1), bool), valid.astype(bool)], axis=1)[:, None, None, :]
        x = _layer_norm("ln_pre", self.lrp)(x)
        x = Transformer(c.vision_width, c.vision_layers, c.vision_heads, c.activation, self.lrp,
                        name="transformer")(x, mask)
        x = _layer_norm("ln_post", self.lrp)(x[:, 0, :])
        proj = self.param("proj", nn.initializers.normal(0.02), (c.vision_width, c.embed_dim))
        return op.linear(x @ proj)


class TextTransformer(nn.Module):
    """(N, context_length) int ids -> (N, embed_dim), causal attention, pooled at EOT."""

    config: ClipConfig

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        c = self.config
        x = nn.Embed(c.vocab_size, c.transformer_width, name="token_embedding")(tokens)
        positional = self.param("positional_embedding", nn.initializers.normal(0.01),
                                (c.context_length, c.transformer_width))
        x = x + positional[: tokens.shape[1]]
        length = tokens.shape[1]
        causal = jnp.tril(jnp.ones((length, length), dtype=bool))  # query i sees keys <= i
        x = Transformer(c.transformer_width, c.transformer_layers, c.transformer_heads, c.activation,
                        name="transformer")(x, causal)
        x = _layer_norm("ln_final")(x)
        eot = jnp.argmax(tokens, axis=-1)  # EOT has the largest id in CLIP's vocabulary
        pooled = jnp.take_along_axis(x, eot[:, None, None], axis=1)[:, 0, :]
        text_projection = self.param("text_projection", nn.initializers.normal(0.02),
                                     (c.transformer_width, c.embed_dim))
        return pooled @ text_projection


class CLIP(nn.Module):
    """Both towers plus the learned `logit_scale` (kept so the conversion loses nothing)."""

    config: ClipConfig = ClipConfig()
    lrp: bool = False  # LRP mode of the image tower (AttnLRP); the text tower is unchanged

    def setup(self):
        self.visual = VisionTransformer(self.config, self.lrp)
        self.text = TextTransformer(self.config)
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(4.6052), ())

    def encode_image(self, images: jax.Array, keep: jax.Array | None = None,
                     valid: jax.Array | None = None) -> jax.Array:
        return self.visual(images, keep, valid)

    def encode_text(self, tokens: jax.Array) -> jax.Array:
        return self.text(tokens)

    def init_all(self, images: jax.Array, tokens: jax.Array):
        return self.visual(images), self.text(tokens), self.logit_scale
