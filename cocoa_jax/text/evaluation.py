"""Token insertion / deletion curves and AUCs, with the measures of `cocoa_jax.metrics.MEASURES`.

The image protocol unchanged (`metrics.insertion_deletion`), on the sentence's content tokens as a
one-column image (C, 1, E): tokens are ranked by score, most important first; one token per step by
default (`n_steps = C`); a removed token takes the blank-token reference, the baseline embedding of
`cocoa_jax.text.attribution.baseline_vector` (positions kept; special tokens and padding untouched).
Insertion starts from the all-blank sentence and reveals tokens; deletion blanks them.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import metrics
from cocoa_jax.text.attribution import baseline_vector
from cocoa_jax.text.encoders import TextEncoder

__all__ = ["token_insertion_deletion"]


def token_insertion_deletion(encoder: TextEncoder, params, ids, content, scores, measures, *, baseline="default",
                             n_steps: int | None = None):
    """Curves and AUCs of one sentence for K token maps.

    Args:
      ids: (T,) token ids; content: (C,) attributed positions (concrete: C sets the steps).
      scores: (C,) or (K, C) token scores (e.g. `token_scores`).
      measures: (B, D) -> (B, M), e.g. `metrics.make_measures(["ccs"], ccs=target)`.
      n_steps: steps of the curves (default C: one token per step).
    Returns (curves ([K,] 2, n_steps + 1, M), aucs ([K,] 2, M)); kind 0 = insertion, 1 = deletion.
    """
    ids = jnp.asarray(ids, jnp.int32)
    content = np.asarray(content)
    n = int(content.shape[0])
    scores = jnp.asarray(scores)
    if scores.shape[-1] != n or scores.ndim not in (1, 2):
        raise ValueError(f"`scores` must have shape (C,) or (K, C) with C = {n} content tokens, got {scores.shape}")
    embeddings = jnp.asarray(encoder.embed_fn(params, ids[None])[0])
    keep = ids != encoder.pad_id
    x = embeddings[content][:, None, :]                                   # (C, 1, E)
    blank = jnp.broadcast_to(baseline_vector(encoder, params, baseline), x.shape).astype(x.dtype)

    def encode(batch):                                                    # (B, C, 1, E) -> (B, D)
        full = jax.vmap(lambda b: embeddings.at[content].set(b[:, 0, :]))(batch)
        return encoder.encode_embeddings_fn(params, full, jnp.broadcast_to(keep, full.shape[:2]))

    return metrics.insertion_deletion(encode, measures, x, blank, scores[..., None], n_steps=n_steps or n)
