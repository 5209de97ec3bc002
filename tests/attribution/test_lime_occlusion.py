"""LIME (Captum's Lime on the same coalitions, additive models) and Occlusion (equal to Captum's)."""
from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax.attribution_methods import lime, lime_coalitions, occlusion, superpixel_map

H, W, C = 4, 6, 2
RNG = np.random.default_rng(1)
WEIGHTS = RNG.normal(size=(3, H * W * C)) / 2
X = RNG.uniform(size=(H, W, C)).astype(np.float32)
BASE = (0.2 * RNG.uniform(size=(H, W, C))).astype(np.float32)
LABELS = superpixel_map(H, W, 2, 2)
M = int(LABELS.max()) + 1
GAINS = RNG.uniform(0.5, 2.0, size=(H, W, C))


def f_vec(x):
    return jnp.tanh(jnp.asarray(WEIGHTS, x.dtype) @ x.reshape(-1))


def f_additive(x):
    return jnp.sum(jnp.sin(jnp.asarray(GAINS, x.dtype) * x))


def torch_forward(torch):
    def forward(xt):  # NCHW -> (N, 3), the same function as f_vec
        flat = xt.permute(0, 2, 3, 1).reshape(xt.shape[0], -1)
        return torch.tanh(flat @ torch.tensor(WEIGHTS, dtype=torch.float32).T)
    return forward


def to_torch(torch, a):
    return torch.tensor(np.asarray(a)).permute(2, 0, 1)[None]


run_lime = jax.jit(lambda f, x, key, n, alpha=0.01, batch_size=None: lime(
    f, x, BASE, key, n_samples=n, superpixel=2, alpha=alpha, batch_size=batch_size), static_argnums=(0, 3, 4, 5))


# ----------------------------------------------------------------------------- LIME


@pytest.mark.torch
def test_lime_equals_captum_lime_on_the_same_coalitions():
    torch = pytest.importorskip("torch")
    from captum.attr import Lime

    n = 200
    ours = np.asarray(run_lime(f_vec, X, jax.random.key(0), n))
    coalitions = np.asarray(lime_coalitions(jax.random.key(0), n, M))

    def replay(original_inp, **kwargs):
        for row in coalitions:
            yield torch.tensor(row[None], dtype=torch.long)

    mask = torch.tensor(LABELS)[None, None].expand(1, C, H, W)
    zeros = 0
    for target in range(3):
        ref = Lime(torch_forward(torch), perturb_func=replay).attribute(
            to_torch(torch, X), to_torch(torch, BASE), target=target, feature_mask=mask, n_samples=n)[0, 0].numpy()
        np.testing.assert_allclose(ours[target], ref, rtol=2e-3, atol=2e-4 * np.abs(ref).max())
        zeros += np.sum(ref == 0)
        assert np.all((ref == 0) == (np.abs(ours[target]) < 1e-6))  # the same Lasso zeros
    assert zeros > 0  # alpha = 0.01 really sparsifies here


LABELS_1 = np.zeros((H, W), int)  # one feature
LABELS_2 = (np.arange(W)[None] >= 3).repeat(H, 0).astype(int)  # two features


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.torch
@pytest.mark.parametrize("labels, n, alpha", [(LABELS_1, 3, 0.01), (LABELS_2, 3, 0.0), (LABELS, 3, 0.01),
                                              (LABELS, 5, 0.0), (LABELS, 1, 0.01)],
                         ids=["1_feature_never_varied", "2_features_alpha0", "6_features_3_samples",
                              "6_features_5_samples_alpha0", "1_sample"])
def test_lime_on_rank_deficient_designs_equals_captum(labels, n, alpha):
    """Few samples for the features (constant and duplicated columns, fewer rows than unknowns,
    alpha = 0 where the least squares has many minimisers): finite, and Captum's sklearn Lasso
    (same cyclic coordinate descent from 0) on the same coalitions."""
    torch = pytest.importorskip("torch")
    from captum._utils.models.linear_model import SkLearnLasso
    from captum.attr import Lime

    m = int(labels.max()) + 1
    key = jax.random.key(n)
    ours = np.asarray(lime(f_vec, X, BASE, key, n_samples=n, feature_mask=labels, alpha=alpha))
    coalitions = np.asarray(lime_coalitions(key, n, m))
    rank = np.linalg.matrix_rank(coalitions - coalitions.mean(0))
    assert rank < m  # the design really is degenerate
    assert np.all(np.isfinite(ours))

    def replay(original_inp, **kwargs):
        for row in coalitions:
            yield torch.tensor(row[None], dtype=torch.long)

    mask = torch.tensor(labels)[None, None].expand(1, C, H, W)
    for target in range(3):
        explainer = Lime(torch_forward(torch), interpretable_model=SkLearnLasso(alpha=alpha), perturb_func=replay)
        with warnings.catch_warnings():  # sklearn: alpha = 0 "does not converge well"
            warnings.simplefilter("ignore")
            ref = explainer.attribute(to_torch(torch, X), to_torch(torch, BASE), target=target, feature_mask=mask,
                                      n_samples=n)[0, 0].numpy()
        np.testing.assert_allclose(ours[target], ref, rtol=2e-3, atol=2e-4 * max(np.abs(ref).max(), 1e-6))
    if rank > 0:
        assert np.abs(ours).max() > 0  # not trivially all zero (a feature never varied gets 0, as in sklearn)


def test_lime_recovers_an_additive_model_without_penalty():
    own = np.array([np.sum(np.sin(GAINS * X)[LABELS == j] - np.sin(GAINS * BASE)[LABELS == j]) for j in range(M)])
    attr = np.asarray(run_lime(f_additive, X, jax.random.key(1), 40, 0.0))
    np.testing.assert_allclose(np.stack([attr[LABELS == j].mean() for j in range(M)]), own, rtol=1e-3, atol=1e-4)
    # With Captum's alpha = 0.01 every coefficient shrinks towards 0 (so the test can fail).
    shrunk = np.asarray(run_lime(f_additive, X, jax.random.key(1), 40))
    assert np.all(np.abs(np.stack([shrunk[LABELS == j].mean() for j in range(M)])) < np.abs(own))


def test_lime_coalitions_are_fair_coins():
    z = np.asarray(lime_coalitions(jax.random.key(2), 4000, M))
    assert set(np.unique(z)) == {0.0, 1.0}
    np.testing.assert_allclose(z.mean(0), 0.5, atol=0.03)
    np.testing.assert_allclose(np.corrcoef(z.T) - np.eye(M), 0.0, atol=0.06)


@pytest.mark.slow  # ~23 s on a shared CPU (one compile per variant)
def test_lime_invariances():
    key = jax.random.key(3)
    ref = run_lime(f_vec, X, key, 50)
    np.testing.assert_allclose(run_lime(f_vec, X, key, 50, 0.01, 7), ref, rtol=1e-3, atol=1e-5)
    for t in range(3):
        np.testing.assert_allclose(run_lime(lambda x, t=t: f_vec(x)[t], X, key, 50), ref[t], rtol=1e-3, atol=1e-5)
    xs = jnp.asarray(RNG.uniform(size=(2, H, W, C)), jnp.float32)
    keys = jax.random.split(key, 2)
    batched = jax.vmap(lambda x, k: run_lime(f_vec, x, k, 50))(xs, keys)
    for i in range(2):
        np.testing.assert_allclose(batched[i], run_lime(f_vec, xs[i], keys[i], 50), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("kwargs, match", [(dict(n_samples=0), "n_samples"), (dict(alpha=-1.0), "alpha"),
                                           (dict(kernel_width=0.0), "kernel_width"), (dict(superpixel=9), "superpixel"),
                                           (dict(batch_size=0), "batch_size")])
def test_lime_argument_checks(kwargs, match):
    x = jax.ShapeDtypeStruct((H, W, C), jnp.float32)
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(lambda x_: lime(f_vec, x_, x_, jax.random.key(0), **kwargs), x)


# ----------------------------------------------------------------------------- Occlusion


OCCLUSION_CASES = [((2, 2), (2, 2)), ((2, 3), (1, 2)), ((3, 4), (2, 3)), ((1, 1), (1, 1)), ((4, 6), (1, 1))]
run_occlusion = jax.jit(lambda f, x, window, stride, batch_size=None: occlusion(
    f, x, BASE, window=window, stride=stride, batch_size=batch_size), static_argnums=(0, 2, 3, 4))


@pytest.mark.torch
@pytest.mark.parametrize("window, stride", OCCLUSION_CASES)
def test_occlusion_equals_captum(window, stride):
    torch = pytest.importorskip("torch")
    from captum.attr import Occlusion

    ours = np.asarray(run_occlusion(f_vec, X, window, stride))
    explainer = Occlusion(torch_forward(torch))
    for target in range(3):
        ref = explainer.attribute(to_torch(torch, X), sliding_window_shapes=(C,) + window, strides=(C,) + stride,
                                  baselines=to_torch(torch, BASE), target=target)[0].numpy()
        assert np.allclose(ref, ref[:1])  # every channel occluded together: one map
        np.testing.assert_allclose(ours[target], ref[0], rtol=1e-4, atol=1e-6)
    # K = 1 (a scalar f) too.
    scalar = np.asarray(run_occlusion(lambda x: f_vec(x)[1], X, window, stride))
    np.testing.assert_allclose(scalar, ours[1], rtol=1e-5, atol=1e-7)


def test_occlusion_of_an_additive_model_is_the_mean_window_effect():
    """1x1 windows on an additive f: each pixel's own change, independent of everything else."""
    attr = np.asarray(run_occlusion(f_additive, X, (1, 1), (1, 1)))
    np.testing.assert_allclose(attr, np.sum(np.sin(GAINS * X) - np.sin(GAINS * BASE), -1), rtol=1e-4, atol=1e-5)


def test_occlusion_invariances_and_defaults():
    ref = run_occlusion(f_vec, X, (2, 3), (1, 2))
    for batch_size in (1, 4):
        np.testing.assert_allclose(run_occlusion(f_vec, X, (2, 3), (1, 2), batch_size), ref, rtol=1e-5, atol=1e-6)
    xs = jnp.asarray(RNG.uniform(size=(2, H, W, C)), jnp.float32)
    batched = jax.vmap(lambda x: run_occlusion(f_vec, x, (2, 3), (1, 2)))(xs)
    for i in range(2):
        np.testing.assert_allclose(batched[i], run_occlusion(f_vec, xs[i], (2, 3), (1, 2)), rtol=1e-5, atol=1e-6)
    big = jnp.zeros((32, 32, 3))
    out = jax.eval_shape(lambda x: occlusion(lambda v: jnp.stack([v.sum(), v.mean()]), x, x), big)
    assert out.shape == (2, 32, 32)


@pytest.mark.parametrize("kwargs, match", [(dict(window=(5, 1)), "window"), (dict(window=0), "window"),
                                           (dict(window=(2, 2), stride=(3, 1)), "stride"),
                                           (dict(batch_size=0), "batch_size")])
def test_occlusion_argument_checks(kwargs, match):
    x = jax.ShapeDtypeStruct((H, W, C), jnp.float32)
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(lambda x_: occlusion(f_vec, x_, x_, **kwargs), x)
