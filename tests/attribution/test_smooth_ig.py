"""SmoothGrad-IG: closed form on f = sum(x^2), Captum's NoiseTunnel(IntegratedGradients) in expectation."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import attribution
from cocoa_jax.attribution_methods import smooth_integrated_gradients

SHAPE = (3, 4, 2)
RNG = np.random.default_rng(2)
X = RNG.uniform(size=SHAPE).astype(np.float32)
BASE = (0.3 * RNG.uniform(size=SHAPE)).astype(np.float32)
WEIGHTS = RNG.normal(size=(3, int(np.prod(SHAPE)))) / 2


def f_square(x):
    return jnp.sum(x ** 2)


def f_vec(x):
    return jnp.tanh(jnp.asarray(WEIGHTS, x.dtype) @ x.reshape(-1))


run = jax.jit(lambda f, x, key, n, stdev=0.2, n_steps=8, batch_size=None: smooth_integrated_gradients(
    f, x, BASE, key, n_samples=n, stdev=stdev, n_steps=n_steps, batch_size=batch_size), static_argnums=(0, 3, 4, 5, 6))


def test_closed_form_on_sum_of_squares():
    """IG of sum(x^2) is exactly (x + e)^2 - b^2 per input (Gauss-Legendre is exact for a
    linear gradient), so on the same noise the map is known, and E = x^2 + stdev^2 - b^2."""
    n, stdev, key = 4000, 0.2, jax.random.key(0)
    attr = np.asarray(run(f_square, X, key, n, stdev, 2, 2000), np.float64)
    noise = np.asarray(jax.vmap(lambda k: jax.random.normal(k, SHAPE))(jax.random.split(key, n)), np.float64)
    same_draws = np.mean((X + stdev * noise) ** 2, 0) - BASE.astype(np.float64) ** 2
    np.testing.assert_allclose(attr, same_draws, rtol=1e-5, atol=1e-6)
    expected = X.astype(np.float64) ** 2 + stdev ** 2 - BASE.astype(np.float64) ** 2
    # Sampling error of the mean of (x + s e)^2: std sqrt(4 x^2 s^2 + 2 s^4) / sqrt(n).
    se = np.sqrt(4 * X.astype(np.float64) ** 2 * stdev ** 2 + 2 * stdev ** 4) / np.sqrt(n)
    assert np.all(np.abs(attr - expected) < 4.5 * se)
    assert np.mean(np.abs(attr - (expected - stdev ** 2))) > 5 * np.mean(se)  # noise really moves x


def test_zero_noise_is_integrated_gradients():
    ig = attribution.integrated_gradients(f_vec, X, BASE, n_steps=8)
    np.testing.assert_allclose(run(f_vec, X, jax.random.key(1), 3, 0.0), ig, rtol=1e-5, atol=1e-6)


@pytest.mark.torch
@pytest.mark.slow
def test_matches_captum_noise_tunnel_in_expectation():
    torch = pytest.importorskip("torch")
    from captum.attr import IntegratedGradients, NoiseTunnel

    n_runs, n = 60, 5
    torch.manual_seed(0)

    def forward(xt):  # NCHW -> (N, 3)
        flat = xt.permute(0, 2, 3, 1).reshape(xt.shape[0], -1)
        return torch.tanh(flat @ torch.tensor(WEIGHTS, dtype=torch.float32).T)

    xt = torch.tensor(X).permute(2, 0, 1)[None]
    bt = torch.tensor(BASE).permute(2, 0, 1)[None]
    tunnel = NoiseTunnel(IntegratedGradients(forward))
    captum = np.stack([tunnel.attribute(xt, baselines=bt, target=0, nt_type="smoothgrad", nt_samples=n, stdevs=0.5,
                                        n_steps=8, method="gausslegendre")[0].permute(1, 2, 0).numpy()
                       for _ in range(n_runs)])
    keys = jax.random.split(jax.random.key(2), n_runs)
    ours = np.asarray(jax.vmap(lambda k: run(f_vec, X, k, n, 0.5))(keys)[:, 0])
    se = np.sqrt(ours.var(0, ddof=1) / n_runs + captum.var(0, ddof=1) / n_runs)
    z = np.abs(ours.mean(0) - captum.mean(0)) / se
    assert np.mean(z) < 1.2 and np.max(z) < 5.0, (np.mean(z), np.max(z))
    # A biased variant (noise on the baseline too) is told apart by the same statistic.
    shifted = np.asarray(jax.vmap(lambda k: smooth_integrated_gradients(
        f_vec, X, BASE + 0.3, k, n_samples=n, stdev=0.5, n_steps=8))(keys)[:, 0])
    z_bad = np.abs(shifted.mean(0) - captum.mean(0)) / np.sqrt(shifted.var(0, ddof=1) / n_runs + captum.var(0, ddof=1) / n_runs)
    assert np.mean(z_bad) > 2.0


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_invariances():
    key = jax.random.key(3)
    ref = run(f_vec, X, key, 5)
    assert ref.shape == (3,) + SHAPE
    np.testing.assert_allclose(run(f_vec, X, key, 5, 0.2, 8, 7), ref, rtol=1e-5, atol=1e-6)
    for t in range(3):
        np.testing.assert_allclose(run(lambda x, t=t: f_vec(x)[t], X, key, 5), ref[t], rtol=1e-5, atol=1e-6)
    xs = jnp.asarray(RNG.uniform(size=(2,) + SHAPE), jnp.float32)
    keys = jax.random.split(key, 2)
    batched = jax.vmap(lambda x, k: run(f_vec, x, k, 5))(xs, keys)
    for i in range(2):
        np.testing.assert_allclose(batched[i], run(f_vec, xs[i], keys[i], 5), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [(dict(n_samples=0), "n_samples"), (dict(stdev=-1.0), "stdev"),
                                           (dict(method="simpson"), "method"), (dict(n_steps=0), "n_steps")])
def test_argument_checks(kwargs, match):
    x = jax.ShapeDtypeStruct(SHAPE, jnp.float32)
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(lambda x_: smooth_integrated_gradients(f_vec, x_, x_, jax.random.key(0), **kwargs), x)
