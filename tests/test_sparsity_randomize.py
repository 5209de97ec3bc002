"""Gini index vs a float64 NumPy reference and known values; parameter randomisation."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from cocoa_jax.models.randomize import cascading_randomizations, randomize_leaf, randomize_params
from cocoa_jax.sparsity import gini_index


def gini_np(a):
    """The official formula, float64, written out term by term."""
    a = np.sort(np.abs(np.asarray(a, np.float64).ravel()))
    n, total = a.size, a.sum()
    return 1.0 - 2.0 * sum((a[k - 1] / total) * (n - k + 0.5) / n for k in range(1, n + 1))


@pytest.mark.slow  # ~25 s of compiles; the batched NumPy comparison stays quick
def test_gini_known_values():
    assert abs(float(gini_index(jnp.ones(50)))) < 1e-6
    assert abs(float(gini_index(-3.0 * jnp.ones((4, 5)))) ) < 1e-6
    for n in (2, 7, 100):
        np.testing.assert_allclose(float(gini_index(jnp.eye(n)[3 % n])), 1 - 1 / n, rtol=1e-6)
    assert float(gini_index(jnp.zeros(5))) == 0.0


def test_gini_matches_numpy_reference_batched():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(3, 2, 5, 6)) * rng.exponential(size=(3, 2, 5, 6)) ** 3
    ours = np.asarray(gini_index(jnp.asarray(maps, jnp.float32), ndim=2))
    assert ours.shape == (3, 2)
    ref = np.array([[gini_np(maps[i, j]) for j in range(2)] for i in range(3)])
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
    # Signed maps: the Gini of |a| (the default) lies in [0, 1); the official raw-value formula
    # (absolute=False) divides by the signed sum and need not.
    assert (maps < 0).any() and ((ours >= 0) & (ours < 1)).all()
    signed = np.array([[-3.0, 1.0], [1.0, 1.05]])  # sum 0.05
    a = np.sort(signed.ravel())
    official = 2 * np.sum(np.arange(1, 5) * a) / (4 * a.sum()) - 5 / 4  # the official formula, float64
    assert official > 20  # 60.75: far outside [0, 1]
    np.testing.assert_allclose(float(gini_index(signed, absolute=False)), official, rtol=1e-4)
    assert 0 <= float(gini_index(signed)) < 1
    np.testing.assert_allclose(float(gini_index(maps[0, 0])), ref[0, 0], rtol=1e-5)
    # Sparser maps score higher (and a wrong sort order would flip this).
    assert gini_np(maps[0, 0] ** 3) > gini_np(maps[0, 0]) and float(gini_index(maps[0, 0] ** 3)) > ref[0, 0]
    np.testing.assert_allclose(jax.jit(gini_index)(jnp.asarray(maps[0, 0])), ref[0, 0], rtol=1e-5)


def test_gini_argument_checks():
    with pytest.raises(ValueError, match="ndim"):
        gini_index(jnp.ones((2, 3)), ndim=3)
    with pytest.raises(ValueError, match="attributions"):
        gini_index(jnp.asarray(1.0))


def _params():
    rng = np.random.default_rng(1)
    return {"params": {"conv": {"kernel": jnp.asarray(rng.normal(0.3, 2.0, (3, 3, 8, 64)), jnp.float32),
                                "bias": jnp.full((64,), 0.5, jnp.float32)},
                       "dense": {"kernel": jnp.asarray(rng.uniform(-1, 3, (200, 100)), jnp.float32),
                                 "bias": jnp.asarray(rng.normal(size=10), jnp.float32)},
                       "head": {"kernel": jnp.asarray(rng.normal(size=(100, 5)), jnp.float32)}},
            "batch_stats": {"conv": {"mean": jnp.asarray(rng.normal(size=64), jnp.float32)}}}


@pytest.mark.slow  # large tensors
def test_randomize_keeps_each_tensors_statistics_and_bounds():
    params = _params()
    new = randomize_params(params, jax.random.key(0))
    for (path, old), leaf in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves(new)):
        old, leaf = np.asarray(old), np.asarray(leaf)
        assert leaf.shape == old.shape and leaf.dtype == old.dtype
        assert leaf.min() >= old.min() and leaf.max() <= old.max(), path
        if old.std() == 0:
            np.testing.assert_array_equal(leaf, old)  # constant tensors stay constant
            continue
        assert np.mean(leaf != old) > 0.99, path  # every non-constant leaf re-drawn
        if old.size >= 5000:  # big tensors: the moments of N(mean, std) truncated to [min, max]
            mean, std = old.mean(), old.std(ddof=1)
            law = scipy.stats.truncnorm((old.min() - mean) / std, (old.max() - mean) / std, loc=mean, scale=std)
            assert abs(leaf.mean() - law.mean()) < 0.05 * std, path
            assert abs(leaf.std() - law.std()) < 0.03 * std, path
            assert abs(leaf.mean() - mean) < 0.1 * std, path  # and the tensor's own mean is kept
    # Deterministic in the key; another key, other values.
    again = randomize_params(params, jax.random.key(0))
    other = randomize_params(params, jax.random.key(1))
    k0, k1, k2 = (np.asarray(t["params"]["dense"]["kernel"]) for t in (new, again, other))
    np.testing.assert_array_equal(k0, k1)
    assert np.mean(k0 != k2) > 0.99


def test_randomize_leaf_under_jit():
    leaf = jnp.linspace(-1.0, 2.0, 1000)
    out = jax.jit(randomize_leaf)(leaf, jax.random.key(3))
    assert float(out.min()) >= -1.0 and float(out.max()) <= 2.0
    np.testing.assert_allclose(float(out.mean()), float(leaf.mean()), atol=0.1)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_cascading_randomizes_from_the_top_down():
    params = _params()
    steps = cascading_randomizations(params, jax.random.key(4))
    assert [name for name, _ in steps] == ["head", "dense", "conv"]
    changed = lambda p, block: not np.array_equal(np.asarray(p["params"][block]["kernel"]),
                                                  np.asarray(params["params"][block]["kernel"]))
    assert [changed(p, "head") for _, p in steps] == [True, True, True]
    assert [changed(p, "dense") for _, p in steps] == [False, True, True]
    assert [changed(p, "conv") for _, p in steps] == [False, False, True]
    # BatchNorm statistics go with their block; a block's draws are the same in later steps.
    assert np.array_equal(steps[1][1]["batch_stats"]["conv"]["mean"], params["batch_stats"]["conv"]["mean"])
    assert not np.array_equal(steps[2][1]["batch_stats"]["conv"]["mean"], params["batch_stats"]["conv"]["mean"])
    np.testing.assert_array_equal(steps[0][1]["params"]["head"]["kernel"], steps[2][1]["params"]["head"]["kernel"])
    custom = cascading_randomizations(params, jax.random.key(4), order=["conv", "head", "dense"])
    assert [n for n, _ in custom] == ["conv", "head", "dense"]
    plain = cascading_randomizations(params["params"], jax.random.key(4))
    assert [n for n, _ in plain] == ["head", "dense", "conv"]
    with pytest.raises(ValueError, match="order"):
        cascading_randomizations(params, jax.random.key(4), order=["head"])
