"""SmoothGrad (Smilkov et al., 2017): gradients averaged over Gaussian noise on the input."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from cocoa_jax import _checks
from cocoa_jax.attribution_methods import adaptive
from cocoa_jax.attribution_methods._common import (antithetic_draws, broadcast_to_rank, check_flag, check_input,
                                                   check_stdev, num_targets, sum_gradient_terms)


def smoothgrad(
    f: Callable,
    x: jax.Array,
    key: jax.Array,
    *,
    n_samples: int = 25,
    stdev: float = 1.0,
    batch_size: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    antithetic: bool = False,
    tolerance: float | None = None,
    round_size: int | None = None,
    return_passes: bool = False,
) -> jax.Array:
    """SmoothGrad (Smilkov et al., 2017): mean_i grad f(x + stdev * eps_i), eps_i ~ N(0, I).

    `stdev` is absolute (Captum's NoiseTunnel convention), not relative to the input range.
    antithetic: opt-in variance reduction. Samples come in pairs (eps, -eps): pair j draws from
      `jax.random.split(key, n_samples // 2)[j]` and gives samples 2j and 2j + 1, so
      `n_samples` (the gradient passes) must be even. Same expectation; the odd part of the
      gradient in the noise cancels within each pair (exactly, for a quadratic f).
    tolerance: None (off: exactly n_samples), or stop after the first round of `round_size`
      samples (None: 10) whose relative standard error of the map is <= tolerance (`adaptive`);
      n_samples is then the budget; needs antithetic=False. return_passes: also return the
      gradient passes used, a () int32.
    Returns x.shape, or (K, *x.shape).
    """
    x = check_input(x)
    n_samples = _checks.check_positive_int("n_samples", n_samples)
    batch_size = _checks.check_optional_batch_size(batch_size)
    stdev = check_stdev(stdev)
    n_draws = antithetic_draws("n_samples", n_samples, antithetic)
    k = num_targets(f, x)
    keys = jax.random.split(key, n_draws)
    noise_of = jax.vmap(lambda sample_key: jax.random.normal(sample_key, x.shape, x.dtype))
    tolerance = adaptive.check_tolerance(tolerance)
    round_size = adaptive.check_round_size(round_size, adaptive.DEFAULT_ROUND_SIZES["gradient"], n_samples)
    return_passes = check_flag("return_passes", return_passes)
    if tolerance is not None:
        if antithetic:
            raise ValueError("`tolerance` needs i.i.d. draws: antithetic=False")
        maps, used = adaptive.gradient_mean_in_rounds(
            f, k, x, lambda samples, lo, hi: (x + stdev * noise_of(keys[samples]), jnp.ones((), x.dtype)),
            points_per_sample=1, budget=n_samples, round_size=round_size, tolerance=tolerance,
            batch_size=batch_size, mesh=mesh)
        return (maps, used) if return_passes else maps

    def make_chunk(start, stop):
        if antithetic:
            indices = jnp.arange(start, stop)
            signs = broadcast_to_rank(1.0 - 2.0 * (indices % 2), x.ndim).astype(x.dtype)
            points = x + stdev * signs * noise_of(keys[indices // 2])
        else:
            points = x + stdev * noise_of(keys[start:stop])
        return points, jnp.full((stop - start,) + (1,) * x.ndim, 1.0 / n_samples, x.dtype)

    maps = sum_gradient_terms(f, k, n_samples, batch_size, mesh, make_chunk)
    return (maps, jnp.int32(n_samples)) if return_passes else maps
