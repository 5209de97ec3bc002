"""Attribution methods as pure, jit- and vmap-ready JAX functions.

Every method explains `f`, a function of ONE input `x` (e.g. (H, W, C)) returning a scalar
or a (K,) vector of K targets (`cocoa_jax.targets.stack`); with a vector, results get a
leading K axis and the K targets share every forward pass. Perturbed inputs are evaluated
in batches of at most `batch_size` (the encoder sees whole batches: f is vmapped), so
memory does not grow with `n_steps`, `n_samples` or `n_masks`.

Randomness: each sample i draws from `jax.random.split(key, n)[i]`, so results do not
depend on `batch_size` or on how samples are spread over devices (`mesh`).

Performance notes (measured on XLA CPU, see benchmarks/): a gradient inside a rolled
`lax.scan` ran ~2.5x slower than the same work unrolled, so gradient chunks are unrolled
at trace time; forward-only chunks (RISE) are a rolled `lax.scan`, which costs nothing.

Typical use, with parameters as traced arguments (not constants baked into the program):

    @jax.jit
    def explain(params, x, baseline, target):
        f = targets.explain_fn(lambda xb: model.apply(params, xb), target)
        return integrated_gradients(f, x, baseline)
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import _checks, sharding

DEFAULT_RISE_BATCH_SIZE = 100  # masks per forward batch; 64-200 measured flat on CPU


# ----------------------------------------------------------------------------- quadrature


class Quadrature(NamedTuple):
    """A quadrature rule on [0, 1]: integral of g ~= sum_i weights[i] * g(alphas[i])."""

    alphas: np.ndarray  # (n,) float64 points in [0, 1]
    weights: np.ndarray  # (n,) float64


def _gauss_legendre(n: int) -> Quadrature:
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return Quadrature(0.5 * (nodes + 1.0), 0.5 * weights)


def _riemann(kind: str, n: int) -> Quadrature:
    if n < 2:
        raise ValueError(f"`n_steps` must be >= 2 for riemann rules, got {n}")
    if kind == "trapezoid":
        # Composite trapezoid on n equally spaced points: weights sum to 1. (Captum's
        # riemann_trapezoid uses 1/n with halved ends, i.e. (n-1)/n times these.)
        weights = np.full(n, 1.0 / (n - 1))
        weights[[0, -1]] /= 2
        return Quadrature(np.linspace(0.0, 1.0, n), weights)
    alphas = {
        "left": np.linspace(0.0, 1.0 - 1.0 / n, n),
        "right": np.linspace(1.0 / n, 1.0, n),
        "middle": np.linspace(1.0 / (2 * n), 1.0 - 1.0 / (2 * n), n),
    }[kind]
    return Quadrature(alphas, np.full(n, 1.0 / n))


QUADRATURE_RULES: dict[str, Callable[[int], Quadrature]] = {
    "gausslegendre": _gauss_legendre,
    "riemann_left": functools.partial(_riemann, "left"),
    "riemann_right": functools.partial(_riemann, "right"),
    "riemann_middle": functools.partial(_riemann, "middle"),
    "riemann_trapezoid": functools.partial(_riemann, "trapezoid"),
}


def quadrature(method: str, n_steps: int) -> Quadrature:
    """The named rule with `n_steps` points (Captum's names); read-only arrays, cached."""
    _checks.check_choice("method", method, QUADRATURE_RULES)
    return _cached_rule(method, _checks.check_positive_int("n_steps", n_steps))


@functools.lru_cache(maxsize=32)
def _cached_rule(method: str, n_steps: int) -> Quadrature:
    # Gauss-Legendre nodes cost O(n^3) (3 s at n = 1000): the up-front option check
    # (`methods.check_values`) and the run then build each rule once.
    rule = QUADRATURE_RULES[method](n_steps)
    for array in rule:
        array.setflags(write=False)
    return rule


# ----------------------------------------------------------------------------- helpers


def _num_targets(f: Callable, x: jax.Array) -> int | None:
    """K if f(x) is (K,), None if it is a scalar; anything else is an error."""
    if not callable(f):
        raise TypeError(f"`f` must be callable, got {type(f).__name__}")
    out = jax.eval_shape(f, x)
    if not hasattr(out, "shape") or out.ndim > 1:
        raise ValueError(
            f"`f` must map one input {tuple(x.shape)} to a scalar or a (K,) vector, got "
            f"{getattr(out, 'shape', type(out).__name__)}"
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"`f` must return floating values, got dtype {out.dtype}")
    return None if out.ndim == 0 else out.shape[0]


def _check_input(x, *, rank: int | None = None) -> jax.Array:
    _checks.check_array("x", x, ndim=rank)
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def _check_baseline(name: str, baseline, x: jax.Array) -> jax.Array:
    _checks.check_array(name, baseline)
    _checks.check_same_shape(name, baseline, "x", x)
    return jnp.asarray(baseline, x.dtype)


def _jacobian(f: Callable, k: int | None) -> Callable:
    """Gradient of f at one input: x.shape, or (K, *x.shape) for K targets.

    For K targets, reverse mode runs one forward pass and K vectorised backward passes.
    """
    return jax.grad(f) if k is None else jax.jacrev(f)


def _sum_gradient_terms(f, k, n, batch_size, mesh, make_chunk):
    """sum_i multiplier_i * grad f(point_i) over i in range(n), in unrolled chunks.

    make_chunk(start, stop) -> (points (B, *x.shape), multipliers broadcastable to
    (B, *x.shape)). Returns x.shape, or (K, *x.shape).
    """
    jacobian = jax.vmap(_jacobian(f, k))
    total = None
    # Unrolled on purpose: a gradient inside a rolled scan is ~2.5x slower on XLA CPU.
    for start, stop in sharding.chunk_ranges(n, batch_size):
        points, multipliers = make_chunk(start, stop)
        pad = sharding.padding_for(mesh, stop - start)
        multipliers = jnp.broadcast_to(multipliers, (stop - start,) + multipliers.shape[1:])
        points, multipliers = sharding.pad_rows(points, pad), sharding.pad_rows(multipliers, pad, 0.0)
        grads = jacobian(sharding.shard_batch(points, mesh))  # (B, [K,] *x.shape)
        if k is not None:
            multipliers = jnp.expand_dims(multipliers, 1)
        term = jnp.sum(grads * multipliers, axis=0)
        total = term if total is None else total + term
    return total


def _broadcast_to_rank(values: jax.Array, rank: int) -> jax.Array:
    """(B,) -> (B, 1, ..., 1) with `rank` trailing singleton axes."""
    return values.reshape(values.shape + (1,) * rank)


# ----------------------------------------------------------------------------- gradients


def vanilla_gradients(f: Callable, x: jax.Array) -> jax.Array:
    """Gradient of f at x: x.shape, or (K, *x.shape) when f returns (K,)."""
    x = _check_input(x)
    return _jacobian(f, _num_targets(f, x))(x)


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
        cocoa_jax.sharding.replicated_sharding(mesh))`).
    Returns: attributions x.shape (or (K, *x.shape)); with return_delta, (attr, delta).
    """
    x = _check_input(x)
    baseline = _check_baseline("baseline", baseline, x)
    batch_size = _checks.check_optional_batch_size(batch_size)
    if isinstance(method, Quadrature):
        rule = method
        if np.ndim(rule.alphas) != 1 or np.shape(rule.alphas) != np.shape(rule.weights) or not len(rule.alphas):
            raise ValueError("`method` Quadrature needs 1-D alphas and weights of the same, non-zero length")
    else:
        rule = quadrature(method, n_steps)
    k = _num_targets(f, x)
    alphas = jnp.asarray(rule.alphas, x.dtype)
    weights = jnp.asarray(rule.weights, x.dtype)
    path = x - baseline

    def make_chunk(start, stop):
        a = _broadcast_to_rank(alphas[start:stop], x.ndim)
        return baseline + a * path, _broadcast_to_rank(weights[start:stop], x.ndim)

    attributions = path * _sum_gradient_terms(f, k, len(rule.alphas), batch_size, mesh, make_chunk)
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
    (benchmarks/RESULTS.md), which is why it is the rule here.

    Eager, not jit-able (the number of steps depends on values); every level runs as a jitted
    program. min_steps / max_steps are rounded up to 2^j + 1.
    Returns an `AdaptiveIG` (attributions, n_steps, gap, converged).
    """
    x = _check_input(x)
    baseline = _check_baseline("baseline", baseline, x)
    batch_size = _checks.check_optional_batch_size(batch_size)
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not (isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) and value >= 0):
            raise ValueError(f"`{name}` must be a number >= 0, got {value!r}")
    min_steps = _checks.check_positive_int("min_steps", min_steps)
    max_steps = _checks.check_positive_int("max_steps", max_steps)
    if min_steps < 2 or max_steps < min_steps:
        raise ValueError(f"need 2 <= min_steps <= max_steps, got min_steps={min_steps}, max_steps={max_steps}")
    k = _num_targets(f, x)

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
) -> jax.Array:
    """SmoothGrad (Smilkov et al., 2017): mean_i grad f(x + stdev * eps_i), eps_i ~ N(0, I).

    `stdev` is absolute (Captum's NoiseTunnel convention), not relative to the input range.
    antithetic: opt-in variance reduction. Samples come in pairs (eps, -eps): pair j draws from
      `jax.random.split(key, n_samples // 2)[j]` and gives samples 2j and 2j + 1, so
      `n_samples` (the gradient passes) must be even. Same expectation; the odd part of the
      gradient in the noise cancels within each pair (exactly, for a quadratic f).
    Returns x.shape, or (K, *x.shape).
    """
    x = _check_input(x)
    n_samples = _checks.check_positive_int("n_samples", n_samples)
    batch_size = _checks.check_optional_batch_size(batch_size)
    stdev = _check_stdev(stdev)
    n_draws = _antithetic_draws("n_samples", n_samples, antithetic)
    k = _num_targets(f, x)
    keys = jax.random.split(key, n_draws)
    noise_of = jax.vmap(lambda sample_key: jax.random.normal(sample_key, x.shape, x.dtype))

    def make_chunk(start, stop):
        if antithetic:
            indices = jnp.arange(start, stop)
            signs = _broadcast_to_rank(1.0 - 2.0 * (indices % 2), x.ndim).astype(x.dtype)
            points = x + stdev * signs * noise_of(keys[indices // 2])
        else:
            points = x + stdev * noise_of(keys[start:stop])
        return points, jnp.full((stop - start,) + (1,) * x.ndim, 1.0 / n_samples, x.dtype)

    return _sum_gradient_terms(f, k, n_samples, batch_size, mesh, make_chunk)


def _antithetic_draws(name: str, n: int, antithetic) -> int:
    """Independent draws behind n samples: n, or n // 2 antithetic pairs (n must then be even)."""
    if not isinstance(antithetic, (bool, np.bool_)):
        raise TypeError(f"`antithetic` must be a bool, got {type(antithetic).__name__}")
    if antithetic and n % 2:
        raise ValueError(f"`{name}` must be even with antithetic=True (samples come in pairs), got {n}")
    return n // 2 if antithetic else n


def _check_flag(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a bool, got {type(value).__name__}")
    return bool(value)


def _check_stdev(stdev) -> float:
    if (isinstance(stdev, bool) or not isinstance(stdev, (int, float, np.integer, np.floating))
            or not np.isfinite(stdev) or stdev < 0):
        raise ValueError(f"`stdev` must be a finite number >= 0, got {stdev!r}")
    return float(stdev)


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
    n_draws = _antithetic_draws("n_samples", n_samples, antithetic)
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
        noise = jnp.where(_broadcast_to_rank(second, noise.ndim - 1), -noise, noise)
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
    """
    x = _check_input(x)
    _checks.check_array("baselines", baselines, ndim=x.ndim + 1)
    if tuple(np.shape(baselines)[1:]) != tuple(x.shape) or np.shape(baselines)[0] == 0:
        raise ValueError(
            f"`baselines` must have shape (M, *x.shape) = (M, {', '.join(map(str, x.shape))}) "
            f"with M >= 1, got {np.shape(baselines)}"
        )
    baselines = jnp.asarray(baselines, x.dtype)
    n_samples = _checks.check_positive_int("n_samples", n_samples)
    batch_size = _checks.check_optional_batch_size(batch_size)
    stdev = _check_stdev(stdev)
    n_draws = _antithetic_draws("n_samples", n_samples, antithetic)
    stratified_alpha = _check_flag("stratified_alpha", stratified_alpha)
    k = _num_targets(f, x)
    keys = jax.random.split(key, n_draws)
    draw = functools.partial(_gradient_shap_draw, x_shape=x.shape, n_baselines=baselines.shape[0],
                             stdev=stdev, dtype=x.dtype)

    def make_chunk(start, stop):
        # Drawn per sample key, so the draws do not depend on the chunking.
        if antithetic or stratified_alpha:
            draws = _variance_reduced_draws(keys, jnp.arange(start, stop), draw, antithetic, stratified_alpha)
        else:
            draws = jax.vmap(draw)(keys[start:stop])
        chosen = baselines[draws.baseline_index]
        delta = x + draws.noise - chosen
        points = chosen + _broadcast_to_rank(draws.alpha, x.ndim) * delta
        return points, delta / n_samples

    return _sum_gradient_terms(f, k, n_samples, batch_size, mesh, make_chunk)


# ----------------------------------------------------------------------------- RISE


def _check_keep_prob(keep_prob) -> float:
    # bool is an int in Python; NaN fails the comparison.
    if (isinstance(keep_prob, bool) or not isinstance(keep_prob, (int, float, np.integer, np.floating))
            or not 0.0 < keep_prob <= 1.0):
        raise ValueError(f"`keep_prob` must be a number in (0, 1], got {keep_prob!r}")
    return float(keep_prob)


def _check_rise_args(image_size, grid_size, keep_prob):
    if (not isinstance(image_size, (tuple, list)) or len(image_size) != 2
            or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s <= 0 for s in image_size)):
        raise ValueError(f"`image_size` must be (H, W) positive integers, got {image_size!r}")
    if (not isinstance(grid_size, (tuple, list)) or len(grid_size) != 2
            or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s <= 0 for s in grid_size)):
        raise ValueError(f"`grid_size` must be (grid_h, grid_w) positive integers, got {grid_size!r}")
    if any(g > s for g, s in zip(grid_size, image_size)):
        raise ValueError(f"`grid_size` {tuple(grid_size)} must not exceed the image size {tuple(image_size)}")
    keep_prob = _check_keep_prob(keep_prob)
    return tuple(int(s) for s in image_size), tuple(int(g) for g in grid_size), float(keep_prob)


@functools.lru_cache(maxsize=32)
def bilinear_upsample_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) matrix of bilinear upsampling with half-pixel centres.

    Same as torch's `F.interpolate(mode="bilinear", align_corners=False)` (the official
    COCOA RISE): source coordinate (i + 0.5) * in/out - 0.5, clamped to the edges.
    """
    scale = in_size / out_size
    src = np.maximum((np.arange(out_size) + 0.5) * scale - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(int), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo
    matrix = np.zeros((out_size, in_size))
    np.add.at(matrix, (np.arange(out_size), lo), 1.0 - frac)
    np.add.at(matrix, (np.arange(out_size), hi), frac)
    matrix.setflags(write=False)
    return matrix


def rise_cell_size(image_size, grid_size) -> tuple[int, int]:
    """Pixels per grid cell, ceil(size / grid) (Petsiuk et al.; = size // grid when it divides)."""
    return tuple(-(-s // g) for s, g in zip(image_size, grid_size))


def masks_from_grids(grids: jax.Array, shifts: jax.Array, image_size) -> jax.Array:
    """Upsample binary grids to (grid + 1) * cell and crop at per-mask shifts.

    Args:
      grids: (N, gh, gw) in {0, 1}.
      shifts: (N, 2) int crop offsets, each in [0, cell).
      image_size: (H, W).
    Returns: (N, H, W) masks in [0, 1].
    """
    grid_size = grids.shape[-2:]
    cells = rise_cell_size(image_size, grid_size)
    # Crop = rows shift..shift+H of the upsampling matrix: two small matmuls per mask.
    up_rows, up_cols = (
        jnp.asarray(bilinear_upsample_matrix(g, (g + 1) * c), grids.dtype)
        for g, c in zip(grid_size, cells)
    )

    def one(grid, shift):
        rows = jax.lax.dynamic_slice_in_dim(up_rows, shift[0], image_size[0], axis=0)
        cols = jax.lax.dynamic_slice_in_dim(up_cols, shift[1], image_size[1], axis=0)
        return rows @ grid @ cols.T

    return jax.vmap(one)(grids, shifts)


def _masks_for_keys(keys: jax.Array, image_size, grid_size, keep_prob: float, dtype) -> jax.Array:
    """One RISE mask per key: (N,) keys -> (N, H, W)."""
    cells = rise_cell_size(image_size, grid_size)

    def draw(mask_key):
        k_grid, k_shift = jax.random.split(mask_key)
        grid = (jax.random.uniform(k_grid, grid_size) < keep_prob).astype(dtype)
        shift = jax.random.randint(k_shift, (2,), 0, jnp.asarray(cells))
        return grid, shift

    grids, shifts = jax.vmap(draw)(keys)
    return masks_from_grids(grids, shifts, image_size)


RISE_SAMPLERS = ("bernoulli", "stratified")


def _option_masks_of(key, n_masks: int, image_size, grid_size, keep_prob: float, dtype,
                     antithetic: bool, sampler: str) -> Callable:
    """indices (B,) -> masks (B, H, W) of the variance-reduced RISE samplers (see `rise`).

    Each grid cell is kept when its uniform u < keep_prob, as in the default; the options
    change only how the uniforms are coupled across masks, never their U[0, 1) marginal:
    stratified: draw j's u in each cell is (rank + v) / n_draws, rank from a random
      permutation of range(n_draws) per cell (a Latin hypercube over the draws);
    antithetic: mask 2j + 1 uses 1 - u of mask 2j (its complement at keep_prob 0.5) and the
      same crop shift.
    """
    n_draws = n_masks // 2 if antithetic else n_masks
    keys = jax.random.split(key, n_draws)
    cells = jnp.asarray(rise_cell_size(image_size, grid_size))
    if sampler == "stratified":
        # fold_in: permutation keys independent of the per-draw keys split(key, n_draws).
        cell_keys = jax.random.split(jax.random.fold_in(key, 1), grid_size[0] * grid_size[1])
        ranks = jax.vmap(lambda k: jax.random.permutation(k, n_draws))(cell_keys)
        ranks = ranks.T.reshape((n_draws,) + tuple(grid_size))

    def draw(draw_key):
        k_grid, k_shift = jax.random.split(draw_key)
        return jax.random.uniform(k_grid, grid_size), jax.random.randint(k_shift, (2,), 0, cells)

    def masks_of(indices):
        which = indices // 2 if antithetic else indices
        u, shifts = jax.vmap(draw)(keys[which])
        if sampler == "stratified":
            u = (ranks[which].astype(u.dtype) + u) / n_draws
        if antithetic:
            u = jnp.where((indices % 2 == 1)[:, None, None], 1.0 - u, u)
        return masks_from_grids((u < keep_prob).astype(dtype), shifts, image_size)

    return masks_of


def _check_rise_options(n_masks: int, antithetic, sampler, centered=False) -> tuple[bool, str, bool]:
    _antithetic_draws("n_masks", n_masks, antithetic)
    _checks.check_choice("sampler", sampler, RISE_SAMPLERS)
    centered = _check_flag("centered", centered)
    if centered and n_masks < 2:
        raise ValueError(f"`n_masks` must be >= 2 with centered=True, got {n_masks}")
    return bool(antithetic), sampler, centered


def rise_masks(key: jax.Array, n_masks: int, image_size, grid_size=(7, 7), keep_prob: float = 0.5,
               dtype=jnp.float32, *, antithetic: bool = False, sampler: str = "bernoulli") -> jax.Array:
    """RISE masks (Petsiuk et al., 2018), generated on device: (n_masks, H, W) in [0, 1].

    Each mask: a Bernoulli(keep_prob) grid (1 = keep), bilinearly upsampled to
    (grid + 1) * cell pixels, randomly cropped to (H, W). Mask i uses
    `jax.random.split(key, n_masks)[i]`, the same draws `rise(..., key)` makes.
    `antithetic` / `sampler="stratified"`: the opt-in samplers of `rise` (same draws).
    """
    n_masks = _checks.check_positive_int("n_masks", n_masks)
    image_size, grid_size, keep_prob = _check_rise_args(image_size, grid_size, keep_prob)
    antithetic, sampler, _ = _check_rise_options(n_masks, antithetic, sampler)
    if antithetic or sampler != "bernoulli":
        masks_of = _option_masks_of(key, n_masks, image_size, grid_size, keep_prob, jnp.dtype(dtype),
                                    antithetic, sampler)
        return jax.jit(masks_of)(jnp.arange(n_masks))
    return _rise_masks_jit(key, n_masks, image_size, grid_size, keep_prob, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _rise_masks_jit(key, n_masks, image_size, grid_size, keep_prob, dtype):
    return _masks_for_keys(jax.random.split(key, n_masks), image_size, grid_size, keep_prob, dtype)


def _rise_sum(f, x, baseline, n, batch_size, mesh, masks_of) -> jax.Array:
    """sum_i f(x * m_i + baseline * (1 - m_i)) m_i over i in range(n): (H, W) or (K, H, W).

    masks_of(index_array) -> (B, H, W). Forward only, so chunks run in a rolled scan.
    """
    size = min(n, batch_size)
    blend = jax.vmap(lambda m: x * m[..., None] + baseline * (1.0 - m[..., None]))

    def chunk_sum(indices):
        # Zero masks pad the batch to a multiple of the device count: they add nothing.
        masks = sharding.pad_rows(masks_of(indices), sharding.padding_for(mesh, indices.shape[0]), 0.0)
        scores = jax.vmap(f)(sharding.shard_batch(blend(masks), mesh))  # (B,) or (B, K)
        flat = masks.reshape(masks.shape[0], -1)
        # The saliency map is one matrix product: scores^T @ masks.
        return (scores.T @ flat).reshape(scores.shape[1:] + masks.shape[1:])

    n_full = n // size
    full_indices = jnp.arange(n_full * size).reshape(n_full, size)
    first = jax.eval_shape(chunk_sum, full_indices[0])
    total, _ = jax.lax.scan(lambda acc, idx: (acc + chunk_sum(idx), None),
                            jnp.zeros(first.shape, first.dtype), full_indices)
    if n % size:
        total = total + chunk_sum(jnp.arange(n_full * size, n))
    return total


def _rise_moments(f, x, baseline, n, batch_size, mesh, masks_of):
    """(sum_i s_i m_i, sum_i s_i, sum_i m_i), s_i = f(x m_i + baseline (1 - m_i)).

    Shapes ([K,] H, W), ([K],), (H, W); one rolled scan over chunks, like `_rise_sum`.
    """
    size = min(n, batch_size)
    blend = jax.vmap(lambda m: x * m[..., None] + baseline * (1.0 - m[..., None]))

    def chunk_moments(indices):
        # Zero masks (score weight 0) pad the batch to a multiple of the device count.
        count = indices.shape[0]
        masks = sharding.pad_rows(masks_of(indices), sharding.padding_for(mesh, count), 0.0)
        scores = jax.vmap(f)(sharding.shard_batch(blend(masks), mesh))  # (B,) or (B, K)
        valid = (jnp.arange(masks.shape[0]) < count).astype(scores.dtype)
        flat = masks.reshape(masks.shape[0], -1)
        weighted = (scores.T @ flat).reshape(scores.shape[1:] + masks.shape[1:])
        return weighted, valid @ scores, jnp.sum(masks, axis=0)

    n_full = n // size
    full_indices = jnp.arange(n_full * size).reshape(n_full, size)
    shapes = jax.eval_shape(chunk_moments, full_indices[0])
    zeros = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
    add = lambda a, b: jax.tree_util.tree_map(jnp.add, a, b)
    totals, _ = jax.lax.scan(lambda acc, idx: (add(acc, chunk_moments(idx)), None), zeros, full_indices)
    if n % size:
        totals = add(totals, chunk_moments(jnp.arange(n_full * size, n)))
    return totals


def rise_centered_from_moments(weighted_sum, score_sum, mask_sum, n: int, keep_prob: float) -> jax.Array:
    """Centred RISE: sum_i (s_i - mean(s)) m_i / ((n - 1) keep_prob).

    With i.i.d. masks its expectation is exactly E[s m] / keep_prob - E[s], i.e. the default
    RISE map minus the constant E[s] (E[m] = keep_prob at every pixel), and the mean score
    times the masks' random sum, the estimator's largest noise term, is gone (a control variate).
    Shapes: ([K,] H, W), ([K],), (H, W) -> ([K,] H, W).
    """
    mean_score = score_sum / n
    return (weighted_sum - mean_score[..., None, None] * mask_sum) / ((n - 1) * keep_prob)


def _check_rise_inputs(x, baseline, keep_prob, batch_size):
    x = _check_input(x, rank=3)
    baseline = _check_baseline("baseline", baseline, x)
    keep_prob = _check_keep_prob(keep_prob)
    batch_size = _checks.check_optional_batch_size(batch_size)
    return x, baseline, float(keep_prob), batch_size or DEFAULT_RISE_BATCH_SIZE


def rise_from_masks(f: Callable, x: jax.Array, baseline: jax.Array, masks: jax.Array, *,
                    keep_prob: float = 0.5, batch_size: int | None = None,
                    mesh: jax.sharding.Mesh | None = None, centered: bool = False) -> jax.Array:
    """RISE with given masks: sum_i f(x m_i + baseline (1 - m_i)) m_i / (n_masks keep_prob).

    Args:
      x, baseline: (H, W, C); masks: (n_masks, H, W), broadcast over channels.
      batch_size: masked inputs per forward batch (None: 100).
      centered: opt-in, `rise_centered_from_moments` (needs n_masks >= 2).
    Returns: (H, W), or (K, H, W) for K targets.
    """
    x, baseline, keep_prob, batch_size = _check_rise_inputs(x, baseline, keep_prob, batch_size)
    _checks.check_array("masks", masks, ndim=3)
    if tuple(np.shape(masks)[1:]) != tuple(x.shape[:2]) or np.shape(masks)[0] == 0:
        raise ValueError(f"`masks` must have shape (n_masks >= 1, H, W) = (n, {x.shape[0]}, {x.shape[1]}), "
                         f"got {np.shape(masks)}")
    _num_targets(f, x)
    masks = jnp.asarray(masks, x.dtype)
    n = masks.shape[0]
    if _check_rise_options(n, False, "bernoulli", centered)[2]:
        moments = _rise_moments(f, x, baseline, n, batch_size, mesh, lambda idx: masks[idx])
        return rise_centered_from_moments(*moments, n, keep_prob)
    total = _rise_sum(f, x, baseline, n, batch_size, mesh, lambda idx: masks[idx])
    return total / (n * keep_prob)


def paper_grid_size(image_size) -> tuple[int, int]:
    """The paper's RISE grid for an image size (Appendix H): 4x4 up to 64 px (CIFAR), else 7x7 (ImageNet)."""
    return (4, 4) if max(image_size[:2]) <= 64 else (7, 7)


def rise(f: Callable, x: jax.Array, baseline: jax.Array, key: jax.Array, *, n_masks: int = 5000,
         grid_size=None, keep_prob: float = 0.5, batch_size: int | None = None,
         mesh: jax.sharding.Mesh | None = None, centered: bool = False, antithetic: bool = False,
         sampler: str = "bernoulli") -> jax.Array:
    """RISE (Petsiuk et al., 2018) with masks generated on device, chunk by chunk.

    Equals `rise_from_masks(f, x, baseline, rise_masks(key, n_masks, x.shape[:2], grid_size,
    keep_prob), keep_prob=keep_prob)` without ever holding all masks in memory.
    The paper uses 5000 masks, keep_prob 0.5, grid 4x4 at 32 px and 7x7 at 224 px;
    `grid_size=None` picks that grid from the image size (`paper_grid_size`).

    Opt-in variance reduction (defaults: the paper's estimator, unchanged):
      centered: subtract the mean score of the masks (`rise_centered_from_moments`): the map
        changes by a constant only, which no ranking, insertion or deletion score sees.
      antithetic: masks come in pairs, mask 2j + 1 the complement of mask 2j's grid (at
        keep_prob 0.5; in general grid uniforms u and 1 - u) with the same crop; pair j
        uses `jax.random.split(key, n_masks // 2)[j]`; `n_masks` (forward passes) must be even.
      sampler: "bernoulli" (i.i.d. grids) or "stratified" (Latin hypercube: per grid cell,
        the draws' uniforms are spread over n_draws equal strata, so every cell is kept in
        the same number of grids).
    Each mask keeps its default marginal distribution, so antithetic / stratified do not
    change the expectation; with either, centred RISE's constant is exact only up to O(1/n).
    Returns: (H, W), or (K, H, W) for K targets.
    """
    x, baseline, keep_prob, batch_size = _check_rise_inputs(x, baseline, keep_prob, batch_size)
    if grid_size is None:
        grid_size = paper_grid_size(x.shape)
    n_masks = _checks.check_positive_int("n_masks", n_masks)
    image_size, grid_size, keep_prob = _check_rise_args(tuple(x.shape[:2]), grid_size, keep_prob)
    antithetic, sampler, centered = _check_rise_options(n_masks, antithetic, sampler, centered)
    _num_targets(f, x)
    if antithetic or sampler != "bernoulli":
        masks_of = _option_masks_of(key, n_masks, image_size, grid_size, keep_prob, x.dtype, antithetic, sampler)
    else:
        keys = jax.random.split(key, n_masks)
        masks_of = lambda idx: _masks_for_keys(keys[idx], image_size, grid_size, keep_prob, x.dtype)
    if centered:
        moments = _rise_moments(f, x, baseline, n_masks, batch_size, mesh, masks_of)
        return rise_centered_from_moments(*moments, n_masks, keep_prob)
    total = _rise_sum(f, x, baseline, n_masks, batch_size, mesh, masks_of)
    return total / (n_masks * keep_prob)


# Perturbation and noise-averaged methods, one per module (they import helpers from this module,
# hence the import at the end).
from cocoa_jax.attribution_methods import (kernel_shap, lime, occlusion,  # noqa: E402
                                           smooth_integrated_gradients)
