"""GradientSHAP, SmoothGrad and vanilla gradients against float64 NumPy Monte Carlo on the same draws."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import attribution, methods, targets
from tests.support.toy_attribution import FREQ, RNG, SHAPE, W, f_sin, f_tanh, f_vec, grad_tanh_np, jac_vec_np


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_gradient_shap_matches_numpy_monte_carlo_with_same_draws(x):
    baselines = jnp.asarray(RNG.uniform(size=(4,) + SHAPE), jnp.float32)
    key = jax.random.PRNGKey(3)
    n, stdev = 37, 0.2
    draws = attribution.gradient_shap_draws(key, n, SHAPE, 4, stdev)
    xs, bs = np.asarray(x, np.float64), np.asarray(baselines, np.float64)
    expected = np.zeros(SHAPE)
    for i in range(n):
        b = bs[int(draws.baseline_index[i])]
        noisy = xs + np.asarray(draws.noise[i], np.float64)
        expected += (noisy - b) * grad_tanh_np(b + float(draws.alpha[i]) * (noisy - b)) / n
    got = attribution.gradient_shap(f_tanh, x, baselines, key, n_samples=n, stdev=stdev, batch_size=10)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    # the draws use every baseline and have the requested spread
    assert set(np.asarray(draws.baseline_index).tolist()) == {0, 1, 2, 3}
    assert 0.15 < float(jnp.std(draws.noise)) < 0.25


def test_smoothgrad_matches_numpy_with_same_noise(x):
    key = jax.random.PRNGKey(5)
    n, stdev = 11, 0.3
    noise = [np.asarray(jax.random.normal(k, SHAPE), np.float64) for k in jax.random.split(key, n)]
    expected = np.mean([grad_tanh_np(np.asarray(x, np.float64) + stdev * e) for e in noise], axis=0)
    got = attribution.smoothgrad(f_tanh, x, key, n_samples=n, stdev=stdev, batch_size=4)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_vanilla_gradients(x):
    np.testing.assert_allclose(attribution.vanilla_gradients(f_tanh, x), grad_tanh_np(x), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(attribution.vanilla_gradients(f_vec, x), jac_vec_np(x), rtol=1e-4, atol=1e-6)
