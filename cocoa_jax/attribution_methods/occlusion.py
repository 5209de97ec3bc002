"""Occlusion (Zeiler & Fergus, 2014) with Captum 0.9's `Occlusion` semantics, K targets at once."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import batching
from cocoa_jax.attribution_methods import _perturbation as P, token_drop


def _check_pair(name: str, value, image_size) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value, value)
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0 for v in value)):
        raise ValueError(f"`{name}` must be a positive integer or an (h, w) pair, got {value!r}")
    if any(v > s for v, s in zip(value, image_size)):
        raise ValueError(f"`{name}` {tuple(value)} must not exceed the image size {tuple(image_size)}")
    return int(value[0]), int(value[1])


def default_window(image_size) -> tuple[int, int]:
    """max(1, size // 8) per side: an 8 x 8 grid of windows (4 x 4 px at 32 px, 28 x 28 at 224)."""
    return tuple(max(1, int(s) // 8) for s in image_size)


def occlusion_windows(image_size, window, stride) -> np.ndarray:
    """(n_windows, 2) top-left corners, Captum's order (row-major over positions).

    Per axis: ceil((size - window) / stride) + 1 positions at multiples of the stride; the last
    window is cropped at the image edge when the stride does not land on it.
    """
    counts = [-(-(s - w) // t) + 1 for s, w, t in zip(image_size, window, stride)]
    rows, cols = np.meshgrid(np.arange(counts[0]) * stride[0], np.arange(counts[1]) * stride[1], indexing="ij")
    return np.stack([rows.ravel(), cols.ravel()], axis=1).astype(np.int32)


def occlusion(
    f: Callable,
    x: jax.Array,
    baseline: jax.Array,
    key: jax.Array | None = None,
    *,
    window=None,
    stride=None,
    batch_size: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    removal: str = "blend",
) -> jax.Array:
    """Occlusion: per pixel, the mean of f(x) - f(x with a window set to the baseline) over the
    windows covering it. (H, W), or (K, H, W) for K targets.

    Captum's `Occlusion` with `sliding_window_shapes=(C, h, w)` (every channel occluded
    together; Captum then repeats the same map over channels, here returned once):
    positions per axis ceil((size - window) / stride) + 1 at multiples of the stride, the last
    window cropped at the edge; each pixel's sum of score drops divided by the number of
    windows covering it. Like Captum, a stride larger than the window is refused (pixels would
    be left uncovered) unless the window spans that axis.

    Args:
      key: unused (deterministic); accepted for the common signature.
      window: (h, w) or an int; None: `default_window` (an 8 x 8 grid of windows).
      stride: (h, w) or an int; None: the window (non-overlapping windows, Captum's
        default stride is 1).
      batch_size: occluded inputs per forward batch (None: 100).
      removal: "blend" (the window takes the baseline's values) or "token_drop" (ViTs, `f` a
        `token_drop.TokenScorer`: the window's patch tokens are dropped, window and stride in
        multiples of the patch size, `token_drop.occlusion_tokens`; baseline unused).
    """
    del key
    if token_drop.check_removal(removal) == "token_drop":
        return token_drop.occlusion_tokens(f, x, window=window, stride=stride, batch_size=batch_size, mesh=mesh)
    x, baseline = P.check_rank3(x, baseline)
    image_size = tuple(x.shape[:2])
    window = default_window(image_size) if window is None else _check_pair("window", window, image_size)
    stride = window if stride is None else _check_pair("stride", stride, image_size)
    for axis in range(2):
        if stride[axis] > window[axis] and window[axis] < image_size[axis]:
            raise ValueError(f"`stride` {stride} must not exceed `window` {window} on an axis the window "
                             "does not span (pixels would never be occluded)")
    batch_size = P.check_batch_size(batch_size)
    k = P.num_targets(f, x)
    corners = occlusion_windows(image_size, window, stride)
    n = corners.shape[0]
    rows, cols = np.arange(image_size[0]), np.arange(image_size[1])
    inside_r = (rows[None, :] >= corners[:, :1]) & (rows[None, :] < corners[:, :1] + window[0])  # (n, H)
    inside_c = (cols[None, :] >= corners[:, 1:]) & (cols[None, :] < corners[:, 1:] + window[1])  # (n, W)
    coverage = np.einsum("nh,nw->hw", inside_r.astype(np.float64), inside_c.astype(np.float64))
    inside_r, inside_c = jnp.asarray(inside_r, x.dtype), jnp.asarray(inside_c, x.dtype)
    reference = P.as_columns(jax.vmap(f)(x[None]))[0]  # f(x)

    def occluded_of(indices):  # (B, H, W), 1 inside window i
        return inside_r[indices][:, :, None] * inside_c[indices][:, None, :]

    def terms(occluded, inputs, scores, valid):
        drops = (reference - P.as_columns(scores)) * valid[:, None]
        return drops.T @ occluded.reshape(occluded.shape[0], -1)  # (K', H * W); padded rows add 0

    total = batching.sum_forward_terms(f, n, batch_size, mesh, occluded_of,
                                       lambda occluded: P.blend(x, baseline, 1.0 - occluded), terms)
    maps = total.reshape((-1,) + image_size) / jnp.asarray(coverage, x.dtype)
    return maps[0] if k is None else maps
