"""LIME (Ribeiro et al., 2016) with Captum 0.9's `Lime` defaults, on device, K targets at once."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import _checks
from cocoa_jax.attribution_methods import _perturbation as P, adaptive
from cocoa_jax.attribution_methods._common import check_flag

LASSO_MAX_SWEEPS = 1000  # sklearn Lasso's max_iter
LASSO_TOL = 1e-6  # stop when a sweep moves no coefficient by more than tol * max |coef|


def lime_coalitions(key: jax.Array, n_samples: int, n_features: int) -> jax.Array:
    """The coalitions `lime(..., key, n_samples=n_samples)` evaluates: (n_samples, M) in {0, 1}.

    Row i keeps each feature independently with probability 1/2, drawn from
    `jax.random.split(key, n_samples)[i]` (Captum's `default_perturb_func`).
    """
    n_samples = _checks.check_positive_int("n_samples", n_samples)
    n_features = _checks.check_positive_int("n_features", n_features)
    keys = jax.random.split(key, n_samples)
    return jax.jit(jax.vmap(lambda k: _bernoulli_row(k, n_features)), static_argnums=())(keys)


def _bernoulli_row(sample_key, n_features: int) -> jax.Array:
    return jax.random.bernoulli(sample_key, 0.5, (n_features,)).astype(jnp.float32)


def cosine_similarity_weights(x: jax.Array, inputs: jax.Array, kernel_width: float) -> jax.Array:
    """exp(-d^2 / (2 width^2)), d = 1 - cos(x, input) on the flattened inputs: (B,).

    Captum's default `get_exp_kernel_similarity_function("cosine", 1.0)`; the cosine's
    denominator is clamped at 1e-8 (torch's CosineSimilarity eps), so an all-zero input has
    distance 1.
    """
    flat = inputs.reshape(inputs.shape[0], -1)
    ref = x.reshape(-1)
    cos = flat @ ref / jnp.maximum(jnp.linalg.norm(flat, axis=1) * jnp.linalg.norm(ref), 1e-8)
    return jnp.exp(-((1.0 - cos) ** 2) / (2.0 * kernel_width ** 2))


def lasso_gram(gram: jax.Array, cross: jax.Array, alpha: float) -> jax.Array:
    """min_b 1/2 b^T G b - c^T b + alpha |b|_1 by cyclic coordinate descent, per column of c.

    gram: (M, M) weighted covariance of the centred design, cross: (M, K') its covariance with
    the centred targets: the Lasso (1 / (2 sum w)) sum_i w_i (y_i - b0 - z_i b)^2 + alpha |b|_1
    after eliminating the intercept (sklearn's objective with sample weights). Sweeps run
    until no coefficient moves by more than LASSO_TOL * max |b|, at most LASSO_MAX_SWEEPS;
    the columns are solved independently (vmapped), so a column's result does not depend on
    the others. Features never varied (G_jj <= 1e-6) get 0.
    """
    diag = jnp.diagonal(gram)
    varied = diag > 1e-6  # a feature's weighted variance (<= 1/4); float32 noise below this
    safe = jnp.where(varied, diag, 1.0)

    def one(c):
        def sweep(carry):
            beta, _, it = carry

            def coordinate(j, state):
                b, moved = state
                rho = c[j] - gram[j] @ b + diag[j] * b[j]
                new = jnp.where(varied[j], jnp.sign(rho) * jnp.maximum(jnp.abs(rho) - alpha, 0.0) / safe[j], 0.0)
                return b.at[j].set(new), jnp.maximum(moved, jnp.abs(new - b[j]))

            beta, moved = jax.lax.fori_loop(0, c.shape[0], coordinate, (beta, jnp.zeros((), c.dtype)))
            return beta, moved, it + 1

        def going(carry):
            beta, moved, it = carry
            return (it < LASSO_MAX_SWEEPS) & (moved > LASSO_TOL * jnp.max(jnp.abs(beta)))

        init = (jnp.zeros_like(c), jnp.asarray(jnp.inf, c.dtype), jnp.asarray(0))
        return jax.lax.while_loop(going, sweep, init)[0]

    return jax.vmap(one, in_axes=1, out_axes=1)(cross)


def _check_positive_number(name: str, value) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating))
            or not np.isfinite(value) or value <= 0):
        raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}")
    return float(value)


def _check_alpha(value) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating))
            or not np.isfinite(value) or value < 0):
        raise ValueError(f"`alpha` must be a finite number >= 0, got {value!r}")
    return float(value)


def lime(
    f: Callable,
    x: jax.Array,
    baseline: jax.Array,
    key: jax.Array,
    *,
    n_samples: int = 1000,
    superpixel=1,
    feature_mask=None,
    alpha: float = 0.01,
    kernel_width: float = 1.0,
    batch_size: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    tolerance: float | None = None,
    round_size: int | None = None,
    return_passes: bool = False,
) -> jax.Array:
    """LIME over pixel features: each feature's Lasso coefficient on its pixels, (H, W) or (K, H, W).

    Follows Captum 0.9's `Lime()` defaults:
      - coalitions: each feature kept independently with probability 1/2 (`lime_coalitions`;
        sample i from `jax.random.split(key, n_samples)[i]`); no forced all-on/all-off samples;
      - sample weight: exp(-d^2 / (2 kernel_width^2)), d the cosine distance between the
        flattened x and the perturbed input (kernel_width 1.0);
      - interpretable model: Lasso with alpha = 0.01 and an intercept, sample-weighted as
        sklearn does (`lasso_gram`); the attributions are its coefficients.
    Differences: features group all channels of a pixel (`superpixel` / `feature_mask`, as in
    `kernel_shap`), where Captum's default makes every scalar a feature; n_samples defaults to
    1000, not Captum's 25 (too few for images). One extra forward pass, f(x), only centres the
    scores (exactly cancelled by the intercept) so float32 sums keep their precision.
    The Lasso is solved by coordinate descent on the M x M weighted Gram matrix, to a tighter
    tolerance than sklearn's default (so on the same samples the two agree to sklearn's
    tolerance). K targets share the coalitions, forward passes and Gram matrix.
    tolerance: None (off: exactly n_samples), or samples in rounds of `round_size` (None: 200)
    until the relative standard error of the coefficients, by batch means over rounds (each
    round's own Lasso; `adaptive.regression_in_rounds`), is <= tolerance; n_samples is then the
    budget. return_passes: also return the forward passes used (f(x) included), a () int32.

    Returns: (H, W), or (K, H, W) for K targets.
    """
    x, baseline = P.check_rank3(x, baseline)
    n_samples = _checks.check_positive_int("n_samples", n_samples)
    alpha = _check_alpha(alpha)
    kernel_width = _check_positive_number("kernel_width", kernel_width)
    batch_size = P.check_batch_size(batch_size)
    labels, m = P.feature_labels(x.shape, superpixel, feature_mask)
    k = P.num_targets(f, x)
    tolerance = adaptive.check_tolerance(tolerance)
    round_size = adaptive.check_round_size(round_size, adaptive.DEFAULT_ROUND_SIZES["lime"], n_samples)
    return_passes = check_flag("return_passes", return_passes)
    keys = jax.random.split(key, n_samples)
    shift = P.as_columns(jax.vmap(f)(x[None]))[0]  # f(x): only centres the scores

    def coalitions_of(indices):
        return jax.vmap(lambda kk: _bernoulli_row(kk, m))(keys[indices]).astype(x.dtype)

    def stats(z, inputs, scores, valid):
        w = cosine_similarity_weights(x, inputs, kernel_width) * valid
        y = scores - shift
        wz = z * w[:, None]
        return jnp.sum(w), jnp.sum(wz, axis=0), wz.T @ z, w @ y, wz.T @ y

    def solve(sums):
        s_w, s_z, s_zz, s_y, s_zy = sums
        z_mean, y_mean = s_z / s_w, s_y / s_w
        gram = s_zz / s_w - jnp.outer(z_mean, z_mean)
        cross = s_zy / s_w - jnp.outer(z_mean, y_mean)
        return lasso_gram(gram, cross, alpha)

    if tolerance is not None:
        def round_stats(start, n_valid):
            # A row: the coalition and its weight (0 beyond the budget), sample start + local.
            def rows_of(local):
                valid = (local < n_valid).astype(x.dtype)
                return jnp.concatenate([coalitions_of(start + local), valid[:, None]], axis=1)

            return P.accumulate(f, x, baseline, labels, round_size, 0, batch_size, mesh, rows_of,
                                lambda z, inputs, scores, valid: stats(z[:, :m], inputs, scores, valid * z[:, m]))

        kk = shift.shape[0]
        init = (jnp.zeros((), x.dtype), jnp.zeros((m,), x.dtype), jnp.zeros((m, m), x.dtype), jnp.zeros((kk,), x.dtype),
                jnp.zeros((m, kk), x.dtype))
        coefficients, used = adaptive.regression_in_rounds(round_stats, solve, init, budget=n_samples,
                                                           round_size=round_size, tolerance=tolerance)
        maps = P.to_map(coefficients, labels, k)
        return (maps, used + 1) if return_passes else maps
    sums = P.accumulate(f, x, baseline, labels, n_samples, 0, batch_size, mesh, coalitions_of, stats)
    maps = P.to_map(solve(sums), labels, k)
    return (maps, jnp.int32(n_samples + 1)) if return_passes else maps
