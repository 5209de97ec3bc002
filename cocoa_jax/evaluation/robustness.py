"""Robustness metrics: how much a map changes when the explicand moves a little.

Max- and average-sensitivity (Yeh et al., On the (in)fidelity and sensitivity of explanations,
NeurIPS 2019; Quantus 0.6's `MaxSensitivity` / `AvgSensitivity` with their defaults):

    ratio_s = || a - explain(x + eps_s) ||_2 / || a ||_2,   eps_s ~ U[-r, r]^(H W C) i.i.d.,
    max_sensitivity = max_s ratio_s,    avg_sensitivity = mean_s ratio_s,   s = 1..S,

per target, norms over every value of the map (pixels and channels). Lower is better. `a` is the
map being scored; `explain` is the evaluation's explainer (any method of `cocoa_jax.methods`,
`evaluation.method_explainer`), run for the same K targets at each perturbed input: one explainer call
per noise sample serves all K targets. Perturbed explanations use key `fold_in(key, s)`. In
`evaluate`, up to `SAMPLES_PER_CALL` noise samples are explained in one vmapped call (fewer when
`batch_size` is smaller): one batched pass instead of S one-image passes, memory of that many
explanations whatever S is.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from cocoa_jax import _checks, batching
from cocoa_jax.evaluation.randomisation import comparable
from cocoa_jax.evaluation.table import Metric, register

SAMPLES_PER_CALL = 8  # noise samples explained together by the metric functions (a cap on memory)


def uniform_noise(key: jax.Array, n_samples: int, shape, radius: float) -> jax.Array:
    """(n_samples, *shape) draws of U[-radius, radius] (Quantus's `uniform_noise` ball)."""
    return jax.random.uniform(key, (n_samples,) + tuple(shape), minval=-radius, maxval=radius)


def sensitivity_ratios(explain: Callable, x: jax.Array, maps: jax.Array, noise: jax.Array,
                       key: jax.Array | None = None, *, samples_per_call: int = 1) -> jax.Array:
    """||maps - explain(x + noise_s, key_s)|| / ||maps|| per noise sample and target.

    explain: (image (H, W, C), key) -> (K, ...) maps shaped like `maps`;  x: (H, W, C);
    maps: (K, ...), or (1, ...) for one map compared with the explainer's map of every target;  noise: (S, H, W, C);  key_s = fold_in(key, s) (key None: key 0). Per-channel
    and per-pixel maps are compared as channel means (`randomisation.comparable`).
    Returns (S, K). The explanations run `samples_per_call` at a time (vmapped; chunks in a rolled
    `lax.map`), so memory is that many explanations' whatever S is; 1: one after another.
    """
    samples_per_call = _checks.check_positive_int("samples_per_call", samples_per_call)
    key = jax.random.key(0) if key is None else key

    def one(args):
        s, eps = args
        a, perturbed = comparable(maps, explain(x + eps, jax.random.fold_in(key, s)))
        a, perturbed = a.reshape(a.shape[0], -1), perturbed.reshape(perturbed.shape[0], -1)  # (M | K, n)
        return jnp.linalg.norm(a - perturbed, axis=-1) / jnp.linalg.norm(a, axis=-1)

    samples = jnp.arange(noise.shape[0])
    if samples_per_call == 1:
        return jax.lax.map(one, (samples, noise))
    return batching.map_in_batches(lambda s: jax.vmap(one)((s, noise[s])), samples, samples_per_call)


def _ratios(ctx, x, maps, key, n_samples, radius):
    noise_key, explain_key = jax.random.split(key)
    noise = uniform_noise(noise_key, n_samples, x.shape, radius)
    per_call = min(SAMPLES_PER_CALL, n_samples, ctx.batch_size or SAMPLES_PER_CALL)
    return sensitivity_ratios(lambda image, k: ctx.explain(image, k), x, maps, noise, explain_key,
                              samples_per_call=per_call)


def max_sensitivity(ctx, x, maps, key, *, n_samples: int = 200, radius: float = 0.2) -> jax.Array:
    """The metric function (table contract): max over `n_samples` noise draws of the ratio, (K,)."""
    return jnp.max(_ratios(ctx, x, maps, key, n_samples, radius), axis=0)


def avg_sensitivity(ctx, x, maps, key, *, n_samples: int = 200, radius: float = 0.2) -> jax.Array:
    """The metric function (table contract): mean over `n_samples` noise draws of the ratio, (K,)."""
    return jnp.mean(_ratios(ctx, x, maps, key, n_samples, radius), axis=0)


_YEH = "Yeh et al., On the (in)fidelity and sensitivity of explanations, NeurIPS 2019"
register(Metric(
    "max_sensitivity", "Max-sensitivity", "robustness", "lower", max_sensitivity,
    summary="largest relative change of the map under uniform input noise of radius r",
    reference=_YEH, quantus="quantus.MaxSensitivity", options={"n_samples": 200, "radius": 0.2},
    uses_key=True, needs_explainer=True))
register(Metric(
    "avg_sensitivity", "Average sensitivity", "robustness", "lower", avg_sensitivity,
    summary="mean relative change of the map under uniform input noise of radius r",
    reference=_YEH, quantus="quantus.AvgSensitivity", options={"n_samples": 200, "radius": 0.2},
    uses_key=True, needs_explainer=True))


__all__ = ["SAMPLES_PER_CALL", "avg_sensitivity", "max_sensitivity", "sensitivity_ratios", "uniform_noise"]
