"""Attention rollout (Abnar & Zuidema, 2020) for the ported ViTs.

Per block l, the attention weights (heads, L, L) are fused over heads (mean; or max / min), the
residual connection is added as 0.5 A + 0.5 I and each row renormalised to sum to 1 (a no-op for
the mean, whose rows already do); the blocks are multiplied, R = A_L ... A_1, and the class
token's row of R over the patch tokens is the map: how much of the class token's final state
flows from each patch. Patch values are shown on their p x p pixels (`token_drop.to_pixels`).

The map depends on the image only, not on the explained target: rollout is class- (and target-)
agnostic, so all K targets get the same map. It needs `f` with token access (a
`token_drop.TokenScorer`, which reads the attention the ports' blocks return; no second model).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from cocoa_jax import _checks
from cocoa_jax.attribution_methods import _perturbation as P, token_drop

__all__ = ["HEAD_FUSIONS", "attention_rollout", "rollout"]

HEAD_FUSIONS = {"mean": jnp.mean, "max": jnp.max, "min": jnp.min}


def attention_rollout(attention: jax.Array, head_fusion: str = "mean") -> jax.Array:
    """(layers, heads, L, L) softmax weights -> (L, L) rollout A_L ... A_1 with A_l the head-fused
    weights of block l plus the identity, halved, rows renormalised."""
    _checks.check_choice("head_fusion", head_fusion, HEAD_FUSIONS)
    if attention.ndim != 4 or attention.shape[-1] != attention.shape[-2]:
        raise ValueError(f"`attention` must be (layers, heads, L, L), got shape {attention.shape}")
    fused = HEAD_FUSIONS[head_fusion](attention, axis=1)  # (layers, L, L)
    eye = jnp.eye(fused.shape[-1], dtype=fused.dtype)
    mixed = 0.5 * fused + 0.5 * eye
    mixed = mixed / jnp.sum(mixed, axis=-1, keepdims=True)
    return _product(mixed)


def _product(mixed: jax.Array) -> jax.Array:
    """A_L ... A_1 of (layers, L, L): later blocks on the left."""
    def step(total, layer):
        return layer @ total, None

    total, _ = jax.lax.scan(step, jnp.eye(mixed.shape[-1], dtype=mixed.dtype), mixed)
    return total


def rollout(f: Callable, x: jax.Array, baseline=None, key=None, *, head_fusion: str = "mean") -> jax.Array:
    """Attention rollout of the class token over the patches of ONE image x (H, W, C).

    f: a `token_drop.TokenScorer` (its attention maps are read; its scores are not: the map is
    the same for every target). baseline, key: unused (common signature).
    Returns: (H, W), or (K, H, W) (K equal maps) when f returns (K,).
    """
    del baseline, key
    f = token_drop.require_scorer(f, "rollout")
    x = P.check_input(x, rank=3)
    _checks.check_choice("head_fusion", head_fusion, HEAD_FUSIONS)
    grid = token_drop.patch_grid(x.shape[:2], f.patch_size)
    k = P.num_targets(f, x)
    rolled = attention_rollout(f.attention(x), head_fusion)
    row = rolled[0, f.prefix:]
    if row.shape[0] != grid[0] * grid[1]:
        raise ValueError(f"the attention maps have {row.shape[0]} patch tokens, expected {grid[0]} x {grid[1]}")
    maps = token_drop.to_pixels(row.reshape(grid), f.patch_size, x.shape[:2]).astype(x.dtype)
    return maps if k is None else jnp.broadcast_to(maps, (k,) + maps.shape)
