"""Baselines for removal: the paper blurs the explicand everywhere (Appendix H.3)."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import _checks


def gaussian_kernel1d(kernel_size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian taps, (kernel_size,) float64, as torchvision computes them."""
    half = (kernel_size - 1) * 0.5
    offsets = np.linspace(-half, half, kernel_size)
    taps = np.exp(-0.5 * (offsets / sigma) ** 2)
    return taps / taps.sum()


@functools.lru_cache(maxsize=64)
def blur_matrix(size: int, kernel_size: int, sigma: float) -> np.ndarray:
    """The blur along one axis of length `size` with reflect padding, as a (size, size) matrix.

    Reflect padding (torch's "reflect", numpy's "reflect": the edge sample is not repeated)
    folds the taps that fall outside the image back inside, so blurring is exactly
    `B @ x` along that axis and the 2-D blur is `B_h @ x @ B_w.T` per channel.
    """
    radius = kernel_size // 2
    taps = gaussian_kernel1d(kernel_size, sigma)
    matrix = np.zeros((size, size))
    for row in range(size):
        for t, weight in enumerate(taps):
            src = row + t - radius
            if src < 0:
                src = -src
            elif src >= size:
                src = 2 * (size - 1) - src
            matrix[row, src] += weight
    matrix.setflags(write=False)
    return matrix


def gaussian_blur(x: jax.Array, kernel_size: int = 21, sigma: float = 5.0) -> jax.Array:
    """Gaussian blur of images, equal to torchvision's `GaussianBlur(kernel_size, sigma)`.

    Args:
      x: (..., H, W, C) images (NHWC, any leading batch axes).
      kernel_size: odd number of taps; reflect padding needs kernel_size // 2 < min(H, W).
      sigma: standard deviation in pixels.
    Returns: blurred images, same shape and dtype as x.
    """
    _checks.check_array("x", x, min_ndim=3)
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, (int, np.integer)) \
            or kernel_size <= 0 or kernel_size % 2 == 0:
        raise ValueError(f"`kernel_size` must be a positive odd integer, got {kernel_size!r}")
    if not (isinstance(sigma, (int, float, np.floating)) and np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"`sigma` must be a positive finite number, got {sigma!r}")
    height, width = np.shape(x)[-3], np.shape(x)[-2]
    if kernel_size // 2 >= min(height, width):
        raise ValueError(
            f"`kernel_size`={kernel_size} needs images larger than {kernel_size // 2} pixels "
            f"per side for reflect padding; `x` has H, W = {height}, {width}"
        )
    x = jnp.asarray(x)
    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    rows = jnp.asarray(blur_matrix(height, int(kernel_size), float(sigma)), dtype)
    cols = jnp.asarray(blur_matrix(width, int(kernel_size), float(sigma)), dtype)
    precision = jax.lax.Precision.HIGHEST  # exact float32 matmuls on every backend
    out = jnp.einsum("ih,...hwc->...iwc", rows, x.astype(dtype), precision=precision)
    return jnp.einsum("jw,...iwc->...ijc", cols, out, precision=precision)
