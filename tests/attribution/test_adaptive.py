"""Sampling until the map is stable (`attribution_methods.adaptive`): the stopping rule against a
float64 NumPy reference of the same estimator on the same draws (RISE plain and centred,
GradientSHAP, SmoothGrad, SmoothGrad-IG; KernelSHAP and LIME by batch means against Captum's
weighted least squares and sklearn's weighted Lasso per round), the stop never earlier than the
closed-form error needs (on average over seeds), vmap lanes that keep their own stop, invariance
to batch size and device count, the budget honoured exactly, and tolerance off = the fixed count."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import attribution as A, methods
from cocoa_jax.attribution_methods import adaptive

REPO = pathlib.Path(__file__).resolve().parents[2]
KEY = jax.random.key(11)
H = W = 6
GRID = (3, 3)
P = 0.5

_rng = np.random.default_rng(3)
X = _rng.uniform(size=(H, W, 1))
B = 0.2 * X
WEIGHTS = _rng.normal(size=(2, H, W, 1))


def f_jax(z):  # K = 2 targets, an offset so plain RISE carries a constant
    return jnp.tanh(jnp.sum(jnp.asarray(WEIGHTS, z.dtype) * z, axis=(1, 2, 3)) / 4) + 1.0


def f_np(z):  # the same model in float64: z (N, H, W, 1) -> (N, 2)
    return np.tanh(np.einsum("kijc,nijc->nk", WEIGHTS, z) / 4) + 1.0


def grad_np(z):  # d f_k / dz: (N, 2, H, W, 1)
    a = np.tanh(np.einsum("kijc,nijc->nk", WEIGHTS, z) / 4)
    return (1 - a ** 2)[:, :, None, None, None] * WEIGHTS[None] / 4


XJ, BJ = jnp.asarray(X, jnp.float32), jnp.asarray(B, jnp.float32)


# ----------------------------------------------------------------------------- float64 references


def reference_errors(terms: np.ndarray, round_size: int, *, centred_scores=None) -> np.ndarray:
    """The estimator's error after each round: max_k ||SE_k|| / ||map_k|| from (N, K, ...) terms.

    centred_scores: centred RISE, terms are then (s_i - mean s) mc_i / p with the running mean
    of these (N, K) scores, and the map is their sum / (n - 1)."""
    out = []
    for n in range(round_size, terms.shape[0] + 1, round_size):
        t = terms[:n].reshape(n, terms.shape[1], -1)
        if centred_scores is None:
            mean = t.mean(0)
            se = t.std(0, ddof=1) / np.sqrt(n)
        else:
            s = centred_scores[:n]
            u = (s - s.mean(0))[:, :, None] * t  # t = mc / p here, one per sample
            mean = u.sum(0) / (n - 1)
            se = u.std(0, ddof=1) / np.sqrt(n)
        out.append(np.max(np.linalg.norm(se, axis=1) / np.linalg.norm(mean, axis=1)))
    return np.asarray(out)


def tolerance_between_rounds(errors: np.ndarray) -> tuple[float, int]:
    """A tolerance at which the reference stops at a round >= 2 that sets a new low of the error,
    halfway between that error and the lowest before it (no float32 borderline), and that round."""
    candidates = [j for j in range(2, len(errors) - 1) if errors[j] < np.min(errors[:j]) * (1 - 1e-2)]
    assert candidates, errors
    j = candidates[len(candidates) // 2]
    return float((errors[j] + np.min(errors[:j])) / 2), j


def rise_reference(n: int, round_size: int, centred: bool):
    masks = np.asarray(A.rise_masks(KEY, n, (H, W), GRID, P), np.float64)  # the adaptive run's masks
    scores = f_np(X[None] * masks[..., None] + B[None] * (1 - masks[..., None]))
    flat = masks.reshape(n, -1)
    mc = (flat - flat.mean(1, keepdims=True)) / P
    if centred:
        errors = reference_errors(np.broadcast_to(mc[:, None], (n, 2, H * W)), round_size, centred_scores=scores)
    else:
        errors = reference_errors(scores[:, :, None] * mc[:, None], round_size)

    def estimate(m):
        s, k = scores[:m], flat[:m]
        if centred:
            return ((s - s.mean(0)).T @ k / ((m - 1) * P)).reshape(2, H, W)
        return (s.T @ k / (m * P)).reshape(2, H, W)

    return errors, estimate


def gradient_terms(name: str, n: int) -> np.ndarray:
    """Per-sample terms (n, 2, H, W, 1) of GradientSHAP / SmoothGrad / SmoothGrad-IG, float64, same draws."""
    keys = jax.random.split(KEY, n)
    noise = np.asarray(jax.vmap(lambda k: jax.random.normal(k, X.shape))(keys), np.float64)
    if name == "gradient_shap":
        draws = A.gradient_shap_draws(KEY, n, X.shape, 1, 0.3)
        delta = X[None] + np.asarray(draws.noise, np.float64) - B[None]
        points = B[None] + np.asarray(draws.alpha, np.float64)[:, None, None, None] * delta
        return grad_np(points) * delta[:, None]
    if name == "smoothgrad":
        return grad_np(X[None] + 0.5 * noise)
    rule = A.quadrature("gausslegendre", 4)
    path = X[None] + 0.3 * noise - B[None]
    total = sum(w * grad_np(B[None] + a * path) for a, w in zip(rule.alphas, rule.weights))
    return total * path[:, None]


RUNS = {
    "gradient_shap": lambda n, **o: A.gradient_shap(f_jax, XJ, BJ[None], KEY, n_samples=n, stdev=0.3, **o),
    "smoothgrad": lambda n, **o: A.smoothgrad(f_jax, XJ, KEY, n_samples=n, stdev=0.5, **o),
    "smooth_integrated_gradients": lambda n, **o: A.smooth_integrated_gradients(
        f_jax, XJ, BJ, KEY, n_samples=n, stdev=0.3, n_steps=4, **o),
}


def rise_run(n, **options):
    return A.rise(f_jax, XJ, BJ, KEY, n_masks=n, grid_size=GRID, keep_prob=P, **options)


# ----------------------------------------------------------------------------- the stopping rule


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.parametrize("centred", [False, True], ids=["plain", "centred"])
def test_rise_stops_where_the_float64_reference_does(centred):
    budget, rounds = 400, 20
    errors, estimate = rise_reference(budget, rounds, centred)
    tol, j = tolerance_between_rounds(errors)
    run = jax.jit(lambda: rise_run(budget, centered=centred, tolerance=tol, round_size=rounds, batch_size=8,
                                   return_passes=True))
    maps, used = run()
    assert int(used) == (j + 1) * rounds
    np.testing.assert_allclose(np.asarray(maps), estimate((j + 1) * rounds), rtol=2e-4, atol=2e-5)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.parametrize("name", list(RUNS))
def test_gradient_methods_stop_where_the_float64_reference_does(name):
    budget, rounds = 60, 3
    terms = gradient_terms(name, budget)
    tol, j = tolerance_between_rounds(reference_errors(terms, rounds))
    maps, used = jax.jit(lambda: RUNS[name](budget, tolerance=tol, round_size=rounds, batch_size=4,
                                            return_passes=True))()
    per_sample = 4 if name == "smooth_integrated_gradients" else 1  # gradient passes per sample
    assert int(used) == (j + 1) * rounds * per_sample
    np.testing.assert_allclose(np.asarray(maps), terms[:(j + 1) * rounds].mean(0), rtol=2e-4, atol=2e-6)


def _quadratic_case(d=16, target_n=60.0, tol=0.1):
    """SmoothGrad of f(z) = z.A z / 2 + b.z: grad = A z + b, so the map's expectation is A x + b
    and the per-pixel variance of a sample sigma^2 (A A^T)_pp: the error after n samples is
    sigma ||A||_F / (sqrt(n) ||A x + b||) in closed form. sigma is chosen so it is tol at n = target_n."""
    rng = np.random.default_rng(5)
    a = rng.normal(size=(d, d))
    a = (a + a.T) / 2
    b, x = rng.normal(size=d), rng.uniform(size=d)
    mean = a @ x + b
    sigma = tol * np.sqrt(target_n) * np.linalg.norm(mean) / np.linalg.norm(a)
    return a, b, x, mean, sigma


def test_the_stop_is_never_earlier_than_the_closed_form_error_needs_on_average_and_lanes_keep_their_own():
    tol, rounds, budget, seeds = 0.1, 5, 400, 48
    a, b, x, mean, sigma = _quadratic_case(tol=tol)
    aj, bj = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    f = lambda z: 0.5 * z.reshape(-1) @ aj @ z.reshape(-1) + bj @ z.reshape(-1)
    xj = jnp.asarray(x.reshape(4, 4, 1), jnp.float32)

    def one(key):
        return A.smoothgrad(f, xj, key, n_samples=budget, stdev=float(sigma), tolerance=tol, round_size=rounds,
                            batch_size=5, return_passes=True)

    keys = jax.random.split(jax.random.key(0), seeds)
    maps, used = jax.jit(jax.vmap(one))(keys)
    used = np.asarray(used)
    needed = sigma ** 2 * np.linalg.norm(a) ** 2 / (tol ** 2 * np.linalg.norm(mean) ** 2)  # = 60 samples
    assert used.min() < used.max() <= budget  # lanes stopped at different rounds
    assert used.mean() >= needed, (used.mean(), needed)
    true_errors = np.linalg.norm(np.asarray(maps, np.float64).reshape(seeds, -1) - mean, axis=1) / np.linalg.norm(mean)
    assert np.sqrt(np.mean(true_errors ** 2)) <= tol * 1.05, true_errors
    # Each lane is its own unbatched run: same stop, same map.
    for lane in (int(np.argmin(used)), int(np.argmax(used))):
        m1, u1 = jax.jit(one)(keys[lane])
        assert int(u1) == used[lane]
        np.testing.assert_allclose(np.asarray(m1), np.asarray(maps[lane]), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- invariance, budget, off


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_same_key_same_map_and_passes_for_every_batch_size():
    budget, rounds = 160, 16
    errors, _ = rise_reference(budget, rounds, True)
    tol, _ = tolerance_between_rounds(errors)
    out = [jax.jit(lambda bs=bs: rise_run(budget, centered=True, tolerance=tol, round_size=rounds, batch_size=bs,
                                          return_passes=True))() for bs in (1, 3, 8)]
    assert len({int(u) for _, u in out}) == 1 and int(out[0][1]) < budget
    for maps, _ in out[1:]:
        np.testing.assert_allclose(np.asarray(maps), np.asarray(out[0][0]), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_the_budget_is_honoured_exactly_and_spent_equals_the_fixed_count():
    # tolerance 0 is never met: the run spends the budget (not a multiple of the round) and no more.
    @jax.jit
    def both():
        spent = rise_run(47, centered=True, tolerance=0.0, round_size=10, batch_size=6, return_passes=True)
        sg = RUNS["smoothgrad"](11, tolerance=0.0, round_size=4, batch_size=3, return_passes=True)
        return spent, rise_run(47, centered=True, batch_size=6), sg, RUNS["smoothgrad"](11, batch_size=3)

    (maps, used), fixed, (sg, sg_used), sg_fixed = both()
    assert int(used) == 47 and int(sg_used) == 11
    np.testing.assert_allclose(np.asarray(maps), np.asarray(fixed), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(sg), np.asarray(sg_fixed), rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_tolerance_off_is_the_fixed_count_bit_for_bit():
    # The options at None take the fixed-count code path unchanged (one program for the four runs).
    gs = RUNS["gradient_shap"]

    @jax.jit
    def runs():
        return (gs(6, tolerance=None, round_size=4, batch_size=4, return_passes=True), gs(6, batch_size=4),
                rise_run(12, centered=True, batch_size=5, tolerance=None), rise_run(12, centered=True, batch_size=5))

    (off, used), fixed, rise_off, rise_fixed = runs()
    np.testing.assert_array_equal(np.asarray(off), np.asarray(fixed))
    assert int(used) == 6
    np.testing.assert_array_equal(np.asarray(rise_off), np.asarray(rise_fixed))


# ----------------------------------------------------------------------------- the table and bad input


def test_the_method_table_offers_the_options_and_reports_passes():
    for name in ("rise", "gradient_shap", "smoothgrad", "smooth_integrated_gradients", "kernel_shap", "lime"):
        assert methods.defaults(name)["tolerance"] is None and methods.reports_passes(name)
        assert methods.get(name).option_spec("tolerance").parse("0.05") == 0.05
    assert not methods.reports_passes("integrated_gradients") and not methods.reports_passes("occlusion")
    assert "return_passes" not in methods.defaults("rise")
    # The run identity (sweep hash) leaves the options out while off, keeps them when set.
    resolved = methods.resolved_options("rise")
    assert "tolerance" not in methods.identity_options(resolved)
    assert methods.identity_options({**resolved, "tolerance": 0.1})["tolerance"] == 0.1
    with pytest.raises(ValueError, match="`return_passes` is not an option of method 'integrated_gradients'"):
        methods.attribute("integrated_gradients", f_jax, XJ, BJ, KEY, return_passes=True)


@pytest.mark.parametrize("options, match", [
    ({"tolerance": -0.1}, "`tolerance` must be None"),
    ({"tolerance": float("nan")}, "`tolerance` must be None"),
    ({"tolerance": 0.1, "round_size": 0}, "`round_size` must be"),
    ({"tolerance": 0.1, "antithetic": True}, "`tolerance` needs i.i.d."),
])
def test_bad_options_are_refused_naming_the_argument(options, match):
    with pytest.raises(ValueError, match=match):
        methods.check_values("rise", {"n_masks": 10, **options}, (H, W, 1))


_MESH_WORKER = r"""
import os
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
import sys
sys.path.insert(0, os.getcwd())
import jax, numpy as np
from cocoa_jax import meshes
from tests.attribution.test_adaptive import RUNS, rise_run
mesh = meshes.make_mesh()
assert mesh.size == 8, mesh.size
runs = {
    "rise": lambda m: rise_run(200, centered=True, tolerance=0.25, round_size=20, batch_size=8, mesh=m,
                               return_passes=True),
    "gradient_shap": lambda m: RUNS["gradient_shap"](40, tolerance=0.15, round_size=4, batch_size=3, mesh=m,
                                                     return_passes=True),
}
for name, run in runs.items():
    (a, ua), (b, ub) = run(mesh), run(None)
    assert int(ua) == int(ub), (name, int(ua), int(ub))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6, err_msg=name)
    print(name, int(ua))
print("OK")
"""


@pytest.mark.slow
def test_same_key_same_map_and_passes_on_one_and_eight_devices():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", _MESH_WORKER], capture_output=True, text=True, env=env,
                          timeout=600, cwd=REPO)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]


def kernel_shap_reference(n: int, round_size: int, superpixel: int):
    """Captum's KernelSHAP fit in float64 NumPy (weighted least squares with an intercept, anchors
    weighted 1e6) on the run's coalitions: every round's own fit and the fit of all rounds so far."""
    from cocoa_jax.attribution_methods._perturbation import feature_labels

    labels, m = feature_labels(X.shape, superpixel, None)
    z = np.asarray(A.kernel_shap_coalitions(KEY, n, m), np.float64)
    pixel = z[:, labels]
    y = f_np(B[None] + pixel[..., None] * (X - B)[None])  # a feature off takes the baseline

    def fit(rows):
        zz = np.concatenate([z[:2], z[rows]])
        yy = np.concatenate([y[:2], y[rows]])
        w = np.sqrt(np.concatenate([[1e6, 1e6], np.ones(len(rows))]))
        design = np.concatenate([np.ones((len(zz), 1)), zz], axis=1) * w[:, None]
        return np.linalg.lstsq(design, yy * w[:, None], rcond=None)[0][1:]  # (M, K)

    rounds = [np.arange(2 + r * round_size, 2 + (r + 1) * round_size) for r in range((n - 2) // round_size)]
    own = [fit(rows) for rows in rounds]
    errors, cumulative = [], []
    for j in range(len(rounds)):
        phi = fit(np.concatenate(rounds[:j + 1]))
        cumulative.append(phi)
        if j == 0:
            errors.append(np.inf)
            continue
        se = np.std(own[:j + 1], axis=0, ddof=1) / np.sqrt(j + 1)
        errors.append(np.max(np.linalg.norm(se, axis=0) / np.linalg.norm(phi, axis=0)))
    return np.asarray(errors), cumulative, labels


def lime_reference(n: int, round_size: int, superpixel: int):
    """LIME in float64 with sklearn's weighted Lasso (alpha 0.01, cosine kernel of width 1) on the
    run's coalitions: every round's own fit and the fit of all rounds so far, and the errors."""
    from sklearn.linear_model import Lasso

    from cocoa_jax.attribution_methods._perturbation import feature_labels

    labels, m = feature_labels(X.shape, superpixel, None)
    z = np.asarray(A.lime_coalitions(KEY, n, m), np.float64)
    inputs = B[None] + z[:, labels][..., None] * (X - B)[None]
    flat = inputs.reshape(n, -1)
    cos = flat @ X.ravel() / (np.linalg.norm(flat, axis=1) * np.linalg.norm(X))
    w, y = np.exp(-(1 - cos) ** 2 / 2), f_np(inputs)

    def fit(rows):
        lasso = lambda col: Lasso(alpha=0.01, tol=1e-12, max_iter=100000).fit(z[rows], y[rows, col],
                                                                             sample_weight=w[rows]).coef_
        return np.stack([lasso(0), lasso(1)], axis=1)  # (M, K)

    rounds = [np.arange(r * round_size, (r + 1) * round_size) for r in range(n // round_size)]
    own = [fit(rows) for rows in rounds]
    errors, cumulative = [np.inf], [own[0]]
    for j in range(1, len(rounds)):
        phi = fit(np.concatenate(rounds[:j + 1]))
        cumulative.append(phi)
        se = np.std(own[:j + 1], axis=0, ddof=1) / np.sqrt(j + 1)
        errors.append(np.max(np.linalg.norm(se, axis=0) / np.linalg.norm(phi, axis=0)))
    return np.asarray(errors), cumulative, labels


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_lime_stops_where_the_float64_sklearn_batch_means_reference_does():
    budget, rounds, superpixel = 12 * 30, 30, 2
    errors, cumulative, labels = lime_reference(budget, rounds, superpixel)
    tol, j = tolerance_between_rounds(errors)
    maps, used = jax.jit(lambda: A.lime(f_jax, XJ, BJ, KEY, n_samples=budget, superpixel=superpixel,
                                        tolerance=tol, round_size=rounds, batch_size=16, return_passes=True))()
    assert int(used) == 1 + (j + 1) * rounds  # f(x), which centres the scores, is a pass too
    np.testing.assert_allclose(np.asarray(maps), np.moveaxis(cumulative[j][labels], -1, 0), rtol=1e-3, atol=2e-4)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_kernel_shap_stops_where_the_float64_batch_means_reference_does():
    budget, rounds, superpixel = 2 + 12 * 30, 30, 2
    errors, cumulative, labels = kernel_shap_reference(budget, rounds, superpixel)
    tol, j = tolerance_between_rounds(errors)
    maps, used = jax.jit(lambda: A.kernel_shap(f_jax, XJ, BJ, KEY, n_samples=budget, superpixel=superpixel,
                                               tolerance=tol, round_size=rounds, batch_size=16,
                                               return_passes=True))()
    assert int(used) == 2 + (j + 1) * rounds  # the anchors are passes too
    expected = np.moveaxis(cumulative[j][labels], -1, 0)
    np.testing.assert_allclose(np.asarray(maps), expected, rtol=1e-3, atol=2e-4)
