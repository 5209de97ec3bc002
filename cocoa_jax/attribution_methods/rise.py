"""RISE (Petsiuk et al., 2018): masks generated on device, the estimator and its opt-in variance reduction.

Masks are evaluated in forward batches of at most `batch_size` (None: `DEFAULT_RISE_BATCH_SIZE`);
streamed by `batching.sum_forward_terms` (a rolled scan: no cost on XLA CPU, unlike gradients).
Opt-in estimators (defaults: the paper's): centred (a control variate), antithetic mask pairs,
stratified (Latin hypercube) grids; each keeps every mask's marginal distribution.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import _checks, batching
from cocoa_jax.attribution_methods import adaptive, token_drop
from cocoa_jax.attribution_methods._common import (DEFAULT_RISE_BATCH_SIZE, antithetic_draws, check_baseline,
                                                   check_flag, check_input, num_targets)


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
    antithetic_draws("n_masks", n_masks, antithetic)
    _checks.check_choice("sampler", sampler, RISE_SAMPLERS)
    centered = check_flag("centered", centered)
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


def _blend(x, baseline):
    """masks (B, H, W) -> inputs (B, H, W, C): x where a mask is 1, the baseline where it is 0."""
    return jax.vmap(lambda m: x * m[..., None] + baseline * (1.0 - m[..., None]))


def _weighted_masks(masks, scores):
    """sum_b scores_b masks_b: ([K,] H, W), one matrix product scores^T @ masks."""
    flat = masks.reshape(masks.shape[0], -1)
    return (scores.T @ flat).reshape(scores.shape[1:] + masks.shape[1:])


def _rise_sum(f, x, baseline, n, batch_size, mesh, masks_of) -> jax.Array:
    """sum_i f(x * m_i + baseline * (1 - m_i)) m_i over i in range(n): (H, W) or (K, H, W).

    masks_of(index_array) -> (B, H, W). Zero masks pad a chunk for the mesh: they add nothing.
    """
    return batching.sum_forward_terms(f, n, batch_size, mesh, masks_of, _blend(x, baseline),
                                      lambda masks, inputs, scores, valid: _weighted_masks(masks, scores))


def _rise_moments(f, x, baseline, n, batch_size, mesh, masks_of):
    """(sum_i s_i m_i, sum_i s_i, sum_i m_i), s_i = f(x m_i + baseline (1 - m_i)).

    Shapes ([K,] H, W), ([K],), (H, W); streamed like `_rise_sum` (padded zero masks get score weight 0).
    """
    def terms(masks, inputs, scores, valid):
        return _weighted_masks(masks, scores), valid.astype(scores.dtype) @ scores, jnp.sum(masks, axis=0)

    return batching.sum_forward_terms(f, n, batch_size, mesh, masks_of, _blend(x, baseline), terms)


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
    x = check_input(x, rank=3)
    baseline = check_baseline("baseline", baseline, x)
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
    num_targets(f, x)
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
         sampler: str = "bernoulli", tolerance: float | None = None, round_size: int | None = None,
         return_passes: bool = False, removal: str = "blend") -> jax.Array:
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

    Sampling until the map is stable (`adaptive`): `tolerance` (None: off, exactly `n_masks`
    masks) stops after the first round of `round_size` masks (None: 100) whose relative standard
    error of the map is <= tolerance; `n_masks` is then the budget. Needs i.i.d. masks (no
    antithetic / stratified). `return_passes`: also return the masks used, a () int32.
    removal: "blend" (masked pixels take the baseline's values) or "token_drop" (ViTs, `f` a
      `token_drop.TokenScorer`: each mask keeps round(keep_prob * P) of the P patch tokens,
      `token_drop.rise_tokens`; grid_size and baseline unused, i.i.d. masks only).
    Returns: (H, W), or (K, H, W) for K targets.
    """
    x, baseline, keep_prob, batch_size = _check_rise_inputs(x, baseline, keep_prob, batch_size)
    if grid_size is None:
        grid_size = paper_grid_size(x.shape)
    n_masks = _checks.check_positive_int("n_masks", n_masks)
    image_size, grid_size, keep_prob = _check_rise_args(tuple(x.shape[:2]), grid_size, keep_prob)
    antithetic, sampler, centered = _check_rise_options(n_masks, antithetic, sampler, centered)
    k = num_targets(f, x)
    tolerance = adaptive.check_tolerance(tolerance)
    round_size = adaptive.check_round_size(round_size, adaptive.DEFAULT_ROUND_SIZES["rise"], n_masks)
    return_passes = check_flag("return_passes", return_passes)
    if token_drop.check_removal(removal) == "token_drop":
        if tolerance is not None or antithetic or sampler != "bernoulli":
            raise ValueError("`removal`='token_drop' draws i.i.d. token sets: tolerance=None, antithetic=False "
                             "and sampler='bernoulli'")
        maps = token_drop.rise_tokens(f, x, key, n_masks=n_masks, keep_prob=keep_prob, batch_size=batch_size,
                                      mesh=mesh, centered=centered)
        return (maps, jnp.int32(n_masks)) if return_passes else maps
    if tolerance is not None:
        if antithetic or sampler != "bernoulli":
            raise ValueError("`tolerance` needs i.i.d. masks: antithetic=False and sampler='bernoulli'")
        keys = jax.random.split(key, n_masks)
        maps, used = adaptive.rise_in_rounds(
            f, k, x, lambda idx: _masks_for_keys(keys[idx], image_size, grid_size, keep_prob, x.dtype),
            _blend(x, baseline), budget=n_masks, round_size=round_size, keep_prob=keep_prob, centered=centered,
            tolerance=tolerance, batch_size=batch_size, mesh=mesh)
        return (maps, used) if return_passes else maps
    passes = lambda maps: (maps, jnp.int32(n_masks)) if return_passes else maps
    if antithetic or sampler != "bernoulli":
        masks_of = _option_masks_of(key, n_masks, image_size, grid_size, keep_prob, x.dtype, antithetic, sampler)
    else:
        keys = jax.random.split(key, n_masks)
        masks_of = lambda idx: _masks_for_keys(keys[idx], image_size, grid_size, keep_prob, x.dtype)
    if centered:
        moments = _rise_moments(f, x, baseline, n_masks, batch_size, mesh, masks_of)
        return passes(rise_centered_from_moments(*moments, n_masks, keep_prob))
    total = _rise_sum(f, x, baseline, n_masks, batch_size, mesh, masks_of)
    return passes(total / (n_masks * keep_prob))

