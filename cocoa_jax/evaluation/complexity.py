"""Complexity metrics of attribution maps: how concentrated a map is (no model call).

    sparseness(maps)  Gini index of |a| (Chalasani et al., ICML 2020; Quantus `Sparseness`):
                      G = sum_k (2k - n - 1) |a|_(k) / (n sum |a|), |a|_(1) <= ... <= |a|_(n);
                      higher = sparser (better).  The Gini itself is `cocoa_jax.sparsity.gini_index`.
    complexity(maps)  entropy of the normalised |map| (Bhatt et al., IJCAI 2020; Quantus `Complexity`):
                      p = |a| / sum |a|,  H = -sum p log p (nats, 0 log 0 = 0); lower = simpler (better).

Both read every value of a map (all pixels and channels): they are invariant to the order of
the values and to a positive rescaling, so Quantus's default normalisation by the maximum does
not change them. Quantus's `Sparseness` adds 1e-7 to every value before sorting, and its
`Complexity` takes log(p + 1e-12): both move scores by about 1e-7 (tests/evaluation check it).
A map of zeros has no mass: its sparseness and its complexity are 0 (evaluate refuses such maps).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from cocoa_jax.evaluation.table import Metric, register
from cocoa_jax.sparsity import gini_index


def sparseness(maps: jax.Array) -> jax.Array:
    """Gini index of |a| of each map: (K, ...) -> (K,), in [0, 1 - 1/n]."""
    maps = jnp.asarray(maps)
    return gini_index(maps, ndim=maps.ndim - 1)


def complexity(maps: jax.Array) -> jax.Array:
    """Entropy (nats) of |a| / sum |a| of each map: (K, ...) -> (K,), in [0, log n]."""
    flat = jnp.abs(jnp.asarray(maps)).reshape(maps.shape[0], -1)
    total = jnp.sum(flat, axis=-1, keepdims=True)
    p = flat / jnp.where(total > 0, total, 1.0)
    # 0 log 0 = 0: the where keeps log's argument positive so no NaN reaches the sum or a gradient.
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)


def _sparseness_metric(ctx, x, maps, key):
    del ctx, x, key  # reads the maps only
    return sparseness(maps)


def _complexity_metric(ctx, x, maps, key):
    del ctx, x, key
    return complexity(maps)


register(Metric(
    "sparseness", "Sparseness (Gini)", "complexity", "higher", _sparseness_metric,
    summary="Gini index of |map|: how few pixels hold the attribution mass",
    reference="Chalasani et al., Concise explanations of neural networks using adversarial training, ICML 2020",
    quantus="quantus.Sparseness", reads_model=False))
register(Metric(
    "complexity", "Complexity (entropy)", "complexity", "lower", _complexity_metric,
    summary="entropy of |map| / sum |map|: how spread the attribution mass is",
    reference="Bhatt et al., Evaluating and aggregating feature-based model explanations, IJCAI 2020",
    quantus="quantus.Complexity", reads_model=False))


__all__ = ["complexity", "sparseness"]
