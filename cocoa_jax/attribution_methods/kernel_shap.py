"""KernelSHAP (Lundberg & Lee, 2017) with Captum 0.9's estimator, on device, K targets at once."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import _checks
from cocoa_jax.attribution_methods import _perturbation as P

# Captum's KernelShap gives the all-ones and all-zeros coalitions this weight (`inf_weight`).
CAPTUM_ANCHOR_WEIGHT = 1e6


def _size_log_probs(n_features: int, dtype=jnp.float32) -> jax.Array:
    """log p(k) for k = 1..M-1, p(k) proportional to (M - 1) / (k (M - k)) (Shapley kernel x C(M, k))."""
    k = np.arange(1, n_features)
    return jnp.asarray(np.log((n_features - 1) / (k * (n_features - k))), dtype)


def _random_coalition(sample_key, log_probs, n_features: int) -> jax.Array:
    """One coalition: size k ~ p(k), then a uniformly random subset of that size. (M,) float32."""
    k_size, k_subset = jax.random.split(sample_key)
    size = jax.random.categorical(k_size, log_probs) + 1
    u = jax.random.uniform(k_subset, (n_features,))
    # The `size` smallest uniforms are kept: every subset of that size equally likely.
    threshold = jnp.sort(u)[size - 1]
    return (u <= threshold).astype(jnp.float32)


def _coalitions_for(keys, indices, n_features: int) -> jax.Array:
    """Rows `indices` of the coalition sequence: 0 -> all ones, 1 -> all zeros, i >= 2 -> random."""
    log_probs = _size_log_probs(n_features)
    rows = jax.vmap(lambda k: _random_coalition(k, log_probs, n_features))(keys[indices])
    rows = jnp.where((indices == 0)[:, None], 1.0, rows)
    return jnp.where((indices == 1)[:, None], 0.0, rows)


def kernel_shap_coalitions(key: jax.Array, n_samples: int, n_features: int) -> jax.Array:
    """The coalitions `kernel_shap(..., key, n_samples=n_samples)` evaluates: (n_samples, M) in {0, 1}.

    Row 0 keeps every feature, row 1 none (Captum's first two samples); row i >= 2 draws from
    `jax.random.split(key, n_samples)[i]`: a size k in 1..M-1 with p(k) proportional to
    (M - 1) / (k (M - k)), then k features uniformly at random.
    """
    n_samples = _checks.check_positive_int("n_samples", n_samples)
    n_features = _checks.check_positive_int("n_features", n_features)
    if n_features < 2:
        raise ValueError(f"`n_features` must be >= 2, got {n_features}")
    keys = jax.random.split(key, n_samples)
    return jax.jit(_coalitions_for, static_argnums=2)(keys, jnp.arange(n_samples), n_features)


def _pinv_psd(matrix: jax.Array) -> jax.Array:
    """Pseudo-inverse of a symmetric PSD matrix (eigenvalues below eps * P * max cut)."""
    values, vectors = jnp.linalg.eigh(matrix)
    cutoff = jnp.finfo(matrix.dtype).eps * matrix.shape[0] * jnp.max(jnp.abs(values))
    inverse = jnp.where(values > cutoff, 1.0 / jnp.where(values > cutoff, values, 1.0), 0.0)
    return (vectors * inverse) @ vectors.T


def solve_anchored(gram: jax.Array, moments: jax.Array, delta: jax.Array, inv_weight: float) -> jax.Array:
    """The weighted least squares of KernelSHAP, from sums over the random coalitions.

    Unknowns theta = (intercept, phi_1..phi_M). The random coalitions (weight 1) give
    gram = sum_i a_i a_i^T and moments = sum_i a_i (y_i - f(baseline))^T, a_i = (1, z_i);
    the two anchors are theta_0 = 0 (all features off: y - f(baseline) = 0) and
    sum(theta) = delta = f(x) - f(baseline) (all on), each with weight 1 / inv_weight.
    Exact solution by Woodbury: with theta_0 = G^+ moments, V = G^+ U, U = [e_0, 1],
    theta = theta_0 + V (inv_weight I + U^T V)^+ (d - U^T theta_0), d = (0, delta).
    inv_weight = 0 is the constrained problem: U^T theta = d exactly (efficiency).
    Never forms G + weight U U^T, so a 1e6 weight costs no precision in float32.
    Returns phi: (M, K').
    """
    p = gram.shape[0]
    u = jnp.zeros((p, 2), gram.dtype).at[:, 1].set(1.0).at[0, 0].set(1.0)
    g_inv = _pinv_psd(gram)
    theta0 = g_inv @ moments  # (P, K')
    v = g_inv @ u  # (P, 2)
    s = inv_weight * jnp.eye(2, dtype=gram.dtype) + u.T @ v
    d = jnp.stack([jnp.zeros_like(delta), delta])  # (2, K')
    theta = theta0 + v @ (jnp.linalg.pinv(s) @ (d - u.T @ theta0))
    return theta[1:]


def kernel_shap(
    f: Callable,
    x: jax.Array,
    baseline: jax.Array,
    key: jax.Array,
    *,
    n_samples: int = 5000,
    superpixel=1,
    feature_mask=None,
    efficient: bool = False,
    batch_size: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> jax.Array:
    """KernelSHAP over pixel features: each feature's value on its pixels, (H, W) or (K, H, W).

    Features: `feature_mask` ((H, W) integer labels, concrete) or `superpixel` x `superpixel`
    patches (the official COCOA `make_superpixel_map(H, W, d, d)`); a feature covers all
    channels of its pixels. Turning a feature off puts the baseline on its pixels.

    Default (efficient=False): the estimator of Captum 0.9's `KernelShap`, rule by rule
      - n_samples counts every evaluated coalition: sample 0 keeps every feature, sample 1
        none, samples 2..n-1 draw a size k in 1..M-1 with p(k) proportional to
        (M - 1) / (k (M - k)) and then k features uniformly at random
        (`kernel_shap_coalitions`, sample i from `jax.random.split(key, n_samples)[i]`);
      - regression weights (similarity kernel): 1e6 for samples 0 and 1, 1 for the others
        (the Shapley kernel is carried by the sampling distribution);
      - a linear regression WITH intercept (sklearn `LinearRegression`) of f on the binary
        coalitions; the attributions are its coefficients (the intercept is dropped).
      The fit is solved exactly from the (M+1)^2 Gram sums (`solve_anchored`), not by sklearn's
      lstsq; on the same coalitions the two agree to float32 precision when the problem is
      well determined (n_samples - 2 >= M + 1 random coalitions spanning the features).
      With fewer, the fit is a pseudo-inverse solution, not necessarily sklearn's minimum-norm one.
    efficient=True: the classic constrained KernelSHAP (Lundberg & Lee, Theorem 2): same
      coalitions, but the anchors are hard constraints (intercept = f(baseline),
      sum(phi) = f(x) - f(baseline) exactly), i.e. the Shapley-kernel weighted least squares
      with the efficiency constraint. Unlike the `shap` package it does not enumerate small
      coalition sizes or pair coalitions with their complements.
    Either way, the K targets share every coalition and forward pass, and one Gram matrix
    (one weighted least squares per target column).

    Args:
      f: one input (H, W, C) -> scalar or (K,).
      x, baseline: (H, W, C).
      key: PRNG key.
      n_samples: evaluated coalitions, >= 3 (the official COCOA runs use 5000).
      superpixel: d or (d_h, d_w) (ignored when feature_mask is given). Memory and the
        solve grow as M^2 (M features): use superpixels on large images.
      batch_size: perturbed inputs per forward batch (None: 100).
      mesh: split each batch over the devices of this mesh.
    Returns: (H, W), or (K, H, W) for K targets.
    """
    x, baseline = P.check_rank3(x, baseline)
    n_samples = _checks.check_positive_int("n_samples", n_samples)
    if n_samples < 3:
        raise ValueError(f"`n_samples` must be >= 3 (two anchors + random coalitions), got {n_samples}")
    if not isinstance(efficient, (bool, np.bool_)):
        raise TypeError(f"`efficient` must be a bool, got {type(efficient).__name__}")
    batch_size = P.check_batch_size(batch_size)
    labels, m = P.feature_labels(x.shape, superpixel, feature_mask)
    if m < 2:
        raise ValueError(f"KernelSHAP needs >= 2 features, got {m} (`superpixel` / `feature_mask`)")
    k = P.num_targets(f, x)
    keys = jax.random.split(key, n_samples)
    log_probs = _size_log_probs(m)

    def coalitions_of(indices):  # indices >= 2 here: random coalitions only
        return jax.vmap(lambda kk: _random_coalition(kk, log_probs, m))(keys[indices]).astype(x.dtype)

    y_ends = P.ends(f, x, baseline)  # (2, K'): f(x), f(baseline)

    def stats(z, inputs, scores, valid):
        a = jnp.concatenate([jnp.ones_like(z[:, :1]), z], axis=1) * valid[:, None]
        return a.T @ a, a.T @ (scores - y_ends[1])

    gram, moments = P.accumulate(f, x, baseline, labels, n_samples, 2, batch_size, mesh, coalitions_of, stats)
    inv_weight = 0.0 if efficient else 1.0 / CAPTUM_ANCHOR_WEIGHT
    phi = solve_anchored(gram, moments, y_ends[0] - y_ends[1], inv_weight)
    return P.to_map(phi, labels, k)
