"""Flax BERT sentence encoder, as sentence-transformers packs it (all-MiniLM, BGE, E5, GTE; the
XLM-RoBERTa layout too): BertModel, then pooling, then an optional L2 normalisation.

BertModel (Hugging Face `transformers` layout, so its state dict converts key for key):
  embeddings   word + position + token-type embeddings (token type 0 everywhere), LayerNorm
  encoder      post-LayerNorm blocks: x = LN(x + attn(x)); x = LN(x + W2 gelu(W1 x)); exact
               (erf) GELU as BERT uses; padded keys masked out of the attention
XLM-RoBERTa differs only in its positions: they start at `pad_token_id + 1` (`position_offset`).
Pooling (sentence-transformers' `1_Pooling/config.json`): "mean", "cls", "max",
"mean_sqrt_len_tokens", "weightedmean", "lasttoken"; several modes are concatenated in order.
Normalize (`modules.json` lists it): x / max(||x||, 1e-12).

Three pure functions, so gradient methods can attribute in token-embedding space:
  embed_tokens(ids (N, L) int)                      -> (N, L, H) word embeddings
  encode_embeddings(words (N, L, H), mask (N, L))   -> (N, dim) sentence representation;
                                                       positions and token types are added inside,
                                                       so a token's position is kept whatever its
                                                       embedding (a [PAD]/[MASK] baseline keeps them)
  encode_text(ids (N, L) int)                       -> (N, dim), the mask being ids != pad_token_id
mask: 1 (or True) for a token the model sees, 0 for one it does not (padding, a dropped token):
a masked token is no key of the attention and no part of the pooling.
"""
from __future__ import annotations

import dataclasses
from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
LAYOUTS = ("bert", "xlm_roberta")
NORMALIZE_EPSILON = 1e-12  # torch.nn.functional.normalize's default


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Hyper-parameters of one sentence encoder (the transformers `config.json` fields it needs,
    plus the sentence-transformers modules and the tokenizer's special ids).

    context_length: the longest input in tokens, special tokens included (sentence-transformers'
      max_seq_length: what its tokenizer truncates to).
    pooling: the pooling modes, concatenated in this order (dim = len(pooling) * hidden_size).
    layout: "bert" (positions 0, 1, ...) or "xlm_roberta" (positions pad_token_id + 1, ...).
    pad_token / pad_token_id / mask_token_id: the tokenizer's padding token and the [MASK] id
      (None when the vocabulary has none), read from tokenizer_config.json at conversion.
    """

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    context_length: int = 256
    pooling: Tuple[str, ...] = ("mean",)
    normalize: bool = True
    layout: str = "bert"
    pad_token_id: int = 0
    pad_token: str = "[PAD]"
    mask_token_id: int | None = None
    lowercase: bool = False  # sentence-transformers' do_lower_case: lower-case before the tokenizer

    def __post_init__(self):
        pooling = (self.pooling,) if isinstance(self.pooling, str) else tuple(self.pooling)
        object.__setattr__(self, "pooling", pooling)
        if not pooling or any(mode not in POOLING_MODES for mode in pooling):
            raise ValueError(f"pooling must be a non-empty list of {POOLING_MODES}, got {list(pooling)}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                             f"{self.num_attention_heads}")
        if not 1 <= self.context_length <= self.max_position_embeddings - self.position_offset:
            raise ValueError(f"context_length must be in [1, {self.max_position_embeddings - self.position_offset}] "
                             f"(the position table), got {self.context_length}")

    @property
    def position_offset(self) -> int:
        return self.pad_token_id + 1 if self.layout == "xlm_roberta" else 0

    @property
    def dim(self) -> int:
        return len(self.pooling) * self.hidden_size


def config_from_dict(config) -> BertConfig:
    """A `BertConfig` from model.json's config (lists where the dataclass has tuples)."""
    return BertConfig(**dict(config))


def _layer_norm(epsilon: float, name: str) -> nn.LayerNorm:
    # use_fast_variance=False: E[(x-mu)^2], as torch computes it.
    return nn.LayerNorm(epsilon=epsilon, use_fast_variance=False, name=name)


class SelfAttention(nn.Module):
    """BertSelfAttention + BertSelfOutput: LN(x + dense(softmax(q k^T / sqrt(d) + mask) v))."""

    config: BertConfig

    @nn.compact
    def __call__(self, x: jax.Array, keep: jax.Array) -> jax.Array:
        c = self.config
        n, length, width = x.shape
        heads, head_dim = c.num_attention_heads, width // c.num_attention_heads
        split = lambda t: t.reshape(n, length, heads, head_dim)
        q = split(nn.Dense(width, name="query")(x))
        k = split(nn.Dense(width, name="key")(x))
        v = split(nn.Dense(width, name="value")(x))
        logits = jnp.einsum("nqhd,nkhd->nhqk", q, k) / jnp.sqrt(jnp.asarray(head_dim, x.dtype))
        # Masked keys get the dtype's lowest value (not -inf): a row with every key masked stays finite.
        logits = jnp.where(keep[:, None, None, :], logits, jnp.finfo(logits.dtype).min)
        context = jnp.einsum("nhqk,nkhd->nqhd", jax.nn.softmax(logits, axis=-1), v).reshape(n, length, width)
        out = nn.Dense(width, name="output_dense")(context)
        return _layer_norm(c.layer_norm_eps, "output_LayerNorm")(x + out)


class Layer(nn.Module):
    """One BertLayer (post-LN): attention block, then the GELU feed-forward block."""

    config: BertConfig

    @nn.compact
    def __call__(self, x: jax.Array, keep: jax.Array) -> jax.Array:
        c = self.config
        x = SelfAttention(c, name="attention")(x, keep)
        h = jax.nn.gelu(nn.Dense(c.intermediate_size, name="intermediate_dense")(x), approximate=False)
        return _layer_norm(c.layer_norm_eps, "output_LayerNorm")(x + nn.Dense(c.hidden_size, name="output_dense")(h))


def pool_tokens(states: jax.Array, mask: jax.Array, modes: Tuple[str, ...]) -> jax.Array:
    """sentence-transformers' Pooling: (N, L, H) token states, (N, L) mask -> (N, len(modes) * H).

    cls: the first unmasked token; max: the largest unmasked value per feature; mean: the mean of
    unmasked tokens (count clamped at 1e-9); mean_sqrt_len_tokens: the sum over sqrt(count);
    weightedmean: weights 1, 2, ... from the first unmasked token; lasttoken: the last unmasked token.
    """
    weights = mask.astype(states.dtype)
    keep = mask > 0
    first = jnp.argmax(keep, axis=1)  # the first unmasked position (0 for right padding)
    out = []
    for mode in modes:
        if mode == "cls":
            out.append(jnp.take_along_axis(states, first[:, None, None], axis=1)[:, 0])
        elif mode == "max":
            out.append(jnp.max(jnp.where(keep[..., None], states, -jnp.inf), axis=1))
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            total = jnp.sum(states * weights[..., None], axis=1)
            count = jnp.maximum(jnp.sum(weights, axis=1, keepdims=True), 1e-9)
            out.append(total / (count if mode == "mean" else jnp.sqrt(count)))
        elif mode == "weightedmean":
            position = jnp.arange(1, states.shape[1] + 1, dtype=states.dtype)[None, :] - first[:, None]
            w = weights * position
            out.append(jnp.sum(states * w[..., None], axis=1) / jnp.maximum(jnp.sum(w, axis=1, keepdims=True), 1e-9))
        elif mode == "lasttoken":
            length = states.shape[1]
            from_end = jnp.argmax(keep[:, ::-1], axis=1)
            last = jnp.where(jnp.any(keep, axis=1), length - 1 - from_end, length - 1)
            out.append(jnp.take_along_axis(states * weights[..., None], last[:, None, None], axis=1)[:, 0])
        else:
            raise ValueError(f"pooling mode must be one of {POOLING_MODES}, got {mode!r}")
    return jnp.concatenate(out, axis=-1)


def normalize(x: jax.Array) -> jax.Array:
    """Rows divided by max(L2 norm, 1e-12), as torch.nn.functional.normalize."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), NORMALIZE_EPSILON)


class SentenceBert(nn.Module):
    """BertModel (no pooler: sentence-transformers pools the token states) + pooling + Normalize."""

    config: BertConfig

    def setup(self):
        c = self.config
        self.word_embeddings = nn.Embed(c.vocab_size, c.hidden_size, name="word_embeddings")
        self.position_embeddings = nn.Embed(c.max_position_embeddings, c.hidden_size, name="position_embeddings")
        self.token_type_embeddings = nn.Embed(c.type_vocab_size, c.hidden_size, name="token_type_embeddings")
        self.embeddings_norm = _layer_norm(c.layer_norm_eps, "embeddings_LayerNorm")
        self.layers = [Layer(c, name=f"layer_{i}") for i in range(c.num_hidden_layers)]

    def embed_tokens(self, ids: jax.Array) -> jax.Array:
        """(N, L) int ids -> (N, L, H) word embeddings (what attributions perturb)."""
        return self.word_embeddings(ids)

    def token_states(self, words: jax.Array, mask: jax.Array) -> jax.Array:
        """(N, L, H) word embeddings, (N, L) mask -> (N, L, H) last hidden states."""
        c = self.config
        length = words.shape[1]
        positions = jnp.arange(length) + c.position_offset
        x = words + self.position_embeddings(positions)[None] + self.token_type_embeddings(
            jnp.zeros((length,), jnp.int32))[None]
        x = self.embeddings_norm(x)
        keep = mask > 0
        for layer in self.layers:
            x = layer(x, keep)
        return x

    def encode_embeddings(self, words: jax.Array, mask: jax.Array) -> jax.Array:
        """(N, L, H) word embeddings, (N, L) mask -> (N, dim) sentence representation."""
        pooled = pool_tokens(self.token_states(words, mask), mask, self.config.pooling)
        return normalize(pooled) if self.config.normalize else pooled

    def encode_text(self, ids: jax.Array) -> jax.Array:
        """(N, L) int ids, padded with pad_token_id -> (N, dim)."""
        return self.encode_embeddings(self.embed_tokens(ids), ids != self.config.pad_token_id)

    def __call__(self, ids: jax.Array) -> jax.Array:
        return self.encode_text(ids)
