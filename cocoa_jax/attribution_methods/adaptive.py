"""Sampling in rounds until the map is stable: the one stopping rule of the sampling methods.

A sampling method's map is a mean of i.i.d. per-sample terms t_i (RISE: s_i m_i / keep_prob;
GradientSHAP: (x' - b) * grad f; SmoothGrad: grad f(x + noise); SmoothGrad-IG: IG of a noisy
input). With `tolerance` set, the method draws `round_size` samples per round inside one
`lax.while_loop` (fixed shapes: jit, vmap over explicands, a mesh inside each round), keeps
running per-pixel moments of its terms, and stops after the first round whose estimated error
is <= tolerance, or when the budget (the method's count: `n_masks`, `n_samples`) is spent.

The error estimated: the relative standard error of the map,

    max over targets k of ||SE_k||_2 / ||map_k||_2,   SE_k = per-pixel standard error of the mean,

with both the map and its terms centred over the pixels first for methods whose maps carry a
constant offset (RISE: `methods.Method.centred`; rankings, insertion and deletion ignore a
constant). Why this one: E||map_n - map_inf||_2^2 = sum_p SE_p^2, so it estimates the relative
L2 distance of the map from its infinite-sample limit, scale-free (whatever the encoder's score
range), from moments that cost two maps per round; a rank-order error would need the sorted map
of every round and is not a smooth function of the moments. The worst target decides, so every
one of the K maps is stable when the run stops.

Moments are merged round by round in the centred form of Chan et al. (a round's sum of squared
deviations, not raw power sums), so float32 cancellation does not grow with the sample count.

Keys: sample i draws from `jax.random.split(key, budget)[i]`, the draws of the fixed-count
method, whatever the batch size, the device count or the round size: with tolerance 0 (never
met) the run uses the whole budget and equals the fixed-count map (up to summation order).
Pass counting: the last round's samples beyond the budget have weight 0 and are not counted (the
budget is honoured exactly; they still cost a forward or backward pass when the budget is not a
multiple of `round_size`). Under `vmap` the loop runs until every lane stops; each lane keeps
the state of the round at which it stopped (the `while_loop` batching rule selects per lane).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import _checks, batching
from cocoa_jax.attribution_methods._common import sum_gradient_terms

__all__ = ["Moments", "check_tolerance", "check_round_size", "round_moments", "merge_moments",
           "standard_error", "relative_error", "sample_in_rounds", "rise_in_rounds", "gradient_mean_in_rounds",
           "regression_in_rounds", "DEFAULT_ROUND_SIZES"]

# Samples per round when `round_size` is None: RISE's default forward batch, and for gradient
# methods a few passes (an error check per round costs a few map-sized operations).
DEFAULT_ROUND_SIZES = {"rise": 100, "gradient": 10, "smooth_ig": 5, "kernel_shap": 200, "lime": 200}


class Moments(NamedTuple):
    """Running per-pixel moments of per-sample terms (pytrees of equal structure)."""

    count: jax.Array  # () float: samples merged
    mean: Any  # per-pixel mean of the terms
    m2: Any  # per-pixel sum of squared deviations from `mean`


def check_tolerance(tolerance) -> float | None:
    """None (off: the fixed count) or a finite number >= 0 (0: never met, run to the budget)."""
    if tolerance is None:
        return None
    if (isinstance(tolerance, bool) or not isinstance(tolerance, (int, float, np.integer, np.floating))
            or not np.isfinite(tolerance) or tolerance < 0):
        raise ValueError(f"`tolerance` must be None (off) or a finite number >= 0, got {tolerance!r}")
    return float(tolerance)


def check_round_size(round_size, default: int, budget: int) -> int:
    """`round_size` (None: `default`), at most the budget."""
    if round_size is None:
        return min(default, budget)
    return min(_checks.check_positive_int("round_size", round_size), budget)


def round_moments(count, total, total_sq) -> Moments:
    """One round's (count, sum of terms, sum of squared terms) -> `Moments` (centred form)."""
    safe = jnp.maximum(count, 1.0)
    mean = jax.tree_util.tree_map(lambda s: s / safe, total)
    m2 = jax.tree_util.tree_map(lambda s, q: jnp.maximum(q - s * s / safe, 0.0), total, total_sq)
    return Moments(jnp.asarray(count, jnp.float32), mean, m2)


def merge_moments(a: Moments, b: Moments) -> Moments:
    """Moments of the union of two sample sets (Chan, Golub and LeVeque's pairwise update)."""
    n = a.count + b.count
    share = jnp.where(n > 0, b.count / jnp.maximum(n, 1.0), 0.0)
    cross = jnp.where(n > 0, a.count * b.count / jnp.maximum(n, 1.0), 0.0)
    mean = jax.tree_util.tree_map(lambda ma, mb: ma + (mb - ma) * share.astype(ma.dtype), a.mean, b.mean)
    m2 = jax.tree_util.tree_map(lambda qa, qb, ma, mb: qa + qb + (mb - ma) ** 2 * cross.astype(ma.dtype),
                                a.m2, b.m2, a.mean, b.mean)
    return Moments(n, mean, m2)


def standard_error(m2, count):
    """Per-pixel standard error of the mean, sqrt(m2 / (n - 1) / n); inf below 2 samples."""
    n = jnp.asarray(count, jnp.float32)
    return jax.tree_util.tree_map(
        lambda q: jnp.where(n >= 2, jnp.sqrt(jnp.maximum(q, 0.0) / jnp.maximum(n - 1.0, 1.0)
                                             / jnp.maximum(n, 1.0)), jnp.inf).astype(q.dtype), m2)


def relative_error(maps: jax.Array, se: jax.Array, *, targets: bool) -> jax.Array:
    """max_k ||se_k||_2 / ||maps_k||_2 over targets (leading axis when `targets`): a () float.

    A zero map or a non-finite se gives inf (never "stable")."""
    if not targets:
        maps, se = maps[None], se[None]
    flat = lambda a: a.reshape(a.shape[0], -1)
    num = jnp.sqrt(jnp.sum(flat(se) ** 2, axis=1))
    den = jnp.sqrt(jnp.sum(flat(maps) ** 2, axis=1))
    ratio = jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), jnp.inf)
    return jnp.max(jnp.where(jnp.isfinite(ratio), ratio, jnp.inf))


def sample_in_rounds(round_fn: Callable, init, error_of: Callable, *, budget: int, round_size: int,
                     tolerance: float):
    """Run rounds of `round_size` samples until `error_of(state) <= tolerance` or `budget` samples.

    round_fn(state, start () int32, n_valid () int32) -> state: adds samples start ..
      start + round_size - 1 of the sample stream; only the first n_valid are real (the rest lie
      beyond the budget: weight 0). Fixed shapes: the same program for every round.
    error_of(state) -> () float, the estimated error after the round.
    Returns (state, samples used () int32), samples used <= budget exactly.
    """
    budget_ = jnp.int32(budget)

    def body(carry):
        used, state, _ = carry
        state = round_fn(state, used, jnp.minimum(jnp.int32(round_size), budget_ - used))
        used = jnp.minimum(used + round_size, budget_)
        return used, state, (error_of(state) <= tolerance) | (used >= budget_)

    used, state, _ = jax.lax.while_loop(lambda carry: ~carry[2], body, (jnp.int32(0), init, jnp.bool_(False)))
    return state, used


# ----------------------------------------------------------------------------- RISE


def rise_in_rounds(f: Callable, k: int | None, x: jax.Array, masks_of: Callable, blend: Callable, *, budget: int,
                   round_size: int, keep_prob: float, centered: bool, tolerance: float, batch_size: int,
                   mesh) -> tuple[jax.Array, jax.Array]:
    """RISE (plain or centred) in rounds of masks until the map is stable: (maps ([K,] H, W), masks used).

    masks_of(indices (B,) int) -> (B, H, W): mask i of the fixed-count stream; blend(masks) ->
    perturbed inputs. Forward batches of `batch_size` stream through `batching.sum_forward_terms`.
    Error terms (see the module): plain t_i = s_i mc_i / keep_prob, centred u_i = (s_i - mean s) mc_i
    / keep_prob, mc_i = m_i minus its pixel mean (maps compared up to a constant). Centred sums
    are kept about the running mean score (re-shifted exactly after each round), so their squares
    do not cancel in float32 once the mean is known.
    """
    h, w = x.shape[:2]
    hw = h * w
    dtype = x.dtype
    fk = f if k is not None else (lambda z: f(z)[None])

    def round_sums(start, n_valid, shift):
        def rows_of(idx):
            # A row is a flat mask and its weight: 0 beyond the budget, and for the mesh's padding.
            valid = (idx < n_valid).astype(dtype)
            masks = masks_of(start + idx).reshape(idx.shape[0], hw) * valid[:, None]
            return jnp.concatenate([masks, valid[:, None]], axis=1)

        def terms(rows, inputs, scores, _):
            valid, m = rows[:, hw], rows[:, :hw]
            mc = (m - jnp.mean(m, axis=1, keepdims=True)) * valid[:, None]
            mc2 = mc * mc
            s = scores * valid[:, None]  # (B, K)
            d = (scores - shift) * valid[:, None]
            return {"sm": s.T @ m, "s": jnp.sum(s, axis=0), "m": jnp.sum(m, axis=0), "smc": s.T @ mc,
                    "s2mc2": (s * s).T @ mc2, "b": d.T @ mc, "c": (d * d).T @ mc2, "d": d.T @ mc2,
                    "e": jnp.sum(mc2, axis=0), "f": jnp.sum(mc, axis=0)}

        return batching.sum_forward_terms(fk, round_size, batch_size, mesh, rows_of,
                                          lambda rows: blend(rows[:, :hw].reshape(-1, h, w)), terms)

    kk = k or 1
    zeros_k, zeros_map, zeros_px = jnp.zeros((kk,), dtype), jnp.zeros((kk, hw), dtype), jnp.zeros((hw,), dtype)
    plain0 = Moments(jnp.float32(0.0), zeros_map, zeros_map)
    centred0 = {"b": zeros_map, "c": zeros_map, "d": zeros_map, "e": zeros_px, "f": zeros_px}
    init = (jnp.float32(0.0), zeros_k, zeros_map, zeros_px, zeros_k, plain0, centred0)

    def round_fn(state, start, n_valid):
        n, s_sum, sm_sum, m_sum, shift, plain, cen = state
        r = round_sums(start, n_valid, shift)
        count = n_valid.astype(jnp.float32)
        n = n + count
        s_sum, sm_sum, m_sum = s_sum + r["s"], sm_sum + r["sm"], m_sum + r["m"]
        plain = merge_moments(plain, round_moments(count, r["smc"] / keep_prob, r["s2mc2"] / keep_prob ** 2))
        cen = {name: cen[name] + r[name] for name in cen}
        # Move the centred sums to the new mean score: exact for sums of (s - shift) powers.
        new_shift = s_sum / jnp.maximum(n, 1.0).astype(dtype)
        delta = (new_shift - shift)[:, None]
        cen = {"b": cen["b"] - delta * cen["f"], "c": cen["c"] - 2 * delta * cen["d"] + delta ** 2 * cen["e"],
               "d": cen["d"] - delta * cen["e"], "e": cen["e"], "f": cen["f"]}
        return n, s_sum, sm_sum, m_sum, new_shift, plain, cen

    def centred_parts(state):
        n, _, _, _, _, _, cen = state
        nd = jnp.maximum(n - 1.0, 1.0).astype(dtype)
        maps = cen["b"] / (nd * keep_prob)
        m2 = jnp.maximum(cen["c"] - cen["b"] ** 2 / jnp.maximum(n, 1.0).astype(dtype), 0.0) / keep_prob ** 2
        return maps, standard_error(m2, n)

    def error_of(state):
        if centered:
            maps, se = centred_parts(state)
        else:
            plain = state[5]
            maps, se = plain.mean, standard_error(plain.m2, plain.count)
        return relative_error(maps, se, targets=True)

    state, used = sample_in_rounds(round_fn, init, error_of, budget=budget, round_size=round_size,
                                   tolerance=tolerance)
    n, s_sum, sm_sum, m_sum = state[:4]
    nd = n.astype(dtype)
    if centered:
        maps = (sm_sum - (s_sum / nd)[:, None] * m_sum) / ((nd - 1.0) * keep_prob)
    else:
        maps = sm_sum / (nd * keep_prob)
    maps = maps.reshape((kk, h, w))
    return (maps if k is not None else maps[0]), used


# ----------------------------------------------------------------------------- gradient means


def gradient_mean_in_rounds(f: Callable, k: int | None, x: jax.Array, chunk_of: Callable, *, points_per_sample: int,
                            budget: int, round_size: int, tolerance: float, batch_size: int | None,
                            mesh) -> tuple[jax.Array, jax.Array]:
    """Mean of per-sample gradient terms in rounds until the map is stable: (map, samples used).

    Sample i's term is sum over its points j < points_per_sample of multiplier_ij * grad f(point_ij);
    chunk_of(samples (S,) int, lo, hi) -> (points (S * (hi - lo), *x.shape), multipliers
    broadcastable to it), points lo..hi-1 of each sample, sample-major. One point per sample
    (GradientSHAP, SmoothGrad): a round is one `sum_gradient_terms` over round_size samples.
    Several (SmoothGrad-IG): each sample's term is summed over its points (batches of
    `batch_size` points) before it is squared. Returns x.shape or (K, *x.shape).
    """
    shape = x.shape if k is None else (k,) + x.shape
    zeros = jnp.zeros(shape, x.dtype)
    expand = lambda v, a: v.reshape(v.shape + (1,) * (a.ndim - v.ndim))

    def round_fn(state, start, n_valid):
        n, total, moments = state
        if points_per_sample == 1:
            def make_chunk(lo, hi):
                local = jnp.arange(lo, hi)
                points, multipliers = chunk_of(start + local, 0, 1)
                valid = (local < n_valid).astype(x.dtype)
                multipliers = jnp.broadcast_to(multipliers, points.shape)
                return points, multipliers * expand(valid, multipliers)

            r_sum, r_sq = sum_gradient_terms(f, k, round_size, batch_size, mesh, make_chunk, squares=True)
        else:
            # Rolled, like `sum_gradient_terms`: one sample's program whatever the round size.
            def add_sample(j, sums):
                term = sum_gradient_terms(f, k, points_per_sample, batch_size, mesh,
                                          lambda lo, hi: chunk_of((start + j)[None], lo, hi))
                term = term * (j < n_valid).astype(x.dtype)
                return sums[0] + term, sums[1] + term * term

            r_sum, r_sq = jax.lax.fori_loop(0, round_size, add_sample, (zeros, zeros))
        count = n_valid.astype(jnp.float32)
        return n + count, total + r_sum, merge_moments(moments, round_moments(count, r_sum, r_sq))

    def error_of(state):
        moments = state[2]
        return relative_error(moments.mean, standard_error(moments.m2, moments.count), targets=k is not None)

    init = (jnp.float32(0.0), zeros, Moments(jnp.float32(0.0), zeros, zeros))
    (n, total, _), used = sample_in_rounds(round_fn, init, error_of, budget=budget, round_size=round_size,
                                           tolerance=tolerance)
    return total / n.astype(x.dtype), used


# ----------------------------------------------------------------------------- regressions


def regression_in_rounds(round_stats: Callable, solve: Callable, init_stats, *, budget: int, round_size: int,
                         tolerance: float) -> tuple[jax.Array, jax.Array]:
    """A regression fitted from summed statistics, in rounds until its coefficients are stable.

    round_stats(start () int32, n_valid () int32) -> stats (a pytree of sums, e.g. a weighted Gram
      matrix and moments) of samples start .. start + round_size - 1, only the first n_valid real.
    solve(stats) -> coefficients (M, K'). The estimate solves the summed stats of every round.
    Its error, by batch means: each round's own solution is one draw, their spread over R rounds
    gives SE = std / sqrt(R) per coefficient (exact for a mean, first order for a regression:
    rounds should hold several samples per unknown); the error is max over columns k of
    ||SE_k||_2 / ||coef_k||_2, per feature (equal-sized features weigh as the pixels would).
    Returns (coefficients of the summed stats, samples used).
    """
    add = lambda a, b: jax.tree_util.tree_map(jnp.add, a, b)
    shape = jax.eval_shape(solve, init_stats)
    zeros = jnp.zeros(shape.shape, shape.dtype)

    def round_fn(state, start, n_valid):
        stats, rounds = state
        r = round_stats(start, n_valid)
        coef = solve(r)
        # A short last round (the budget's remainder) is no draw of the same estimator: it only
        # adds to the fit (the run stops there anyway).
        full = (n_valid == round_size).astype(jnp.float32)
        return add(stats, r), merge_moments(rounds, round_moments(full, coef, coef ** 2))

    def error_of(state):
        stats, rounds = state
        return relative_error(solve(stats).T, standard_error(rounds.m2, rounds.count).T, targets=True)

    init = (init_stats, Moments(jnp.float32(0.0), zeros, zeros))
    (stats, _), used = sample_in_rounds(round_fn, init, error_of, budget=budget, round_size=round_size,
                                        tolerance=tolerance)
    return solve(stats), used
