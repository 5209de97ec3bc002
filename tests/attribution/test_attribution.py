"""Attribution methods against closed forms and float64 NumPy references on the same draws."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import attribution, methods, targets

SHAPE = (5, 6, 2)
RNG = np.random.default_rng(0)
W = RNG.normal(size=(3, int(np.prod(SHAPE)))) / 4  # 3 hidden units
FREQ = RNG.uniform(0.5, 2.0, size=SHAPE)


def f_sin(x):
    """Separable: IG attribution of pixel i is exactly sin(w_i x_i) - sin(w_i b_i)."""
    return jnp.sum(jnp.sin(jnp.asarray(FREQ, x.dtype) * x))


def f_tanh(x):
    """Non-separable scalar: sum tanh(W x)."""
    return jnp.sum(jnp.tanh(jnp.asarray(W, x.dtype) @ x.reshape(-1)))


def grad_tanh_np(x):
    """float64 gradient of f_tanh."""
    hidden = W @ np.asarray(x, np.float64).reshape(-1)
    return (W.T @ (1 - np.tanh(hidden) ** 2)).reshape(SHAPE)


def f_vec(x):
    """K = 3 outputs: tanh(W x)."""
    return jnp.tanh(jnp.asarray(W, x.dtype) @ x.reshape(-1))


def jac_vec_np(x):
    hidden = W @ np.asarray(x, np.float64).reshape(-1)
    return ((1 - np.tanh(hidden) ** 2)[:, None] * W).reshape((3,) + SHAPE)


@pytest.fixture
def x():
    return jnp.asarray(RNG.uniform(size=SHAPE), jnp.float32)


@pytest.fixture
def baseline():
    return jnp.asarray(RNG.uniform(size=SHAPE) * 0.3, jnp.float32)


# --------------------------------------------------------------------------- Integrated Gradients


@pytest.mark.parametrize("method,n_steps,tol", [
    ("gausslegendre", 16, 2e-6), ("riemann_middle", 400, 2e-5), ("riemann_trapezoid", 400, 4e-5),
    ("riemann_left", 2000, 2e-3), ("riemann_right", 2000, 2e-3),
])
def test_ig_matches_exact_path_integral(x, baseline, method, n_steps, tol):
    exact = np.sin(FREQ * np.asarray(x, np.float64)) - np.sin(FREQ * np.asarray(baseline, np.float64))
    attr = attribution.integrated_gradients(f_sin, x, baseline, n_steps=n_steps, method=method, batch_size=512)
    np.testing.assert_allclose(attr, exact, atol=tol)


@pytest.mark.parametrize("method", sorted(attribution.QUADRATURE_RULES))
def test_ig_equals_float64_quadrature_sum(x, baseline, method):
    rule = attribution.quadrature(method, 7)
    xs, bs = np.asarray(x, np.float64), np.asarray(baseline, np.float64)
    expected = (xs - bs) * sum(w * grad_tanh_np(bs + a * (xs - bs)) for a, w in zip(rule.alphas, rule.weights))
    np.testing.assert_allclose(attribution.integrated_gradients(f_tanh, x, baseline, n_steps=7, method=method),
                               expected, rtol=1e-4, atol=1e-6)


def test_quadrature_rules_are_captum_rules():
    np.testing.assert_allclose(attribution.quadrature("riemann_left", 4).alphas, [0, .25, .5, .75])
    np.testing.assert_allclose(attribution.quadrature("riemann_right", 4).alphas, [.25, .5, .75, 1])
    np.testing.assert_allclose(attribution.quadrature("riemann_middle", 4).alphas, [.125, .375, .625, .875])
    trapezoid = attribution.quadrature("riemann_trapezoid", 5)
    np.testing.assert_allclose(trapezoid.weights, [.125, .25, .25, .25, .125])
    legendre = attribution.quadrature("gausslegendre", 5)
    assert abs(legendre.weights.sum() - 1) < 1e-12 and np.all((legendre.alphas > 0) & (legendre.alphas < 1))
    # exact for polynomials up to degree 2n - 1
    assert abs(np.sum(legendre.weights * legendre.alphas**9) - 0.1) < 1e-12


@pytest.mark.parametrize("method,order", [("riemann_left", 1), ("riemann_right", 1), ("riemann_middle", 2),
                                          ("riemann_trapezoid", 2)])
def test_ig_completeness_gap_shrinks_at_the_rule_order(x, baseline, method, order):
    """|sum(attr) - (f(x) - f(b))| ~ C / n^order: 8x the steps gives 8^order times smaller."""
    gap = lambda n: float(jnp.abs(attribution.integrated_gradients(
        f_tanh, 3 * x, baseline, n_steps=n, method=method, return_delta=True)[1]))
    ratio = gap(8) / gap(64)
    assert 0.7 * 8**order < ratio < 1.4 * 8**order


def test_ig_gauss_legendre_gap_vanishes_fast(x, baseline):
    gaps = [float(jnp.abs(attribution.integrated_gradients(f_tanh, 3 * x, baseline, n_steps=n,
                                                           return_delta=True)[1])) for n in (2, 16)]
    assert gaps[0] > 1e-3 and gaps[1] < 1e-5


def test_ig_custom_quadrature_value(x, baseline):
    rule = attribution.Quadrature(np.array([0.5]), np.array([1.0]))  # one midpoint
    attr = attribution.integrated_gradients(f_tanh, x, baseline, method=rule)
    xs, bs = np.asarray(x, np.float64), np.asarray(baseline, np.float64)
    np.testing.assert_allclose(attr, (xs - bs) * grad_tanh_np((xs + bs) / 2), rtol=1e-4, atol=1e-6)


def test_ig_delta_is_completeness_gap(x, baseline):
    attr, delta = attribution.integrated_gradients(f_tanh, x, baseline, n_steps=5, return_delta=True)
    expected = float(jnp.sum(attr)) - (float(f_tanh(x)) - float(f_tanh(baseline)))
    assert abs(float(delta) - expected) < 1e-5


# --------------------------------------------------------------------------- GradientSHAP, SmoothGrad


def test_adaptive_ig_stops_at_the_first_nested_grid_meeting_the_tolerance(x, baseline):
    """Result at n points = the trapezoid rule at n points; the previous (half) grid missed the
    tolerance; the gap is the completeness gap computed independently."""
    f = lambda z: 3.0 * f_vec(z)  # K = 3, curved along the path
    exact_delta = np.asarray(f(x)) - np.asarray(f(baseline))
    rtol = 1e-4
    out = attribution.integrated_gradients_adaptive(f, x, baseline, rtol=rtol, atol=0.0, min_steps=3)
    assert out.converged and out.attributions.shape == (3,) + SHAPE
    n = out.n_steps
    assert n > 3 and (n - 1) & (n - 2) == 0  # 2^j + 1 points
    fixed = attribution.integrated_gradients(f, x, baseline, n_steps=n, method="riemann_trapezoid")
    np.testing.assert_allclose(np.asarray(out.attributions), np.asarray(fixed), rtol=2e-5, atol=1e-6)
    gap = np.asarray(out.attributions, np.float64).reshape(3, -1).sum(-1) - exact_delta
    np.testing.assert_allclose(np.asarray(out.gap), gap, atol=2e-5)
    assert np.all(np.abs(gap) <= rtol * np.abs(exact_delta) + 2e-5)
    coarser = attribution.integrated_gradients(f, x, baseline, n_steps=(n - 1) // 2 + 1, method="riemann_trapezoid")
    coarse_gap = np.asarray(coarser, np.float64).reshape(3, -1).sum(-1) - exact_delta
    assert np.any(np.abs(coarse_gap) > rtol * np.abs(exact_delta))


def test_adaptive_ig_reports_when_max_steps_is_reached(x, baseline):
    out = attribution.integrated_gradients_adaptive(lambda z: 3.0 * f_tanh(z), x, baseline, rtol=0.0, atol=0.0,
                                                    min_steps=5, max_steps=17)
    assert not out.converged and out.n_steps == 17 and out.attributions.shape == SHAPE
    with pytest.raises(ValueError, match="min_steps"):
        attribution.integrated_gradients_adaptive(f_tanh, x, baseline, min_steps=9, max_steps=5)
    with pytest.raises(ValueError, match="rtol"):
        attribution.integrated_gradients_adaptive(f_tanh, x, baseline, rtol=-1.0)


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


# --------------------------------------------------------------------------- RISE


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


# --------------------------------------------------------------------------- shared behaviour


def _small_options(name):
    """The method's own defaults with every sample / step / mask count cut to 10 (even, for
    antithetic options): a method added to `methods.METHODS` gets these tests unchanged."""
    return {option: 10 for option, default in methods.defaults(name).items()
            if option.startswith("n_") and isinstance(default, int) and not isinstance(default, bool)}


def _run_method(name):
    options = _small_options(name)
    return lambda f, x, b, key, bs: methods.attribute(name, f, x, b, key, batch_size=bs, **options)


METHODS = {name: _run_method(name) for name in methods.ATTRIBUTION_METHODS}
# LIME fits a Lasso by coordinate descent: the summation order of a batch size moves its
# solution by ~2e-5 (an iterative solver's rounding, not a different estimate).
ATOL = {"lime": 1e-4}


def test_every_method_of_the_table_is_covered():
    assert set(METHODS) >= {"integrated_gradients", "gradient_shap", "rise", "smoothgrad", "vanilla_gradients",
                            "kernel_shap", "lime", "occlusion", "smooth_integrated_gradients"}


# The perturbation methods' own test files keep quick invariance checks; here they run in the full suite.
QUICK = {"integrated_gradients", "gradient_shap", "rise", "smoothgrad", "vanilla_gradients"}
BY_SPEED = [n if n in QUICK else pytest.param(n, marks=pytest.mark.slow) for n in sorted(METHODS)]


@pytest.mark.parametrize("name", BY_SPEED)
def test_batch_size_invariance_jit_and_k_stacking(name, x, baseline):
    method = METHODS[name]
    key = jax.random.PRNGKey(11)
    reference = method(f_vec, x, baseline, key, None)
    atol = ATOL.get(name, 1e-6)
    for batch_size in (1, 4, 9, 100):
        np.testing.assert_allclose(method(f_vec, x, baseline, key, batch_size), reference, rtol=1e-5, atol=atol)
    jitted = jax.jit(lambda x, b, key: method(f_vec, x, b, key, 4))(x, baseline, key)
    np.testing.assert_allclose(jitted, reference, rtol=1e-5, atol=atol)
    # K stacked outputs == K separate scalar runs
    for k in range(3):
        single = method(lambda z: f_vec(z)[k], x, baseline, key, 4)
        np.testing.assert_allclose(reference[k], single, rtol=1e-5, atol=atol)


@pytest.mark.parametrize("name", BY_SPEED)
def test_vmap_over_explicands_with_per_explicand_targets(name):
    """label_free targets differ per explicand; vmapping (x, target) equals a loop."""
    rng = np.random.default_rng(2)
    proj = jnp.asarray(rng.normal(size=(int(np.prod(SHAPE)), 8)), jnp.float32)
    encode = lambda xb: jax.nn.softplus(xb.reshape(xb.shape[0], -1) @ proj)
    xs = jnp.asarray(rng.uniform(size=(3,) + SHAPE), jnp.float32)
    bs = 0.5 * xs
    shared = targets.cocoa(encode(xs[:2] + 1), encode(xs[1:] * 2))
    per = targets.stack([targets.label_free(encode(xs)), shared])  # directions (3, 2, 8)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    method = METHODS[name]
    run = lambda x, b, t, key: method(targets.explain_fn(encode, t), x, b, key, 5)
    batched = jax.jit(jax.vmap(run))(xs, bs, per, keys)
    for i in range(3):
        one = jax.tree_util.tree_map(lambda d: d[i], per)
        np.testing.assert_allclose(batched[i], run(xs[i], bs[i], one, keys[i]), rtol=1e-4, atol=1e-6)


def test_same_key_same_result_and_different_key_different(x, baseline):
    a = attribution.gradient_shap(f_tanh, x, baseline[None], jax.random.PRNGKey(0), n_samples=5)
    b = attribution.gradient_shap(f_tanh, x, baseline[None], jax.random.PRNGKey(0), n_samples=5)
    c = attribution.gradient_shap(f_tanh, x, baseline[None], jax.random.PRNGKey(1), n_samples=5)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("call, error, match", [
    (lambda x, b: attribution.integrated_gradients(f_tanh, x, b[:2]), ValueError, "baseline.*same shape"),
    (lambda x, b: attribution.integrated_gradients(f_tanh, x, b, n_steps=0), ValueError, "n_steps"),
    (lambda x, b: attribution.integrated_gradients(f_tanh, x, b, method="simpson"), ValueError, "method"),
    (lambda x, b: attribution.integrated_gradients(f_tanh, x.at[0, 0, 0].set(jnp.nan), b), ValueError, "x.*NaN"),
    (lambda x, b: attribution.integrated_gradients(f_tanh, x, b.at[1, 1, 1].set(jnp.inf)), ValueError,
     "baseline.*NaN"),
    (lambda x, b: attribution.integrated_gradients(f_tanh, x, b, batch_size=0), ValueError, "batch_size"),
    (lambda x, b: attribution.integrated_gradients(lambda z: z, x, b), ValueError, "scalar or a \\(K,\\)"),
    (lambda x, b: attribution.integrated_gradients(lambda z: jnp.sum(z).astype(jnp.int32), x, b), TypeError,
     "floating"),
    (lambda x, b: attribution.gradient_shap(f_tanh, x, b, jax.random.PRNGKey(0)), ValueError, "baselines.*rank"),
    (lambda x, b: attribution.gradient_shap(f_tanh, x, b[None, :2], jax.random.PRNGKey(0)), ValueError,
     "baselines.*shape"),
    (lambda x, b: attribution.gradient_shap(f_tanh, x, b[None], jax.random.PRNGKey(0), n_samples=-1), ValueError,
     "n_samples"),
    (lambda x, b: attribution.gradient_shap(f_tanh, x, b[None], jax.random.PRNGKey(0), stdev=-1.0), ValueError,
     "stdev"),
    (lambda x, b: attribution.smoothgrad(f_tanh, x, jax.random.PRNGKey(0), n_samples=0), ValueError, "n_samples"),
    (lambda x, b: attribution.rise(f_tanh, x, b, jax.random.PRNGKey(0), n_masks=0), ValueError, "n_masks"),
    (lambda x, b: attribution.rise(f_tanh, x, b, jax.random.PRNGKey(0), keep_prob=0.0), ValueError, "keep_prob"),
    (lambda x, b: attribution.rise(f_tanh, x, b, jax.random.PRNGKey(0), keep_prob=1.5), ValueError, "keep_prob"),
    (lambda x, b: attribution.rise(f_tanh, x, b, jax.random.PRNGKey(0), grid_size=(9, 2)), ValueError, "grid_size"),
    (lambda x, b: attribution.rise(lambda z: jnp.sum(z), x[..., 0], b[..., 0], jax.random.PRNGKey(0)), ValueError,
     "x.*rank 3"),
    (lambda x, b: attribution.rise_from_masks(f_tanh, x, b, jnp.ones((4, 3, 3))), ValueError, "masks.*shape"),
    (lambda x, b: attribution.rise_masks(jax.random.PRNGKey(0), 3, (8,), (2, 2)), ValueError, "image_size"),
    (lambda x, b: attribution.vanilla_gradients(3.0, x), TypeError, "`f` must be callable"),
])
def test_bad_inputs_raise_clear_errors(x, baseline, call, error, match):
    with pytest.raises(error, match=match):
        call(x, baseline)


def test_bfloat16_inputs_are_accepted(x, baseline):
    """bf16 perturbations work end to end (np.issubdtype does not know bfloat16 is floating)."""
    attr = attribution.integrated_gradients(f_tanh, x.astype(jnp.bfloat16), baseline.astype(jnp.bfloat16), n_steps=8)
    assert attr.dtype == jnp.bfloat16
    reference = attribution.integrated_gradients(f_tanh, x, baseline, n_steps=8)
    np.testing.assert_allclose(np.asarray(attr, np.float32), reference, atol=3e-2 * float(jnp.abs(reference).max()))
    with pytest.raises(ValueError, match="x.*NaN"):
        attribution.integrated_gradients(f_tanh, x.astype(jnp.bfloat16).at[0, 0, 0].set(jnp.nan),
                                         baseline.astype(jnp.bfloat16))
