"""Randomisation metrics: does a map depend on the model's parameters and on the target?

Every metric compares the map being scored, `a` (K, H, W[, C]), with the explainer's maps of
the same explicand under changed conditions; scores are per target, values of a map are read in
any fixed order (Spearman, histograms: order-free). The randomised models are the caller's
`ctx.randomized_params`, e.g. `cascade_params(...)` below: the cascade of
`cocoa_jax.models.randomize.cascading_randomizations` in the encoder's top-down block order
(what the sweep's `randomize_cascade` runs); its LAST step is the fully randomised model.

    mprt         rho_S(|a|, |explain_j(x)|) over the cascade steps j (Adebayo et al., Sanity checks
                 for saliency maps, NeurIPS 2018; Quantus `MPRT` with abs=True); lower is better.
    smooth_mprt  the same with explain_j replaced by its SmoothGrad-style average over `n_samples`
                 inputs x + eps, eps ~ N(0, (m (max x - min x))^2), the last eps = 0 (Hedstrom et al.,
                 Sanity checks revisited, TMLR 2024; Quantus `SmoothMPRT`); lower is better.
    efficient_mprt (H(explain_last(x)) - H(a)) / H(a), H the entropy of the histogram of the map's
                 values in `n_bins` equal bins (Hedstrom et al. 2024; Quantus `EfficientMPRT` with
                 n_bins given); higher is better (randomisation should make the map more complex).
    random_logit SSIM(a, explain_alt(x)), the map for ANOTHER target of the same kind
                 (`ctx.alternative_target`, e.g. COCOA with another class's corpus) instead of another
                 logit (Sixt et al., When explanations lie, ICML 2020; Quantus `RandomLogit`); both
                 maps' pixel means divided by their max |.|, the SSIM of the row-major flattened
                 maps with a window of 7 values as Quantus computes it; lower is better. Quantus's
                 default divides by the max over the whole BATCH (`normalise_by_max` over all axes),
                 so its scores depend on the batch; here each map by its own max (Quantus with
                 normalise_func_kwargs={"normalise_axes": (1, 2, 3)}).

Maps per channel (K, H, W, C) and per pixel (K, H, W) are compared as channel means (`comparable`).

`aggregate` of the MPRTs: "last" (default: the fully randomised model, Quantus's
`return_last_correlation`) or "mean" over the cascade steps. Quantus's `return_average_correlation`
also averages in the unrandomised model's correlation (its loop skips a key "orig" that is named
"original"); "mean" here does not. Quantus's `EfficientMPRT` takes H of a fresh explanation of the
trained model; here H(a) of the scored map (the same when `a` is the explainer's map).
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from cocoa_jax.evaluation.table import Metric, pixel_scores, register

AGGREGATES = ("last", "mean")


# -- similarity and complexity of maps --------------------------------------------------------

def average_ranks(values: jax.Array) -> jax.Array:
    """Ranks 1..n along the last axis, ties given their average rank (scipy's "average")."""
    ordered = jnp.sort(values, axis=-1)
    search = jnp.vectorize(lambda row, v: (jnp.searchsorted(row, v, side="left"),
                                           jnp.searchsorted(row, v, side="right")), signature="(n),(n)->(n),(n)")
    below, upto = search(ordered, values)
    return (below + upto + 1) / 2.0


def spearman(a: jax.Array, b: jax.Array) -> jax.Array:
    """Spearman correlation of a and b over their last axis: (..., n), (..., n) -> (...)."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra = ra - jnp.mean(ra, axis=-1, keepdims=True)
    rb = rb - jnp.mean(rb, axis=-1, keepdims=True)
    return jnp.sum(ra * rb, axis=-1) / jnp.sqrt(jnp.sum(ra * ra, axis=-1) * jnp.sum(rb * rb, axis=-1))


def histogram_entropy(values: jax.Array, n_bins: int) -> jax.Array:
    """Entropy (nats) of the histogram of the values in `n_bins` equal bins over [min, max] (the
    last bin closed, as `np.histogram`): (..., n) -> (...)."""
    values = jnp.asarray(values)
    low = jnp.min(values, axis=-1, keepdims=True)
    high = jnp.max(values, axis=-1, keepdims=True)
    width = jnp.where(high > low, high - low, 1.0)
    index = jnp.clip(jnp.floor((values - low) / width * n_bins), 0, n_bins - 1).astype(jnp.int32)
    counts = jnp.sum(jax.nn.one_hot(index, n_bins, dtype=values.dtype), axis=-2)
    p = counts / values.shape[-1]
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)


def ssim_1d(a: jax.Array, b: jax.Array, window: int = 7) -> jax.Array:
    """Mean structural similarity of two 1-D signals (..., n), as `skimage.metrics.
    structural_similarity` computes it for 1-D input: uniform window of `window` values, sample
    covariances, K1 = 0.01, K2 = 0.03, data range max(a, b) - min(a, b), the mean over the
    positions whose window lies inside the signal. n >= window."""
    a, b = jnp.asarray(a), jnp.asarray(b)
    n = a.shape[-1]
    if n < window:
        raise ValueError(f"SSIM needs maps of at least {window} values, got {n}")
    data_range = (jnp.maximum(jnp.max(a, -1), jnp.max(b, -1)) - jnp.minimum(jnp.min(a, -1), jnp.min(b, -1)))
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def mean_filter(v):  # windows fully inside the signal: (..., n - window + 1)
        csum = jnp.cumsum(jnp.pad(v, [(0, 0)] * (v.ndim - 1) + [(1, 0)]), axis=-1)
        return (csum[..., window:] - csum[..., :-window]) / window

    ua, ub = mean_filter(a), mean_filter(b)
    scale = window / (window - 1.0)
    va = scale * (mean_filter(a * a) - ua * ua)
    vb = scale * (mean_filter(b * b) - ub * ub)
    vab = scale * (mean_filter(a * b) - ua * ub)
    c1, c2 = c1[..., None], c2[..., None]
    s = (2 * ua * ub + c1) * (2 * vab + c2) / ((ua * ua + ub * ub + c1) * (va + vb + c2))
    return jnp.mean(s, axis=-1)


def _flat(maps):
    return maps.reshape(maps.shape[0], -1)


def comparable(maps: jax.Array, other: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The scored maps and an explainer's maps on one footing: when one of them is per channel
    (K, H, W, C) and the other per pixel (K, H, W), the per-channel one becomes its channel mean
    (`pixel_scores`); otherwise both as they are."""
    if maps.ndim == other.ndim + 1:
        return pixel_scores(maps), other
    if other.ndim == maps.ndim + 1:
        return maps, pixel_scores(other)
    return maps, other


def _max_normalised(maps):
    """Each map divided by its max |value| (Quantus's normalise_by_max); a zero map stays zero."""
    peak = jnp.max(jnp.abs(maps), axis=-1, keepdims=True)
    return maps / jnp.where(peak > 0, peak, 1.0)


# -- the randomised models ----------------------------------------------------------------------

def cascade_params(encode_fn: Callable, params, key: jax.Array, example: jax.Array,
                   order: Sequence[str] | None = None) -> tuple:
    """Parameter pytrees of the cascade `cascading_randomizations(params, key, order)`, one per
    step, for `ctx.randomized_params`. encode_fn(params, images (B, H, W, C)) -> (B, D);
    example: one (1, H, W, C) input, to read the top-down block order from the traced forward
    pass when `order` is None (the sweep's order). The last entry is the fully randomised model
    (`randomize_params(params, key)`)."""
    from cocoa_jax.models.randomize import cascading_randomizations, forward_block_order

    if order is None:
        order = forward_block_order(encode_fn, params, example)[::-1]
    return tuple(step for _, step in cascading_randomizations(params, key, order))


def _check_aggregate(aggregate):
    if aggregate not in AGGREGATES:
        raise ValueError(f"`aggregate` must be one of {AGGREGATES}, got {aggregate!r}")


def _step_maps(ctx, x, key, explain, aggregate):
    """explain(x, key_j, encode_j) for the steps the aggregate reads: (J, K, ...)."""
    _check_aggregate(aggregate)
    steps = tuple(ctx.randomized_params)
    if not steps:
        raise ValueError("this metric needs randomised models: pass `randomized_params=` to evaluate")
    chosen = steps[-1:] if aggregate == "last" else steps
    return [explain(x, jax.random.fold_in(key, j), params) for j, params in enumerate(chosen)]


def correlations_with(maps, others, *, absolute: bool = True) -> jax.Array:
    """Spearman of each map with each step's map: maps (K, ...), others [J of (K, ...)] -> (J, K)."""
    out = []
    for other in others:
        ref, other = (_flat(m) for m in comparable(maps, other))
        if absolute:
            ref, other = jnp.abs(ref), jnp.abs(other)
        out.append(spearman(ref, other))
    return jnp.stack(out)


def smoothed(explain: Callable, x: jax.Array, noise: jax.Array, key: jax.Array) -> jax.Array:
    """Mean of explain(x + noise_i, fold_in(key, i)) over the (S, H, W, C) noise (sequential)."""
    def one(args):
        i, eps = args
        return explain(x + eps, jax.random.fold_in(key, i))

    return jnp.mean(jax.lax.map(one, (jnp.arange(noise.shape[0]), noise)), axis=0)


def smooth_noise(key: jax.Array, x: jax.Array, n_samples: int, noise_magnitude: float) -> jax.Array:
    """(n_samples, H, W, C) Gaussian draws of std m (max x - min x), the last one zero (SmoothMPRT)."""
    std = noise_magnitude * (jnp.max(x) - jnp.min(x))
    draws = std * jax.random.normal(key, (n_samples - 1,) + x.shape, x.dtype)
    return jnp.concatenate([draws, jnp.zeros((1,) + x.shape, x.dtype)])


# -- the metric functions (table contract) ------------------------------------------------------

def _aggregate(rho, aggregate):
    return rho[-1] if aggregate == "last" else jnp.mean(rho, axis=0)


def mprt(ctx, x, maps, key, *, absolute: bool = True, aggregate: str = "last") -> jax.Array:
    """Spearman of the scored maps with the explainer's maps under the randomised models, (K,)."""
    steps = _step_maps(ctx, x, key, lambda image, k, enc: ctx.explain(image, k, params=enc), aggregate)
    return _aggregate(correlations_with(maps, steps, absolute=absolute), aggregate)


def smooth_mprt(ctx, x, maps, key, *, n_samples: int = 50, noise_magnitude: float = 0.1,
                absolute: bool = True, aggregate: str = "last") -> jax.Array:
    """`mprt` with each randomised model's map averaged over `n_samples` noisy inputs, (K,)."""
    noise_key, explain_key = jax.random.split(key)
    noise = smooth_noise(noise_key, x, n_samples, noise_magnitude)

    def explain(image, k, enc):
        return smoothed(lambda noisy, kk: ctx.explain(noisy, kk, params=enc), image, noise, k)

    steps = _step_maps(ctx, x, explain_key, explain, aggregate)
    return _aggregate(correlations_with(maps, steps, absolute=absolute), aggregate)


def efficient_mprt(ctx, x, maps, key, *, n_bins: int = 100) -> jax.Array:
    """Relative rise of the histogram entropy from the scored maps to the fully randomised
    model's maps, (K,)."""
    (last,) = _step_maps(ctx, x, key, lambda image, k, enc: ctx.explain(image, k, params=enc), "last")
    maps, last = comparable(maps, last)
    before = histogram_entropy(_flat(maps), n_bins)
    after = histogram_entropy(_flat(last), n_bins)
    return (after - before) / before


def random_logit(ctx, x, maps, key, *, window: int = 7) -> jax.Array:
    """SSIM of the scored maps with the explainer's maps for the alternative targets, (K,)."""
    if ctx.alternative_target is None:
        raise ValueError("random_logit needs another target of the same kind: pass `alternative_target=` "
                         "to evaluate")
    if ctx.explainer is None:
        raise ValueError("random_logit needs an explainer: pass `explainer=` to evaluate")
    other = ctx.explainer(lambda images: ctx.encode(images), ctx.alternative_target, x, ctx.baseline, key)
    a = _max_normalised(_flat(pixel_scores(maps)))
    b = _max_normalised(_flat(pixel_scores(other)))
    return ssim_1d(a, b, window)


_ADEBAYO = "Adebayo et al., Sanity checks for saliency maps, NeurIPS 2018"
_HEDSTROM = "Hedstrom et al., Sanity checks revisited: an exploration to repair the model parameter randomisation test, TMLR 2024"
register(Metric(
    "mprt", "MPRT", "randomisation", "lower", mprt,
    summary="rank correlation of |map| with |map| of the randomised model (cascade)",
    reference=_ADEBAYO, quantus="quantus.MPRT", options={"absolute": True, "aggregate": "last"},
    uses_key=True, needs_explainer=True, needs_randomized_model=True))
register(Metric(
    "smooth_mprt", "Smooth MPRT", "randomisation", "lower", smooth_mprt,
    summary="MPRT with the randomised model's maps averaged over noisy inputs (denoised)",
    reference=_HEDSTROM, quantus="quantus.SmoothMPRT",
    options={"n_samples": 50, "noise_magnitude": 0.1, "absolute": True, "aggregate": "last"},
    uses_key=True, needs_explainer=True, needs_randomized_model=True))
register(Metric(
    "efficient_mprt", "Efficient MPRT", "randomisation", "higher", efficient_mprt,
    summary="relative rise of the map's histogram entropy under the fully randomised model",
    reference=_HEDSTROM, quantus="quantus.EfficientMPRT", options={"n_bins": 100},
    uses_key=True, needs_explainer=True, needs_randomized_model=True))
register(Metric(
    "random_logit", "Random logit (other target)", "randomisation", "lower", random_logit,
    summary="SSIM of the map with the map for another target of the same kind",
    reference="Sixt et al., When explanations lie: why many modified BP attributions fail, ICML 2020",
    quantus="quantus.RandomLogit", options={"window": 7},
    uses_key=True, needs_explainer=True, needs_alternative_target=True))


__all__ = ["AGGREGATES", "average_ranks", "cascade_params", "comparable", "correlations_with", "efficient_mprt", "histogram_entropy",
           "mprt", "random_logit", "smooth_mprt", "smooth_noise", "smoothed", "spearman", "ssim_1d"]
