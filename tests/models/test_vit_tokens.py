"""Token drop and attention maps of the ViT ports (DINO, DINOv2 with registers, CLIP's image tower).

The reference is an independent statement: a float64 NumPy forward of the WHOLE sequence with the
attention logits of dropped keys set to -inf (tests/support/tiny_vits.py). The class token then
sees exactly what it sees when the dropped tokens are not in the sequence at all.
"""
from __future__ import annotations

import jax
import numpy as np
import pytest

from cocoa_jax.attribution_methods import token_drop
from tests.support import tiny_vits as T

ARCHS = tuple(T.CASES)
KEEPS = np.array([[0, 3, 5, 6, 9, 15], [1, 2, 4, 8, 12, 14]], np.int32)  # two rows, 6 of 16 patches each


@pytest.fixture(scope="module")
def runs():
    """Per architecture: the model, two images, and its jitted full / kept-token / attention outputs."""
    out = {}
    xs = np.random.default_rng(0).uniform(size=(2, T.SIZE, T.SIZE, 3)).astype(np.float32)
    for arch in ARCHS:
        model = T.tiny_model(arch)
        access = model.encode_fn.token_access
        every = np.tile(np.arange(16, dtype=np.int32), (2, 1))
        program = jax.jit(lambda params, x: (model.encode_fn(params, x), access.encode(params, x, KEEPS),
                                             access.encode(params, x, every), access.attention(params, x)))
        out[arch] = (model, xs) + tuple(np.asarray(a) for a in program(model.params, xs))  # one compilation
    return out


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.parametrize("arch", ARCHS)
def test_dropped_tokens_equal_masked_keys(runs, arch):
    model, xs, full, kept, every, _ = runs[arch]
    for i in range(2):
        reference, _ = T.numpy_forward(model, T.network_input(model, xs[i]), KEEPS[i])
        np.testing.assert_allclose(kept[i], reference, rtol=1e-5, atol=2e-6)
        unmasked, _ = T.numpy_forward(model, T.network_input(model, xs[i]))
        np.testing.assert_allclose(full[i], unmasked, rtol=1e-5, atol=2e-6)
        assert np.abs(kept[i] - full[i]).max() > 1e-2  # dropping 10 of 16 patches changes the output


@pytest.mark.parametrize("arch", ARCHS)
def test_all_tokens_kept_is_the_model_bit_for_bit(runs, arch):
    _, _, full, _, every, _ = runs[arch]
    np.testing.assert_array_equal(every, full)


@pytest.mark.parametrize("arch", ARCHS)
def test_attention_maps_are_the_blocks_softmax(runs, arch):
    model, xs, _, _, _, attention = runs[arch]
    access = model.encode_fn.token_access
    prefix = 1 + int(model.config.get("num_register_tokens", 0))
    assert access.prefix == prefix and access.patch_size == T.PATCH
    assert attention.shape == (2, 2, 2, prefix + 16, prefix + 16)  # (layers, N, heads, L, L)
    for i in range(2):
        _, weights = T.numpy_forward(model, T.network_input(model, xs[i]))
        np.testing.assert_allclose(attention[:, i], weights, rtol=1e-4, atol=1e-6)


def test_flops_fall_with_the_kept_fraction():
    """XLA's cost analysis of one pass: half the patch tokens cost < 0.6 x all of them."""
    model = T.tiny_model("dino_vit")
    access = model.encode_fn.token_access
    x = np.full((8, T.SIZE, T.SIZE, 3), 0.5, np.float32)
    every = token_drop.pass_flops(access.encode, model.params, x, np.tile(np.arange(16, dtype=np.int32), (8, 1)))
    half = token_drop.pass_flops(access.encode, model.params, x, np.tile(np.arange(8, dtype=np.int32), (8, 1)))
    assert 0 < half < 0.6 * every
