"""SigLIP 2 NaFlex geometry: the patch budget, the resized position grid, the preprocessing.

NaFlex keeps an image's aspect ratio: it is resized so that its patch grid (H / p) x (W / p)
holds at most `max_num_patches` patches, each side a multiple of the patch size p (at least one
patch). The stored M x M grid of learned positions is resized to that grid with torch's
`interpolate(mode="bilinear", align_corners=False, antialias=True)` (what transformers'
`Siglip2VisionEmbeddings` reproduces), a fixed linear map per grid built here in numpy.

Learned from transformers 5.25's `siglip2/image_processing_siglip2.py` and `modeling_siglip2.py`
(not copied): the processor searches the largest scale s (bisection on [1e-6, 100] down to a width
1e-5) with ceil(s * H / p) * ceil(s * W / p) <= max_num_patches (each side at least p), resizes
bilinearly (antialiased), rescales to [0, 1], normalises with mean = std = 0.5, cuts the image
into patches flattened in (row, column, channel) order and pads them to `max_num_patches` with a
mask. Here the image is kept as pixels (N, H, W, 3) of one size per call and embedded by a
stride-p convolution, which is the processor's patch order times the Linear patch embedding;
padding patches do not exist, so no mask is needed (padded patches are masked keys in
transformers, so its pooled output is the same; tests/models/test_siglip2_naflex.py).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Tuple

import numpy as np

from cocoa_jax.models.preprocessing import Preprocessing

_SEARCH_LOW, _SEARCH_HIGH, _SEARCH_WIDTH = 1e-6, 100.0, 1e-5


def _scaled_side(scale: float, side: int, patch: int) -> int:
    return max(patch, int(math.ceil(side * scale / patch)) * patch)


def naflex_size(height: int, width: int, patch_size: int, max_num_patches: int) -> Tuple[int, int]:
    """(H, W) of an image -> (H', W') multiples of `patch_size` with at most `max_num_patches`
    patches, the aspect ratio kept as well as the grid allows (the processor's bisection on scale)."""
    for value, name in ((height, "height"), (width, "width"), (patch_size, "patch_size"),
                        (max_num_patches, "max_num_patches")):
        if int(value) < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
    low, high = _SEARCH_LOW, _SEARCH_HIGH
    while high - low >= _SEARCH_WIDTH:
        mid = (low + high) / 2
        count = (_scaled_side(mid, height, patch_size) // patch_size) * (_scaled_side(mid, width, patch_size) // patch_size)
        low, high = (mid, high) if count <= max_num_patches else (low, mid)
    return _scaled_side(low, height, patch_size), _scaled_side(low, width, patch_size)


def bilinear_antialias_matrix(out_size: int, in_size: int) -> np.ndarray:
    """(out_size, in_size) float64 matrix of torch's 1-D `interpolate(mode="bilinear",
    align_corners=False, antialias=True)` to a given size: a triangle filter centred at
    (i + 0.5) * in / out, widened by the scale when shrinking, weights renormalised per row."""
    if out_size < 1 or in_size < 1:
        raise ValueError(f"sizes must be positive, got out_size={out_size}, in_size={in_size}")
    scale = in_size / out_size
    support = max(scale, 1.0)
    centers = (np.arange(out_size) + 0.5) * scale - 0.5  # in source index units
    weights = np.clip(1.0 - np.abs(np.arange(in_size)[None, :] - centers[:, None]) / support, 0.0, None)
    return weights / weights.sum(axis=1, keepdims=True)


def position_matrices(grid_h: int, grid_w: int, stored: int) -> Tuple[np.ndarray, np.ndarray]:
    """(rows (grid_h, M), cols (grid_w, M)): the stored M x M position grid -> grid_h x grid_w."""
    return bilinear_antialias_matrix(grid_h, stored), bilinear_antialias_matrix(grid_w, stored)


@dataclasses.dataclass(frozen=True)
class NaflexPreprocessing(Preprocessing):
    """SigLIP 2 NaFlex's processor as pixels: one image -> float32 (H', W', 3) in [0, 1] resized
    (bilinear, antialiased, on the float values) to `naflex_size`, no crop; `normalize` gives
    mean = std = 0.5. `resize`/`crop` hold the default square side (the largest square within
    the budget), what `model.input_shape` is. A batch needs ONE size: `resize_to(image, size)`."""

    patch_size: int = 16
    max_num_patches: int = 256

    def size_for(self, height: int, width: int) -> Tuple[int, int]:
        """(H', W') that the processor resizes an H x W image to."""
        return naflex_size(height, width, self.patch_size, self.max_num_patches)

    def at_size(self, size: int) -> "NaflexPreprocessing":
        return self  # the size follows each image (size_for), not a crop

    def resize_to(self, image, size, *, background: float = 1.0) -> np.ndarray:
        """Image (PIL or array, as `Preprocessing.resize_crop`) -> float32 (size[0], size[1], 3) in
        [0, 1], resized without keeping the aspect ratio (what the processor does to (H', W'))."""
        from cocoa_jax.data import pixels

        height, width = (int(v) for v in size)
        if height % self.patch_size or width % self.patch_size or min(height, width) < 1:
            raise ValueError(f"`size` must be positive multiples of the patch size {self.patch_size}, got {size!r}")
        rgb = pixels.to_float(image, 3, background=background)
        if rgb.shape[:2] == (height, width):
            return np.ascontiguousarray(rgb, np.float32)
        return np.ascontiguousarray(pixels.resize(rgb, (height, width), "bilinear"), np.float32)

    def resize_crop(self, image, *, background: float = 1.0) -> np.ndarray:
        from cocoa_jax.data import pixels

        rgb = pixels.to_float(image, 3, background=background)
        return self.resize_to(rgb, self.size_for(*rgb.shape[:2]))

    def batch(self, images) -> np.ndarray:
        out = [self(image) for image in images]
        sizes = sorted({a.shape[:2] for a in out})
        if len(sizes) > 1:
            raise ValueError(f"`images` resize to {len(sizes)} different NaFlex sizes {sizes}: one call takes one "
                             f"size; use resize_to(image, size) with one size for all")
        return np.stack(out)


def default_side(patch_size: int, max_num_patches: int) -> int:
    """The side of the largest square image whose patch grid fits the budget."""
    return patch_size * max(1, math.isqrt(int(max_num_patches)))


def preprocessing(patch_size: int, max_num_patches: int) -> NaflexPreprocessing:
    side = default_side(patch_size, max_num_patches)
    return NaflexPreprocessing(resize=side, crop=side, interpolation="bilinear", mean=(0.5,) * 3, std=(0.5,) * 3,
                               patch_size=int(patch_size), max_num_patches=int(max_num_patches))
