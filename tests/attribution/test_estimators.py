"""Opt-in variance-reduced estimators (RISE centred / antithetic / stratified, GradientSHAP
antithetic / stratified alpha, SmoothGrad antithetic): expectations against float64 closed
forms or exact enumeration, the paper's defaults unchanged, batch-size and mesh invariance."""
from __future__ import annotations

import inspect
import itertools
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import attribution as A

REPO = pathlib.Path(__file__).resolve().parents[2]
KEY = jax.random.key(7)

# ----------------------------------------------------------------------------- RISE setup

H = W = 4
GRID = (2, 2)  # cell 2: grids upsampled to 6x6, crop shifts in {0, 1}^2


def _rise_case():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(H, W, 1))
    b = rng.uniform(size=(H, W, 1)) * 0.3
    w = rng.normal(size=(2, H, W, 1))

    def f(z):  # nonlinear, K = 2 targets
        return jnp.stack([jnp.tanh(jnp.sum(w[0] * z)), jnp.sum(w[1] * z) ** 2 / 10])

    return x, b, f


def _all_masks(keep_prob):
    """Every RISE mask of the 4x4 / 2x2 case with its probability (float64, exact enumeration)."""
    cell = A.rise_cell_size((H, W), GRID)[0]
    up = A.bilinear_upsample_matrix(GRID[0], (GRID[0] + 1) * cell)
    masks, probs = [], []
    for bits in itertools.product([0.0, 1.0], repeat=GRID[0] * GRID[1]):
        grid = np.array(bits).reshape(GRID)
        p_grid = keep_prob ** grid.sum() * (1 - keep_prob) ** (grid.size - grid.sum())
        for si, sj in itertools.product(range(cell), repeat=2):
            masks.append((up[si:si + H] @ grid @ up[sj:sj + W].T))
            probs.append(p_grid / cell ** 2)
    return np.array(masks), np.array(probs)


def _exact_rise(f, x, b, keep_prob):
    """E[s m] / p (the default's expectation), E[s], and the per-mask term's std (float64)."""
    masks, probs = _all_masks(keep_prob)
    with jax.enable_x64(True):
        blended = x[None] * masks[..., None] + b[None] * (1 - masks[..., None])
        scores = np.asarray(jax.vmap(f)(jnp.asarray(blended, jnp.float64)), np.float64)  # (M, K)
    terms = scores[:, :, None, None] * masks[:, None] / keep_prob  # (M, K, H, W)
    mean = np.einsum("m,mkhw->khw", probs, terms)
    std = np.sqrt(np.einsum("m,mkhw->khw", probs, (terms - mean) ** 2))
    return mean, probs @ scores, std


N_MC = 20000


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.parametrize("keep_prob", [0.5, 0.3])
@pytest.mark.parametrize("options", [{}, {"antithetic": True}, {"sampler": "stratified"},
                                     {"antithetic": True, "sampler": "stratified"}])
def test_rise_option_expectation_equals_default(options, keep_prob):
    x, b, f = _rise_case()
    exact, _, std = _exact_rise(f, x, b, keep_prob)
    est = np.asarray(A.rise(f, x.astype(np.float32), b.astype(np.float32), KEY, n_masks=N_MC,
                            grid_size=GRID, keep_prob=keep_prob, batch_size=2000, **options))
    # 5 standard errors of the i.i.d. estimator (the options' variance is not larger here).
    np.testing.assert_array_less(np.abs(est - exact), 5 * std / np.sqrt(N_MC) + 1e-5)


@pytest.mark.parametrize("keep_prob", [0.5, 0.3])
def test_rise_centered_expectation_is_default_minus_mean_score(keep_prob):
    x, b, f = _rise_case()
    exact, mean_score, std = _exact_rise(f, x, b, keep_prob)
    est = np.asarray(A.rise(f, x.astype(np.float32), b.astype(np.float32), KEY, n_masks=N_MC,
                            grid_size=GRID, keep_prob=keep_prob, batch_size=2000, centered=True))
    np.testing.assert_array_less(np.abs(est - (exact - mean_score[:, None, None])), 5 * std / np.sqrt(N_MC) + 1e-5)


def test_rise_centered_is_exactly_unbiased_for_two_iid_masks():
    """Exact enumeration of all ordered pairs of i.i.d. masks: E[centred] = E[s m]/p - E[s]."""
    x, b, f = _rise_case()
    exact, mean_score, _ = _exact_rise(f, x, b, 0.5)
    masks, probs = _all_masks(0.5)
    pairs = np.stack(np.meshgrid(np.arange(len(masks)), np.arange(len(masks)), indexing="ij"), -1).reshape(-1, 2)
    with jax.enable_x64(True):
        centred = jax.vmap(lambda m: A.rise_from_masks(f, jnp.asarray(x), jnp.asarray(b), m, centered=True))(
            jnp.asarray(masks[pairs]))
        expectation = np.einsum("p,pkhw->khw", probs[pairs[:, 0]] * probs[pairs[:, 1]], np.asarray(centred))
    np.testing.assert_allclose(expectation, exact - mean_score[:, None, None], rtol=1e-10, atol=1e-12)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_rise_centered_matches_float64_formula_on_given_masks():
    x, b, f = _rise_case()
    masks = np.asarray(A.rise_masks(KEY, 37, (H, W), GRID))
    got = np.asarray(A.rise_from_masks(f, x.astype(np.float32), b.astype(np.float32), masks,
                                       centered=True, batch_size=8))
    with jax.enable_x64(True):
        m64 = masks.astype(np.float64)
        s = np.asarray(jax.vmap(f)(jnp.asarray(x[None] * m64[..., None] + b[None] * (1 - m64[..., None]))))
    want = np.einsum("nk,nhw->khw", s - s.mean(0), m64) / (36 * 0.5)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_rise_antithetic_masks_are_complementary_pairs_with_shared_shift():
    masks = np.asarray(A.rise_masks(KEY, 10, (8, 8), (3, 3), antithetic=True))
    np.testing.assert_allclose(masks[0::2] + masks[1::2], 1.0, atol=1e-6)
    default = np.asarray(A.rise_masks(KEY, 10, (8, 8), (3, 3)))
    assert not np.allclose(masks, default)


def _grids_of(n, size, keep_prob, sampler):
    """The grids behind rise_masks when grid = image size (cell 1, crop shift 0): masks = R g R^T."""
    masks = np.asarray(A.rise_masks(KEY, n, (size, size), (size, size), keep_prob=keep_prob, sampler=sampler),
                       np.float64)
    r = A.bilinear_upsample_matrix(size, size + 1)[:size]
    r_inv = np.linalg.inv(r)
    return np.round(r_inv @ masks @ r_inv.T)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.parametrize("keep_prob", [0.5, 0.25])
def test_rise_stratified_keeps_every_cell_in_n_times_keep_prob_grids(keep_prob):
    """Latin hypercube: in every cell exactly n * keep_prob draws fall below keep_prob."""
    n, size = 64, 3
    grids = _grids_of(n, size, keep_prob, "stratified")
    assert set(np.unique(grids)) <= {0.0, 1.0}
    np.testing.assert_array_equal(grids.sum(axis=0), np.full((size, size), n * keep_prob))
    iid = _grids_of(n, size, keep_prob, "bernoulli")  # i.i.d. counts vary around n * keep_prob
    assert not np.all(iid.sum(axis=0) == n * keep_prob)


# ----------------------------------------------------------------------------- defaults unchanged


def test_option_defaults_in_signatures():
    for fn, names in ((A.rise, {"centered": False, "antithetic": False, "sampler": "bernoulli"}),
                      (A.gradient_shap, {"antithetic": False, "stratified_alpha": False}),
                      (A.smoothgrad, {"antithetic": False})):
        params = inspect.signature(fn).parameters
        for name, default in names.items():
            assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
            assert params[name].default == default


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_rise_default_masks_are_the_papers_iid_draws():
    """Restated draw: mask i = grid uniform(split(split(key, n)[i])[0]) < p, shift from [1]."""
    n, image, grid, p = 9, (10, 10), (3, 3), 0.5
    cells = A.rise_cell_size(image, grid)

    def draw(k):
        kg, ks = jax.random.split(k)
        return ((jax.random.uniform(kg, grid) < p).astype(jnp.float32),
                jax.random.randint(ks, (2,), 0, jnp.asarray(cells)))

    grids, shifts = jax.vmap(draw)(jax.random.split(KEY, n))
    want = np.asarray(A.masks_from_grids(grids, shifts, image))
    np.testing.assert_array_equal(np.asarray(A.rise_masks(KEY, n, image, grid)), want)
    x, b, f = _rise_case()
    xb = np.random.default_rng(1).uniform(size=(10, 10, 1)).astype(np.float32)
    g = lambda z: jnp.tanh(jnp.sum(z * xb))
    got = A.rise(g, xb, xb * 0, KEY, n_masks=n, grid_size=grid)
    explicit = A.rise(g, xb, xb * 0, KEY, n_masks=n, grid_size=grid, centered=False, antithetic=False,
                      sampler="bernoulli")
    np.testing.assert_array_equal(np.asarray(got), np.asarray(explicit))
    np.testing.assert_allclose(np.asarray(got), np.asarray(A.rise_from_masks(g, xb, xb * 0, want)), rtol=1e-6)


def test_gradient_shap_default_draws_unchanged():
    n, shape = 6, (3, 2)
    keys = jax.random.split(KEY, n)

    def draw(k):
        ki, kn, ka = jax.random.split(k, 3)
        return jax.random.randint(ki, (), 0, 2), 0.2 * jax.random.normal(kn, shape), jax.random.uniform(ka, ())

    index, noise, alpha = jax.vmap(draw)(keys)
    got = A.gradient_shap_draws(KEY, n, shape, 2, 0.2)
    np.testing.assert_array_equal(got.baseline_index, index)
    np.testing.assert_array_equal(got.noise, noise)
    np.testing.assert_array_equal(got.alpha, alpha)


# ----------------------------------------------------------------------------- GradientSHAP / SmoothGrad

D = (3, 3, 1)


def _quadratic():
    rng = np.random.default_rng(2)
    m = rng.normal(size=(9, 9))
    a = (m + m.T) / 4
    c = rng.normal(size=9)
    f = lambda z: 0.5 * z.reshape(-1) @ jnp.asarray(a, z.dtype) @ z.reshape(-1) + jnp.asarray(c, z.dtype) @ z.reshape(-1)
    return a, c, f


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_gradient_shap_draws_structure():
    d = A.gradient_shap_draws(KEY, 12, D, 3, 0.2, antithetic=True, stratified_alpha=True)
    np.testing.assert_allclose(np.asarray(d.alpha[0::2] + d.alpha[1::2]), 1.0, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(d.noise[0::2]), -np.asarray(d.noise[1::2]))
    np.testing.assert_array_equal(np.asarray(d.baseline_index[0::2]), np.asarray(d.baseline_index[1::2]))
    # pair j's first alpha lies in stratum j of 6
    np.testing.assert_array_equal(np.floor(np.asarray(d.alpha[0::2]) * 6), np.arange(6))
    s = A.gradient_shap_draws(KEY, 10, D, 1, 0.2, stratified_alpha=True)
    np.testing.assert_array_equal(np.floor(np.asarray(s.alpha) * 10), np.arange(10))
    # stratified alone keeps the default's baseline and noise draws
    default = A.gradient_shap_draws(KEY, 10, D, 1, 0.2)
    np.testing.assert_array_equal(np.asarray(s.noise), np.asarray(default.noise))


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.parametrize("options", [{}, {"antithetic": True}, {"stratified_alpha": True},
                                     {"antithetic": True, "stratified_alpha": True}])
def test_gradient_shap_option_expectation_closed_form(options):
    """Quadratic f: E[(x'-b) grad f(b + a (x'-b))] = d (A b + c) + (d A d + s^2 diag A) / 2, d = x - b."""
    a, c, f = _quadratic()
    rng = np.random.default_rng(3)
    x, b, sigma, n = rng.uniform(size=D), rng.uniform(size=D) * 0.2, 0.2, 4000
    d = (x - b).reshape(-1)
    exact = d * (a @ b.reshape(-1) + c) + 0.5 * (d * (a @ d) + sigma ** 2 * np.diag(a))
    est = np.asarray(A.gradient_shap(f, x.astype(np.float32), b[None].astype(np.float32), KEY, n_samples=n,
                                     stdev=sigma, batch_size=1000, **options)).reshape(-1)
    # standard error of the default's terms, from its own draws in float64
    draws = A.gradient_shap_draws(KEY, n, D, 1, sigma)
    delta = (x[None] + np.asarray(draws.noise, np.float64) - b[None]).reshape(n, -1)
    points = b.reshape(1, -1) + np.asarray(draws.alpha, np.float64)[:, None] * delta
    terms = delta * (points @ a + c)
    tol = 5 * terms.std(0) / np.sqrt(n) + 1e-4
    np.testing.assert_array_less(np.abs(terms.mean(0) - exact), tol)  # the reference itself
    np.testing.assert_array_less(np.abs(est - exact), tol)


def test_smoothgrad_antithetic_is_exact_for_quadratic_f():
    a, c, f = _quadratic()
    x = np.random.default_rng(4).uniform(size=D).astype(np.float32)
    got = np.asarray(A.smoothgrad(f, x, KEY, n_samples=6, stdev=0.5, antithetic=True)).reshape(-1)
    np.testing.assert_allclose(got, a @ x.reshape(-1).astype(np.float64) + c, rtol=1e-5, atol=1e-5)
    default = np.asarray(A.smoothgrad(f, x, KEY, n_samples=6, stdev=0.5)).reshape(-1)
    assert np.abs(default - (a @ x.reshape(-1) + c)).max() > 1e-3  # i.i.d. noise does not cancel


def test_smoothgrad_antithetic_expectation_cubic():
    """f = sum w z^3: E[grad] = 3 w (x^2 + sigma^2)."""
    rng = np.random.default_rng(5)
    w, x, sigma, n = rng.normal(size=D), rng.uniform(size=D), 0.3, 4000
    f = lambda z: jnp.sum(jnp.asarray(w, z.dtype) * z ** 3)
    got = np.asarray(A.smoothgrad(f, x.astype(np.float32), KEY, n_samples=n, stdev=sigma, antithetic=True,
                                  batch_size=1000))
    exact = 3 * w * (x ** 2 + sigma ** 2)
    # term 3 w (x^2 + eps^2) has std 3 |w| sigma^2 sqrt(2) (pairs share eps^2)
    np.testing.assert_array_less(np.abs(got - exact), 5 * 3 * np.abs(w) * sigma ** 2 * np.sqrt(2 / (n / 2)) + 1e-4)


# ----------------------------------------------------------------------------- invariance and errors


def _small_f():
    rng = np.random.default_rng(6)
    w = jnp.asarray(rng.normal(size=(2, 6, 6, 2)), jnp.float32)
    x = jnp.asarray(rng.uniform(size=(6, 6, 2)), jnp.float32)
    return (lambda z: jnp.tanh(jnp.sum(w * z, axis=(1, 2, 3)) / 5)), x, x * 0.2


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.parametrize("options", [{"centered": True},
                                     {"centered": True, "antithetic": True, "sampler": "stratified"}])
def test_rise_options_independent_of_batch_size(options):
    f, x, b = _small_f()
    ref = A.rise(f, x, b, KEY, n_masks=60, grid_size=(2, 2), batch_size=60, **options)
    for bs in (7,):
        np.testing.assert_allclose(A.rise(f, x, b, KEY, n_masks=60, grid_size=(2, 2), batch_size=bs, **options),
                                   ref, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # ~11 s
@pytest.mark.parametrize("options", [{"antithetic": True}, {"antithetic": True, "stratified_alpha": True}])
def test_gradient_options_independent_of_batch_size(options):
    f, x, b = _small_f()
    ref = A.gradient_shap(f, x, b[None], KEY, n_samples=10, **options)
    np.testing.assert_allclose(A.gradient_shap(f, x, b[None], KEY, n_samples=10, batch_size=3, **options),
                               ref, rtol=1e-5, atol=1e-6)
    if "stratified_alpha" not in options:
        ref = A.smoothgrad(f, x, KEY, n_samples=10, **options)
        np.testing.assert_allclose(A.smoothgrad(f, x, KEY, n_samples=10, batch_size=4, **options),
                                   ref, rtol=1e-5, atol=1e-6)


def test_bad_options_raise_named_errors():
    f, x, b = _small_f()
    with pytest.raises(ValueError, match="n_masks.*even"):
        A.rise(f, x, b, KEY, n_masks=9, antithetic=True)
    with pytest.raises(ValueError, match="sampler"):
        A.rise(f, x, b, KEY, n_masks=8, sampler="sobol")
    with pytest.raises(ValueError, match="n_masks.*centered"):
        A.rise_from_masks(f, x, b, np.ones((1, 6, 6)), centered=True)
    with pytest.raises(TypeError, match="antithetic"):
        A.rise(f, x, b, KEY, n_masks=8, antithetic="yes")
    with pytest.raises(ValueError, match="n_samples.*even"):
        A.gradient_shap(f, x, b[None], KEY, n_samples=5, antithetic=True)
    with pytest.raises(TypeError, match="stratified_alpha"):
        A.gradient_shap(f, x, b[None], KEY, n_samples=4, stratified_alpha=1)
    with pytest.raises(ValueError, match="n_samples.*even"):
        A.smoothgrad(f, x, KEY, n_samples=3, antithetic=True)


_MESH_WORKER = r"""
import os, sys
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
import jax, jax.numpy as jnp, numpy as np
from cocoa_jax import attribution as A, meshes
rng = np.random.default_rng(6)
w = jnp.asarray(rng.normal(size=(2, 6, 6, 2)), jnp.float32)
x = jnp.asarray(rng.uniform(size=(6, 6, 2)), jnp.float32)
f = lambda z: jnp.tanh(jnp.sum(w * z, axis=(1, 2, 3)) / 5)
mesh = meshes.make_mesh()
assert mesh.size == 8, mesh.size
key = jax.random.key(7)
runs = {
  "rise": lambda m: A.rise(f, x, x * 0.2, key, n_masks=42, grid_size=(2, 2), batch_size=10, mesh=m,
                           centered=True, antithetic=True, sampler="stratified"),
  "gs": lambda m: A.gradient_shap(f, x, x[None] * 0.2, key, n_samples=6, batch_size=3, mesh=m,
                                  antithetic=True, stratified_alpha=True),
  "sg": lambda m: A.smoothgrad(f, x, key, n_samples=6, batch_size=5, mesh=m, antithetic=True),
}
for name, run in runs.items():  # jitted, as the pipeline runs them: eager op-by-op cost ~1.5x the CPU time
    sharded, single = jax.jit(lambda: run(mesh))(), jax.jit(lambda: run(None))()
    np.testing.assert_allclose(np.asarray(sharded), np.asarray(single), rtol=1e-5, atol=1e-6, err_msg=name)
print("OK")
"""


@pytest.mark.slow
def test_options_independent_of_device_count():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", _MESH_WORKER], capture_output=True, text=True, env=env,
                          timeout=300, cwd=REPO)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
