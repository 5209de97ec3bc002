"""Token attributions: any method of `cocoa_jax.methods` on a sentence, one score per token.

The image methods are reused unchanged: an input array is an input array. Only the sentence's
CONTENT tokens form the input (special tokens and padding are neither attributed nor perturbed);
`f` writes them back into the fixed sentence and encodes it:

* gradient methods (`Method.per_channel`: IG, GradientSHAP, SmoothGrad, gradients, SmoothGrad-IG):
  x = the content tokens' embeddings, (C, E); baseline = the baseline embedding on every content
  token (positions kept: they are added inside the encoder). A token's score is its map summed
  over the embedding axis; IG's scores sum to f(x) - f(baseline) (completeness).
* perturbation methods (RISE, KernelSHAP, LIME, Occlusion): one feature per token, x shaped
  (C, 1, channels) as a one-column image. `strategy="drop"` (default): x = ones (C, 1, 1),
  baseline = zeros; a feature at 0 drops its token through the attention mask (no query attends
  to it, pooling skips it), so a removed token is absent, not replaced by another token.
  `strategy="replace"`: x = the content embeddings (C, 1, E) and a removed token takes the
  baseline embedding, as in the gradient methods.

Per-token option defaults (`token_options`): RISE's grid is one cell per token, Occlusion's window
one token, KernelSHAP/LIME features single tokens; the noise `stdev` of SmoothGrad/GradientSHAP is
`NOISE_FRACTION` of the encoder's embedding RMS (embeddings have no [0, 1] range).
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import methods as methods_mod
from cocoa_jax.text.encoders import TextEncoder

__all__ = ["BASELINES", "NOISE_FRACTION", "STRATEGIES", "baseline_vector", "content_positions", "sentence_fn",
           "token_inputs", "token_options", "token_scores"]

STRATEGIES = ("drop", "replace")
BASELINES = ("default", "zero", "pad")
NOISE_FRACTION = 0.25  # noise stdev in units of the embedding RMS (a choice, not tuned; docs/text.md)

# Per-token meaning of the image options that depend on the input size, by option name.
_PER_TOKEN = {
    "grid_size": lambda n: (n, 1),   # RISE: one grid cell per token (binary masks, no upsampling blur)
    "window": lambda n: (1, 1),      # Occlusion: one token at a time
    "stride": lambda n: (1, 1),
    "superpixel": lambda n: 1,       # KernelSHAP / LIME: one feature per token
}


def content_positions(encoder: TextEncoder, ids) -> np.ndarray:
    """Positions of the attributable tokens of one id row (T,): neither padding nor special. (C,) int32."""
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"`ids` must be one sentence's (T,) token ids, got shape {ids.shape}")
    special = np.isin(ids, np.asarray(encoder.special_ids + (encoder.pad_id,), ids.dtype))
    return np.flatnonzero(~special).astype(np.int32)


def baseline_vector(encoder: TextEncoder, params, baseline="default") -> jax.Array:
    """The embedding (E,) a removed content token takes.

    baseline: "default" (the encoder's `baseline_id` token, e.g. [MASK]; the zero vector when it
    has none, as CLIP and the digits encoder), "zero", "pad" (the padding token's embedding), or
    an int token id.
    """
    table_row = lambda i: jnp.asarray(encoder.embed_fn(params, jnp.asarray([[i]], jnp.int32))[0, 0])
    if isinstance(baseline, (int, np.integer)) and not isinstance(baseline, bool):
        return table_row(int(baseline))
    if baseline not in BASELINES:
        raise ValueError(f"`baseline` must be one of {BASELINES} or an int token id, got {baseline!r}")
    if baseline == "pad":
        return table_row(encoder.pad_id)
    if baseline == "default" and encoder.baseline_id is not None:
        return table_row(encoder.baseline_id)
    return jnp.zeros_like(table_row(encoder.pad_id))


def token_options(name: str, n_tokens: int, encoder: TextEncoder, options: Mapping[str, Any] | None = None) -> dict:
    """`options` of method `name` completed with the per-token defaults of the options it has and the
    caller left unset (see module docstring)."""
    known = methods_mod.defaults(name)
    out = dict(options or {})
    for option, value in _PER_TOKEN.items():
        if option in known and option not in out:
            out[option] = value(n_tokens)
    if "stdev" in known and "stdev" not in out:
        out["stdev"] = NOISE_FRACTION * encoder.embedding_scale
    return out


def sentence_fn(encoder: TextEncoder, params, ids, content, target, *, perturbation: bool, strategy: str = "drop"):
    """f(one input) -> target scores of the sentence `ids` (T,) with its `content` tokens (C,) taken from
    the input: (C, E) embeddings (gradient methods), (C, 1, E) (replace) or (C, 1, 1) keep values (drop)."""
    ids = jnp.asarray(ids, jnp.int32)
    embeddings = jnp.asarray(encoder.embed_fn(params, ids[None])[0])   # (T, E); params may be NumPy
    keep = encoder.keep_of(ids)                                    # (T,)

    def encode(e, k):
        return target(encoder.encode_embeddings_fn(params, e[None], k[None])[0])

    if not perturbation:
        return lambda x: encode(embeddings.at[content].set(x), keep)
    if strategy == "drop":
        return lambda z: encode(embeddings, keep.at[content].set(z[:, 0, 0] > 0.5))
    return lambda x: encode(embeddings.at[content].set(x[:, 0, :]), keep)


def token_inputs(encoder: TextEncoder, params, ids, content, baseline_vec, *, perturbation: bool,
                 strategy: str = "drop"):
    """(x, baseline) of `sentence_fn`'s input for the method kind and strategy."""
    embeddings = jnp.asarray(encoder.embed_fn(params, jnp.asarray(ids, jnp.int32)[None])[0])[content]   # (C, E)
    base = jnp.broadcast_to(baseline_vec, embeddings.shape).astype(embeddings.dtype)
    if not perturbation:
        return embeddings, base
    if strategy == "drop":
        ones = jnp.ones((embeddings.shape[0], 1, 1), embeddings.dtype)
        return ones, jnp.zeros_like(ones)
    return embeddings[:, None, :], base[:, None, :]


def token_scores(encoder: TextEncoder, params, ids, content, target, method: str, key, *, options=None,
                 baseline="default", strategy: str = "drop", batch_size: int | None = None) -> jax.Array:
    """Scores of one sentence's content tokens under `method`: (C,), or (K, C) for K stacked targets.

    Args:
      ids: (T,) token ids; content: (C,) positions to attribute (`content_positions`); both may be
        traced (vmap over sentences of the same T and C).
      target: a `cocoa_jax.targets.Target` (stacked: K scores per token).
      method: a name of `cocoa_jax.methods.METHODS`; options: its options (per-token defaults added,
        `token_options`); baseline: see `baseline_vector`; strategy: "drop" or "replace" (perturbation
        methods only, see module docstring).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {STRATEGIES}, got {strategy!r}")
    record = methods_mod.get(method)
    perturbation = not record.per_channel
    n_tokens = int(np.shape(content)[0])
    if n_tokens == 0:
        raise ValueError("the sentence has no content token to attribute (only special tokens or padding)")
    options = token_options(method, n_tokens, encoder, options)
    f = sentence_fn(encoder, params, ids, content, target, perturbation=perturbation, strategy=strategy)
    x, base = token_inputs(encoder, params, ids, content, baseline_vector(encoder, params, baseline),
                           perturbation=perturbation, strategy=strategy)
    maps = methods_mod.attribute(method, f, x, base, key, batch_size=batch_size, **options)
    # gradient maps (..., C, E) -> sum over E; perturbation maps (..., C, 1) -> (..., C)
    return jnp.sum(maps, axis=-1) if not perturbation else maps[..., 0]
