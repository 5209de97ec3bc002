"""RISE against a float64 NumPy loop over the same masks, and the mask generator against skimage."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import attribution, methods, targets
from tests.support.toy_attribution import FREQ, RNG, SHAPE, W, f_sin, f_tanh, f_vec, grad_tanh_np, jac_vec_np


def _rise_numpy(fn, x, baseline, masks, keep_prob):
    x, baseline = np.asarray(x, np.float64), np.asarray(baseline, np.float64)
    saliency = 0.0
    for m in np.asarray(masks, np.float64):
        m3 = m[..., None]
        saliency = saliency + np.asarray(fn(x * m3 + baseline * (1 - m3)), np.float64)[..., None, None] * m
    return saliency / (len(masks) * keep_prob)


def test_rise_from_masks_matches_numpy_loop(x, baseline):
    masks = jnp.asarray(RNG.uniform(size=(23,) + SHAPE[:2]), jnp.float32)
    np_f = lambda z: np.sum(np.tanh(W @ z.reshape(-1)))
    expected = _rise_numpy(np_f, x, baseline, masks, 0.4)
    got = attribution.rise_from_masks(f_tanh, x, baseline, masks, keep_prob=0.4, batch_size=5)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    # K targets: (K, H, W), each the scalar RISE of that output
    got_k = attribution.rise_from_masks(f_vec, x, baseline, masks, keep_prob=0.4, batch_size=5)
    assert got_k.shape == (3,) + SHAPE[:2]
    np_vec = lambda z: np.tanh(W @ z.reshape(-1))
    for k in range(3):
        np.testing.assert_allclose(got_k[k], _rise_numpy(lambda z: np_vec(z)[k], x, baseline, masks, 0.4),
                                   rtol=1e-4, atol=1e-6)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_rise_equals_rise_from_its_masks(x, baseline):
    key = jax.random.PRNGKey(7)
    masks = attribution.rise_masks(key, 30, SHAPE[:2], (2, 3), 0.5)
    expected = attribution.rise_from_masks(f_vec, x, baseline, masks, batch_size=30)
    for batch_size in (7, 30, 64):
        got = attribution.rise(f_vec, x, baseline, key, n_masks=30, grid_size=(2, 3), batch_size=batch_size)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_masks_from_grids_match_skimage_bilinear_and_crop():
    transform = pytest.importorskip("skimage.transform")
    grids = (RNG.uniform(size=(6, 3, 4)) < 0.5).astype(np.float32)
    image_size = (10, 13)
    cells = attribution.rise_cell_size(image_size, (3, 4))
    assert cells == (4, 4)
    shifts = np.stack([RNG.integers(0, cells[0], 6), RNG.integers(0, cells[1], 6)], axis=1)
    got = attribution.masks_from_grids(jnp.asarray(grids), jnp.asarray(shifts), image_size)
    for grid, (dy, dx), mask in zip(grids, shifts, np.asarray(got)):
        up = transform.resize(grid.astype(np.float64), (4 * cells[0], 5 * cells[1]), order=1, mode="edge",
                              anti_aliasing=False)
        np.testing.assert_allclose(mask, up[dy:dy + image_size[0], dx:dx + image_size[1]], atol=1e-6)


def test_rise_mask_statistics():
    masks = attribution.rise_masks(jax.random.PRNGKey(0), 2000, (32, 32), (4, 4), keep_prob=0.3)
    assert masks.shape == (2000, 32, 32) and masks.dtype == jnp.float32
    assert float(masks.min()) >= 0.0 and float(masks.max()) <= 1.0
    assert abs(float(masks.mean()) - 0.3) < 0.01
    # masks are smooth (bilinear) but not all identical
    assert float(jnp.std(masks[:, 16, 16])) > 0.2
    assert float(jnp.mean(jnp.abs(jnp.diff(masks, axis=1)))) < 0.1


def test_rise_masks_deterministic_and_keep_prob_one_keeps_everything():
    a = attribution.rise_masks(jax.random.PRNGKey(1), 40, (16, 16), (4, 4))
    b = attribution.rise_masks(jax.random.PRNGKey(1), 40, (16, 16), (4, 4))
    np.testing.assert_array_equal(a, b)
    ones = attribution.rise_masks(jax.random.PRNGKey(1), 5, (16, 16), (4, 4), keep_prob=1.0)
    np.testing.assert_allclose(ones, 1.0)
