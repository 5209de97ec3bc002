"""A toy `token_drop.TokenScorer` around any f of pixels, for the table-wide method tests: methods
that read a ViT's tokens (`methods.reads_tokens`: rollout, token-drop RISE / Occlusion) get f's
scores with every token kept, scores that depend on the kept tokens, and attention maps that
depend on the image (2 blocks, 2 heads, 2 px patches)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from cocoa_jax.attribution_methods import token_drop

PATCH = 2


def _patch_means(x):
    gh, gw = x.shape[0] // PATCH, x.shape[1] // PATCH
    return x[:gh * PATCH, :gw * PATCH].reshape(gh, PATCH, gw, PATCH, -1).mean(axis=(1, 3, 4)).reshape(-1)


def toy_token_scorer(f) -> token_drop.TokenScorer:
    def score(x, keep):
        if keep is None:
            return f(x)
        kept = jnp.zeros(_patch_means(x).shape, x.dtype).at[keep].set(1.0)
        return f(x) * (1.0 + jnp.mean(kept * _patch_means(x)))

    def attention(x):
        tokens = jnp.concatenate([jnp.zeros((1,), x.dtype), _patch_means(x)])
        scale = jnp.arange(1.0, 5.0, dtype=x.dtype).reshape(2, 2, 1, 1)
        return jax.nn.softmax(scale * tokens[:, None] * tokens[None, :], axis=-1)  # (2, 2, L, L)

    return token_drop.TokenScorer(score, attention, PATCH, 1)
