"""KernelSHAP: Captum's estimator on the same coalitions, exact Shapley values by enumeration,
efficiency, additive models, Captum in expectation, invariances; and the 8-device mesh check of
every method of `cocoa_jax.attribution_methods` (one subprocess)."""
from __future__ import annotations

import itertools
import math
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import meshes
from cocoa_jax.attribution_methods import kernel_shap, kernel_shap_coalitions, superpixel_map
from cocoa_jax.attribution_methods.kernel_shap import _size_log_probs, solve_anchored

REPO = pathlib.Path(__file__).resolve().parents[2]
H, W, C = 4, 6, 2
RNG = np.random.default_rng(0)
WEIGHTS = RNG.normal(size=(3, H * W * C)) / 2
X = RNG.uniform(size=(H, W, C)).astype(np.float32)
BASE = (0.2 * RNG.uniform(size=(H, W, C))).astype(np.float32)
LABELS = superpixel_map(H, W, 2, 2)  # 6 features of 2x2 pixels
M = int(LABELS.max()) + 1


def f_vec(x):
    """K = 3 non-additive targets."""
    return jnp.tanh(jnp.asarray(WEIGHTS, x.dtype) @ x.reshape(-1))


def f_scalar(x):
    return f_vec(x)[0] * f_vec(x)[1] + f_vec(x)[2]


def value_np(f, z):
    """f at coalition z (float64 blend; f evaluated in float32)."""
    mask = np.asarray(z, np.float64)[LABELS][..., None]
    return np.asarray(f(jnp.asarray(BASE + mask * (X - BASE), jnp.float32)), np.float64)


def shapley_by_enumeration(value, m):
    """Shapley values of m players from value(z) on all 2^m coalitions z (float64): (m, ...)."""
    values = {z: np.asarray(value(z), np.float64) for z in itertools.product((0, 1), repeat=m)}
    phi = np.zeros((m,) + np.shape(values[(0,) * m]))
    for j in range(m):
        for z, v in values.items():
            if z[j]:
                continue
            s = sum(z)
            with_j = z[:j] + (1,) + z[j + 1:]
            phi[j] += math.factorial(s) * math.factorial(m - s - 1) / math.factorial(m) * (values[with_j] - v)
    return phi


def exact_shapley(f):
    """Shapley values of the M features of X by enumeration of all 2^M coalitions: (M, ...)."""
    return shapley_by_enumeration(lambda z: value_np(f, z), M)


def feature_values(attr):
    """(..., H, W) map -> (..., M) per-feature values (constant on each feature's pixels)."""
    attr = np.asarray(attr)
    out = np.stack([attr[..., LABELS == j].mean(-1) for j in range(M)], -1)
    for j in range(M):  # really constant on the feature
        np.testing.assert_allclose(attr[..., LABELS == j], out[..., j:j + 1] + 0 * attr[..., LABELS == j], atol=1e-6)
    return out


run = jax.jit(lambda f, x, key, n, efficient=False, batch_size=None: kernel_shap(
    f, x, BASE, key, n_samples=n, superpixel=2, efficient=efficient, batch_size=batch_size),
    static_argnums=(0, 3, 4, 5))


# ----------------------------------------------------------------------------- Captum, same draws


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.torch
@pytest.mark.parametrize("n", [5, 60])  # 5: 3 random coalitions for 7 unknowns, the minimum-norm fit
def test_equals_captum_kernel_shap_on_the_same_coalitions(n):
    torch = pytest.importorskip("torch")
    from captum.attr import KernelShap

    ours = np.asarray(run(f_vec, X, jax.random.key(0), n))  # (3, H, W)
    coalitions = np.asarray(kernel_shap_coalitions(jax.random.key(0), n, M))

    class Replay(KernelShap):  # Captum's estimator, our coalitions
        def kernel_shap_perturb_generator(self, original_inp, **kwargs):
            for row in coalitions:
                yield torch.tensor(row[None], dtype=torch.long)

    def forward(xt):  # NCHW float32 -> (N, 3)
        flat = xt.permute(0, 2, 3, 1).reshape(xt.shape[0], -1)
        return torch.tanh(flat @ torch.tensor(WEIGHTS, dtype=torch.float32).T)

    xt, bt = (torch.tensor(a).permute(2, 0, 1)[None] for a in (X, BASE))
    mask = torch.tensor(LABELS)[None, None].expand(1, C, H, W)
    for target in range(3):
        ref = Replay(forward).attribute(xt, bt, target=target, feature_mask=mask, n_samples=n)[0].numpy()
        assert np.allclose(ref, ref[:1])  # Captum repeats the value over channels
        np.testing.assert_allclose(ours[target], ref[0], rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    # Captum's anchors are soft (weight 1e6): the sums are close to f(x) - f(b), not exact.
    gap = feature_values(ours).sum(-1) - (value_np(f_vec, (1,) * M) - value_np(f_vec, (0,) * M))
    assert np.all(np.abs(gap) < 1e-3)


def test_coalitions_follow_captums_size_distribution():
    n = 20000
    z = np.asarray(kernel_shap_coalitions(jax.random.key(1), n, M))
    assert z[0].all() and not z[1].any() and set(np.unique(z)) <= {0.0, 1.0}
    sizes = z[2:].sum(1).astype(int)
    k = np.arange(1, M)
    probs = (M - 1) / (k * (M - k))
    probs /= probs.sum()
    counts = np.bincount(sizes, minlength=M + 1)
    assert counts[0] == counts[M] == 0
    expected = probs * (n - 2)
    chi2 = np.sum((counts[1:M] - expected) ** 2 / expected)
    assert chi2 < 25.0  # 4 degrees of freedom: p ~ 5e-5
    # Within a size, every feature equally likely (uniform subsets).
    per_feature = z[2:][sizes == 2].mean(0)
    np.testing.assert_allclose(per_feature, 2 / M, atol=0.03)
    # And the test can fail: uniform sizes would be far off.
    uniform = np.full(M - 1, (n - 2) / (M - 1))
    assert np.sum((counts[1:M] - uniform) ** 2 / uniform) > 100


# ----------------------------------------------------------------------------- exact Shapley values


@pytest.mark.slow  # ~20 s on a shared CPU
def test_error_to_exact_shapley_falls_with_n_samples():
    exact = exact_shapley(f_vec).T  # (3, M)
    keys = jax.random.split(jax.random.key(2), 8)
    errors = []
    for n in (40, 400, 4000):
        attrs = jax.vmap(lambda k: run(f_vec, X, k, n, False, 1000))(keys)
        est = feature_values(attrs)  # (8, 3, M)
        errors.append(np.sqrt(np.mean((est - exact) ** 2)))
    scale = np.abs(exact).max()
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.02 * scale, (errors, scale)
    assert errors[0] > 2.5 * errors[2]


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_efficient_is_exact_once_every_coalition_fits():
    """efficient=True: 2^M - 1 samples are sampled (an estimate), 2^M enumerate every coalition
    with the Shapley kernel: the exact Shapley values of this non-additive f (M = 6, K = 3)."""
    exact = exact_shapley(f_vec).T  # (3, M)
    enumerated = feature_values(run(f_vec, X, jax.random.key(2), 2 ** M, True))
    np.testing.assert_allclose(enumerated, exact, rtol=0, atol=2e-5 * np.abs(exact).max())
    chunked = feature_values(run(f_vec, X, jax.random.key(2), 2 ** M, True, 5))  # 62 rows in chunks of 5
    np.testing.assert_allclose(chunked, enumerated, rtol=0, atol=2e-5 * np.abs(exact).max())
    sampled = feature_values(run(f_vec, X, jax.random.key(2), 2 ** M - 1, True))
    assert np.abs(sampled - exact).max() > 1e-3 * np.abs(exact).max()  # so the test can fail


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_efficient_sums_equal_the_score_difference_exactly():
    attr = run(f_vec, X, jax.random.key(3), 50, True)
    delta = value_np(f_vec, (1,) * M) - value_np(f_vec, (0,) * M)
    np.testing.assert_allclose(feature_values(attr).sum(-1), delta, rtol=2e-6, atol=2e-6)
    scalar = run(f_scalar, X, jax.random.key(3), 50, True)
    delta = value_np(f_scalar, (1,) * M) - value_np(f_scalar, (0,) * M)
    np.testing.assert_allclose(feature_values(scalar).sum(), delta, rtol=2e-6, atol=2e-6)


GAINS = RNG.uniform(0.5, 2.0, size=(H, W, C))


def f_additive(x):
    """Additive over pixels (hence over features): Shapley value = the feature's own change."""
    return jnp.sum(jnp.sin(jnp.asarray(GAINS, x.dtype) * x))


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.parametrize("efficient", [False, True])
def test_additive_model_recovered_exactly(efficient):
    exact = exact_shapley(f_additive)
    own = np.array([np.sum(np.sin(GAINS * X)[LABELS == j] - np.sin(GAINS * BASE)[LABELS == j]) for j in range(M)])
    np.testing.assert_allclose(exact, own, atol=1e-5)  # the reference itself
    attr = run(f_additive, X, jax.random.key(4), 30, efficient)  # few samples: the fit is exact
    np.testing.assert_allclose(feature_values(attr), own, rtol=1e-4, atol=1e-5)


def design(kind, rng):
    """(z (rows, m) in {0, 1}, row weights): the random coalitions a solve sees."""
    if kind == "full":  # well determined
        return (rng.uniform(size=(40, 5)) < 0.5).astype(np.float64), np.ones(40)
    if kind == "two_features":  # every coalition has one feature on: z_1 + z_2 = 1 = the intercept
        return np.eye(2)[rng.integers(0, 2, 9)], np.ones(9)
    if kind == "few_rows":  # 3 coalitions for 7 unknowns: infinitely many minimisers
        return (rng.uniform(size=(3, 6)) < 0.5).astype(np.float64), np.ones(3)
    if kind == "duplicate_columns":  # features 0 and 1 always together
        z = (rng.uniform(size=(30, 4)) < 0.5).astype(np.float64)
        return np.concatenate([z[:, :1], z], 1), np.ones(30)
    assert kind == "weighted_two_features"  # the enumeration's Shapley-kernel weights
    return np.eye(2), np.array([0.5, 0.5])


def lstsq_soft(z, weights, y, delta, anchor_weight):
    """float64 reference: Captum's regression on the explicit rows (minimum-norm lstsq)."""
    m = z.shape[1]
    a = np.concatenate([np.ones((len(z), 1)), z], 1)
    full_a = np.concatenate([a, np.ones((1, m + 1)), np.eye(1, m + 1)])
    full_y = np.concatenate([y, delta[None], np.zeros((1, y.shape[1]))])
    w = np.sqrt(np.r_[weights, anchor_weight, anchor_weight])[:, None]
    return np.linalg.lstsq(full_a * w, full_y * w, rcond=None)[0][1:]


def lstsq_constrained(z, weights, y, delta):
    """float64 reference: min sum w (y - z phi)^2 s.t. sum(phi) = delta, from the Lagrange
    system [Z^T W Z, 1; 1^T, 0] (its minimum-norm lstsq solution: phi of least norm)."""
    m = z.shape[1]
    kkt = np.block([[z.T @ (weights[:, None] * z), np.ones((m, 1))], [np.ones((1, m)), np.zeros((1, 1))]])
    rhs = np.concatenate([z.T @ (weights[:, None] * y), delta[None]])
    return np.linalg.lstsq(kkt, rhs, rcond=None)[0][:m]


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.parametrize("kind", ["full", "two_features", "few_rows", "duplicate_columns", "weighted_two_features"])
def test_solver_is_the_weighted_least_squares_whatever_the_rank(kind):
    """`solve_anchored` (float32) vs float64 lstsq on the explicit rows: Captum's anchor weight
    1e6, a lighter 1e3, and hard anchors (efficiency exact), on full and rank-deficient designs."""
    rng = np.random.default_rng(5)
    z, weights = design(kind, rng)
    m = z.shape[1]
    y = rng.normal(size=(len(z), 2)) * 3
    delta = rng.normal(size=2) * 3
    a = np.concatenate([np.ones((len(z), 1)), z], 1)
    gram, moments = (a * weights[:, None]).T @ a, (a * weights[:, None]).T @ y
    as32 = lambda v: jnp.asarray(v, jnp.float32)
    for anchor_weight in (1e6, 1e3):
        ref = lstsq_soft(z, weights, y, delta, anchor_weight)
        ours = solve_anchored(as32(gram), as32(moments), as32(delta), 1.0 / anchor_weight)
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    ref = lstsq_constrained(z, weights, y, delta)
    hard = np.asarray(solve_anchored(as32(gram), as32(moments), as32(delta), 0.0))
    np.testing.assert_allclose(hard, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    np.testing.assert_allclose(hard.sum(0), delta, rtol=1e-6, atol=1e-6 * np.abs(delta).max())
    assert m >= 2


# ----------------------------------------------------------------------------- 1, 2, 3 (, 4) features
# Tiny rows (1, W, 1): each feature a group of entries. With 2 features every sampled coalition
# has exactly one feature on, so the sampled Gram matrix is singular (the reviewer's case).

BIAS1 = np.array([-10.0, 1.0, 1.0, 1.0])
ROW3, BASE3 = np.array([20.0, 50.0, 30.0]), np.zeros(3)  # Captum's test_kernel_shap input, baseline 0
# Captum's expected values for its BasicModel_MultiLayer (tests/attr/test_kernel_shap.py):
CAPTUM_EXPECTED = {(0, 0, 1): [275.0, 115.0], (0, 1, 2): [76.66666, 196.66666, 116.66666]}
ROW4, BASE4 = np.array([0.9, -0.7, 1.3, 0.5]), np.array([0.1, 0.2, -0.3, 0.0])


def basic_model_np(v):
    """Captum's BasicModel_MultiLayer, output 0: sum(relu(sum(v) + b1)) - 1 (its weights are ones)."""
    return np.sum(np.maximum(np.sum(v) + BIAS1, 0.0)) - 1.0


def basic_model(x):
    return jnp.sum(jax.nn.relu(jnp.sum(x) + jnp.asarray(BIAS1, x.dtype))) - 1.0


def interacting_np(v):
    """K = 2 targets with products of features (far from additive)."""
    return np.array([v[0] * v[1] + np.sin(v[2]) * v[3] + v[0], np.tanh(v[0] + 2 * v[1] * v[2]) - v[3] ** 2])


def interacting(x):
    v = x.reshape(-1)
    return jnp.stack([v[0] * v[1] + jnp.sin(v[2]) * v[3] + v[0], jnp.tanh(v[0] + 2 * v[1] * v[2]) - v[3] ** 2])


SMALL_CASES = {  # name: (f, NumPy f, row, baseline, feature mask)
    "basic_m1": (basic_model, basic_model_np, ROW3, BASE3, (0, 0, 0)),
    "basic_m2": (basic_model, basic_model_np, ROW3, BASE3, (0, 0, 1)),
    "basic_m3": (basic_model, basic_model_np, ROW3, BASE3, (0, 1, 2)),
    "interacting_m1": (interacting, interacting_np, ROW4, BASE4, (0, 0, 0, 0)),
    "interacting_m2": (interacting, interacting_np, ROW4, BASE4, (0, 1, 1, 0)),
    "interacting_m3": (interacting, interacting_np, ROW4, BASE4, (0, 1, 2, 1)),
    "interacting_m4": (interacting, interacting_np, ROW4, BASE4, (2, 0, 3, 1)),
}


def small_case(name):
    f, f_np, row, base, mask = SMALL_CASES[name]
    mask = np.asarray(mask)
    m = int(mask.max()) + 1
    value = lambda z: f_np(base + np.asarray(z, np.float64)[mask] * (row - base))
    image = lambda v: jnp.asarray(v, jnp.float32).reshape(1, -1, 1)
    return f, image(row), image(base), mask[None], m, value


def small_values(attr, mask):
    """(..., 1, W) map -> (..., m) per-feature values."""
    attr = np.asarray(attr)[..., 0, :]
    return np.stack([attr[..., mask[0] == j][..., 0] for j in range(int(mask.max()) + 1)], -1)


@pytest.mark.parametrize("name", list(SMALL_CASES))
def test_efficient_is_the_exact_shapley_value_for_few_features(name):
    """efficient=True with 2^M <= n_samples: every coalition once, Shapley kernel: exact values."""
    f, x, base, mask, m, value = small_case(name)
    exact = shapley_by_enumeration(value, m)  # (m,) or (m, K)
    if name.startswith("basic") and m > 1:  # the test's enumeration against Captum's own numbers
        np.testing.assert_allclose(exact, CAPTUM_EXPECTED[tuple(mask[0])], atol=1e-4)
    ours = small_values(kernel_shap(f, x, base, jax.random.key(0), n_samples=16, feature_mask=mask,
                                    efficient=True), mask)
    ours = ours.T if ours.ndim == 2 else ours
    scale = np.abs(exact).max()
    np.testing.assert_allclose(ours, exact, rtol=1e-5, atol=1e-5 * scale)
    delta = value((1,) * m) - value((0,) * m)
    np.testing.assert_allclose(ours.sum(0), delta, rtol=2e-6, atol=2e-6 * scale)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.parametrize("name, n", [("basic_m2", 3), ("interacting_m2", 3), ("interacting_m3", 3),
                                     ("interacting_m3", 5), ("interacting_m4", 6), ("interacting_m4", 12)])
def test_efficient_with_few_sampled_coalitions_is_the_constrained_fit(name, n):
    """efficient=True below 2^M samples: the constrained least squares on the n - 2 sampled
    coalitions (float64 NumPy on the same rows; with these few the Gram matrix is singular),
    its sum exactly f(x) - f(baseline); never NaN."""
    f, x, base, mask, m, value = small_case(name)
    assert n < 2 ** m  # sampled, not enumerated
    key = jax.random.key(n)
    z = np.asarray(kernel_shap_coalitions(key, n, m, efficient=True))
    assert z.shape == (n, m)
    y = np.stack([np.atleast_1d(value(tuple(row.astype(int)))) for row in z[2:]]) - np.atleast_1d(value((0,) * m))
    delta = np.atleast_1d(value((1,) * m) - value((0,) * m))
    ref = lstsq_constrained(z[2:].astype(np.float64), np.ones(n - 2), y, delta)  # (m, K')
    ours = small_values(kernel_shap(f, x, base, key, n_samples=n, feature_mask=mask, efficient=True), mask)
    ours = ours.T if ours.ndim == 2 else ours[:, None]
    assert np.all(np.isfinite(ours))
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    np.testing.assert_allclose(ours.sum(0), delta, rtol=2e-6, atol=2e-6 * np.abs(delta).max())


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.torch
@pytest.mark.parametrize("name", ["basic_m2", "basic_m3", "interacting_m2", "interacting_m3"])
def test_default_equals_captum_for_few_features(name):
    """The default on 2 and 3 features equals Captum's KernelShap on the same coalitions (Captum's
    own test case among them: [275.2, 114.8] at 50 samples, exact [275, 115])."""
    torch = pytest.importorskip("torch")
    from captum.attr import KernelShap

    f, x, base, mask, m, value = small_case(name)
    n = 50
    ours = small_values(kernel_shap(f, x, base, jax.random.key(0), n_samples=n, feature_mask=mask), mask)
    coalitions = np.asarray(kernel_shap_coalitions(jax.random.key(0), n, m))
    assert np.all(coalitions[2:].sum(1) >= 1) and np.all(coalitions[2:].sum(1) <= m - 1)

    class Replay(KernelShap):
        def kernel_shap_perturb_generator(self, original_inp, **kwargs):
            for row in coalitions:
                yield torch.tensor(row[None], dtype=torch.long)

    f_np = SMALL_CASES[name][1]
    forward = lambda t: torch.tensor(np.stack([f_np(v) for v in t.double().numpy()]), dtype=torch.float32)
    row, base_row = (torch.tensor(np.asarray(v).reshape(1, -1), dtype=torch.float32) for v in (x, base))
    exact = shapley_by_enumeration(value, m)
    for target in range(ours.shape[0] if ours.ndim == 2 else 1):
        ref = Replay(forward).attribute(row, base_row, feature_mask=torch.tensor(mask),
                                        target=target if ours.ndim == 2 else None, n_samples=n)[0].numpy()
        ref = np.array([ref[mask[0] == j][0] for j in range(m)])
        got = ours[target] if ours.ndim == 2 else ours
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
        if name.startswith("basic"):  # Captum's case: a sampled estimate near the exact values
            assert np.abs(got - exact).max() < 0.01 * np.abs(exact).max(), (got, exact)  # pre-fix: 40% off


def test_one_feature_is_the_score_difference():
    """M = 1 (Captum refuses: its size distribution is empty): f(x) - f(baseline), both modes."""
    for name in ("basic_m1", "interacting_m1"):
        f, x, base, mask, m, value = small_case(name)
        delta = value((1,)) - value((0,))
        for efficient in (False, True):
            attr = np.asarray(kernel_shap(f, x, base, jax.random.key(0), n_samples=3, feature_mask=mask,
                                          efficient=efficient))
            expected = np.broadcast_to(np.reshape(delta, (-1, 1, 1)), attr.shape) if attr.ndim == 3 else delta
            np.testing.assert_allclose(attr, expected + 0 * attr, rtol=1e-6, atol=1e-6 * np.abs(delta).max())
    np.testing.assert_array_equal(kernel_shap_coalitions(jax.random.key(0), 10, 1), [[1.0], [0.0]])


def test_enumerated_coalitions_are_every_subset_once():
    z = np.asarray(kernel_shap_coalitions(jax.random.key(0), 8, 3, efficient=True))
    assert z.shape == (8, 3) and z[0].all() and not z[1].any()
    assert sorted(map(tuple, z.astype(int))) == sorted(itertools.product((0, 1), repeat=3))
    # One sample fewer: sampled, as the default (Captum's sequence).
    np.testing.assert_array_equal(kernel_shap_coalitions(jax.random.key(0), 7, 3, efficient=True),
                                  kernel_shap_coalitions(jax.random.key(0), 7, 3))


# ----------------------------------------------------------------------------- Captum in expectation


def _captum_runs(n, n_runs, seed):
    torch = pytest.importorskip("torch")
    from captum.attr import KernelShap

    torch.manual_seed(seed)

    def forward(xt):
        flat = xt.permute(0, 2, 3, 1).reshape(xt.shape[0], -1)
        return torch.tanh(flat @ torch.tensor(WEIGHTS, dtype=torch.float32).T)

    xt, bt = (torch.tensor(a).permute(2, 0, 1)[None] for a in (X, BASE))
    mask = torch.tensor(LABELS)[None, None].expand(1, C, H, W)
    explainer = KernelShap(forward)
    out = [explainer.attribute(xt, bt, target=0, feature_mask=mask, n_samples=n, perturbations_per_eval=n)[0, 0]
           .numpy() for _ in range(n_runs)]
    return feature_values(np.stack(out))


@pytest.mark.torch
@pytest.mark.slow
def test_default_matches_captum_kernel_shap_in_expectation():
    """Both estimators (different RNGs) at 12 samples, 300 runs each: the means agree within
    the sampling error. (On this near-additive model a mis-weighted sampler is NOT detectable
    at this budget; the sampler's distribution is tested exactly, with a failing alternative, in
    test_coalitions_follow_captums_size_distribution.)"""
    n, n_runs = 12, 300
    captum = _captum_runs(n, n_runs, seed=0)  # (runs, M)
    keys = jax.random.split(jax.random.key(6), n_runs)
    ours = feature_values(jax.vmap(lambda k: run(f_vec, X, k, n))(keys)[:, 0])

    def z_score(a, b):
        se = np.sqrt(a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b))
        return np.abs(a.mean(0) - b.mean(0)) / se

    assert np.all(z_score(ours, captum) < 4.0), z_score(ours, captum)



# ----------------------------------------------------------------------------- invariances


@pytest.mark.slow  # one compile per batch size, one for the K scalar targets
def test_batch_size_jit_and_k_stacking_invariance():
    key = jax.random.key(7)
    eager = kernel_shap(f_vec, X, BASE, key, n_samples=37, superpixel=2)  # not jitted
    for batch_size in (5, 16):
        np.testing.assert_allclose(run(f_vec, X, key, 37, False, batch_size), eager, rtol=2e-4, atol=2e-5)
    # The K = 3 scalar targets in one program (vmapped over t: each lane's f has a scalar output),
    # not one compile each.
    singles = jax.jit(jax.vmap(lambda t: kernel_shap(lambda x: f_vec(x)[t], X, BASE, key, n_samples=37,
                                                     superpixel=2)))(jnp.arange(3))
    for t in range(3):
        np.testing.assert_allclose(singles[t], eager[t], rtol=2e-4, atol=2e-5)
    # A scalar f's map has no target axis: a shape, so traced, not compiled.
    scalar = jax.eval_shape(lambda x: kernel_shap(f_scalar, x, BASE, key, n_samples=37, superpixel=2), X)
    assert eager.shape == (3, H, W) and scalar.shape == (H, W)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.parametrize("n, efficient", [(30, False), (2 ** M, True)])  # sampled; enumerated
def test_vmap_over_explicands(n, efficient):
    xs = jnp.asarray(RNG.uniform(size=(3, H, W, C)), jnp.float32)
    keys = jax.random.split(jax.random.key(8), 3)
    batched = jax.vmap(lambda x, k: run(f_vec, x, k, n, efficient))(xs, keys)
    for i in range(3):
        np.testing.assert_allclose(batched[i], run(f_vec, xs[i], keys[i], n, efficient), rtol=2e-4, atol=2e-5)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_feature_mask_equals_superpixel():
    key = jax.random.key(9)
    a = run(f_vec, X, key, 30)
    b = jax.jit(lambda x: kernel_shap(f_vec, x, BASE, key, n_samples=30, feature_mask=LABELS))(X)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(n_samples=2), ValueError, "n_samples"),
    (dict(n_samples=0), ValueError, "n_samples"),
    (dict(superpixel=0), ValueError, "superpixel"),
    (dict(superpixel=(7, 1)), ValueError, "superpixel"),
    (dict(feature_mask=np.zeros((2, 2), int)), ValueError, "feature_mask"),
    (dict(feature_mask=np.zeros((H, W))), TypeError, "feature_mask"),
    (dict(feature_mask=-np.ones((H, W), int)), ValueError, "feature_mask"),
    (dict(efficient=1), TypeError, "efficient"),
    (dict(batch_size=0), ValueError, "batch_size"),
])
def test_argument_checks_name_the_argument_under_eval_shape(kwargs, error, match):
    x = jax.ShapeDtypeStruct((H, W, C), jnp.float32)
    with pytest.raises(error, match=match):
        jax.eval_shape(lambda x_: kernel_shap(f_vec, x_, x_, jax.random.key(0), **kwargs), x)


def test_traced_feature_mask_is_refused():
    with pytest.raises(TypeError, match="feature_mask"):
        jax.jit(lambda m: kernel_shap(f_vec, X, BASE, jax.random.key(0), n_samples=10, feature_mask=m))(LABELS)


# ----------------------------------------------------------------------------- 8 devices vs 1 (all methods)


N_DEVICES = 8


def _worker(out_path: str) -> None:
    from cocoa_jax.attribution_methods import lime, occlusion, smooth_integrated_gradients

    assert jax.device_count() == N_DEVICES, jax.devices()
    mesh = meshes.make_mesh()
    x, base, key = jnp.asarray(X), jnp.asarray(BASE), jax.random.key(3)
    cases = {  # counts that do not divide 8 devices, K = 3 and K = 1
        "kernel_shap_k3": lambda m: kernel_shap(f_vec, x, base, key, n_samples=31, superpixel=2, batch_size=10, mesh=m),
        "kernel_shap_eff_k1": lambda m: kernel_shap(f_scalar, x, base, key, n_samples=23, superpixel=2,
                                                    efficient=True, batch_size=6, mesh=m),
        "lime_k3": lambda m: lime(f_vec, x, base, key, n_samples=29, superpixel=2, batch_size=10, mesh=m),
        "occlusion_k3": lambda m: occlusion(f_vec, x, base, window=(2, 3), stride=(1, 2), batch_size=5, mesh=m),
        "smooth_ig_k3": lambda m: smooth_integrated_gradients(f_vec, x, base, key, n_samples=3, n_steps=5,
                                                              batch_size=6, mesh=m),
    }
    results = {}
    for name, method in cases.items():
        results[f"{name}_single"] = np.asarray(jax.jit(lambda: method(None))())
        results[f"{name}_sharded"] = np.asarray(jax.jit(lambda: method(mesh))())
    np.savez(out_path, **results)


@pytest.fixture(scope="module")
def eight_device_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("methods_sharding") / "results.npz"
    env = dict(os.environ, XLA_FLAGS=meshes.host_device_count_flags(N_DEVICES), JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, __file__, str(out)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    with np.load(out) as data:
        return dict(data)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["kernel_shap_k3", "kernel_shap_eff_k1", "lime_k3", "occlusion_k3", "smooth_ig_k3"])
def test_eight_devices_equal_one_device(eight_device_results, case):
    single, sharded = eight_device_results[f"{case}_single"], eight_device_results[f"{case}_sharded"]
    assert single.shape == sharded.shape and np.abs(single).max() > 0
    np.testing.assert_allclose(sharded, single, rtol=2e-4, atol=2e-5 * np.abs(single).max())


if __name__ == "__main__":
    _worker(sys.argv[1])
