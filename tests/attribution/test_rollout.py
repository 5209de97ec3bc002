"""Attention rollout against a float64 NumPy statement of Abnar & Zuidema (2020) computed from the
attention maps of the NumPy forward (tests/support/tiny_vits.py), not from the code under test."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import attribution, methods, pipeline, targets
from cocoa_jax.attribution_methods import token_drop
from tests.support import tiny_vits as T

FUSIONS = {"mean": np.mean, "max": np.max, "min": np.min}


def numpy_rollout(weights, fusion, prefix):
    """weights (layers, heads, L, L) -> the class row of prod_l norm(0.5 fuse(A_l) + 0.5 I) over patches."""
    total = np.eye(weights.shape[-1])
    for layer in weights:
        a = 0.5 * FUSIONS[fusion](layer, axis=0) + 0.5 * np.eye(layer.shape[-1])
        total = (a / a.sum(-1, keepdims=True)) @ total
    return total[0, prefix:].reshape(4, 4)


@pytest.fixture(scope="module")
def cases():
    out = {}
    x = np.random.default_rng(3).uniform(size=(T.SIZE, T.SIZE, 3)).astype(np.float32)
    for arch in ("dinov2_vit", "clip_vit"):
        model = T.tiny_model(arch, seed=4)
        directions = jnp.asarray(np.random.default_rng(5).standard_normal((2, model.representation_dim)), jnp.float32)

        @jax.jit
        def run(params, image):
            f = token_drop.token_scorer(model.encode_fn.token_access, params, lambda reps: directions @ reps)
            return {fusion: attribution.rollout(f, image, head_fusion=fusion) for fusion in FUSIONS}

        out[arch] = model, x, directions, {k: np.asarray(v) for k, v in run(model.params, x).items()}
    return out


@pytest.mark.parametrize("arch", ["dinov2_vit", "clip_vit"])
def test_rollout_is_the_product_of_residual_attention(cases, arch):
    model, x, _, maps = cases[arch]
    _, weights = T.numpy_forward(model, T.network_input(model, x))
    prefix = model.encode_fn.token_access.prefix
    for fusion, got in maps.items():
        assert got.shape == (2, T.SIZE, T.SIZE)
        np.testing.assert_array_equal(got[0], got[1])  # target-agnostic: one map for every target
        expected = np.kron(numpy_rollout(weights, fusion, prefix), np.ones((T.PATCH, T.PATCH)))
        np.testing.assert_allclose(got[0], expected, rtol=2e-5, atol=1e-6)
    assert not np.allclose(maps["mean"], maps["max"])  # the fusion matters


def test_rollout_through_the_explicand_program(cases):
    model, x, directions, maps = cases["clip_vit"]
    got = pipeline.attribute(model.encode_fn, model.params, x[None], x[None],
                             targets.Target(directions, (True, False)), "rollout", jax.random.key(0)[None])
    np.testing.assert_allclose(got[0], maps["mean"], rtol=1e-6, atol=1e-7)
    assert methods.get("rollout").uses_key is False and methods.reads_tokens("rollout", {})


def test_rollout_needs_token_access_and_a_known_fusion(cases):
    model, x, directions, _ = cases["clip_vit"]
    with pytest.raises(TypeError, match="TokenScorer"):
        attribution.rollout(lambda image: jnp.sum(image), x)
    f = token_drop.token_scorer(model.encode_fn.token_access, model.params, lambda reps: directions @ reps)
    with pytest.raises(ValueError, match="`head_fusion`"):
        attribution.rollout(f, x, head_fusion="median")
