"""SmoothGrad over Integrated Gradients: the official COCOA `smooth_int_grad`."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from cocoa_jax import _checks
from cocoa_jax.attribution_methods._common import (broadcast_to_rank, check_baseline, check_input, check_stdev,
                                                   num_targets, sum_gradient_terms)
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
) -> jax.Array:
    """mean_i IG(f, x + stdev * eps_i, baseline), eps_i ~ N(0, I): x.shape or (K, *x.shape).

    Captum's `NoiseTunnel(IntegratedGradients(f)).attribute(x, baselines=baseline,
    nt_type="smoothgrad", nt_samples=n_samples, stdevs=stdev, n_steps=n_steps, method=method)`
    (the official COCOA `smooth_int_grad`): Gaussian noise with absolute std `stdev` on the
    input only (the baseline stays fixed), each noisy input explained by IG along the straight
    path from the baseline, the maps averaged. Sample i's noise draws from
    `jax.random.split(key, n_samples)[i]`; the n_samples * n_steps path points are evaluated
    in gradient batches of at most `batch_size` (None: all at once), split over `mesh`.
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

    def make_chunk(start, stop):
        # Flat index t = sample * n_points + step; the noise depends on the sample only.
        t = jnp.arange(start, stop)
        path = x + stdev * noise_of(keys[t // n_points]) - baseline  # (B, *x.shape)
        a = broadcast_to_rank(alphas[t % n_points], x.ndim)
        w = broadcast_to_rank(weights[t % n_points], x.ndim)
        # IG_i = path_i * sum_j w_j grad f(baseline + a_j path_i): the path factor moves inside.
        return baseline + a * path, w * path / n_samples

    return sum_gradient_terms(f, k, n_samples * n_points, batch_size, mesh, make_chunk)
