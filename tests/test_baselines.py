"""The blurred baseline against scipy (float64) and a from-scratch torchvision-style reference."""
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax.baselines import blur_matrix, gaussian_blur, gaussian_kernel1d


def test_gaussian_blur_matches_scipy_mirror_filter():
    ndimage = pytest.importorskip("scipy.ndimage")
    image = np.random.default_rng(0).uniform(size=(2, 32, 29, 3))
    # scipy "mirror" == torch/numpy "reflect"; truncate=2 gives radius int(2 * 5 + 0.5) = 10 = 21 // 2
    expected = ndimage.gaussian_filter(image, sigma=(0, 5.0, 5.0, 0), mode="mirror", truncate=2.0)
    got = gaussian_blur(jnp.asarray(image, jnp.float32), 21, 5.0)
    assert got.shape == image.shape and got.dtype == jnp.float32
    np.testing.assert_allclose(got, expected, atol=2e-6)


def test_blur_properties():
    assert abs(gaussian_kernel1d(21, 5.0).sum() - 1) < 1e-12
    matrix = blur_matrix(16, 21, 5.0)
    np.testing.assert_allclose(matrix.sum(1), 1.0, atol=1e-12)  # rows are averages: constants stay constant
    constant = jnp.full((16, 16, 1), 0.7)
    np.testing.assert_allclose(gaussian_blur(constant), 0.7, atol=1e-6)
    # unbatched (H, W, C) works and equals the batched result
    image = jnp.asarray(np.random.default_rng(1).uniform(size=(16, 20, 2)), jnp.float32)
    np.testing.assert_allclose(gaussian_blur(image), gaussian_blur(image[None])[0], atol=1e-7)


@pytest.mark.parametrize("kwargs, match", [
    (dict(x=np.zeros((8, 8))), "x.*rank"),
    (dict(x=np.zeros((8, 8, 3)), kernel_size=21), "kernel_size.*larger"),
    (dict(x=np.zeros((32, 32, 3)), kernel_size=20), "kernel_size.*odd"),
    (dict(x=np.zeros((32, 32, 3)), sigma=0.0), "sigma"),
    (dict(x=np.full((32, 32, 3), np.nan)), "x.*NaN"),
])
def test_bad_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gaussian_blur(**kwargs)


def test_matches_torchvision_algorithm_in_torch():
    """torchvision's GaussianBlur: reflect pad k//2, 2-D conv with the outer product of the taps.

    torchvision cannot be installed beside this torch, so the reference is its algorithm
    written directly in torch (float64).
    """
    torch = pytest.importorskip("torch")
    image = np.random.default_rng(2).uniform(size=(1, 3, 40, 36))
    offsets = torch.linspace(-10, 10, 21, dtype=torch.float64)
    taps = torch.exp(-0.5 * (offsets / 5.0) ** 2)
    taps = taps / taps.sum()
    kernel = torch.outer(taps, taps).expand(3, 1, 21, 21)
    padded = torch.nn.functional.pad(torch.tensor(image), [10, 10, 10, 10], mode="reflect")
    expected = torch.nn.functional.conv2d(padded, kernel, groups=3).numpy()
    got = gaussian_blur(jnp.asarray(image.transpose(0, 2, 3, 1), jnp.float32))
    np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), expected, atol=2e-6)
