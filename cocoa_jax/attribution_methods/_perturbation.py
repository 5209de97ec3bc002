"""Shared pieces of the perturbation methods (KernelSHAP, LIME, Occlusion).

Interpretable features: each pixel (all its channels together) belongs to one feature, given
by an (H, W) integer label map; a coalition z in {0, 1}^M keeps feature j (value of x) when
z_j = 1 and replaces it by the baseline when z_j = 0.

Perturbed inputs are evaluated chunk by chunk (at most `batch_size` per call of the vmapped f),
each chunk optionally split over a mesh; a method only says how coalitions are drawn and which
sums it needs (`accumulate`), so nothing of size n_samples is ever held in memory.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import _checks, batching
# Re-used checks of every method (same messages everywhere).
from cocoa_jax.attribution_methods._common import check_baseline, check_input, num_targets  # noqa: F401
from cocoa_jax.attribution_methods._common import DEFAULT_RISE_BATCH_SIZE

DEFAULT_BATCH_SIZE = DEFAULT_RISE_BATCH_SIZE  # perturbed inputs per forward batch


def superpixel_map(height: int, width: int, patch_h: int, patch_w: int) -> np.ndarray:
    """(H, W) int32 labels of patch_h x patch_w superpixels, numbered row-major.

    The official COCOA code's `make_superpixel_map(H, W, d, d)`: label of pixel (i, j) is
    (i // patch_h) * ceil(W / patch_w) + j // patch_w (edge patches are smaller when the
    size does not divide).
    """
    rows = np.arange(height) // patch_h
    cols = np.arange(width) // patch_w
    per_row = -(-width // patch_w)
    return (rows[:, None] * per_row + cols[None, :]).astype(np.int32)


def feature_labels(x_shape, superpixel, feature_mask) -> tuple[np.ndarray, int]:
    """(labels (H, W) int32 in [0, M), M) from `feature_mask` or `superpixel`.

    feature_mask: concrete (H, W) integer labels >= 0; M = max + 1 (labels that never occur
    are features without pixels: they get attribution 0 wherever they would be shown, i.e.
    nowhere). It must be concrete because M sets the shapes of the regression.
    superpixel: an int d or a pair (d_h, d_w): d x d pixel patches.
    """
    height, width = int(x_shape[0]), int(x_shape[1])
    if feature_mask is not None:
        if not _checks.is_concrete(feature_mask):
            raise TypeError("`feature_mask` must be a concrete array (not traced inside jit/vmap): "
                            "the number of features sets the shapes of the fit")
        _checks.check_array("feature_mask", feature_mask, ndim=2)
        labels = np.asarray(feature_mask)
        if not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(f"`feature_mask` must hold integer labels, got dtype {labels.dtype}")
        if labels.shape != (height, width):
            raise ValueError(f"`feature_mask` must have shape (H, W) = ({height}, {width}), got {labels.shape}")
        if labels.min() < 0:
            raise ValueError(f"`feature_mask` labels must be >= 0, got min {labels.min()}")
        return labels.astype(np.int32), int(labels.max()) + 1
    if isinstance(superpixel, (int, np.integer)) and not isinstance(superpixel, bool):
        superpixel = (superpixel, superpixel)
    if (not isinstance(superpixel, (tuple, list)) or len(superpixel) != 2
            or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s <= 0 for s in superpixel)):
        raise ValueError(f"`superpixel` must be a positive integer or a (d_h, d_w) pair, got {superpixel!r}")
    if superpixel[0] > height or superpixel[1] > width:
        raise ValueError(f"`superpixel` {tuple(superpixel)} must not exceed the image size ({height}, {width})")
    labels = superpixel_map(height, width, int(superpixel[0]), int(superpixel[1]))
    return labels, int(labels.max()) + 1


def check_rank3(x, baseline):
    x = check_input(x, rank=3)
    return x, check_baseline("baseline", baseline, x)


def blend(x: jax.Array, baseline: jax.Array, pixel_masks: jax.Array) -> jax.Array:
    """(B, H, W) masks in [0, 1] (1 = keep x) -> (B, H, W, C) inputs."""
    m = pixel_masks[..., None].astype(x.dtype)
    return baseline + m * (x - baseline)


def as_columns(scores: jax.Array) -> jax.Array:
    """(B,) -> (B, 1); (B, K) unchanged."""
    return scores[:, None] if scores.ndim == 1 else scores


def accumulate(f: Callable, x, baseline, labels: np.ndarray, n: int, start: int, batch_size: int,
               mesh, coalitions_of: Callable, stats: Callable):
    """Sum of `stats` over the coalitions of indices start..n-1, chunk by chunk.

    coalitions_of(indices (B,)) -> (B, M) float {0, 1}.
    stats(z (B, M), inputs (B, H, W, C), scores (B, K'), valid (B,)) -> pytree of sums over B;
    K' = K, or 1 for a scalar f; rows padded for the mesh have valid = 0 (and all-zero z).
    Streamed by `batching.sum_forward_terms`.
    """
    labels = jnp.asarray(labels)
    return batching.sum_forward_terms(
        f, n, batch_size, mesh, coalitions_of, lambda z: blend(x, baseline, z[:, labels]),
        lambda z, inputs, scores, valid: stats(z, inputs, as_columns(scores), valid.astype(x.dtype)),
        start=start)


def to_map(coefficients: jax.Array, labels: np.ndarray, k: int | None) -> jax.Array:
    """(M, K') feature values -> (H, W), or (K, H, W) for K targets."""
    maps = jnp.moveaxis(coefficients[jnp.asarray(labels)], -1, 0)  # (K', H, W)
    return maps[0] if k is None else maps


def ends(f: Callable, x, baseline) -> jax.Array:
    """(f(x), f(baseline)) as a (2, K') array: two forward passes in one batch."""
    return as_columns(jax.vmap(f)(jnp.stack([x, baseline])))


def check_batch_size(batch_size) -> int:
    batch_size = _checks.check_optional_batch_size(batch_size)
    return DEFAULT_BATCH_SIZE if batch_size is None else batch_size
