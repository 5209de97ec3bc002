"""Each AttnLRP rule of cocoa_jax.attribution_methods.lrp_rules against a float64 NumPy statement
of the rule in relevance form (R_in from R_out, written from the paper's equations), on a small
layer: gradient x input of the rule's backward must be that relevance.

The output relevance is R_out = c * out for a random cotangent c (gradient x output), so
x * d<c, rule(x)>/dx is the rule's input relevance."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from math import erf

from cocoa_jax.attribution_methods import lrp_rules

RNG = np.random.default_rng(0)


def _relevance_in(fn, c, *inputs):
    """Each input times the gradient of <c, fn(*inputs)> (float64)."""
    with jax.enable_x64(True):
        args = [jnp.asarray(a, jnp.float64) for a in inputs]
        grads = jax.grad(lambda *a: jnp.sum(jnp.asarray(c) * fn(*a)), argnums=tuple(range(len(args))))(*args)
        return [np.asarray(a * g) for a, g in zip(args, grads)]


def test_epsilon_rule_on_a_linear_layer():
    x, w, b = RNG.normal(size=(5, 4)), RNG.normal(size=(4, 3)), RNG.normal(size=3)
    c = RNG.normal(size=(5, 3))
    eps = 0.3  # large, so the epsilon term is visible
    z = x @ w + b
    r_out = c * z
    # Epsilon rule: R_i = sum_j x_i w_ij R_j / (z_j + eps sign z_j)
    expected = np.einsum("ni,ij,nj->ni", x, w, r_out / (z + eps * np.where(z >= 0, 1, -1)))
    got, = _relevance_in(lambda a: lrp_rules.epsilon(a @ jnp.asarray(w) + jnp.asarray(b), eps), c, x)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    # eps = 0 (the ports' LINEAR_EPSILON): the plain gradient, also where z = 0 (no 0 / 0).
    zero = np.zeros((1, 3))
    got0, = _relevance_in(lambda a: lrp_rules.epsilon(a @ jnp.asarray(w), 0.0), c[:1], np.vstack([x[:1]]))
    np.testing.assert_allclose(got0, x[:1] * (c[:1] @ w.T), rtol=1e-12)
    with jax.enable_x64(True):
        g = jax.grad(lambda z: jnp.sum(jnp.asarray(c[:1]) * lrp_rules.epsilon(z, 0.0)))(jnp.asarray(zero))
    np.testing.assert_array_equal(np.asarray(g), c[:1])
    # Forward unchanged: the same bits as the plain layer.
    z32 = jnp.asarray(z, jnp.float32)
    assert np.array_equal(np.asarray(lrp_rules.epsilon(z32)), np.asarray(z32))


def test_identity_rule_on_gelu_and_quick_gelu():
    h = RNG.normal(size=(3, 7)) * 2
    c = RNG.normal(size=(3, 7))
    gelu = np.vectorize(lambda t: 0.5 * t * (1.0 + erf(t / np.sqrt(2.0))))
    for jax_fn, np_fn in ((lambda t: jax.nn.gelu(t, approximate=False), gelu),
                          (lambda t: t * jax.nn.sigmoid(1.702 * t), lambda t: t / (1 + np.exp(-1.702 * t)))):
        # Identity rule: R_in = R_out (times x / (x + tiny sign x), the stabiliser at x = 0)
        got, = _relevance_in(lambda a: lrp_rules.identity(jax_fn, a), c, h)
        tiny = lrp_rules.ACTIVATION_EPSILON * np.where(h >= 0, 1, -1)
        np.testing.assert_allclose(got, c * np_fn(h) * h / (h + tiny), rtol=1e-10)  # erf: last digits
        np.testing.assert_allclose(got, c * np_fn(h), rtol=1e-7)
    # x = 0 exactly: no division by zero (fn(0) = 0 passes no relevance).
    g = jax.grad(lambda a: jnp.sum(lrp_rules.identity(jax.nn.gelu, a)))(jnp.zeros(3))
    assert np.all(np.isfinite(np.asarray(g)))


def test_softmax_rule():
    x = RNG.normal(size=(2, 3, 6)) * 3
    c = RNG.normal(size=(2, 3, 6))
    s = np.exp(x - x.max(-1, keepdims=True))
    s /= s.sum(-1, keepdims=True)
    r_out = c * s
    # AttnLRP softmax rule (Prop. 3.1): R_in_i = x_i (R_out_i - s_i sum_j R_out_j)
    expected = x * (r_out - s * r_out.sum(-1, keepdims=True))
    got, = _relevance_in(lambda a: lrp_rules.softmax(a, -1), c, x)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    # Over another axis too.
    s0 = np.exp(x - x.max(0, keepdims=True))
    s0 /= s0.sum(0, keepdims=True)
    got0, = _relevance_in(lambda a: lrp_rules.softmax(a, 0), c, x)
    np.testing.assert_allclose(got0, x * (c * s0 - s0 * (c * s0).sum(0, keepdims=True)), rtol=1e-10, atol=1e-12)


def test_uniform_rule_on_bilinear_products():
    a, b = RNG.normal(size=(2, 4, 3)), RNG.normal(size=(2, 3, 5))
    c = RNG.normal(size=(2, 4, 5))
    z = np.einsum("nik,nkj->nij", a, b)
    r_out = c * z
    # Uniform rule: each factor gets half of R_ij in proportion to its term a_ik b_kj / z_ij.
    expected_a = 0.5 * np.einsum("nik,nkj,nij->nik", a, b, r_out / z)
    expected_b = 0.5 * np.einsum("nik,nkj,nij->nkj", a, b, r_out / z)
    got_a, got_b = _relevance_in(lambda u, v: lrp_rules.bilinear("nik,nkj->nij", u, v), c, a, b)
    np.testing.assert_allclose(got_a, expected_a, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got_b, expected_b, rtol=1e-9, atol=1e-12)
    assert np.isclose(got_a.sum() + got_b.sum(), r_out.sum())  # conservative
    # Element-wise product (a gate): half to each factor.
    u, v, c2 = RNG.normal(size=6), RNG.normal(size=6), RNG.normal(size=6)
    got_u, got_v = _relevance_in(lambda p, q: lrp_rules.bilinear("...,...->...", p, q), c2, u, v)
    np.testing.assert_allclose(got_u, 0.5 * c2 * u * v, rtol=1e-12)
    np.testing.assert_allclose(got_v, 0.5 * c2 * u * v, rtol=1e-12)


def test_layer_norm_rule():
    x = RNG.normal(size=(3, 8)) * 2 + 1
    scale, bias = RNG.normal(size=8), RNG.normal(size=8)
    c = RNG.normal(size=(3, 8))
    eps = 1e-6
    mu = x.mean(-1, keepdims=True)
    sigma = np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)
    y = (x - mu) / sigma * scale + bias
    r_out = c * y
    # Identity rule on the normalisation: sigma a constant, so x -> y is the linear map
    # M x / sigma * scale + bias (M centres); the epsilon-0 rule of that map.
    d = x.shape[-1]
    centring = np.eye(d) - 1.0 / d
    expected = np.einsum("ni,ji,nj->ni", x, centring, r_out * scale / sigma / y)  # y: the output z
    got_x, got_scale, got_bias = _relevance_in(lambda a, s, b: lrp_rules.layer_norm(a, s, b, eps), c, x, scale, bias)
    np.testing.assert_allclose(got_x, expected, rtol=1e-8, atol=1e-10)
    # Bias keeps its share; x's relevance + bias's relevance = R_out (conservation up to the bias).
    np.testing.assert_allclose(got_x.sum() + got_bias.sum(), r_out.sum(), rtol=1e-10)
    np.testing.assert_allclose(got_bias, bias * c.sum(0), rtol=1e-10)
    np.testing.assert_allclose(got_scale, scale * (c * (x - mu) / sigma).sum(0), rtol=1e-10)


def test_layer_norm_module_matches_flax_forward_bit_for_bit():
    import flax.linen as nn

    x = jnp.asarray(RNG.normal(size=(2, 5, 16)), jnp.float32)
    params = {"params": {"scale": jnp.asarray(RNG.normal(size=16), jnp.float32),
                         "bias": jnp.asarray(RNG.normal(size=16), jnp.float32)}}
    for eps in (1e-5, 1e-6):
        plain = nn.LayerNorm(epsilon=eps, use_fast_variance=False).apply(params, x)
        rule = lrp_rules.LayerNorm(eps).apply(params, x)
        assert np.array_equal(np.asarray(plain), np.asarray(rule))


@pytest.mark.parametrize("lrp", [False, True])
def test_ops_forward_values_are_the_plain_operations(lrp):
    op = lrp_rules.ops(lrp)
    a = jnp.asarray(RNG.normal(size=(2, 3, 2, 4)), jnp.float32)
    b = jnp.asarray(RNG.normal(size=(2, 3, 2, 4)), jnp.float32)
    logits = op.einsum("nqhd,nkhd->nhqk", a, b)
    assert np.array_equal(np.asarray(logits), np.asarray(jnp.einsum("nqhd,nkhd->nhqk", a, b)))
    assert np.array_equal(np.asarray(op.softmax(logits)), np.asarray(jax.nn.softmax(logits, axis=-1)))
    assert np.array_equal(np.asarray(op.activation(jax.nn.silu, a)), np.asarray(jax.nn.silu(a)))
    assert np.array_equal(np.asarray(op.multiply(a, b)), np.asarray(a * b))
    assert np.array_equal(np.asarray(op.linear(a)), np.asarray(a))
