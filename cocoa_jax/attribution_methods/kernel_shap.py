"""KernelSHAP (Lundberg & Lee, 2017) with Captum 0.9's estimator, on device, K targets at once."""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import _checks
from cocoa_jax.attribution_methods import _perturbation as P, adaptive, token_drop
from cocoa_jax.attribution_methods._common import check_flag

# Captum's KernelShap gives the all-ones and all-zeros coalitions this weight (`inf_weight`).
CAPTUM_ANCHOR_WEIGHT = 1e6


def enumerates(n_samples: int, n_features: int, efficient: bool) -> bool:
    """Whether `kernel_shap` evaluates every coalition once instead of sampling them.

    efficient=True with 2^M <= n_samples: the 2^M coalitions fit the budget, and the constrained
    fit over all of them, weighted by the Shapley kernel, IS the Shapley value (Lundberg & Lee,
    Theorem 2), where sampling would only approximate it. M = 1 (either mode): the two anchors
    are the only coalitions, and they fix the one value, f(x) - f(baseline).
    """
    return n_features == 1 or (bool(efficient) and n_features < 31 and 2 ** n_features <= n_samples)


def _size_log_probs(n_features: int, dtype=jnp.float32) -> jax.Array:
    """log p(k) for k = 1..M-1, p(k) proportional to (M - 1) / (k (M - k)) (Shapley kernel x C(M, k))."""
    k = np.arange(1, n_features)
    return jnp.asarray(np.log((n_features - 1) / (k * (n_features - k))), dtype)


def shapley_kernel_weights(n_features: int) -> np.ndarray:
    """(M + 1,) weight of one coalition of size k = 0..M: (M - 1) / (C(M, k) k (M - k)), scaled so
    that the 2^M - 2 proper coalitions weigh 1 in all; the anchors (k = 0, M) get 0 here (they
    are hard constraints)."""
    k = np.arange(1, n_features)
    subsets = np.array([math.comb(n_features, i) for i in k], np.float64)  # coalitions of size k
    per_coalition = (n_features - 1) / (subsets * k * (n_features - k))
    return np.concatenate([[0.0], per_coalition / np.sum(subsets * per_coalition), [0.0]])


def _random_coalition(sample_key, log_probs, n_features: int) -> jax.Array:
    """One coalition: size k ~ p(k), then a uniformly random subset of that size. (M,) float32."""
    k_size, k_subset = jax.random.split(sample_key)
    size = jax.random.categorical(k_size, log_probs) + 1
    u = jax.random.uniform(k_subset, (n_features,))
    # The `size` smallest uniforms are kept: every subset of that size equally likely.
    threshold = jnp.sort(u)[size - 1]
    return (u <= threshold).astype(jnp.float32)


def _enumerated_coalitions(indices, n_features: int) -> jax.Array:
    """Rows `indices` of the enumeration: 0 -> all ones, 1 -> all zeros, i in 2..2^M-1 -> the
    binary digits of i - 1 (each of the 2^M - 2 proper coalitions once). (B, M) float32."""
    code = jnp.where(indices == 0, 2 ** n_features - 1, jnp.where(indices == 1, 0, indices - 1))
    return ((code[:, None] >> jnp.arange(n_features)) & 1).astype(jnp.float32)


def _coalitions_for(keys, indices, n_features: int) -> jax.Array:
    """Rows `indices` of the coalition sequence: 0 -> all ones, 1 -> all zeros, i >= 2 -> random."""
    log_probs = _size_log_probs(n_features)
    rows = jax.vmap(lambda k: _random_coalition(k, log_probs, n_features))(keys[indices])
    rows = jnp.where((indices == 0)[:, None], 1.0, rows)
    return jnp.where((indices == 1)[:, None], 0.0, rows)


def kernel_shap_coalitions(key: jax.Array, n_samples: int, n_features: int, efficient: bool = False) -> jax.Array:
    """The coalitions `kernel_shap(..., key, n_samples=n_samples, efficient=efficient)` evaluates.

    Sampled (the default): (n_samples, M) in {0, 1}: row 0 keeps every feature, row 1 none
    (Captum's first two samples); row i >= 2 draws from `jax.random.split(key, n_samples)[i]`:
    a size k in 1..M-1 with p(k) proportional to (M - 1) / (k (M - k)), then k features
    uniformly at random.
    Enumerated (`enumerates(n_samples, M, efficient)`): (2^M, M), rows 0 and 1 as above, then
    every other coalition once (row i: the binary digits of i - 1, feature j = digit j).
    """
    n_samples = _checks.check_positive_int("n_samples", n_samples)
    n_features = _checks.check_positive_int("n_features", n_features)
    if enumerates(n_samples, n_features, efficient):
        return jax.jit(_enumerated_coalitions, static_argnums=1)(jnp.arange(2 ** n_features), n_features)
    keys = jax.random.split(key, n_samples)
    return jax.jit(_coalitions_for, static_argnums=2)(keys, jnp.arange(n_samples), n_features)


def _pinv_symmetric(matrix: jax.Array) -> jax.Array:
    """Pseudo-inverse of a symmetric matrix (|eigenvalues| below eps * P * max cut)."""
    values, vectors = jnp.linalg.eigh(matrix)
    cutoff = jnp.finfo(matrix.dtype).eps * matrix.shape[0] * jnp.max(jnp.abs(values))
    keep = jnp.abs(values) > cutoff
    inverse = jnp.where(keep, 1.0 / jnp.where(keep, values, 1.0), 0.0)
    return (vectors * inverse) @ vectors.T


def sum_zero_basis(n_features: int, dtype=jnp.float32) -> jax.Array:
    """(M, M - 1) orthonormal basis of the vectors whose entries sum to 0 (Helmert's contrasts:
    column j - 1 is (1, .., 1, -j, 0, ..) / sqrt(j (j + 1)), j ones)."""
    basis = np.zeros((n_features, n_features - 1))
    for j in range(1, n_features):
        basis[:j, j - 1] = 1.0
        basis[j, j - 1] = -j
        basis[:, j - 1] /= np.sqrt(j * (j + 1))
    return jnp.asarray(basis, dtype)


def solve_efficient(gram_z: jax.Array, moments_z: jax.Array, delta: jax.Array) -> jax.Array:
    """min_phi sum_i w_i (y_i - z_i phi)^2 subject to sum(phi) = delta, exactly: (M, K').

    gram_z = sum_i w_i z_i z_i^T, moments_z = sum_i w_i z_i y_i^T over the non-anchor
    coalitions, y = f - f(baseline) (the intercept is pinned to f(baseline) by the all-off anchor).
    The constraint is eliminated, not weighted: phi = delta / M + N beta with N an orthonormal
    basis of the sum-zero vectors, and beta the minimum-norm least-squares solution of the
    reduced (M-1)^2 system (pseudo-inverse). So sum(phi) = delta holds whatever the rank of
    gram_z (with 2 features every sampled coalition has exactly one feature on, a singular
    Gram matrix), and among several minimisers the one of least norm is returned.
    """
    m = gram_z.shape[0]
    basis = sum_zero_basis(m, gram_z.dtype)
    particular = jnp.broadcast_to(delta / m, (m,) + delta.shape).astype(gram_z.dtype)
    beta = _pinv_symmetric(basis.T @ gram_z @ basis) @ (basis.T @ (moments_z - gram_z @ particular))
    step = basis @ beta
    return particular + (step - jnp.mean(step, axis=0))  # the mean removes N's rounding: sum exact


def solve_anchored(gram: jax.Array, moments: jax.Array, delta: jax.Array, inv_weight: float) -> jax.Array:
    """The weighted least squares of KernelSHAP, from sums over the non-anchor coalitions: (M, K').

    Unknowns theta = (intercept, phi_1..phi_M). The non-anchor coalitions give
    gram = sum_i w_i a_i a_i^T and moments = sum_i w_i a_i (y_i - f(baseline))^T, a_i = (1, z_i);
    the two anchors are theta_0 = 0 (all features off) and sum(theta) = delta = f(x) - f(baseline)
    (all on), i.e. U^T theta = d with U = [e_0, 1], d = (0, delta), each with weight 1 / inv_weight.
    inv_weight = 0: the constrained problem (`solve_efficient`, efficiency exact).
    inv_weight > 0 (Captum's soft anchors): the optimality conditions
      [G / s, U; U^T, -inv_weight s I] [theta; lambda] = [moments / s; d],  s = sum_i w_i,
    solved by a symmetric pseudo-inverse. This never forms G + U U^T / inv_weight (a 1e6 weight
    would cost float32 its precision) and never inverts G alone: G is singular whenever the
    sampled coalitions are (with 2 features each has exactly one feature on, so the columns sum
    to the intercept's), while the full problem with its anchors is still well determined.
    Where it is not (fewer coalitions than unknowns), the solution of least norm is returned:
    the all-off anchor pins theta_0, so that is sklearn's minimum-norm coefficient vector.
    """
    if inv_weight == 0:
        return solve_efficient(gram[1:, 1:], moments[1:], delta)
    p = gram.shape[0]
    scale = jnp.maximum(gram[0, 0], jnp.finfo(gram.dtype).tiny)  # G / s: entries in [0, 1], like U's
    u = jnp.zeros((p, 2), gram.dtype).at[:, 1].set(1.0).at[0, 0].set(1.0)
    kkt = jnp.block([[gram / scale, u], [u.T, -(inv_weight * scale) * jnp.eye(2, dtype=gram.dtype)]])
    rhs = jnp.concatenate([moments / scale, jnp.stack([jnp.zeros_like(delta), delta]).astype(gram.dtype)])
    return (_pinv_symmetric(kkt) @ rhs)[1:p]


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
    tolerance: float | None = None,
    round_size: int | None = None,
    return_passes: bool = False,
    removal: str = "blend",
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
      The fit is solved from the (M+1)^2 Gram sums (`solve_anchored`), not by sklearn's lstsq;
      on the same coalitions the two agree to float32 precision, also where the sampled
      coalitions alone are rank deficient (2 features: each has exactly one feature on) and,
      with fewer coalitions than unknowns, as the same minimum-norm solution.
    efficient=True: the classic constrained KernelSHAP (Lundberg & Lee, Theorem 2): the anchors
      are hard constraints (intercept = f(baseline), sum(phi) = f(x) - f(baseline) exactly,
      whatever the rank of the fit: the constraint is eliminated, `solve_efficient`).
      With 2^M <= n_samples, all 2^M coalitions are evaluated once each, weighted by the
      Shapley kernel: the result is then the exact Shapley value (2^M forward passes, not
      n_samples). With more features, the same sampled coalitions as the default.
    M = 1 (one feature): its value is f(x) - f(baseline) in both modes (no other coalition
      exists; Captum refuses one feature).
    Either way, the K targets share every coalition and forward pass, and one Gram matrix
    (one weighted least squares per target column).

    Args:
      f: one input (H, W, C) -> scalar or (K,).
      x, baseline: (H, W, C).
      key: PRNG key.
      n_samples: coalitions to evaluate, >= 3 (the official COCOA runs use 5000).
      superpixel: d or (d_h, d_w) (ignored when feature_mask is given). Memory and the
        solve grow as M^2 (M features): use superpixels on large images.
      batch_size: perturbed inputs per forward batch (None: 100).
      mesh: split each batch over the devices of this mesh.
      tolerance: None (off: exactly n_samples), or sampled coalitions in rounds of `round_size`
        (None: 200) until the relative standard error of the coefficients, by batch means over
        rounds (`adaptive.regression_in_rounds`), is <= tolerance; n_samples is then the budget.
        Enumerated runs are exact and ignore it. return_passes: also return the forward passes
        used (anchors included), a () int32.
      removal: "blend" (a feature off takes the baseline's pixels) or "token_drop" (ViTs, `f` a
        `token_drop.TokenScorer`: features are blocks of whole patches, off = their tokens
        dropped, coalition sizes stratified, `token_drop.kernel_shap_tokens`; no enumeration,
        feature_mask or tolerance).
    Returns: (H, W), or (K, H, W) for K targets.
    """
    if token_drop.check_removal(removal) == "token_drop":
        if feature_mask is not None or tolerance is not None:
            raise ValueError("`removal`='token_drop' takes superpixel blocks of patches: feature_mask=None and "
                             "tolerance=None")
        inv_weight = 0.0 if efficient else 1.0 / CAPTUM_ANCHOR_WEIGHT
        maps = token_drop.kernel_shap_tokens(
            f, x, key, n_samples=n_samples, superpixel=superpixel, batch_size=batch_size, mesh=mesh,
            solve=lambda gram, moments, delta: solve_anchored(gram, moments, delta, inv_weight))
        return (maps, jnp.int32(n_samples)) if return_passes else maps
    x, baseline = P.check_rank3(x, baseline)
    n_samples = _checks.check_positive_int("n_samples", n_samples)
    if n_samples < 3:
        raise ValueError(f"`n_samples` must be >= 3 (two anchors + random coalitions), got {n_samples}")
    if not isinstance(efficient, (bool, np.bool_)):
        raise TypeError(f"`efficient` must be a bool, got {type(efficient).__name__}")
    batch_size = P.check_batch_size(batch_size)
    labels, m = P.feature_labels(x.shape, superpixel, feature_mask)
    k = P.num_targets(f, x)
    tolerance = adaptive.check_tolerance(tolerance)
    round_size = adaptive.check_round_size(round_size, adaptive.DEFAULT_ROUND_SIZES["kernel_shap"], n_samples - 2)
    return_passes = check_flag("return_passes", return_passes)
    y_ends = P.ends(f, x, baseline)  # (2, K'): f(x), f(baseline)
    delta = y_ends[0] - y_ends[1]
    if m == 1:
        maps = P.to_map(delta[None], labels, k)
        return (maps, jnp.int32(2)) if return_passes else maps

    if enumerates(n_samples, m, efficient):
        n_evaluated = 2 ** m
        size_weights = jnp.asarray(shapley_kernel_weights(m), x.dtype)

        def coalitions_of(indices):
            return _enumerated_coalitions(indices, m).astype(x.dtype)

        def weights_of(z):
            return size_weights[jnp.round(jnp.sum(z, axis=1)).astype(jnp.int32)]
    else:
        n_evaluated = n_samples
        keys = jax.random.split(key, n_samples)
        log_probs = _size_log_probs(m)

        def coalitions_of(indices):  # indices >= 2 here: random coalitions only
            return jax.vmap(lambda kk: _random_coalition(kk, log_probs, m))(keys[indices]).astype(x.dtype)

        def weights_of(z):
            return jnp.ones_like(z[:, 0])

    def stats(z, inputs, scores, valid):
        a = jnp.concatenate([jnp.ones_like(z[:, :1]), z], axis=1)
        wa = a * (weights_of(z) * valid)[:, None]
        return wa.T @ a, wa.T @ (scores - y_ends[1])

    inv_weight = 0.0 if efficient else 1.0 / CAPTUM_ANCHOR_WEIGHT
    if tolerance is not None and not enumerates(n_samples, m, efficient):
        def round_stats(start, n_valid):
            # A row: the coalition and its weight (0 beyond the budget), sample 2 + start + local.
            def rows_of(local):
                valid = (local < n_valid).astype(x.dtype)
                return jnp.concatenate([coalitions_of(2 + start + local), valid[:, None]], axis=1)

            return P.accumulate(f, x, baseline, labels, round_size, 0, batch_size, mesh, rows_of,
                                lambda z, inputs, scores, valid: stats(z[:, :m], inputs, scores, valid * z[:, m]))

        init = (jnp.zeros((m + 1, m + 1), x.dtype), jnp.zeros((m + 1, y_ends.shape[1]), x.dtype))
        phi, used = adaptive.regression_in_rounds(round_stats, lambda s: solve_anchored(*s, delta, inv_weight), init,
                                                  budget=n_samples - 2, round_size=round_size, tolerance=tolerance)
        maps = P.to_map(phi, labels, k)
        return (maps, used + 2) if return_passes else maps
    gram, moments = P.accumulate(f, x, baseline, labels, n_evaluated, 2, batch_size, mesh, coalitions_of, stats)
    phi = solve_anchored(gram, moments, delta, inv_weight)
    maps = P.to_map(phi, labels, k)
    return (maps, jnp.int32(n_evaluated)) if return_passes else maps
