"""Each conv rule of cocoa_jax.attribution_methods.lrp_conv_rules against a float64 NumPy
statement of the rule in relevance form (R_in from R_out, as zennit's `ZPlus` / `Flat` /
`MergeBatchNorm` define them), on a small strided, padded conv written out as explicit sums
over receptive fields (no convolution routine on the NumPy side).

The output relevance is R_out = c * y for a random cotangent c. z+ keeps the gradient x input
convention (x * cotangent = R_in); the flat rule's cotangent is R_in itself."""
import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax.attribution_methods import lrp_conv_rules as rules

RNG = np.random.default_rng(0)
K, STRIDE, PAD = 3, 2, 1
SPEC = rules.ConvSpec((STRIDE, STRIDE), ((PAD, PAD), (PAD, PAD)))


def _contributions(x, w):
    """a[n, i, j, ci, p, q, co] = x[n, i, j, ci] * w[i - p*S + P, j - q*S + P, ci, co] (0 outside
    the window or in padding): input (i, j, ci)'s term in output (p, q, co); float64."""
    n, h, wd, cin = x.shape
    cout = w.shape[-1]
    ho, wo = (h + 2 * PAD - K) // STRIDE + 1, (wd + 2 * PAD - K) // STRIDE + 1
    a = np.zeros((n, h, wd, cin, ho, wo, cout))
    for p in range(ho):
        for q in range(wo):
            for di in range(K):
                for dj in range(K):
                    i, j = p * STRIDE - PAD + di, q * STRIDE - PAD + dj
                    if 0 <= i < h and 0 <= j < wd:
                        a[:, i, j, :, p, q, :] = x[:, i, j, :, None] * w[di, dj][None]
    return a


def _signed(z, eps):
    return z + eps * np.where(z >= 0, 1.0, -1.0)


def test_conv_spec_is_the_explicit_sum():
    x, w = RNG.normal(size=(2, 5, 6, 2)), RNG.normal(size=(K, K, 2, 3))
    with jax.enable_x64(True):
        got = np.asarray(SPEC(jnp.asarray(x), jnp.asarray(w)))
    np.testing.assert_allclose(got, _contributions(x, w).sum(axis=(1, 2, 3)), rtol=1e-12, atol=1e-12)


def test_zplus_rule():
    x, w, b = RNG.normal(size=(2, 5, 6, 2)), RNG.normal(size=(K, K, 2, 3)), RNG.normal(size=3)
    eps = 0.3  # large, so a wrong stabiliser shows
    y = _contributions(x, w).sum(axis=(1, 2, 3)) + b
    c = RNG.normal(size=y.shape)
    # z+ (zennit ZPlus): R_i = sum_j (x+_i w+_ij + x-_i w-_ij) R_j / (z_j + eps), z_j the sum of those
    # terms plus b+_j; R_j = c_j y_j.
    terms = _contributions(np.maximum(x, 0), np.maximum(w, 0)) + _contributions(np.minimum(x, 0), np.minimum(w, 0))
    z = terms.sum(axis=(1, 2, 3)) + np.maximum(b, 0)
    expected = np.einsum("nhwcpqo,npqo->nhwc", terms, c * y / _signed(z, eps))
    with jax.enable_x64(True):
        wj, bj = jnp.asarray(w), jnp.asarray(b)

        def score(xj):  # the plain layer computes y inside: its own gradient path must be cut
            return jnp.sum(jnp.asarray(c) * rules.zplus(SPEC, eps, SPEC(xj, wj) + bj, xj, wj, bj))

        grad = np.asarray(jax.grad(score)(jnp.asarray(x)))
        forward = np.asarray(rules.zplus(SPEC, eps, jnp.asarray(y), jnp.asarray(x), wj, bj))
    np.testing.assert_allclose(x * grad, expected, rtol=1e-10, atol=1e-12)
    assert np.array_equal(forward, y)
    # Conservation: sum R_in = sum R_out (z - b+) / (z + eps).
    np.testing.assert_allclose(expected.sum(), np.sum(c * y * (z - np.maximum(b, 0)) / _signed(z, eps)), rtol=1e-10)


def test_zplus_in_float32_with_float32_params_and_float64_input():
    # flax promotes a float64 input against float32 params; the rule must too (no dtype error).
    x, w, b = RNG.normal(size=(1, 5, 5, 2)), RNG.normal(size=(K, K, 2, 3)).astype(np.float32), np.zeros(3, np.float32)
    with jax.enable_x64(True):
        xj = jnp.asarray(x)
        g = jax.grad(lambda a: jnp.sum(rules.zplus(SPEC, 1e-6, SPEC(a, jnp.asarray(w, a.dtype)), a,
                                                   jnp.asarray(w), jnp.asarray(b))))(xj)
    assert g.dtype == jnp.float64 and np.all(np.isfinite(np.asarray(g)))


def test_flat_rule():
    x, w = RNG.normal(size=(2, 5, 6, 2)), RNG.normal(size=(K, K, 2, 3))
    y = _contributions(x, w).sum(axis=(1, 2, 3))
    c = RNG.normal(size=y.shape)
    eps = 0.3
    # Flat (zennit Flat): weights and inputs 1, bias 0: R_i = sum_j [i in window j] R_j / (count_j + eps),
    # count_j = the window's non-padding inputs (times Cin).
    ones = _contributions(np.ones_like(x), np.ones_like(w))
    count = ones.sum(axis=(1, 2, 3))
    expected = np.einsum("nhwcpqo,npqo->nhwc", ones, c * y / _signed(count, eps))
    with jax.enable_x64(True):
        wj = jnp.asarray(w)
        cotangent = np.asarray(jax.grad(lambda a: jnp.sum(jnp.asarray(c) * rules.flat(SPEC, eps, SPEC(a, wj), a, wj)))(
            jnp.asarray(x)))
    np.testing.assert_allclose(cotangent, expected, rtol=1e-10, atol=1e-12)  # the relevance itself, not R / x
    assert 0 < count.min() < count.max()  # padding excluded: border windows count fewer inputs


def test_fold_batch_norm_is_the_conv_followed_by_batch_norm():
    x, w = RNG.normal(size=(1, 5, 6, 2)), RNG.normal(size=(K, K, 2, 3))
    scale, bias, mean, var = RNG.uniform(0.5, 1.5, 3), RNG.normal(size=3), RNG.normal(size=3), RNG.uniform(0.5, 2, 3)
    bn_eps = 1e-5
    conv = _contributions(x, w).sum(axis=(1, 2, 3))
    expected = (conv - mean) / np.sqrt(var + bn_eps) * scale + bias
    with jax.enable_x64(True):
        kernel, folded_bias = rules.fold_batch_norm(*(jnp.asarray(a) for a in (w, scale, bias, mean, var)), bn_eps)
        got = np.asarray(SPEC(jnp.asarray(x), kernel) + folded_bias)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_pass_relevance():
    mean, std = np.array([0.4, 0.5, 0.6]), np.array([0.2, 0.25, 0.3])
    normalize = lambda t: (t - mean) / std  # noqa: E731
    x, c = RNG.uniform(size=(4, 3)), RNG.normal(size=(4, 3))
    with jax.enable_x64(True):
        out = np.asarray(rules.pass_relevance(normalize, jnp.asarray(x)))
        plain = np.asarray(normalize(jnp.asarray(x)))
        g = np.asarray(jax.grad(lambda a: jnp.sum(jnp.asarray(c) * rules.pass_relevance(normalize, a)))(jnp.asarray(x)))
    np.testing.assert_array_equal(out, plain)  # the forward is the map itself
    np.testing.assert_allclose(out, normalize(x), rtol=1e-14)
    np.testing.assert_array_equal(g, c)  # not c / std: relevance passes unchanged
