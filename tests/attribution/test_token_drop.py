"""Token-drop RISE and Occlusion (removal="token_drop") on a tiny random-weight DINOv2 with registers.

References: float64 NumPy statements of each estimator whose scores come from the NumPy forward
with dropped keys masked (tests/support/tiny_vits.py), not from the code under test; the map is
then upsampled per patch with np.kron.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import attribution, methods, pipeline, targets
from cocoa_jax.attribution_methods import token_drop
from tests.support import tiny_vits as T

N_MASKS, N_KEEP, GRID = 24, 8, 4  # keep_prob 0.5 of 16 patches


@pytest.fixture(scope="module")
def setup():
    model = T.tiny_model("dinov2_vit", seed=1)
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(T.SIZE, T.SIZE, 3)).astype(np.float32)
    directions = rng.standard_normal((2, model.representation_dim)).astype(np.float32)
    return model, x, directions


def _scorer(model, directions):
    return token_drop.token_scorer(model.encode_fn.token_access, model.params, lambda reps: directions @ reps)


def _numpy_score(model, x, directions, kept=None):
    rep, _ = T.numpy_forward(model, T.network_input(model, x), kept)
    return directions.astype(np.float64) @ rep


def _pixels(patch_maps):
    return np.kron(patch_maps, np.ones((T.PATCH, T.PATCH)))


@pytest.fixture(scope="module")
def rise_maps(setup):
    """One program: plain and centred token-drop RISE (batch 10: two full chunks and a remainder)."""
    model, x, directions = setup
    key = jax.random.key(5)

    @jax.jit
    def run(params, x):
        f = token_drop.token_scorer(model.encode_fn.token_access, params, lambda reps: jnp.asarray(directions) @ reps)
        return tuple(attribution.rise(f, x, x, key, n_masks=N_MASKS, batch_size=10, removal="token_drop",
                                      centered=centered) for centered in (False, True))

    return key, [np.asarray(m) for m in run(model.params, x)]


def test_rise_token_drop_is_the_estimator_on_kept_tokens(setup, rise_maps):
    model, x, directions = setup
    key, (plain, centred) = rise_maps
    keeps = [np.asarray(token_drop.draw_kept(k, 16, N_KEEP)) for k in jax.random.split(key, N_MASKS)]
    masks = np.zeros((N_MASKS, 16))
    for i, keep in enumerate(keeps):
        assert len(set(keep.tolist())) == N_KEEP and keep.min() >= 0 and keep.max() < 16
        masks[i, keep] = 1.0
    scores = np.stack([_numpy_score(model, x, directions, keep) for keep in keeps])  # (n, K)
    rate = N_KEEP / 16
    expected = (scores.T @ masks / (N_MASKS * rate)).reshape(2, GRID, GRID)
    np.testing.assert_allclose(plain, _pixels(expected), rtol=1e-4, atol=1e-4)
    centred_ref = ((scores - scores.mean(0)).T @ masks / ((N_MASKS - 1) * rate)).reshape(2, GRID, GRID)
    np.testing.assert_allclose(centred, _pixels(centred_ref), rtol=1e-4, atol=1e-4)


def test_kept_tokens_are_uniform_subsets():
    """Exactly n_keep distinct patches per mask; each patch kept at rate n_keep / P (4 sigma)."""
    keeps = np.asarray(jax.jit(jax.vmap(lambda k: token_drop.draw_kept(k, 16, 5)))(
        jax.random.split(jax.random.key(0), 4000)))
    assert all(len(set(row)) == 5 for row in keeps[:200])
    rate = np.bincount(keeps.ravel(), minlength=16) / len(keeps)
    assert np.abs(rate - 5 / 16).max() < 4 * np.sqrt(5 / 16 * 11 / 16 / len(keeps))
    assert token_drop.kept_count(16, 0.5) == 8 and token_drop.kept_count(16, 0.01) == 1


def test_occlusion_token_drop_against_numpy(setup):
    """Windows of 3 x 3 patches at stride 2 on the 4 x 4 grid (11 px and 9 px round to 3 and 2
    patches of 4 px): starts 0 and 1 (the last window moved in so it stays whole), four windows,
    each pass keeping 7 of 16 tokens."""
    model, x, directions = setup
    maps = np.asarray(jax.jit(lambda params: attribution.occlusion(
        token_drop.token_scorer(model.encode_fn.token_access, params, lambda r: jnp.asarray(directions) @ r),
        x, x, window=11, stride=9, removal="token_drop"))(model.params))
    reference = _numpy_score(model, x, directions)
    total, cover = np.zeros((2, GRID, GRID)), np.zeros((GRID, GRID))
    for r in (0, 1):
        for c in (0, 1):
            dropped = np.zeros((GRID, GRID), bool)
            dropped[r:r + 3, c:c + 3] = True
            drop = reference - _numpy_score(model, x, directions, np.flatnonzero(~dropped))
            total += drop[:, None, None] * dropped
            cover += dropped
    np.testing.assert_allclose(maps, _pixels(total / cover), rtol=1e-4, atol=1e-4)


def test_errors_name_what_is_needed(setup):
    model, x, directions = setup
    plain_f = lambda image: jnp.sum(image)
    with pytest.raises(TypeError, match="TokenScorer"):
        attribution.rise(plain_f, x, x, jax.random.key(0), n_masks=4, removal="token_drop")
    with pytest.raises(ValueError, match="`removal`"):
        attribution.occlusion(plain_f, x, x, removal="drop")
    with pytest.raises(ValueError, match="must not exceed the patch grid"):
        attribution.occlusion(_scorer(model, directions), x, x, window=20, removal="token_drop")
    with pytest.raises(ValueError, match="token access"):
        pipeline.attribute(lambda params, xb: xb.reshape(xb.shape[0], -1), None, x[None], x[None],
                           targets.Target(jnp.ones((1, x.size)), (False,)), "rise", jax.random.key(0)[None],
                           options={"n_masks": 4, "removal": "token_drop"})
    assert methods.reads_tokens("rise", {"removal": "token_drop"}) and not methods.reads_tokens("rise", {})
    methods.check_values("rise", {"removal": "token_drop", "n_masks": 8}, (T.SIZE, T.SIZE, 3))
    with pytest.raises(ValueError, match="needs 2..65"):  # one program per coalition size: refused up front
        methods.check_values("kernel_shap", {"removal": "token_drop"}, (3 * T.SIZE, 3 * T.SIZE, 3))


def test_patch_maps_upsample_nearest_and_zero_beyond_the_grid():
    patch_maps = jnp.arange(6.0).reshape(2, 3)
    pixels = np.asarray(token_drop.to_pixels(patch_maps, 2, (5, 7)))
    np.testing.assert_array_equal(pixels[:4, :6], np.kron(np.arange(6.0).reshape(2, 3), np.ones((2, 2))))
    assert not pixels[4:].any() and not pixels[:, 6:].any()


def test_insertion_deletion_by_token_drop_against_numpy(setup):
    """Steps of 8 patches (n_steps=2 on 16): insertion keeps the top 8s patches, deletion all but
    them; curves from the NumPy forward, AUCs by the trapezoid over 0, 1/2, 1. (The explicand
    program's token scorer is tested through `rollout`, tests/attribution/test_rollout.py.)"""
    from cocoa_jax import metrics

    model, x, directions = setup
    patch_scores = np.random.default_rng(7).permutation(16).astype(np.float32)  # distinct: one order
    attribution_map = np.kron(patch_scores.reshape(GRID, GRID), np.ones((T.PATCH, T.PATCH))).astype(np.float32)
    measures = lambda reps: reps @ jnp.asarray(directions).T  # (B, D) -> (B, 2)
    curves, aucs = jax.jit(lambda params: metrics.insertion_deletion(
        None, measures, x, x, attribution_map, n_steps=2, removal="token_drop",
        tokens=token_drop.kept_encoder(model.encode_fn.token_access, params)))(model.params)
    order = np.argsort(-patch_scores, kind="stable")
    expected = np.stack([[_numpy_score(model, x, directions, np.sort(order[:c] if kind == 0 else order[c:]))
                          for c in (0, 8, 16)] for kind in (0, 1)])  # (2, 3, 2)
    np.testing.assert_allclose(curves, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(aucs, ((expected[:, 1:] + expected[:, :-1]) / 2 * 0.5).sum(1), rtol=1e-4, atol=1e-4)
    with pytest.raises(TypeError, match="KeptEncoder"):
        metrics.insertion_deletion(None, measures, x, x, attribution_map, n_steps=2, removal="token_drop")


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_kernel_shap_token_drop_is_the_constrained_regression(setup):
    """4 features of 2 x 2 patches (superpixel 8 px); 10 random coalitions stratified by size
    (4, 3, 3 of sizes 1, 2, 3); efficient=True: min ||Z phi - (y - y_off)||^2 with sum(phi) =
    y_all - y_off, solved in float64 from the NumPy forward's scores (KKT system)."""
    model, x, directions = setup
    n_samples, key = 12, jax.random.key(9)
    assert token_drop.size_counts(4, 10).tolist() == [4, 3, 3]
    maps = np.asarray(jax.jit(lambda params: attribution.kernel_shap(
        token_drop.token_scorer(model.encode_fn.token_access, params, lambda r: jnp.asarray(directions) @ r),
        x, x, key, n_samples=n_samples, superpixel=8, efficient=True, batch_size=3, removal="token_drop"))(
        model.params))
    features = [np.array([0, 1, 4, 5]), np.array([2, 3, 6, 7]), np.array([8, 9, 12, 13]), np.array([10, 11, 14, 15])]
    keys = jax.random.split(key, n_samples)
    sizes = [1] * 4 + [2] * 3 + [3] * 3  # samples 2..11
    rows = np.zeros((10, 4))
    for i, size in enumerate(sizes):
        rows[i, np.asarray(jax.random.permutation(keys[2 + i], 4))[:size]] = 1.0
    y_all = _numpy_score(model, x, directions)
    y_off = _numpy_score(model, x, directions, np.zeros(0, int))
    y = np.stack([_numpy_score(model, x, directions, np.sort(np.concatenate([features[j] for j in np.flatnonzero(r)])))
                  for r in rows]) - y_off
    kkt = np.block([[rows.T @ rows, np.ones((4, 1))], [np.ones((1, 4)), np.zeros((1, 1))]])
    phi = np.linalg.solve(kkt, np.concatenate([rows.T @ y, (y_all - y_off)[None]]))[:4]  # (4, K)
    expected = np.zeros((2, 16))
    for j, patches in enumerate(features):
        expected[:, patches] = phi[j][:, None]
    np.testing.assert_allclose(maps, _pixels(expected.reshape(2, GRID, GRID)), rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(maps.sum((1, 2)) / (2 * T.PATCH) ** 2, y_all - y_off, rtol=1e-4, atol=1e-4)


def test_explain_images_refuses_token_options_before_encoding():
    """An encoder without token access: refused naming the method, before any image is encoded."""
    import types

    calls = []

    def encode_fn(params, xb):
        calls.append(1)
        return xb.reshape(xb.shape[0], -1)

    model = types.SimpleNamespace(encode_fn=encode_fn, params=None)
    images = np.zeros((1, 8, 8, 3), np.float32)
    with pytest.raises(ValueError, match="'rollout'.*token access"):
        pipeline.explain_images(model, images, targets=["label_free"], methods=["rollout"])
    with pytest.raises(ValueError, match="'rise'.*token access"):
        pipeline.explain_images(model, images, targets=["label_free"], methods=["rise"],
                                options={"rise": {"removal": "token_drop"}})
    assert not calls
