"""Behaviour every method of the table shares (batch-size invariance, jit, K stacking, vmap over
explicands, keys, bad inputs, bfloat16); each method's own numerics are in test_<method>.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import attribution, methods, targets
from tests.support.toy_tokens import toy_token_scorer
from tests.support.toy_attribution import FREQ, RNG, SHAPE, W, f_sin, f_tanh, f_vec, grad_tanh_np, jac_vec_np


def _small_options(name):
    """The method's own defaults with every sample / step / mask count cut to 10 (even, for
    antithetic options): a method added to `methods.METHODS` gets these tests unchanged."""
    return {option: 10 for option, default in methods.defaults(name).items()
            if option.startswith("n_") and isinstance(default, int) and not isinstance(default, bool)}


def _run_method(name):
    options = _small_options(name)
    # Methods that read a ViT's tokens (rollout) explain a toy TokenScorer around the same f.
    wrap = toy_token_scorer if methods.reads_tokens(name, options) else (lambda f: f)
    return lambda f, x, b, key, bs: methods.attribute(name, wrap(f), x, b, key, batch_size=bs, **options)


METHODS = {name: _run_method(name) for name in methods.ATTRIBUTION_METHODS}
# LIME fits a Lasso by coordinate descent: the summation order of a batch size moves its
# solution by ~2e-5 (an iterative solver's rounding, not a different estimate).
ATOL = {"lime": 1e-4}


def test_every_method_of_the_table_is_covered():
    assert set(METHODS) >= {"integrated_gradients", "gradient_shap", "rise", "smoothgrad", "vanilla_gradients",
                            "kernel_shap", "lime", "occlusion", "smooth_integrated_gradients"}


# The perturbation methods' own test files keep quick invariance checks; here they run in the full suite.
QUICK = {"integrated_gradients", "vanilla_gradients"}  # the others take 10-20 s each: full suite only
BY_SPEED = [n if n in QUICK else pytest.param(n, marks=pytest.mark.slow) for n in sorted(METHODS)]


@pytest.mark.parametrize("name", BY_SPEED)
def test_batch_size_invariance_jit_and_k_stacking(name, x, baseline):
    """Every chunking path of n = 10 samples gives the reference's map: one chunk (None, and 100 > n),
    a rolled loop of equal chunks (1), a loop plus a shorter remainder (4, jitted). The jitted batch-4
    program also returns the K = 3 scalar runs (vmapped over k: each lane is a scalar-output f), which
    must equal the rows of the stacked run. (Batch 9 was dropped: it is the loop-plus-remainder path of
    batch 4 again; each variant is one XLA compile, the whole cost of this test.)"""
    method = METHODS[name]
    key = jax.random.PRNGKey(11)
    reference = method(f_vec, x, baseline, key, None)
    atol = ATOL.get(name, 1e-6)
    for batch_size in (1, 100):
        np.testing.assert_allclose(method(f_vec, x, baseline, key, batch_size), reference, rtol=1e-5, atol=atol)

    def stacked_and_singles(x, b, key):
        single = lambda k: method(lambda z: f_vec(z)[k], x, b, key, 4)
        return method(f_vec, x, b, key, 4), jax.vmap(single)(jnp.arange(3))

    jitted, singles = jax.jit(stacked_and_singles)(x, baseline, key)
    np.testing.assert_allclose(jitted, reference, rtol=1e-5, atol=atol)
    # K stacked outputs == K separate scalar runs
    for k in range(3):
        np.testing.assert_allclose(reference[k], singles[k], rtol=1e-5, atol=atol)


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
    one_at_a_time = jax.jit(run)  # one compile for the three explicands of the loop
    for i in range(3):
        one = jax.tree_util.tree_map(lambda d: d[i], per)
        np.testing.assert_allclose(batched[i], one_at_a_time(xs[i], bs[i], one, keys[i]), rtol=1e-4, atol=1e-6)


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


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_bfloat16_inputs_are_accepted(x, baseline):
    """bf16 perturbations work end to end (np.issubdtype does not know bfloat16 is floating)."""
    attr = attribution.integrated_gradients(f_tanh, x.astype(jnp.bfloat16), baseline.astype(jnp.bfloat16), n_steps=8)
    assert attr.dtype == jnp.bfloat16
    reference = attribution.integrated_gradients(f_tanh, x, baseline, n_steps=8)
    np.testing.assert_allclose(np.asarray(attr, np.float32), reference, atol=3e-2 * float(jnp.abs(reference).max()))
    with pytest.raises(ValueError, match="x.*NaN"):
        attribution.integrated_gradients(f_tanh, x.astype(jnp.bfloat16).at[0, 0, 0].set(jnp.nan),
                                         baseline.astype(jnp.bfloat16))
