"""Integrated Gradients (Sundararajan et al., 2017) with a fixed quadrature rule or an adaptive stopping rule."""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import _checks
from cocoa_jax.attribution_methods._common import (broadcast_to_rank, check_baseline, check_input, num_targets,
                                                   sum_gradient_terms)
from cocoa_jax.attribution_methods.quadrature import Quadrature, quadrature


def integrated_gradients(
    f: Callable,
    x: jax.Array,
    baseline: jax.Array,
    *,
    n_steps: int = 50,
    method: str | Quadrature = "gausslegendre",
    batch_size: int | None = None,
    return_delta: bool = False,
    mesh: jax.sharding.Mesh | None = None,
):
    """Integrated Gradients (Sundararajan et al., 2017) along the straight path baseline -> x.

    attr = (x - baseline) * sum_i w_i grad f(baseline + a_i (x - baseline)), with (a_i, w_i)
    from `method`: a Captum rule name ("gausslegendre", "riemann_left", "riemann_right",
    "riemann_middle", "riemann_trapezoid") or a `Quadrature` value (then `n_steps` is unused).

    Args:
      f: one input -> scalar or (K,).
      x, baseline: inputs of the same shape.
      batch_size: path points per gradient batch (None: all at once).
      return_delta: also return the completeness gap sum(attr) - (f(x) - f(baseline)),
        a scalar or (K,).
      mesh: split each batch of path points over the devices of this mesh (arrays the
        program reads, e.g. parameters, must then be on all its devices: `jax.device_put(tree,
        cocoa_jax.meshes.replicated_sharding(mesh))`).
    Returns: attributions x.shape (or (K, *x.shape)); with return_delta, (attr, delta).
    """
    x = check_input(x)
    baseline = check_baseline("baseline", baseline, x)
    batch_size = _checks.check_optional_batch_size(batch_size)
    if isinstance(method, Quadrature):
        rule = method
        if np.ndim(rule.alphas) != 1 or np.shape(rule.alphas) != np.shape(rule.weights) or not len(rule.alphas):
            raise ValueError("`method` Quadrature needs 1-D alphas and weights of the same, non-zero length")
    else:
        rule = quadrature(method, n_steps)
    k = num_targets(f, x)
    alphas = jnp.asarray(rule.alphas, x.dtype)
    weights = jnp.asarray(rule.weights, x.dtype)
    path = x - baseline

    def make_chunk(start, stop):
        a = broadcast_to_rank(alphas[start:stop], x.ndim)
        return baseline + a * path, broadcast_to_rank(weights[start:stop], x.ndim)

    attributions = path * sum_gradient_terms(f, k, len(rule.alphas), batch_size, mesh, make_chunk)
    if not return_delta:
        return attributions
    ends = jax.vmap(f)(jnp.stack([x, baseline]))
    total = jnp.sum(attributions.reshape(attributions.shape[: 1 if k else 0] + (-1,)), axis=-1)
    return attributions, total - (ends[0] - ends[1])


class AdaptiveIG(NamedTuple):
    """Result of `integrated_gradients_adaptive`."""

    attributions: jax.Array  # x.shape or (K, *x.shape)
    n_steps: int  # path points used: n_intervals + 1 (every gradient evaluated once)
    gap: jax.Array  # completeness gap sum(attr) - (f(x) - f(baseline)), () or (K,)
    converged: bool  # the tolerance was met before max_steps


def integrated_gradients_adaptive(
    f: Callable,
    x: jax.Array,
    baseline: jax.Array,
    *,
    rtol: float = 0.01,
    atol: float = 1e-6,
    min_steps: int = 9,
    max_steps: int = 513,
    batch_size: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> AdaptiveIG:
    """IG with a stopping rule: the composite trapezoid rule on nested grids, doubled until the
    completeness gap is small, |sum(attr) - (f(x) - f(baseline))| <= rtol |f(x) - f(baseline)| + atol
    for every target.

    Grids are 2^j + 1 equally spaced points; each doubling evaluates only the new midpoints, so a
    run that stops at n points cost exactly n gradient points (plus the two end values of f). The
    result at n points equals `integrated_gradients(..., method="riemann_trapezoid", n_steps=n)`.
    On ReLU encoders the trapezoid rule closes the gap faster than Gauss-Legendre
    (benchmarks/results/RESULTS.md), which is why it is the rule here.

    Eager, not jit-able (the number of steps depends on values); every level runs as a jitted
    program. min_steps / max_steps are rounded up to 2^j + 1.
    Returns an `AdaptiveIG` (attributions, n_steps, gap, converged).
    """
    x = check_input(x)
    baseline = check_baseline("baseline", baseline, x)
    batch_size = _checks.check_optional_batch_size(batch_size)
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not (isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) and value >= 0):
            raise ValueError(f"`{name}` must be a number >= 0, got {value!r}")
    min_steps = _checks.check_positive_int("min_steps", min_steps)
    max_steps = _checks.check_positive_int("max_steps", max_steps)
    if min_steps < 2 or max_steps < min_steps:
        raise ValueError(f"need 2 <= min_steps <= max_steps, got min_steps={min_steps}, max_steps={max_steps}")
    k = num_targets(f, x)

    @jax.jit
    def gradient_sum(x_, baseline_, alphas):
        # path * sum_i grad f(baseline + a_i path): the tested IG with unit weights.
        rule = Quadrature(alphas, jnp.ones_like(alphas))
        return integrated_gradients(f, x_, baseline_, method=rule, batch_size=batch_size, mesh=mesh)

    ends_values = jax.jit(jax.vmap(f))(jnp.stack([x, baseline]))
    expected = ends_values[0] - ends_values[1]
    limit = rtol * jnp.abs(expected) + atol
    intervals = 1 << max(1, int(np.ceil(np.log2(min_steps - 1))))
    # Level 0: every point of the first grid; later levels: only the new midpoints.
    alphas = np.linspace(0.0, 1.0, intervals + 1)
    ends = gradient_sum(x, baseline, jnp.asarray(alphas[[0, -1]], x.dtype))
    interior = gradient_sum(x, baseline, jnp.asarray(alphas[1:-1], x.dtype))
    while True:
        attributions = (0.5 * ends + interior) / intervals
        total = jnp.sum(attributions.reshape(attributions.shape[: 1 if k else 0] + (-1,)), axis=-1)
        gap = total - expected
        converged = bool(jnp.all(jnp.abs(gap) <= limit))
        if converged or 2 * intervals + 1 > max(max_steps, intervals + 1):
            return AdaptiveIG(attributions, intervals + 1, gap, converged)
        midpoints = (np.arange(intervals) + 0.5) / intervals
        interior = interior + gradient_sum(x, baseline, jnp.asarray(midpoints, x.dtype))
        intervals *= 2
