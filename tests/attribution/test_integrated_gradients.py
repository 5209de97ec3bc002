"""Integrated Gradients (fixed quadrature rules and the adaptive nested grid) against the exact path
integral of a separable target and float64 quadrature sums."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import attribution, methods, targets
from tests.support.toy_attribution import FREQ, RNG, SHAPE, W, f_sin, f_tanh, f_vec, grad_tanh_np, jac_vec_np


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


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
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
