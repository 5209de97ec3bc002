"""SmoothGrad over Integrated Gradients: the official COCOA `smooth_int_grad`."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from cocoa_jax import _checks
from cocoa_jax.attribution_methods import adaptive
from cocoa_jax.attribution_methods._common import (broadcast_to_rank, check_baseline, check_flag, check_input,
                                                   check_stdev, num_targets, sum_gradient_terms)
from cocoa_jax.attribution_methods.quadrature import quadrature


def smooth_integrated_gradients(
    f: Callable,
    x: jax.Array,
    baseline: jax.Array,
    key: jax.Array,
    *,
    n_samples: int = 25,
    stdev: float = 0.2,
    n_steps: int = 50,
    method: str = "gausslegendre",
    batch_size: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    tolerance: float | None = None,
    round_size: int | None = None,
    return_passes: bool = False,
) -> jax.Array:
    """mean_i IG(f, x + stdev * eps_i, baseline), eps_i ~ N(0, I): x.shape or (K, *x.shape).

    Captum's `NoiseTunnel(IntegratedGradients(f)).attribute(x, baselines=baseline,
    nt_type="smoothgrad", nt_samples=n_samples, stdevs=stdev, n_steps=n_steps, method=method)`
    (the official COCOA `smooth_int_grad`): Gaussian noise with absolute std `stdev` on the
    input only (the baseline stays fixed), each noisy input explained by IG along the straight
    path from the baseline, the maps averaged. Sample i's noise draws from
    `jax.random.split(key, n_samples)[i]`; the n_samples * n_steps path points are evaluated
    in gradient batches of at most `batch_size` (None: all at once), split over `mesh`.
    tolerance: None (off: exactly n_samples), or stop after the first round of `round_size`
    noisy inputs (None: 5) whose relative standard error of the map is <= tolerance
    (`adaptive`); n_samples is then the budget. return_passes: also return the gradient passes
    used (noisy inputs x path points), a () int32.
    """
    x = check_input(x)
    baseline = check_baseline("baseline", baseline, x)
    n_samples = _checks.check_positive_int("n_samples", n_samples)
    batch_size = _checks.check_optional_batch_size(batch_size)
    stdev = check_stdev(stdev)
    rule = quadrature(method, n_steps)
    k = num_targets(f, x)
    n_points = len(rule.alphas)
    alphas = jnp.asarray(rule.alphas, x.dtype)
    weights = jnp.asarray(rule.weights, x.dtype)
    keys = jax.random.split(key, n_samples)
    noise_of = jax.vmap(lambda sample_key: jax.random.normal(sample_key, x.shape, x.dtype))
    tolerance = adaptive.check_tolerance(tolerance)
    round_size = adaptive.check_round_size(round_size, adaptive.DEFAULT_ROUND_SIZES["smooth_ig"], n_samples)
    return_passes = check_flag("return_passes", return_passes)
    if tolerance is not None:
        def chunk_of(samples, lo, hi):
            # One noisy input's path points lo..hi-1: IG_i = path_i * sum_j w_j grad f(baseline + a_j path_i).
            path = x + stdev * noise_of(keys[samples]) - baseline  # (1, *x.shape)
            a = broadcast_to_rank(alphas[lo:hi], x.ndim)
            return baseline + a * path, broadcast_to_rank(weights[lo:hi], x.ndim) * path

        maps, used = adaptive.gradient_mean_in_rounds(f, k, x, chunk_of, points_per_sample=n_points,
                                                      budget=n_samples, round_size=round_size, tolerance=tolerance,
                                                      batch_size=batch_size, mesh=mesh)
        return (maps, used * n_points) if return_passes else maps

    def make_chunk(start, stop):
        # Flat index t = sample * n_points + step; the noise depends on the sample only.
        t = jnp.arange(start, stop)
        path = x + stdev * noise_of(keys[t // n_points]) - baseline  # (B, *x.shape)
        a = broadcast_to_rank(alphas[t % n_points], x.ndim)
        w = broadcast_to_rank(weights[t % n_points], x.ndim)
        # IG_i = path_i * sum_j w_j grad f(baseline + a_j path_i): the path factor moves inside.
        return baseline + a * path, w * path / n_samples

    maps = sum_gradient_terms(f, k, n_samples * n_points, batch_size, mesh, make_chunk)
    return (maps, jnp.int32(n_samples * n_points)) if return_passes else maps
