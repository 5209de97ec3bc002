"""Token-drop insertion/deletion with padded length buckets (`token_drop.length_buckets`,
`padded_kept`, the ViT ports' `valid` key mask).

References: a brute-force search over bucket sets; NumPy index arithmetic for the padded rows; the
float64 NumPy forward of the whole sequence with dropped keys masked (tests/support/tiny_vits.py)
for every pass of a 50-step curve; the same port run on the exact kept tokens (no padding).
"""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import metrics, models
from cocoa_jax.attribution_methods import token_drop
from tests.support import tiny_vits as T


def _cost(counts, lengths, prefix):
    return sum(prefix + min(length for length in lengths if length >= c) for c in counts)


@pytest.mark.parametrize("n_buckets", [1, 2, 3, 5])
def test_length_buckets_are_the_cheapest_padding(n_buckets):
    """Against every set of <= n_buckets lengths among the counts that holds the largest."""
    counts = np.random.default_rng(n_buckets).integers(0, 20, size=30)
    lengths = token_drop.length_buckets(counts, n_buckets, prefix=3)
    values = sorted(set(counts.tolist()))
    assert len(lengths) <= n_buckets and lengths[-1] == values[-1] and set(lengths) <= set(values)
    best = min(_cost(counts, subset + (values[-1],), 3) for r in range(n_buckets)
               for subset in itertools.combinations(values[:-1], r))
    assert _cost(counts, lengths.tolist(), 3) == best


def test_length_buckets_without_padding_and_bad_counts():
    np.testing.assert_array_equal(token_drop.length_buckets([5, 0, 5, 2], 3), [0, 2, 5])
    with pytest.raises(ValueError, match="n_buckets"):
        token_drop.length_buckets([1, 2], 0)


def test_padded_kept_lists_the_kept_patches_then_padding():
    kept = np.random.default_rng(0).uniform(size=(6, 12)) < 0.4
    length = int(kept.sum(1).max()) + 2
    keep, valid = (np.asarray(a) for a in token_drop.padded_kept(jnp.asarray(kept), length))
    assert keep.shape == valid.shape == (6, length)
    for row, k, v in zip(kept, keep, valid):
        count = int(row.sum())
        np.testing.assert_array_equal(k[:count], np.flatnonzero(row))
        np.testing.assert_array_equal(v, np.arange(length) < count)
        assert not row[k[count:]].any() and len(set(k.tolist())) == length  # padding: other patches


@pytest.fixture(scope="module", params=tuple(T.CASES))
def tiny_run(request):
    """Per ported layout (DINO, DINOv2 with registers, CLIP): one program of the exact-length pass
    and two padded passes of the same 5 kept patches (padding slots holding different patches)."""
    x = np.random.default_rng(1).uniform(size=(2, T.SIZE, T.SIZE, 3)).astype(np.float32)
    exact = np.array([[1, 4, 6, 9, 15]] * 2, np.int32)
    pad_a = np.concatenate([exact, [[0, 2, 3]] * 2], axis=1).astype(np.int32)
    pad_b = np.concatenate([exact, [[14, 13, 7]] * 2], axis=1).astype(np.int32)
    valid = np.arange(8)[None].repeat(2, 0) < 5
    model = T.tiny_model(request.param)
    enc = model.encode_fn.token_access.encode
    run = jax.jit(lambda params: (enc(params, x, exact), enc(params, x, pad_a, valid), enc(params, x, pad_b, valid)))
    return (model, x, exact) + tuple(np.asarray(a) for a in run(model.params))


def test_padding_slots_change_nothing(tiny_run):
    model, x, exact, plain, padded, other = tiny_run
    np.testing.assert_array_equal(padded, other)  # masked keys: weight exactly 0, whatever the token
    np.testing.assert_allclose(padded, plain, rtol=1e-5, atol=1e-6)
    reference, _ = T.numpy_forward(model, T.network_input(model, x[0]), exact[0])
    np.testing.assert_allclose(padded[0], reference, rtol=1e-5, atol=2e-6)


def test_valid_needs_keep_of_its_shape():
    model = T.tiny_model("dino_vit")
    x = np.zeros((1, T.SIZE, T.SIZE, 3), np.float32)
    with pytest.raises(ValueError, match="valid"):
        model.encode_fn.token_access.encode(model.params, x, np.zeros((1, 3), np.int32), np.ones((1, 4), bool))


def _curve_case(model, patch, seed):
    """An image, a per-patch score map with distinct scores (one order), two measure directions."""
    rng = np.random.default_rng(seed)
    h, w, c = model.input_shape
    x = rng.uniform(size=(h, w, c)).astype(np.float32)
    grid = (h // patch, w // patch)
    scores = rng.permutation(grid[0] * grid[1]).astype(np.float32).reshape(grid)
    directions = rng.standard_normal((2, model.representation_dim)).astype(np.float32)
    return x, np.kron(scores, np.ones((patch, patch))).astype(np.float32), scores.reshape(-1), directions


def _numpy_curves(model, x, scores, directions, n_steps):
    """(2, S + 1, 2) float64: each (kind, step) pass through the NumPy forward on its exact kept set."""
    order = np.argsort(-scores, kind="stable")
    xn = np.asarray(x, np.float64) if model.preprocess is None else T.network_input(model, x)
    counts = metrics.feature_counts(len(scores), n_steps)
    return np.stack([[directions.astype(np.float64) @ T.numpy_forward(model, xn, np.sort(kept))[0]
                      for kept in ((order[:c] if kind == 0 else order[c:]) for c in counts)] for kind in (0, 1)])


@pytest.mark.parametrize("arch", ["dinov2_vit", "clip_vit"])
def test_padded_curves_are_the_exact_passes_on_tiny_layouts(arch):
    """16 patches, 16 steps (17 kept counts) in 4 padded buckets: every pass equals the float64
    forward on its kept set (registers and CLIP's class token + ln_pre layout)."""
    model = T.tiny_model(arch, seed=2)
    x, attribution_map, scores, directions = _curve_case(model, T.PATCH, 3)
    curves = jax.jit(lambda params: metrics.ablation_curves(
        None, lambda reps: reps @ jnp.asarray(directions).T, x, x, attribution_map, n_steps=16, removal="token_drop",
        token_buckets=4, tokens=token_drop.kept_encoder(model.encode_fn.token_access, params)))(model.params)
    np.testing.assert_allclose(curves, _numpy_curves(model, x, scores, directions, 16), rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # > 5 s: the float64 NumPy forward of 102 passes of the 64-patch digits ViT
def test_fifty_step_curves_on_digits_vit_are_the_exact_passes():
    """The shipped digits ViT (64 patches), 50 steps in 8 padded buckets: every pass equals the
    float64 forward of its exact kept set, and four padded passes the port on exact lengths."""
    model = models.load("digits_vit")
    access = model.encode_fn.token_access
    x, attribution_map, scores, directions = _curve_case(model, access.patch_size, 4)
    measures = lambda reps: reps @ jnp.asarray(directions).T
    order = np.argsort(-scores, kind="stable")
    counts = metrics.feature_counts(64, 50)
    lengths = token_drop.length_buckets(np.concatenate([counts, 64 - counts]), 8)
    picked = [(kind, s) for kind, s in ((0, 1), (0, 17), (1, 20), (1, 44))
              if (counts[s] if kind == 0 else 64 - counts[s]) not in lengths]  # passes that are padded
    assert len(picked) == 4

    def run(params):
        curves = metrics.ablation_curves(None, measures, x, x, attribution_map, n_steps=50, removal="token_drop",
                                         tokens=token_drop.kept_encoder(access, params))
        exact = [measures(access.encode(params, x[None], jnp.asarray(np.sort(
            order[:counts[s]] if kind == 0 else order[counts[s]:]))[None]))[0] for kind, s in picked]
        return curves, exact

    curves, exact = jax.jit(run)(model.params)
    np.testing.assert_allclose(np.stack([curves[kind, s] for kind, s in picked]), np.stack(exact), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(curves, _numpy_curves(model, x, scores, directions, 50), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("buckets, programs", [(8, 8), (3, 3), (1000, 65)])
def test_encoder_programs_are_bounded_by_the_buckets(buckets, programs):
    """Traced encoder calls of a 50-step insertion + deletion on 64 patches (the old path: 102)."""
    calls = []

    def encode(xs, keep, valid=None):
        calls.append(keep.shape[1])
        return jnp.zeros((xs.shape[0], 3)) + jnp.sum(keep)

    tokens = token_drop.KeptEncoder(encode, 4)
    x = jnp.zeros((32, 32, 1))
    jax.eval_shape(lambda a: metrics.insertion_deletion(None, lambda r: r, x, x, a, n_steps=50, removal="token_drop",
                                                        tokens=tokens, token_buckets=buckets), jnp.ones((32, 32)))
    assert len(calls) == programs and len(set(calls)) == programs
    if buckets == 8:  # padding costs ~10% more tokens than exact lengths
        counts = metrics.feature_counts(64, 50)
        exact = np.concatenate([counts, 64 - counts]) + 1
        lengths = token_drop.length_buckets(exact - 1, 8)
        padded = lengths[np.searchsorted(lengths, exact - 1)] + 1
        assert padded.sum() < 1.12 * exact.sum()
