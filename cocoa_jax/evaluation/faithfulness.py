"""Faithfulness metrics: does removing what a map calls important change the target most?

Every function follows the metric contract of `cocoa_jax.evaluation.table` (one explicand, M maps
scored against K targets, M = K (map k on target k) or M = 1 (one map on every target), (K,)
out). Features are pixels ranked by the channel mean of the
map (`table.pixel_scores`); a removed pixel takes `ctx.baseline` in every channel (Quantus's
"black" is `evaluate(..., baseline="black")`, the explicand's minimum). Where Quantus 0.6 differs
(it ranks the C x H x W elements of a map broadcast over channels; it scores a class logit or
probability, here it is an embedding target), docs/metrics.md says so; with one channel and a
logit equal to the target they agree (tests/evaluation/test_faithfulness_quantus.py).

Perturbed inputs are built inside each encoder chunk (`score_steps`), so nothing of size
steps x image is held at once. Encoder passes, per explicand: one per perturbed input, and every
pass is read by all K targets. With one map (M = 1) each step has ONE input for the K targets;
with M = K maps the K inputs of a step differ (each map its own order) and share a call, not a
pass. Faithfulness correlation's random subsets do not depend on the map: its R + 1 passes serve
every map and target whatever M (docs/metrics.md, "Passes shared across targets").
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import batching, metrics
from cocoa_jax.evaluation.table import Context, Metric, pixel_scores, register

# Quantus's ROAD neighbour weights (Rong et al., 2022): 1/6 for the 4 edge neighbours, 1/12 diagonals.
_ROAD_OFFSETS = ((1, 1, 1 / 12), (0, 1, 1 / 6), (-1, 1, 1 / 12), (1, -1, 1 / 12), (0, -1, 1 / 6),
                 (-1, -1, 1 / 12), (1, 0, 1 / 6), (-1, 0, 1 / 6))


# ----------------------------------------------------------------------------- shared pieces


def score_steps(ctx: Context, build, n_steps: int, n_maps: int) -> jax.Array:
    """Target values of the perturbed inputs of `n_steps` steps, M = `n_maps` inputs per step.

    build(steps (b,) int) -> (b, M, H, W, C): the inputs of steps `steps`, input m built from map m.
    M = 1 (one map for every target): each step's ONE input is encoded once and read by all K
    targets. M = K: input k is read on target k; the K inputs of a step go through the encoder in
    the same call (one dispatch, K times the images: different maps, different inputs).
    Returns (K, n_steps): the value of target k at step s. At most `ctx.batch_size` images per
    encoder call (`ctx.batch_size // M` steps).
    """
    per_call = _steps_per_call(ctx, n_maps)
    chunk = lambda steps: _step_values(ctx, build(steps), n_maps)
    return batching.map_in_batches(chunk, jnp.arange(n_steps), per_call).T


def _steps_per_call(ctx: Context, n_maps: int) -> int | None:
    k = ctx.num_targets
    if n_maps not in (1, k):
        raise ValueError(f"`n_maps` must be 1 or the {k} targets, got {n_maps}")
    return None if ctx.batch_size is None else max(1, ctx.batch_size // n_maps)


def _step_values(ctx: Context, inputs: jax.Array, n_maps: int, extra: jax.Array | None = None):
    """(b, M, H, W, C) inputs of b steps -> (b, K) target values (one encoder call); with `extra`
    (H, W, C), that image rides in the same call: ((b, K), (K,) its values)."""
    b, k = inputs.shape[0], ctx.num_targets
    flat = inputs.reshape((b * n_maps,) + inputs.shape[2:])
    if extra is not None:
        flat = jnp.concatenate([flat, extra[None]])
    values = ctx.score(flat)
    steps = values[:b * n_maps].reshape(b, n_maps, k)
    # (b, K): the one input on every target (M = 1), or input k on target k (M = K)
    steps = steps[:, 0] if n_maps == 1 else jnp.diagonal(steps, axis1=1, axis2=2)
    return steps if extra is None else (steps, values[-1])


def _reference_and_steps(ctx: Context, x, build, n_steps: int, n_maps: int):
    """((K,) target values of x, (K, n_steps) `score_steps` values): 1 + M n_steps images. When the
    steps fit one encoder call (`batch_size` None or large enough), x rides in that call (no
    separate pass of one image); otherwise x is encoded on its own, then the chunks of steps."""
    per_call = _steps_per_call(ctx, n_maps)
    if per_call is None or per_call >= n_steps:
        steps, reference = _step_values(ctx, build(jnp.arange(n_steps)), n_maps, extra=x)
        return reference, steps.T
    return ctx.score(x[None])[0], score_steps(ctx, build, n_steps, n_maps)


def _per_target(curves: jax.Array) -> jax.Array:
    """(M, S, K) curves of M maps read on K targets -> (K, S): the one map's curve on every target
    (M = 1), or map k's curve on target k (M = K)."""
    if curves.shape[0] == 1:
        return curves[0].T
    return jnp.diagonal(curves, axis1=0, axis2=2).T


def _ranks(scores: jax.Array, descending: bool = True) -> jax.Array:
    """(M, F) scores -> (M, F) int rank of each feature, 0 = first removed (stable: ties by index)."""
    order = jnp.argsort(-scores if descending else scores, axis=-1, stable=True)
    f = scores.shape[-1]
    return jnp.zeros_like(order).at[jnp.arange(order.shape[0])[:, None], order].set(
        jnp.broadcast_to(jnp.arange(f), order.shape))


def _replace(x, baseline, removed):
    """x with pixels where removed (.., H, W) is true set to baseline (H, W, C) -> (.., H, W, C)."""
    return jnp.where(removed[..., None], baseline, x)


def _trapezoid(curve: jax.Array) -> jax.Array:
    """np.trapz(curve, dx=1) over the last axis."""
    return jnp.sum(0.5 * (curve[..., 1:] + curve[..., :-1]), axis=-1)


# ----------------------------------------------------------------------------- insertion / deletion


def _ablation_auc(kind):
    def fn(ctx: Context, x, maps, key, *, n_steps=50, absolute=False, superpixel=1):
        del key
        height, width = x.shape[0], x.shape[1]
        sh, sw = (superpixel, superpixel) if isinstance(superpixel, int) else superpixel
        curves = metrics.ablation_curves(ctx.encode, ctx.target, x, ctx.baseline, maps, kinds=(kind,),
                                         n_steps=n_steps, absolute=absolute, superpixel=superpixel,
                                         batch_size=ctx.batch_size)  # (M, 1, S + 1, K)
        curves = _per_target(curves[:, 0])  # (K, S + 1)
        fractions = metrics.feature_fractions((height // sh) * (width // sw), n_steps)
        return metrics.auc(curves[..., None], fractions)[:, 0]
    fn.__name__ = f"{kind}_auc"
    fn.__doc__ = (f"{kind.capitalize()} AUC of target k under map k (cocoa_jax.metrics, Petsiuk et al. 2018): "
                  "trapezoid over the fraction of pixels changed. -> (K,)")
    return fn


insertion = _ablation_auc("insertion")
deletion = _ablation_auc("deletion")


# ----------------------------------------------------------------------------- ROAD


def _neighbour_sum(values: jax.Array) -> jax.Array:
    """sum over the 8 in-frame neighbours j of w_ij * values_j, (H, W, C) -> (H, W, C) (zero outside)."""
    height, width = values.shape[0], values.shape[1]
    padded = jnp.pad(values, ((1, 1), (1, 1), (0, 0)))
    total = jnp.zeros_like(values)
    for dy, dx, w in _ROAD_OFFSETS:
        total = total + w * padded[1 + dy:1 + dy + height, 1 + dx:1 + dx + width]
    return total


def linear_imputation(x: jax.Array, removed: jax.Array, *, tol: float = 1e-6, maxiter: int | None = None):
    """ROAD's linear imputation (Rong et al., 2022): removed pixels (H, W) bool of x (H, W, C) take
    the values v solving, at every removed pixel i, S_i v_i = sum_j w_ij v_j over its in-frame
    neighbours j (kept neighbours at their value in x; S_i the sum of those neighbours' weights):
    each removed pixel is the weighted mean of its neighbours. Solved by conjugate gradients (the
    system is symmetric positive definite while a pixel is kept). -> (H, W, C)."""
    keep = (~removed).astype(x.dtype)[..., None]
    inside = removed.astype(x.dtype)[..., None]
    frame = _neighbour_sum(jnp.ones_like(x[..., :1]))  # S_i: weights of in-frame neighbours
    rhs = inside * _neighbour_sum(x * keep)

    def operator(u):  # removed rows: S u - W u (removed neighbours only); kept rows: identity
        u_in = u * inside
        return inside * (frame * u_in - _neighbour_sum(u_in)) + keep * u

    # CG needs O(H + W) iterations on this grid Laplacian (measured: 4 n for n x n images, 95% removed,
    # to float32 precision); 8 (H + W) is a cap, the tolerance stops it first.
    cap = min(x.shape[0] * x.shape[1], 8 * (x.shape[0] + x.shape[1]))
    solution, _ = jax.scipy.sparse.linalg.cg(operator, rhs, x0=rhs, tol=tol, maxiter=cap if maxiter is None else maxiter)
    return x * keep + solution * inside


def road_percentages(percentages=None) -> np.ndarray:
    """ROAD's removal percentages (Quantus's default 1, 3, ..., 99)."""
    return np.arange(1, 100, 2) if percentages is None else np.asarray(percentages)


def road_curve(ctx: Context, x, maps, key, *, order="morf", percentages=None, noise=0.01):
    """Target values after removing the top (MoRF) / bottom (LeRF) p% of pixels, imputed by
    `linear_imputation` plus N(0, noise^2) noise per removed value: (K, P).

    int(H * W * p / 100) pixels are removed at percentage p (Quantus's count); the noise of
    percentage index i is drawn from fold_in(key, i) and shared by the K maps."""
    percentages = road_percentages(percentages)
    height, width = x.shape[0], x.shape[1]
    counts = jnp.asarray([int(height * width * p / 100) for p in percentages])
    ranks = _ranks(pixel_scores(maps).reshape(maps.shape[0], -1), descending=(order == "morf"))

    def build(steps):
        def one(step):
            removed = (ranks < counts[step]).reshape(-1, height, width)  # (M, H, W)
            draw = noise * jax.random.normal(jax.random.fold_in(key, step), x.shape, x.dtype)
            imputed = jax.vmap(lambda r: linear_imputation(x, r))(removed)
            return jnp.where(removed[..., None], imputed + draw, x)
        return jax.vmap(one)(steps)

    return score_steps(ctx, build, len(percentages), maps.shape[0])


def _road(order):
    def fn(ctx, x, maps, key, *, percentages=None, noise=0.01):
        return jnp.mean(road_curve(ctx, x, maps, key, order=order, percentages=percentages, noise=noise), axis=-1)
    fn.__name__ = f"road_{order}"
    fn.__doc__ = f"ROAD ({order.upper()}): mean over percentages of `road_curve`. -> (K,)"
    return fn


road_morf = _road("morf")
road_lerf = _road("lerf")


# ----------------------------------------------------------------------------- pixel flipping


def pixel_flipping_curve(ctx: Context, x, maps, key=None, *, features_in_step=1):
    """Target values as pixels are replaced by the baseline, most important first, `features_in_step`
    more at each of ceil(H * W / features_in_step) steps (Bach et al., 2015): (K, steps)."""
    del key
    height, width = x.shape[0], x.shape[1]
    n = height * width
    ranks = _ranks(pixel_scores(maps).reshape(maps.shape[0], -1))
    n_steps = -(-n // features_in_step)

    def build(steps):
        removed = ranks[None] < ((steps + 1) * features_in_step)[:, None, None]  # (b, K, F)
        return _replace(x, ctx.baseline, removed.reshape(removed.shape[:2] + (height, width)))

    return score_steps(ctx, build, n_steps, maps.shape[0])


def pixel_flipping(ctx, x, maps, key, *, features_in_step=1):
    """Area under `pixel_flipping_curve` (np.trapz, dx=1, as Quantus's return_auc_per_sample). -> (K,)"""
    return _trapezoid(pixel_flipping_curve(ctx, x, maps, key, features_in_step=features_in_step))


# ----------------------------------------------------------------------------- region perturbation


def region_perturbation_curve(ctx: Context, x, maps, key=None, *, order="morf", patch_size=8,
                              regions_evaluation=100):
    """f(x) - f(x with the first s patches replaced by the baseline), patches of patch_size x
    patch_size ranked by their map sum, most (MoRF) or least (LeRF) important first (Samek et al.,
    2017): (K, min(regions_evaluation, patches))."""
    del key
    height, width = x.shape[0], x.shape[1]
    if height % patch_size or width % patch_size:
        raise ValueError(f"`patch_size`={patch_size} must divide the image size {(height, width)}")
    gh, gw = height // patch_size, width // patch_size
    sums = pixel_scores(maps).reshape(-1, gh, patch_size, gw, patch_size).sum(axis=(2, 4)).reshape(maps.shape[0], -1)
    ranks = _ranks(sums, descending=(order == "morf"))  # (M, patches)
    n_steps = min(int(regions_evaluation), gh * gw)

    def build(steps):  # step s removes the patches ranked <= s
        removed = (ranks[None] <= steps[:, None, None]).reshape(-1, maps.shape[0], gh, gw)
        removed = jnp.repeat(jnp.repeat(removed, patch_size, axis=2), patch_size, axis=3)
        return _replace(x, ctx.baseline, removed)

    reference, values = _reference_and_steps(ctx, x, build, n_steps, maps.shape[0])
    return reference[:, None] - values


def _region(order):
    def fn(ctx, x, maps, key, *, patch_size=8, regions_evaluation=100):
        return jnp.mean(region_perturbation_curve(ctx, x, maps, key, order=order, patch_size=patch_size,
                                                  regions_evaluation=regions_evaluation), axis=-1)
    fn.__name__ = f"region_perturbation_{order}"
    fn.__doc__ = f"Region perturbation ({order.upper()}): mean of the curve (AOPC). -> (K,)"
    return fn


region_perturbation_morf = _region("morf")
region_perturbation_lerf = _region("lerf")


# ----------------------------------------------------------------------------- IROF


def grid_segments(height: int, width: int, cell: int) -> np.ndarray:
    """(H, W) int32 ids of a regular grid of cell x cell superpixels (row-major; edge cells smaller)."""
    rows, cols = np.arange(height) // cell, np.arange(width) // cell
    return (rows[:, None] * (-(-width // cell)) + cols[None, :]).astype(np.int32)


def irof(ctx: Context, x, maps, key=None, *, cell=8):
    """IROF (Rieger & Hansen, 2020): superpixels removed (set to the baseline) one by one in the
    order of their mean map value; the area over the curve of f(perturbed) / f(x):
    n_segments - trapz(curve, dx=1). Segments are `ctx.segments` (e.g. skimage's SLIC, as Quantus)
    or, without them, a regular grid of `cell` x `cell` cells. -> (K,)"""
    del key
    height, width = x.shape[0], x.shape[1]
    if ctx.segments is None:
        grid = grid_segments(height, width, cell)
        segments, n_segments = jnp.asarray(grid), int(grid.max()) + 1
    else:
        segments, n_segments = ctx.segments, ctx.num_segments
    one_hot = jax.nn.one_hot(segments.reshape(-1), n_segments, dtype=x.dtype)  # (F, S)
    sizes = one_hot.sum(axis=0)  # (S,) empty ids (fewer segments in this explicand) have size 0
    present = sizes > 0
    means = (pixel_scores(maps).reshape(maps.shape[0], -1) @ one_hot) / jnp.maximum(sizes, 1)
    means = jnp.where(present, means, -jnp.inf)  # empty ids last, never counted
    ranks = _ranks(means)  # (M, S)
    pixel_rank = ranks[:, segments]  # (M, H, W)

    def build(steps):  # step s removes the segments ranked <= s
        return _replace(x, ctx.baseline, pixel_rank[None] <= steps[:, None, None, None])

    reference, values = _reference_and_steps(ctx, x, build, n_segments, maps.shape[0])
    curve = values / reference[:, None]  # (K, S)
    count = jnp.sum(present)
    weights = jnp.where(jnp.arange(n_segments - 1) < count - 1, 1.0, 0.0)  # trapz over the first `count`
    area = jnp.sum(0.5 * (curve[:, 1:] + curve[:, :-1]) * weights, axis=-1)
    return count - area


# ----------------------------------------------------------------------------- faithfulness correlation


def correlation_subsets(key, n_features: int, subset_size: int, nr_runs: int) -> jax.Array:
    """The random pixel subsets of faithfulness correlation: (nr_runs, subset_size) distinct flat
    pixel indices, run r drawn from fold_in(key, r)."""
    draw = lambda r: jax.random.choice(jax.random.fold_in(key, r), n_features, (subset_size,), replace=False)
    return jax.vmap(draw)(jnp.arange(nr_runs))


def faithfulness_correlation(ctx: Context, x, maps, key, *, nr_runs=100, subset_size=224):
    """Faithfulness correlation (Bhatt et al., 2020): Pearson correlation, over `nr_runs` random
    subsets of `subset_size` pixels, between the map's sum over the subset and the target's drop
    f(x) - f(x with the subset at the baseline). The subsets do not depend on the maps: the R + 1 passes serve every map and target. -> (K,)"""
    height, width = x.shape[0], x.shape[1]
    n = height * width
    if subset_size > n:
        raise ValueError(f"`subset_size`={subset_size} exceeds the {n} pixels of the image")
    subsets = correlation_subsets(key, n, subset_size, nr_runs)  # (R, s)
    # row 0 removes nothing (x itself, the reference), row r + 1 removes subset r: one batch of R + 1 passes
    removed = jnp.zeros((nr_runs + 1, n), bool).at[jnp.arange(1, nr_runs + 1)[:, None], subsets].set(True)
    perturbed = lambda rows: _replace(x, ctx.baseline, removed[rows].reshape(-1, height, width))
    scores = batching.map_in_batches(lambda rows: ctx.score(perturbed(rows)), jnp.arange(nr_runs + 1), ctx.batch_size)
    drops = scores[:1] - scores[1:]  # (R, K)
    sums = pixel_scores(maps).reshape(maps.shape[0], -1)[:, subsets].sum(-1).T  # (R, K)
    a = sums - sums.mean(0)
    b = drops - drops.mean(0)
    return jnp.sum(a * b, 0) / jnp.sqrt(jnp.sum(a * a, 0) * jnp.sum(b * b, 0))


# ----------------------------------------------------------------------------- the table entries

_QUANTUS_CALL = "Quantus 0.6 with softmax=False and a logit equal to the target"
for _metric in (
    Metric("insertion", "Insertion AUC", "faithfulness", "higher", insertion,
           summary="target value as the most important pixels are inserted into the baseline",
           reference="Petsiuk, Das & Saenko, RISE, BMVC 2018", quantus="",
           options={"n_steps": 50, "absolute": False, "superpixel": 1}),
    Metric("deletion", "Deletion AUC", "faithfulness", "lower", deletion,
           summary="target value as the most important pixels are replaced by the baseline",
           reference="Petsiuk, Das & Saenko, RISE, BMVC 2018", quantus="",
           options={"n_steps": 50, "absolute": False, "superpixel": 1}),
    Metric("road_morf", "ROAD (MoRF)", "faithfulness", "lower", road_morf,
           summary="mean target value after removing the top p% pixels, imputed from their neighbours",
           reference="Rong, Leemann, Borisov, Kasneci & Kasneci, ICML 2022", quantus="quantus.ROAD",
           options={"percentages": None, "noise": 0.01}, uses_key=True),
    Metric("road_lerf", "ROAD (LeRF)", "faithfulness", "higher", road_lerf,
           summary="mean target value after removing the bottom p% pixels, imputed from their neighbours",
           reference="Rong, Leemann, Borisov, Kasneci & Kasneci, ICML 2022", quantus="quantus.ROAD",
           options={"percentages": None, "noise": 0.01}, uses_key=True),
    Metric("pixel_flipping", "Pixel flipping", "faithfulness", "lower", pixel_flipping,
           summary="area under the target as pixels are flipped to the baseline, most important first",
           reference="Bach et al., PLOS ONE 2015", quantus="quantus.PixelFlipping",
           options={"features_in_step": 1}),
    Metric("region_perturbation_morf", "Region perturbation (MoRF)", "faithfulness", "higher",
           region_perturbation_morf,
           summary="mean target drop as the most important patches are replaced by the baseline (AOPC)",
           reference="Samek et al., IEEE TNNLS 2017", quantus="quantus.RegionPerturbation",
           options={"patch_size": 8, "regions_evaluation": 100}),
    Metric("region_perturbation_lerf", "Region perturbation (LeRF)", "faithfulness", "lower",
           region_perturbation_lerf,
           summary="mean target drop as the least important patches are replaced by the baseline",
           reference="Samek et al., IEEE TNNLS 2017", quantus="quantus.RegionPerturbation",
           options={"patch_size": 8, "regions_evaluation": 100}),
    Metric("irof", "IROF", "faithfulness", "higher", irof,
           summary="area over the relative target curve as superpixels are removed, most important first",
           reference="Rieger & Hansen, arXiv:2003.08747, 2020", quantus="quantus.IROF",
           options={"cell": 8}, needs_segments=True),
    Metric("faithfulness_correlation", "Faithfulness correlation", "faithfulness", "higher",
           faithfulness_correlation,
           summary="Pearson correlation of map sums and target drops over random pixel subsets",
           reference="Bhatt, Weller & Moura, IJCAI 2020", quantus="quantus.FaithfulnessCorrelation",
           options={"nr_runs": 100, "subset_size": 224}, uses_key=True),
):
    register(_metric)

__all__ = [
    "correlation_subsets", "deletion", "faithfulness_correlation", "grid_segments", "insertion", "irof",
    "linear_imputation", "pixel_flipping", "pixel_flipping_curve", "region_perturbation_curve",
    "region_perturbation_lerf", "region_perturbation_morf", "road_curve", "road_lerf", "road_morf",
    "road_percentages", "score_steps",
]
