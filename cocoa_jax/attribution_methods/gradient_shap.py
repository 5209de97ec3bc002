"""GradientSHAP, the estimator of Captum's `GradientShap`, with its opt-in variance reduction."""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import _checks
from cocoa_jax.attribution_methods import adaptive
from cocoa_jax.attribution_methods._common import (antithetic_draws, broadcast_to_rank, check_flag, check_input,
                                                   check_stdev, num_targets, sum_gradient_terms)


class GradientShapDraws(NamedTuple):
    """Per-sample random draws of GradientSHAP (for tests and custom estimators)."""

    baseline_index: jax.Array  # (n,) int32 index into baselines
    noise: jax.Array  # (n, *x.shape) Gaussian noise with std `stdev`, added to x
    alpha: jax.Array  # (n,) uniform [0, 1) position on the path


def _gradient_shap_draw(sample_key, x_shape, n_baselines: int, stdev: float, dtype) -> GradientShapDraws:
    """One sample's draws (unbatched fields)."""
    k_index, k_noise, k_alpha = jax.random.split(sample_key, 3)
    return GradientShapDraws(
        jax.random.randint(k_index, (), 0, n_baselines),
        stdev * jax.random.normal(k_noise, tuple(x_shape), dtype),
        jax.random.uniform(k_alpha, (), dtype),
    )


def gradient_shap_draws(key, n_samples: int, x_shape, n_baselines: int, stdev: float,
                        dtype=jnp.float32, *, antithetic: bool = False,
                        stratified_alpha: bool = False) -> GradientShapDraws:
    """The draws `gradient_shap` makes: sample i uses `jax.random.split(key, n_samples)[i]`.

    With the options, see `gradient_shap`: the draws behind pair / stratum j come from
    `jax.random.split(key, n_draws)[j]`.
    """
    draw = functools.partial(_gradient_shap_draw, x_shape=tuple(x_shape), n_baselines=n_baselines,
                             stdev=stdev, dtype=dtype)
    if not (antithetic or stratified_alpha):
        return jax.vmap(draw)(jax.random.split(key, n_samples))
    n_draws = antithetic_draws("n_samples", n_samples, antithetic)
    return _variance_reduced_draws(jax.random.split(key, n_draws), jnp.arange(n_samples), draw,
                                   antithetic, stratified_alpha)


def _variance_reduced_draws(keys, indices, draw, antithetic: bool, stratified_alpha: bool) -> GradientShapDraws:
    """GradientSHAP draws of samples `indices` (B,) from the per-draw `keys` (n_draws,).

    stratified_alpha: draw j's alpha lies in stratum [j, j + 1) / n_draws (a uniform point in
      it), so the n_draws draws cover the path evenly. antithetic: sample 2j + 1 mirrors
      sample 2j (same baseline, noise negated, alpha -> 1 - alpha). Every sample's marginal
      distribution is the default's (stratum index uniform), so the expectation is unchanged.
    """
    pair = indices // 2 if antithetic else indices
    draws = jax.vmap(draw)(keys[pair])
    alpha, noise = draws.alpha, draws.noise
    if stratified_alpha:
        alpha = (pair.astype(alpha.dtype) + alpha) / keys.shape[0]
    if antithetic:
        second = indices % 2 == 1
        alpha = jnp.where(second, 1.0 - alpha, alpha)
        noise = jnp.where(broadcast_to_rank(second, noise.ndim - 1), -noise, noise)
    return GradientShapDraws(draws.baseline_index, noise, alpha)


def gradient_shap(
    f: Callable,
    x: jax.Array,
    baselines: jax.Array,
    key: jax.Array,
    *,
    n_samples: int = 50,
    stdev: float = 0.2,
    batch_size: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    antithetic: bool = False,
    stratified_alpha: bool = False,
    tolerance: float | None = None,
    round_size: int | None = None,
    return_passes: bool = False,
) -> jax.Array:
    """GradientSHAP, the estimator of Captum's `GradientShap`.

    For each sample: a baseline b drawn uniformly from `baselines`, noisy input
    x' = x + N(0, stdev^2), alpha ~ U[0, 1); term = (x' - b) * grad f(b + alpha (x' - b)).
    Returns the mean of the terms: x.shape, or (K, *x.shape).

    Args:
      baselines: (M, *x.shape), the baseline distribution (M=1 for one blurred image).
      antithetic: opt-in. Samples 2j, 2j + 1 share pair j's draws (key
        `jax.random.split(key, n_samples // 2)[j]`): same baseline, noise +eps / -eps, alpha
        a / 1 - a. `n_samples` counts gradient passes and must be even.
      stratified_alpha: opt-in. Draw j's alpha is uniform in [j, j + 1) / n_draws (n_draws =
        n_samples, or n_samples // 2 with antithetic) instead of in [0, 1).
      Both keep the expectation exactly; they reduce the variance from alpha and the noise.
      tolerance: None (off: exactly n_samples), or stop after the first round of `round_size`
        samples (None: 10) whose relative standard error of the map is <= tolerance
        (`adaptive`); n_samples is then the budget. Needs i.i.d. draws (no antithetic /
        stratified_alpha). return_passes: also return the gradient passes used, a () int32.
    """
    x = check_input(x)
    _checks.check_array("baselines", baselines, ndim=x.ndim + 1)
    if tuple(np.shape(baselines)[1:]) != tuple(x.shape) or np.shape(baselines)[0] == 0:
        raise ValueError(
            f"`baselines` must have shape (M, *x.shape) = (M, {', '.join(map(str, x.shape))}) "
            f"with M >= 1, got {np.shape(baselines)}"
        )
    baselines = jnp.asarray(baselines, x.dtype)
    n_samples = _checks.check_positive_int("n_samples", n_samples)
    batch_size = _checks.check_optional_batch_size(batch_size)
    stdev = check_stdev(stdev)
    n_draws = antithetic_draws("n_samples", n_samples, antithetic)
    stratified_alpha = check_flag("stratified_alpha", stratified_alpha)
    k = num_targets(f, x)
    keys = jax.random.split(key, n_draws)
    draw = functools.partial(_gradient_shap_draw, x_shape=x.shape, n_baselines=baselines.shape[0],
                             stdev=stdev, dtype=x.dtype)
    tolerance = adaptive.check_tolerance(tolerance)
    round_size = adaptive.check_round_size(round_size, adaptive.DEFAULT_ROUND_SIZES["gradient"], n_samples)
    return_passes = check_flag("return_passes", return_passes)
    if tolerance is not None:
        if antithetic or stratified_alpha:
            raise ValueError("`tolerance` needs i.i.d. draws: antithetic=False and stratified_alpha=False")

        def chunk_of(samples, lo, hi):
            draws = jax.vmap(draw)(keys[samples])
            chosen = baselines[draws.baseline_index]
            delta = x + draws.noise - chosen
            return chosen + broadcast_to_rank(draws.alpha, x.ndim) * delta, delta

        maps, used = adaptive.gradient_mean_in_rounds(f, k, x, chunk_of, points_per_sample=1, budget=n_samples,
                                                      round_size=round_size, tolerance=tolerance,
                                                      batch_size=batch_size, mesh=mesh)
        return (maps, used) if return_passes else maps

    def make_chunk(start, stop):
        # Drawn per sample key, so the draws do not depend on the chunking.
        if antithetic or stratified_alpha:
            draws = _variance_reduced_draws(keys, jnp.arange(start, stop), draw, antithetic, stratified_alpha)
        else:
            draws = jax.vmap(draw)(keys[start:stop])
        chosen = baselines[draws.baseline_index]
        delta = x + draws.noise - chosen
        points = chosen + broadcast_to_rank(draws.alpha, x.ndim) * delta
        return points, delta / n_samples

    maps = sum_gradient_terms(f, k, n_samples, batch_size, mesh, make_chunk)
    return (maps, jnp.int32(n_samples)) if return_passes else maps
