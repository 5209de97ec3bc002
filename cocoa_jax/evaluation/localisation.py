"""Localisation metrics: does a map put its relevance inside a ground-truth (H, W) mask?

On the pixel map a = channel mean of the map (`pixel_scores`), with s the boolean mask and
n = H W pixels (Quantus 0.6's `PointingGame`, `RelevanceMassAccuracy`, `RelevanceRankAccuracy`):

    pointing_game           1 if a pixel of maximal a lies in s, else 0 (Zhang et al., ECCV 2016);
                            weighted=True scores a hit 1 - |s| / n (a small mask is a harder target;
                            Quantus 0.6's weighted=True raises a NumPy indexing error on a hit)
    relevance_mass_accuracy sum_{s} a / sum a (Arras et al., Information Fusion 2022)
    relevance_rank_accuracy |top-|s| pixels by a  intersect s| / |s| (Arras et al., 2022)

All three: higher is better. Quantus's default normalisation by max |a| changes none of them.
Ties in the rank metric are broken by pixel order (row-major, stable); Quantus's `np.argsort`
is not stable, so maps with tied values at the |s|-th rank may differ. An empty mask has no
score: `check_masks` refuses it before any work (Quantus returns NaN).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax.evaluation.table import Metric, pixel_scores, register


def check_masks(masks, image_shape, n: int | None = None) -> np.ndarray:
    """Localisation masks (N, H, W) of {0, 1} / bool values, each with at least one pixel, N = `n`
    (the explicands) when given; returns them as float32 {0, 1}. A one-line ValueError names
    `masks` otherwise."""
    array = np.asarray(masks)
    height, width = tuple(image_shape)[:2]
    rows = "N" if n is None else f"N={n}"
    if array.ndim != 3 or array.shape[1:] != (height, width) or (n is not None and array.shape[0] != n):
        raise ValueError(f"`masks` must have shape ({rows}, {height}, {width}) (one boolean mask per explicand), "
                         f"got {array.shape}")
    if array.dtype != bool and not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"`masks` must be boolean or 0/1 numbers, got dtype {array.dtype}")
    if array.dtype != bool and not np.all((array == 0) | (array == 1)):
        raise ValueError("`masks` must hold only 0/1 or boolean values (NaN and other values are refused)")
    empty = np.flatnonzero(array.reshape(len(array), -1).sum(axis=1) == 0)
    if empty.size:
        raise ValueError(f"`masks` has {empty.size} empty mask(s) (first at explicand {int(empty[0])}); "
                         f"a localisation score needs at least one pixel in the mask")
    return array.astype(np.float32)


def _flat(maps, mask):
    a = pixel_scores(jnp.asarray(maps))
    return a.reshape(a.shape[0], -1), jnp.asarray(mask, bool).reshape(-1)


def pointing_game(maps, mask, *, weighted: bool = False) -> jax.Array:
    """maps (K, H, W[, C]), mask (H, W) -> (K,) in {0, 1} (or 1 - |s|/n for a weighted hit)."""
    a, s = _flat(maps, mask)
    at_max = a == jnp.max(a, axis=-1, keepdims=True)
    hit = jnp.any(at_max & s, axis=-1).astype(a.dtype)
    if weighted:
        hit = hit * (1.0 - jnp.sum(s) / s.size)
    return hit


def relevance_mass_accuracy(maps, mask) -> jax.Array:
    """maps (K, H, W[, C]), mask (H, W) -> (K,): the share of the map's sum inside the mask."""
    a, s = _flat(maps, mask)
    return jnp.sum(jnp.where(s, a, 0.0), axis=-1) / jnp.sum(a, axis=-1)


def _order_keys(a: jax.Array) -> jax.Array:
    """float32 values -> uint32 keys in the same order (-0.0 and 0.0 equal; finite or +-inf values)."""
    a = jnp.where(a == 0, jnp.zeros_like(a), a).astype(jnp.float32)
    bits = jax.lax.bitcast_convert_type(a, jnp.uint32)
    return jnp.where((bits >> 31) == 1, ~bits, bits | jnp.uint32(0x80000000))


def relevance_rank_accuracy(maps, mask) -> jax.Array:
    """maps (K, H, W[, C]), mask (H, W) -> (K,): the share of the |s| highest pixels inside the mask
    (ties at the |s|-th value taken in pixel order, as a stable sort by decreasing value would).

    No sort (XLA's CPU sort was most of this metric's time): the |s|-th largest value t is built
    bit by bit from the top of its order-preserving 32-bit key (32 counting passes over the map),
    then the top |s| are the pixels above t and the first tied ones in pixel order."""
    a, s = _flat(maps, mask)
    size = jnp.sum(s)
    keys = _order_keys(a)  # (K, n)

    def bit(i, t):  # the largest t with #{keys >= t} >= |s|, decided from the top bit down
        candidate = t | (jnp.uint32(1) << (jnp.uint32(31) - i.astype(jnp.uint32)))
        return jnp.where(jnp.sum(keys >= candidate[:, None], axis=-1) >= size, candidate, t)

    t = jax.lax.fori_loop(0, 32, bit, jnp.zeros(keys.shape[:1], jnp.uint32))[:, None]
    above, tied = keys > t, keys == t
    top = above | (tied & (jnp.cumsum(tied, axis=-1) <= size - jnp.sum(above, axis=-1, keepdims=True)))
    return jnp.sum(top & s, axis=-1) / jnp.maximum(size, 1)


def _pointing_game_metric(ctx, x, maps, key, *, weighted):
    del x, key
    return pointing_game(maps, ctx.mask, weighted=weighted)


def _mass_metric(ctx, x, maps, key):
    del x, key
    return relevance_mass_accuracy(maps, ctx.mask)


def _rank_metric(ctx, x, maps, key):
    del x, key
    return relevance_rank_accuracy(maps, ctx.mask)


register(Metric(
    "pointing_game", "Pointing game", "localisation", "higher", _pointing_game_metric,
    summary="is the map's maximum inside the mask",
    reference="Zhang et al., Top-down neural attention by excitation backprop, ECCV 2016",
    quantus="quantus.PointingGame", options={"weighted": False}, needs_mask=True, reads_model=False))
register(Metric(
    "relevance_mass_accuracy", "Relevance mass accuracy", "localisation", "higher", _mass_metric,
    summary="share of the map's sum inside the mask",
    reference="Arras et al., CLEVR-XAI: a benchmark dataset for the ground truth evaluation of neural "
              "network explanations, Information Fusion 2022",
    quantus="quantus.RelevanceMassAccuracy", needs_mask=True, reads_model=False))
register(Metric(
    "relevance_rank_accuracy", "Relevance rank accuracy", "localisation", "higher", _rank_metric,
    summary="share of the |mask| highest-ranked pixels inside the mask",
    reference="Arras et al., CLEVR-XAI, Information Fusion 2022",
    quantus="quantus.RelevanceRankAccuracy", needs_mask=True, reads_model=False))


__all__ = ["check_masks", "pointing_game", "relevance_mass_accuracy", "relevance_rank_accuracy"]
