"""scikit-learn's bundled handwritten digits, as 32x32 single-channel images.

The data (1797 8x8 grey-level images of the digits 0-9, UCI "optdigits" test set) ships
inside scikit-learn, so nothing is downloaded. Pixels (0..16) are scaled to [0, 1] and
upsampled to 32x32 with bilinear interpolation (half-pixel centres, edge clamping, i.e.
the same sampling grid as `jax.image.resize(..., "bilinear")` / PIL for upsampling).

All arrays are NumPy, NHWC float32 images and int32 labels. The train/test split is a
seeded permutation, so the same seed always gives the same split on any machine.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

N_CLASSES = 10
IMAGE_SIZE = 32
N_TEST_DEFAULT = 500  # 1797 images in total -> 1297 train / 500 test


class DigitsSplit(NamedTuple):
    """A deterministic train/test split.

    x_train: (N_train, S, S, 1) float32 in [0, 1];  y_train: (N_train,) int32 in 0..9
    x_test:  (N_test, S, S, 1) float32 in [0, 1];   y_test:  (N_test,) int32 in 0..9
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float64 matrix of 1-D linear interpolation weights (half-pixel centres)."""
    centres = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    centres = np.clip(centres, 0.0, n_in - 1)  # clamp at the borders (edge replication)
    lo = np.floor(centres).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    w_hi = centres - lo
    m = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    np.add.at(m, (rows, lo), 1.0 - w_hi)
    np.add.at(m, (rows, hi), w_hi)
    return m


def upsample_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of (N, h, w) images to (N, size, size), computed in float64.

    Separable: out = A_h @ img @ A_w^T, one small matrix product per axis. Output values
    are convex combinations of input pixels, so the [0, 1] range is preserved.
    """
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 3:
        raise ValueError(f"images must have shape (N, h, w), got {images.shape}")
    if int(size) <= 0:
        raise ValueError(f"size must be positive, got {size}")
    a_h = _interp_matrix(images.shape[1], int(size))
    a_w = _interp_matrix(images.shape[2], int(size))
    return np.einsum("ih,nhw,jw->nij", a_h, images, a_w)


def load_digits_arrays(image_size: int = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits in scikit-learn's order.

    Returns:
      images: (1797, image_size, image_size, 1) float32 in [0, 1]
      labels: (1797,) int32 in 0..9
    """
    raw, target = _digits_raw()
    raw = raw / 16.0  # (1797, 8, 8), pixel values are 0..16
    images = raw if int(image_size) == raw.shape[1] else upsample_bilinear(raw, image_size)
    images = np.clip(images, 0.0, 1.0).astype(np.float32)[..., None]
    return images, target.astype(np.int32)


def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """(1797, 8, 8) float64 pixels 0..16 and (1797,) labels, as `sklearn.datasets.load_digits`
    returns them: read from the CSV scikit-learn bundles with the same `np.loadtxt` call, without
    importing scikit-learn (its import, with SciPy's, took 0.7-1.4 s of every demo's start-up).
    Falls back to `load_digits` if the file is not where scikit-learn keeps it."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = os.path.join(folder, "datasets", "data", "digits.csv.gz")
        if os.path.isfile(path):
            with gzip.open(path, mode="rt", encoding="utf-8") as fh:
                data = np.loadtxt(fh, delimiter=",")
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    from sklearn.datasets import load_digits  # bundled with scikit-learn, offline

    bunch = load_digits()
    return bunch.images, bunch.target


def load_digits_split(seed: int = 0, n_test: int = N_TEST_DEFAULT,
                      image_size: int = IMAGE_SIZE) -> DigitsSplit:
    """Deterministic train/test split of the upsampled digits.

    Args:
      seed: seed of the permutation (NumPy PCG64); same seed -> same split.
      n_test: number of test images, 0 < n_test < 1797.
      image_size: side of the square output images (32 for the embedded encoder).

    Returns a `DigitsSplit` (see its docstring for shapes).
    """
    images, labels = load_digits_arrays(image_size)
    n = images.shape[0]
    if not 0 < int(n_test) < n:
        raise ValueError(f"n_test must be in (0, {n}), got {n_test}")
    perm = np.random.default_rng(int(seed)).permutation(n)
    test_idx, train_idx = np.sort(perm[: int(n_test)]), np.sort(perm[int(n_test):])
    return DigitsSplit(images[train_idx], labels[train_idx], images[test_idx], labels[test_idx])
